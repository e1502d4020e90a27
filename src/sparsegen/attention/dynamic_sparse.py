"""DynaST's dynamic sparse attention (Sec. 3.2, Eq. 2-7; warp matrices Eq. 12-13).

Target queries q (B, Cqk, Hq, Wq) are matched against reference keys k (B, Cqk, Hk, Wk) with
values v (B, Cv, Hk, Wk). The caller (the block module) applies every projection (alpha, beta,
Omega, Phi, eta, instance norm); these functions take the projected maps and

- C = scale * q.k (the correlation, Eq. 2-4 before the softmax; scale is tau),
- A = softmax(C) over a query's candidates: every reference position (dense, Eq. 2) or a list
  of flat reference indices per query (inter-scale Eq. 3: 4k, inner-scale Eq. 4: 5k),
- P = prune_scale * qp.kp, D = 1[P > 0] with a sigmoid surrogate gradient (Eq. 5-6),
- A~ = D * A (Eq. 7): out = sum_j A~_ij v_j and conf = sum_j A~_ij, not renormalised,
- W = D * exp(C) / (sum D * exp(C) + eps) (Eq. 12), warp = W I'_ref (Eq. 13).

W is computed after shifting C by each query's largest kept score, so eps acts on the shifted
sum (which is >= 1 when any link is kept) and a query whose links are all pruned gets a zero row
(W is computed in at least float32: a half-precision eps rounds to 0).
A pruned candidate's exponent is capped at that shift: its forward term is 0 either way, but
exp(C - max) of a pruned score far above every kept one would overflow float32 in the surrogate
gradient through D.

warp_mask "inverted" reproduces the official code's warp (official_repos.md Sec. 1.2): softmax of
the logits with the kept links filled with -1e4, i.e. over the pruned candidates, with the mask
as a constant (no surrogate gradient) and, for a query with no pruned candidate, a uniform row.

Top-k (the next block's candidates) is taken on A before pruning, as the code does.
"""

from __future__ import annotations

import torch

from sparsegen.attention.all_to_all import attend, record_kept, record_scores
from sparsegen.attention.matching import Match

WARP_MASKS = ("paper", "inverted")
OFFICIAL_FILL = -1e4  # the official warp's masked_fill value for kept links


class _SignWithSigmoidGrad(torch.autograd.Function):
    """Forward 1[P > 0] (Eq. 5); backward through the sigmoid's derivative (Eq. 6)."""

    @staticmethod
    def forward(ctx, p: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        ctx.save_for_backward(p)
        return (p > 0).to(p.dtype)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        (p,) = ctx.saved_tensors
        s = torch.sigmoid(p)
        return grad * s * (1 - s)


def sign_sigmoid_grad(p: torch.Tensor) -> torch.Tensor:
    """The pruning decision D = 1[P > 0] with dD/dP = sigmoid(P)(1 - sigmoid(P)) (Eq. 5-6)."""
    return _SignWithSigmoidGrad.apply(p)


def _tokens(x: torch.Tensor) -> torch.Tensor:
    """(B, C, H, W) -> (B, H*W, C)."""
    return x.flatten(2).transpose(1, 2)


def _map(t: torch.Tensor, hw: tuple[int, int]) -> torch.Tensor:
    """(B, H*W, C) -> (B, C, H, W)."""
    return t.transpose(1, 2).reshape(t.shape[0], t.shape[2], *hw)


def _check(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, qp: torch.Tensor | None,
           kp: torch.Tensor | None, image: torch.Tensor | None, warp_mask: str) -> None:
    if warp_mask not in WARP_MASKS:
        raise ValueError(f"warp_mask {warp_mask!r} is not one of {WARP_MASKS}")
    if q.dim() != 4 or k.dim() != 4 or q.shape[:2] != k.shape[:2]:
        raise ValueError(f"q {tuple(q.shape)} and k {tuple(k.shape)} must be (B, Cqk, H, W) "
                         "with the same B and Cqk")
    grid = k.shape[-2:]
    if v.dim() != 4 or v.shape[0] != k.shape[0] or v.shape[-2:] != grid:
        raise ValueError(f"v {tuple(v.shape)} must be (B, Cv, Hk, Wk) with k's B, Hk, Wk "
                         f"{(k.shape[0], *grid)}")
    if (qp is None) != (kp is None):
        raise ValueError("qp and kp must be given together (or neither: no pruning)")
    if qp is not None and (qp.shape[:2] != kp.shape[:2] or qp.shape[-2:] != q.shape[-2:]
                           or kp.shape[-2:] != grid):
        raise ValueError(f"qp {tuple(qp.shape)} / kp {tuple(kp.shape)} must share B and Cp and "
                         f"lie on q's {tuple(q.shape[-2:])} / k's {tuple(grid)} grids")
    if image is not None and (image.shape[0] != k.shape[0] or image.shape[-2:] != grid):
        raise ValueError(f"image {tuple(image.shape)} must be (B, 3, Hk, Wk) on the key grid "
                         f"{tuple(grid)}")


def _warp_weights(c: torch.Tensor, d: torch.Tensor, eps: float, warp_mask: str
                  ) -> torch.Tensor:
    """Warp matrix rows over the candidates (last axis): Eq. 12, or the official variant."""
    if warp_mask == "inverted":
        return torch.softmax(c.masked_fill(d.detach() > 0, OFFICIAL_FILL), dim=-1)
    dtype = c.dtype  # half-precision eps would round to 0: compute in at least float32
    c, d = (t.to(torch.promote_types(dtype, torch.float32)) for t in (c, d))
    keep = d.detach() > 0
    shift = c.detach().masked_fill(~keep, float("-inf")).amax(-1, keepdim=True)
    shift = torch.where(torch.isfinite(shift), shift, c.detach().amax(-1, keepdim=True))
    e = d * torch.exp((c - shift).clamp_max(0))
    return (e / (e.sum(-1, keepdim=True) + eps)).to(dtype)  # Eq. 12


def _link_weights(c: torch.Tensor, p: torch.Tensor | None, *, warp: bool, eps: float,
                  warp_mask: str) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor]:
    """Logits C and prune scores P (or None) over the candidates (last axis) ->
    (A~, W or None, kept links per query)."""
    a = torch.softmax(c, dim=-1)  # Eq. 2-4
    d = torch.ones_like(c) if p is None else sign_sigmoid_grad(p)  # Eq. 5-6
    kept = (d.detach() > 0).sum(-1)
    pruned = a if p is None else d * a  # Eq. 7
    return pruned, (_warp_weights(c, d, eps, warp_mask) if warp else None), kept


