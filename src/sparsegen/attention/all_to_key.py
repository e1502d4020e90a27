"""All-to-key attention (StyA2K, Eq. 6-12, Alg. 1): distributed and progressive attention.

Both branches work on blocked tensors (B, heads, n, r, d) from `blocking.block`:

- distributed attention (DA, Eq. 7), `dilated` form: the query at in-block offset y of block x
  attends to the keys at offset y of every style block z (softmax over z). `aggregated` form
  (official code): each style block is summarised by one sigmoid-weighted key/value and every
  query attends over the n block summaries.
- progressive attention (PA): step 1 (Eq. 8-9) scores query block x against every key block z
  by the position-aligned dot product summed over channels and offsets, takes the argmax and
  gathers ("reshuffles") that block's keys and values; step 2 (Eq. 10) lets each query attend
  to the r keys of its matched block.

Content and style maps may differ in size; the block size (in pixels) is shared.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from sparsegen.attention.all_to_all import attend, moments_to_stats, record_scores, with_squares
from sparsegen.attention.blocking import block, unblock
from sparsegen.nets.feature_stats import mean_variance_norm

BLOCK_MODES = ("size", "count")
DA_FORMS = ("dilated", "aggregated")


@dataclass(frozen=True)
class A2KSpec:
    """How one layer's all-to-key attention is configured.

    block: pixels per block side (block_mode 'size': Alg. 2 and the official code) or blocks per
    side of the content map (block_mode 'count': the b^l of Eq. 6)."""

    block: int
    block_mode: str = "size"
    heads: int = 8
    distributed: bool = True
    progressive: bool = True
    pa_step1: bool = True
    da_form: str = "dilated"
    layer: str = "feature"  # named in error messages

    def __post_init__(self) -> None:
        if self.block_mode not in BLOCK_MODES:
            raise ValueError(f"{self.layer}: block_mode {self.block_mode!r} not in {BLOCK_MODES}")
        if self.da_form not in DA_FORMS:
            raise ValueError(f"{self.layer}: da_form {self.da_form!r} not in {DA_FORMS}")
        if not (self.distributed or self.progressive):
            raise ValueError(f"{self.layer}: all-to-key attention needs DA or PA (both are off)")
        if self.block < 1 or self.heads < 1:
            raise ValueError(f"{self.layer}: block {self.block} and heads {self.heads} must be "
                             f">= 1")


def block_shape(spec: A2KSpec, content_hw: tuple[int, int], style_hw: tuple[int, int]
                ) -> tuple[int, int]:
    """Block size in pixels (height, width) shared by the content and the style map."""
    if spec.block_mode == "size":
        size = (spec.block, spec.block)
    else:
        for side_name, side in zip(("height", "width"), content_hw, strict=True):
            if side % spec.block:
                raise ValueError(f"{spec.layer}: content feature {side_name} {side} is not "
                                 f"divisible by the block count {spec.block} (block_mode count)")
        size = (content_hw[0] // spec.block, content_hw[1] // spec.block)
    for role, hw in (("content", content_hw), ("style", style_hw)):
        for side_name, side, s in zip(("height", "width"), hw, size, strict=True):
            if side % s:
                raise ValueError(f"{spec.layer}: {role} feature {side_name} {side} is not "
                                 f"divisible by the block size {s} pixels")
    return size


def _distributed_tokens(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, form: str,
                        alpha: torch.Tensor | float, beta: torch.Tensor | float) -> torch.Tensor:
    """DA on blocked tokens q (B, h, nq, r, d), k (B, h, nk, r, d), v (B, h, nk, r, dv)."""
    b, h, nq, r, _ = q.shape
    if form == "dilated":
        # Eq. 7: attention along the first (block) axis at a fixed in-block offset y.
        out = attend(q.transpose(2, 3), k.transpose(2, 3), v.transpose(2, 3), "da")
        return out.transpose(2, 3)
    # Official code: block centre k_mean, weights s_j = sigmoid(beta + alpha <k_mean, k_j>),
    # summary (sum_j s_j k_j + k_mean) / (r + 1), likewise for the values.
    k_mean, v_mean = k.mean(3), v.mean(3)
    s = torch.sigmoid(beta + alpha * torch.einsum("bhnd,bhnrd->bhnr", k_mean, k))
    k_sum = (torch.einsum("bhnr,bhnrd->bhnd", s, k) + k_mean) / (r + 1)
    v_sum = (torch.einsum("bhnr,bhnrd->bhnd", s, v) + v_mean) / (r + 1)
    return attend(q.reshape(b, h, nq * r, -1), k_sum, v_sum, "da").reshape(b, h, nq, r, -1)


def _progressive_tokens(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, step1: bool
                        ) -> torch.Tensor:
    """PA on blocked tokens (shapes as in `_distributed_tokens`)."""
    b, h, nq, r, d = q.shape
    nk = k.shape[2]
    if step1:
        # Eq. 8: patch-wise score of query block x and key block z, sum over offsets and channels.
        scores = q.flatten(3) @ k.flatten(3).transpose(-2, -1)  # (B, h, nq, nk)
        record_scores("pa_step1", scores.numel(), scores.numel() * r * d)
        index = scores.argmax(-1)
        # Eq. 9: reshuffle keys and values so that block x holds its matched style block.
        k = torch.gather(k, 2, index[..., None, None].expand(b, h, nq, r, d))
        v = torch.gather(v, 2, index[..., None, None].expand(b, h, nq, r, v.shape[-1]))
    elif nq != nk:
        raise ValueError(f"PA without step 1 pairs query block x with key block x: content has "
                         f"{nq} blocks, style {nk}; use content and style of the same size")
    # Eq. 10: point-wise attention along the second (in-block) axis.
    return attend(q, k, v, "pa_step2")


def _blocked(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, size: tuple[int, int],
             heads: int, stats: bool) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    qt, kt, vt = (block(x, size, heads) for x in (q, k, v))
    return qt, kt, with_squares(vt) if stats else vt  # Eq. 19 needs both moments


def _finish(out: torch.Tensor, size: tuple[int, int], hw: tuple[int, int], stats: bool
            ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    if not stats:
        return unblock(out, size, hw)  # U(.) of Eq. 11
    mean, std = moments_to_stats(out)
    return unblock(mean, size, hw), unblock(std, size, hw)


def distributed(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, size: tuple[int, int],
                heads: int, form: str = "dilated", alpha: torch.Tensor | float = 1.0,
                beta: torch.Tensor | float = 0.0, stats: bool = False
                ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """Distributed attention on maps q (B, E, Hq, Wq), k (B, E, Hk, Wk), v (B, Ev, Hk, Wk).

    Returns U(D_attn ⊗ B(v)) (Eq. 11), or with `stats` the weighted mean and std (Eq. 19)."""
    qt, kt, vt = _blocked(q, k, v, size, heads, stats)
    return _finish(_distributed_tokens(qt, kt, vt, form, alpha, beta), size,
                   tuple(q.shape[-2:]), stats)


def progressive(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, size: tuple[int, int],
                heads: int, step1: bool = True, stats: bool = False
                ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """Progressive attention on maps (shapes as `distributed`): U(P_attn ⊗ reshuffled B(v))."""
    qt, kt, vt = _blocked(q, k, v, size, heads, stats)
    return _finish(_progressive_tokens(qt, kt, vt, step1), size, tuple(q.shape[-2:]), stats)


class _Branch(nn.Module):
    """The 1x1 convs of one branch: query, key, value and the Unblocking-Conv (Eq. 11)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.q, self.k, self.v, self.fusion = (nn.Conv2d(channels, channels, 1) for _ in range(4))