def _topk(scores: torch.Tensor, topk: int | None, what: str) -> torch.Tensor:
    n = scores.shape[-1]
    if topk is None:
        return scores.new_zeros((*scores.shape[:-1], 0), dtype=torch.long)
    if not 0 < topk <= n:
        raise ValueError(f"topk={topk} must lie in [1, {n}] ({what})")
    return scores.topk(topk, dim=-1).indices


def dense_dynamic_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                            qp: torch.Tensor | None = None, kp: torch.Tensor | None = None, *,
                            scale: float, prune_scale: float = 1.0,
                            image: torch.Tensor | None = None, topk: int | None = 4,
                            eps: float = 1e-8, warp_mask: str = "paper") -> Match:
    """Dense dynamic attention (Eq. 2, 5-7, 12-13): every query against every reference position.

    qp/kp None: no pruning (D = 1). topk None: no candidates are returned (Match.topk has k = 0);
    with neither pruning nor image the scores are never materialised (`attend`, SDPA)."""
    _check(q, k, v, qp, kp, image, warp_mask)
    b, hw = q.shape[0], tuple(q.shape[-2:])
    nq, nk = hw[0] * hw[1], k.shape[-2] * k.shape[-1]
    qt, kt, vt = _tokens(q), _tokens(k), _tokens(v)
    if qp is None and image is None and topk is None:
        out = attend(qt * scale, kt, vt, kind="dense_dynamic")
        record_kept("dense_dynamic", b * nq * nk)
        return Match(out=_map(out, hw), conf=q.new_ones(b, 1, *hw), warp=None,
                     topk=_topk(out, None, "dense"),
                     kept=torch.full((b, nq), nk, dtype=torch.long, device=q.device), formed=nk)
    c = scale * qt @ kt.transpose(1, 2)  # (B, Nq, Nk)
    p = None if qp is None else prune_scale * _tokens(qp) @ _tokens(kp).transpose(1, 2)
    weights, warp_w, kept = _link_weights(c, p, warp=image is not None, eps=eps,
                                          warp_mask=warp_mask)
    channels = sum(m.shape[1] for m in (q, v, qp, image) if m is not None)
    record_scores("dense_dynamic", b * nq * nk, b * nq * nk * channels)
    record_kept("dense_dynamic", kept.sum())
    warp = None if warp_w is None else _map(warp_w @ _tokens(image), hw)  # Eq. 13
    return Match(out=_map(weights @ vt, hw), conf=weights.sum(-1).view(b, 1, *hw), warp=warp,
                 topk=_topk(c, topk, "dense"), kept=kept, formed=nk)


def inter_scale_candidates(topk: torch.Tensor, coarse_q_hw: tuple[int, int],
                           coarse_k_hw: tuple[int, int]) -> torch.Tensor:
    """Eq. 3: (B, hq*wq, k) coarse matches -> (B, 4*hq*wq, 4k) candidates on the fine grids.

    Each coarse match (y, x) becomes its 2x2 children (2y+a, 2x+b) on the (2hk, 2wk) reference
    grid (match-major, children in row-major order); the 4k candidates are shared by the four
    children of the coarse query on the (2hq, 2wq) query grid. Flat indices are row-major."""
    (hq, wq), wk = coarse_q_hw, coarse_k_hw[1]
    if topk.dim() != 3 or topk.shape[1] != hq * wq:
        raise ValueError(f"topk {tuple(topk.shape)} must be (B, {hq}*{wq}, k) for the coarse "
                         f"query grid {coarse_q_hw}")
    b, k = topk.shape[0], topk.shape[2]
    y, x = topk // wk, topk % wk
    child = torch.tensor([0, 1], device=topk.device)
    rows = (2 * y)[..., None, None] + child[:, None]  # (B, Nq, k, 2, 1)
    cols = (2 * x)[..., None, None] + child  # (B, Nq, k, 1, 2)
    flat = (rows * 2 * wk + cols).reshape(b, hq, 1, wq, 1, 4 * k)
    return flat.expand(b, hq, 2, wq, 2, 4 * k).reshape(b, 4 * hq * wq, 4 * k)