class AllToKeyAttention(nn.Module):
    """The learnable A2K module M_A2K (Eq. 2, Alg. 1): F_cs = F_cs,D + F_cs,P + F_c (Eq. 12)."""

    def __init__(self, channels: int, spec: A2KSpec) -> None:
        super().__init__()
        self.spec = spec
        self.da = _Branch(channels) if spec.distributed else None
        self.pa = _Branch(channels) if spec.progressive else None
        if spec.distributed and spec.da_form == "aggregated":
            self.alpha = nn.Parameter(torch.tensor(1.0))
            self.beta = nn.Parameter(torch.tensor(0.0))

    def forward(self, content: torch.Tensor, style: torch.Tensor) -> torch.Tensor:
        spec = self.spec
        size = block_shape(spec, tuple(content.shape[-2:]), tuple(style.shape[-2:]))
        content_n, style_n = mean_variance_norm(content), mean_variance_norm(style)
        out = content
        if self.da is not None:  # Eq. 6-7, 11
            aggregated = spec.da_form == "aggregated"
            d = distributed(self.da.q(content_n), self.da.k(style_n), self.da.v(style), size,
                            spec.heads, spec.da_form, self.alpha if aggregated else 1.0,
                            self.beta if aggregated else 0.0)
            out = out + self.da.fusion(d)
        if self.pa is not None:  # Eq. 8-11
            p = progressive(self.pa.q(content_n), self.pa.k(style_n), self.pa.v(style), size,
                            spec.heads, spec.pa_step1)
            out = out + self.pa.fusion(p)
        return out


def a2k_star(queries: torch.Tensor, keys: torch.Tensor, values: torch.Tensor,
             content: torch.Tensor, spec: A2KSpec) -> torch.Tensor:
    """M_A2K* of Eq. 15: the parameter-free module U(DA) + U(PA) + F_c.

    queries = N(F_c), keys = N(F_s) (Eq. 6; or multi-layer keys), values = F_s, content = F_c."""
    size = block_shape(spec, tuple(content.shape[-2:]), tuple(values.shape[-2:]))
    out = content
    if spec.distributed:
        out = out + distributed(queries, keys, values, size, spec.heads, spec.da_form)
    if spec.progressive:
        out = out + progressive(queries, keys, values, size, spec.heads, spec.pa_step1)
    return out


def adaa2k_star(queries: torch.Tensor, keys: torch.Tensor, values: torch.Tensor,
                content: torch.Tensor, spec: A2KSpec) -> torch.Tensor:
    """M_AdaA2K* of Eq. 16/19: (S_d + S_p) * N(F_c) + (M_d + M_p), parameter-free."""
    size = block_shape(spec, tuple(content.shape[-2:]), tuple(values.shape[-2:]))
    parts = []
    if spec.distributed:
        parts.append(distributed(queries, keys, values, size, spec.heads, spec.da_form,
                                 stats=True))
    if spec.progressive:
        parts.append(progressive(queries, keys, values, size, spec.heads, spec.pa_step1,
                                 stats=True))
    mean = sum(m for m, _ in parts)
    std = sum(s for _, s in parts)
    return std * mean_variance_norm(content) + mean


def _paint(values: torch.Tensor, size: tuple[int, int], hw: tuple[int, int]) -> torch.Tensor:
    """(heads, n, r) per-key values -> (H, W) style map, averaged over heads."""
    return unblock(values[None, ..., None], size, hw)[0].mean(0)


def inspect_query(content_feat: torch.Tensor, style_feat: torch.Tensor, block_size: int,
                  query_yx: tuple[int, int], heads: int = 1) -> dict[str, torch.Tensor]:
    """Attention maps of one content position over the style map (Fig. 5 (b),(c),(e)-(i)).

    Parameter-free: queries N(F_c), keys N(F_s). Every map is (Hs, Ws), zero where a key is not
    attended; with several heads the maps are averaged over heads."""
    c = content_feat if content_feat.dim() == 4 else content_feat[None]
    s = style_feat if style_feat.dim() == 4 else style_feat[None]
    if c.shape[0] != 1 or s.shape[0] != 1:
        raise ValueError("inspect_query takes one content and one style feature map")
    size = (block_size, block_size)
    spec = A2KSpec(block=block_size, heads=heads, layer="inspect_query")
    hq, wq = c.shape[-2:]
    hs, ws = s.shape[-2:]
    block_shape(spec, (hq, wq), (hs, ws))
    y, x = query_yx
    if not (0 <= y < hq and 0 <= x < wq):
        raise ValueError(f"query {query_yx} outside the {hq}x{wq} content map")
    qn, kn = mean_variance_norm(c).float(), mean_variance_norm(s).float()
    qb, kb = block(qn, size, heads)[0], block(kn, size, heads)[0]  # (h, n, r, d)
    bx = (y // block_size) * (wq // block_size) + x // block_size
    by = (y % block_size) * block_size + x % block_size
    query = qb[:, bx, by]  # (h, d)

    dense = torch.einsum("hd,hnrd->hnr", query, kb)
    dense_soft = torch.softmax(dense.flatten(1), -1).view_as(dense)
    n = kb.shape[1]
    da = torch.zeros_like(dense)
    da[:, :, by] = dense[:, :, by]
    da_soft = torch.zeros_like(dense)
    da_soft[:, :, by] = torch.softmax(dense[:, :, by], -1)  # Eq. 7
    block_scores = torch.einsum("hrd,hnrd->hn", qb[:, bx], kb)  # Eq. 8
    chosen = block_scores.argmax(-1)  # (h,)
    heads_idx = torch.arange(kb.shape[0])
    argmax = torch.zeros_like(block_scores)
    argmax[heads_idx, chosen] = 1.0
    pa_soft = torch.zeros_like(dense)
    pa_soft[heads_idx, chosen] = torch.softmax(dense[heads_idx, chosen], -1)  # Eq. 10
    r = kb.shape[2]
    return {
        "all_to_all_logits": _paint(dense, size, (hs, ws)),
        "all_to_all_softmax": _paint(dense_soft, size, (hs, ws)),
        "da_logits": _paint(da, size, (hs, ws)),
        "da_softmax": _paint(da_soft, size, (hs, ws)),
        "pa_block_scores": _paint(block_scores[..., None].expand(-1, n, r), size, (hs, ws)),
        "pa_block_argmax": _paint(argmax[..., None].expand(-1, n, r), size, (hs, ws)),
        "pa_softmax": _paint(pa_soft, size, (hs, ws)),
    }