# Eq. 4's neighbours (dy, dx) relative to the query, after the query itself: up, down, left, right
_NEIGHBOURS = ((-1, 0), (1, 0), (0, -1), (0, 1))


def inner_scale_candidates(topk: torch.Tensor, q_hw: tuple[int, int], k_hw: tuple[int, int]
                           ) -> torch.Tensor:
    """Eq. 4: (B, hq*wq, k) matches -> (B, hq*wq, 5k) candidates: the query's own k matches,
    then those of its up, down, left and right neighbours, each moved by the neighbour-to-query
    offset (the right neighbour's match one pixel left, ...). As the official code: a border
    query's missing neighbour is itself (replicate padding of the match map), moved keys are
    clipped to the (hk, wk) reference grid, duplicates are kept. Flat indices are row-major."""
    (hq, wq), (hk, wk) = q_hw, k_hw
    if topk.dim() != 3 or topk.shape[1] != hq * wq:
        raise ValueError(f"topk {tuple(topk.shape)} must be (B, {hq}*{wq}, k) for the query "
                         f"grid {q_hw}")
    b, k = topk.shape[0], topk.shape[2]
    grid = topk.view(b, hq, wq, k)
    ys, xs = torch.arange(hq, device=topk.device), torch.arange(wq, device=topk.device)
    sets = [topk]
    for dy, dx in _NEIGHBOURS:
        near = grid[:, (ys + dy).clamp(0, hq - 1)][:, :, (xs + dx).clamp(0, wq - 1)]
        y = (near // wk - dy).clamp(0, hk - 1)
        x = (near % wk - dx).clamp(0, wk - 1)
        sets.append((y * wk + x).view(b, hq * wq, k))
    return torch.cat(sets, dim=-1)


def sparse_dynamic_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                             qp: torch.Tensor | None, kp: torch.Tensor | None,
                             candidates: torch.Tensor, *, scale: float, prune_scale: float = 1.0,
                             image: torch.Tensor | None = None, topk: int | None = 4,
                             eps: float = 1e-8, warp_mask: str = "paper", kind: str = "sparse"
                             ) -> Match:
    """Dynamic attention restricted to per-query candidates (B, Hq*Wq, n) of flat reference
    indices (Eq. 3-7, 12-13): softmax over each query's candidates (a duplicate counts twice).
    Keys, prune keys, values and image are gathered per candidate (B, Nq, n, .); no Nq x Nk
    tensor is formed. Match.topk holds the reference indices of the topk candidates with the
    largest A before pruning; qp/kp None: no pruning."""
    _check(q, k, v, qp, kp, image, warp_mask)
    b, hw = q.shape[0], tuple(q.shape[-2:])
    nq, nk = hw[0] * hw[1], k.shape[-2] * k.shape[-1]
    if candidates.dim() != 3 or candidates.shape[:2] != (b, nq):
        raise ValueError(f"candidates {tuple(candidates.shape)} must be (B, Hq*Wq, n) = "
                         f"({b}, {nq}, n)")
    n = candidates.shape[2]
    maps = [k, v] + ([] if kp is None else [kp]) + ([] if image is None else [image])
    widths = [m.shape[1] for m in maps]
    flat = (candidates + nk * torch.arange(b, device=candidates.device)[:, None, None]).reshape(-1)
    gathered = _tokens(torch.cat(maps, 1)).reshape(b * nk, -1).index_select(0, flat)
    keys, values, *rest = gathered.view(b, nq, n, -1).split(widths, dim=-1)
    c = scale * torch.einsum("bqc,bqnc->bqn", _tokens(q), keys)  # Eq. 3-4 logits
    p = None if qp is None else prune_scale * torch.einsum("bqc,bqnc->bqn", _tokens(qp),
                                                           rest.pop(0))
    weights, warp_w, kept = _link_weights(c, p, warp=image is not None, eps=eps,
                                          warp_mask=warp_mask)
    record_scores(kind, b * nq * n, b * nq * n * sum(widths))
    record_kept(kind, kept.sum())
    warp = None if warp_w is None else _map(torch.einsum("bqn,bqnc->bqc", warp_w, rest[0]), hw)
    return Match(out=_map(torch.einsum("bqn,bqnc->bqc", weights, values), hw),
                 conf=weights.sum(-1).view(b, 1, *hw), warp=warp,
                 topk=candidates.gather(-1, _topk(c, topk, kind)), kept=kept, formed=n)
