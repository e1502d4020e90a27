"""CoCosNet-v2-style PatchMatch matching: the same-backbone peer DynaST is compared against
(DynaST Sec. 4.1, Table 1 and Fig. 5: a fixed number of candidates, no pruning; CoCosNet-v2 =
Zhou et al., ref. [69]).

Every query keeps a fixed number k of candidate reference positions (16), found by PatchMatch
from the previous level's top-1 match and refined by a recurrent ConvGRU:

1. Window (CoCosNet-v2 `correspondence.py`: top-1, search window 4, dilation 2, centring 1):
   around the top-1 position p, the window x window positions p + (i - c) * dilation with
   c = (window - 1) // 2 per axis, i.e. row offsets {-2, 0, 2, 4} x the same column offsets,
   row-major; each axis is clamped to the key grid, so a window at a border holds repeats.
2. `iterations` rounds of
   - propagation (PatchMatch): the query also takes the candidates of its 4 neighbours, each
     moved one key pixel towards the query (the left neighbour's (y, x) becomes (y, x + 1), ...);
     the query grid is replicate-padded, so every query gets 5 * n candidates;
   - evaluation: logits scale * q.k of all of them, the best k distinct positions kept, sorted
     (a repeated position is scored again but only kept once, unless the grid has fewer than
     k positions);
   - ConvGRU refinement (hidden 32): the GRU reads, per query, the softmax of the kept logits
     and the kept positions' offsets from the query (divided by the key grid's sides) and
     predicts one (dy, dx) per kept candidate; the candidate moves to round(clamp(y + dy,
     x + dx)). Its last layer starts at zero, so an untrained module runs plain PatchMatch.
3. Final attention over the k refined candidates: A = softmax(scale * q.k), out = sum A v,
   warp = sum A image, conf = 1 (nothing is pruned), topk = the candidates by descending logit.

Gradients. Propagation, evaluation and the rounding are discrete (no gradient). q, kf and v
get theirs from the final attention (exact gathers at the chosen positions), q and kf also
through the GRU's initial state (convs of q beside the keys at its top-1 position). The GRU
gets its gradient through the final logits by a straight-through term: each final logit adds
s~(y + dy, x + dx) minus the same value detached, s~ the bilinear interpolation of the four
corner logits (computed without gradient) around the unrounded refined position. The term is
zero in value (the logits are exactly scale * q.k at the rounded positions) and carries the
score's slope across the key cell to the last round's (dy, dx), and from there through the
recurrent state to every GRU parameter. (In CoCosNet-v2's `patch_match.py`, as we read it, the
indices after the GRU are formed under no_grad and only they reach the warp, so its GRU gets no
gradient from the matching; CoCosNet-v2 also propagates left/right and up/down as two steps in a
random order, keeping 16 of 48 candidates after each, where this module takes all 4 neighbours
at once and has no randomness.)

Cost: everything is gathered (no Hq*Wq x Hk*Wk tensor). `formed` counts the logits computed per
query for the matching: 5 * window^2 in round 1, 5 * k in each later round, k in the final
attention (416 with the defaults), repeats included. Recorded as
`record_scores("patch_match", B * Hq*Wq * formed, macs)`, macs = C per evaluated logit plus
C + Cv (+ image channels) per final logit; when gradients are on, the straight-through term's
4k corner logits per query go to "patch_match_surrogate". The ConvGRU's convolutions are not
counted.
"""

from __future__ import annotations

import torch
from torch import nn

from sparsegen.attention.all_to_all import record_scores
from sparsegen.attention.matching import Match

NEIGHBOURS = ((0, -1), (0, 1), (-1, 0), (1, 0))  # (dy, dx) of the left, right, upper, lower
#                                                   neighbour on the query grid
MOTION_CHANNELS = 64  # width of the features the GRU reads and of its offset head


def candidate_window(top1: torch.Tensor, grid: tuple[int, int], window: int = 4,
                     dilation: int = 2) -> torch.Tensor:
    """Flat key indices (..., window^2) around flat indices `top1` (...) on the (Hk, Wk) grid:
    offsets (i - (window - 1) // 2) * dilation per axis, row-major, each axis clamped."""
    hk, wk = grid
    steps = (torch.arange(window, device=top1.device) - (window - 1) // 2) * dilation
    rows = (top1.div(wk, rounding_mode="floor")[..., None] + steps).clamp(0, hk - 1)
    cols = (top1.remainder(wk)[..., None] + steps).clamp(0, wk - 1)
    return (rows[..., :, None] * wk + cols[..., None, :]).flatten(-2)


def propagated_candidates(cands: torch.Tensor, query_grid: tuple[int, int],
                          key_grid: tuple[int, int]) -> torch.Tensor:
    """PatchMatch propagation: (B, Hq*Wq, n) flat key indices -> (B, Hq*Wq, 5n), the query's own
    candidates then those of its left, right, upper and lower neighbour (replicate-padded), each
    moved one key pixel towards the query and clamped to the key grid."""
    hq, wq = query_grid
    hk, wk = key_grid
    qy = torch.arange(hq, device=cands.device)[:, None]
    qx = torch.arange(wq, device=cands.device)[None, :]
    ky, kx = cands.div(wk, rounding_mode="floor"), cands.remainder(wk)
    out = [cands]
    for dy, dx in NEIGHBOURS:
        nb = ((qy + dy).clamp(0, hq - 1) * wq + (qx + dx).clamp(0, wq - 1)).flatten()
        rows = (ky[:, nb] - dy).clamp(0, hk - 1)
        cols = (kx[:, nb] - dx).clamp(0, wk - 1)
        out.append(rows * wk + cols)
    return torch.cat(out, dim=-1)


def _gather(tokens: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """tokens (B, N, C), flat indices idx (B, ...) -> (B, ..., C)."""
    b, n, c = tokens.shape
    base = torch.arange(b, device=idx.device).view(b, *[1] * (idx.dim() - 1)) * n
    return tokens.reshape(b * n, c).index_select(0, (idx + base).flatten()).view(*idx.shape, c)


def _logits(qt: torch.Tensor, kt: torch.Tensor, idx: torch.Tensor, scale: float, chunk: int
            ) -> torch.Tensor:
    """scale * q.k for queries qt (B, Nq, C) and candidates idx (B, Nq, n), `chunk` candidates
    per gather so at most (B, Nq, chunk, C) keys are held at once."""
    return torch.cat([torch.einsum("bqc,bqnc->bqn", qt, _gather(kt, idx[..., s:s + chunk]))
                      for s in range(0, idx.shape[-1], chunk)], dim=-1) * scale


def best_distinct(cands: torch.Tensor, logits: torch.Tensor, k: int
                  ) -> tuple[torch.Tensor, torch.Tensor]:
    """The k highest-logit distinct candidates per query, sorted: (indices, logits) (B, Nq, k).
    A repeated position counts once; repeats fill the list only when fewer than k are distinct."""
    ordered, order = cands.sort(dim=-1, stable=True)
    repeat_sorted = torch.cat([torch.zeros_like(ordered[..., :1], dtype=torch.bool),
                               ordered[..., 1:] == ordered[..., :-1]], dim=-1)
    repeat = torch.empty_like(repeat_sorted).scatter_(-1, order, repeat_sorted)
    best = logits.masked_fill(repeat, float("-inf")).topk(k, dim=-1).indices
    return cands.gather(-1, best), logits.gather(-1, best)


class ConvGRUCell(nn.Module):
    """h' = (1 - z) h + z tanh(conv([r h, x])), z, r = sigmoid(conv([h, x])) with a `kernel`
    (rows, cols) convolution."""

    def __init__(self, hidden: int, inputs: int, kernel: tuple[int, int]) -> None:
        super().__init__()
        pad = (kernel[0] // 2, kernel[1] // 2)
        self.gates = nn.Conv2d(hidden + inputs, 2 * hidden, kernel, padding=pad)
        self.candidate = nn.Conv2d(hidden + inputs, hidden, kernel, padding=pad)

    def forward(self, h: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        z, r = torch.sigmoid(self.gates(torch.cat([h, x], dim=1))).chunk(2, dim=1)
        return (1 - z) * h + z * torch.tanh(self.candidate(torch.cat([r * h, x], dim=1)))


class OffsetRefiner(nn.Module):
    """The recurrent refinement: kept-candidate features (k softmax weights, 2k offsets) ->
    motion features -> a horizontal (1x5) then a vertical (5x1) ConvGRU step on the hidden state
    -> (dy, dx) per candidate, (B, 2k, Hq, Wq). The hidden state starts from [q, k at top-1]."""

    def __init__(self, channels: int, k: int, hidden: int) -> None:
        super().__init__()
        self.initial = nn.Sequential(
            nn.Conv2d(2 * channels, hidden, 3, padding=1), nn.ReLU(),
            nn.Conv2d(hidden, hidden, 3, padding=1), nn.Tanh())
        self.motion = nn.Sequential(
            nn.Conv2d(3 * k, MOTION_CHANNELS, 3, padding=1), nn.ReLU(),
            nn.Conv2d(MOTION_CHANNELS, MOTION_CHANNELS, 3, padding=1), nn.ReLU())
        self.rows = ConvGRUCell(hidden, MOTION_CHANNELS, (1, 5))
        self.cols = ConvGRUCell(hidden, MOTION_CHANNELS, (5, 1))
        self.head = nn.Sequential(
            nn.Conv2d(hidden, MOTION_CHANNELS, 3, padding=1), nn.ReLU(),
            nn.Conv2d(MOTION_CHANNELS, 2 * k, 3, padding=1))
        nn.init.zeros_(self.head[-1].weight)
        nn.init.zeros_(self.head[-1].bias)

    def start(self, q: torch.Tensor, k_at_top1: torch.Tensor) -> torch.Tensor:
        return self.initial(torch.cat([q, k_at_top1], dim=1))

    def forward(self, h: torch.Tensor, features: torch.Tensor
                ) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.motion(features)
        h = self.cols(self.rows(h, x), x)
        return h, self.head(h)


class PatchMatchAttention(nn.Module):
    """CoCosNet-v2-style matching (see the module docstring): `k` candidates per query from the
    top-1's window, `iterations` rounds of propagation, evaluation and ConvGRU refinement
    (`hidden` channels), then softmax attention over the k candidates."""

    def __init__(self, channels: int, k: int = 16, iterations: int = 5, hidden: int = 32,
                 window: int = 4, dilation: int = 2) -> None:
        super().__init__()
        if iterations < 1:
            raise ValueError(f"PatchMatchAttention: iterations {iterations} must be >= 1 (the "
                             f"GRU is trained through the last round's refinement)")
        if window < 1 or dilation < 1:
            raise ValueError(f"PatchMatchAttention: window {window} and dilation {dilation} "
                             f"must be >= 1")
        if not 1 <= k <= 5 * window * window:
            raise ValueError(f"PatchMatchAttention: k {k} must lie in [1, 5 * window^2 = "
                             f"{5 * window * window}] (the first round's candidates)")
        self.channels, self.k, self.iterations = channels, k, iterations
        self.window, self.dilation = window, dilation
        self.refiner = OffsetRefiner(channels, k, hidden)

    def formed_per_query(self) -> int:
        """Logits computed per query: 5 window^2 (round 1) + 5k per later round + k (final)."""
        return 5 * self.window ** 2 + 5 * self.k * (self.iterations - 1) + self.k

    def forward(self, q: torch.Tensor, kf: torch.Tensor, v: torch.Tensor, init: torch.Tensor,
                *, scale: float, image: torch.Tensor | None = None) -> Match:
        """q (B, C, Hq, Wq), kf (B, C, Hk, Wk), v (B, Cv, Hk, Wk), init (B, Hq*Wq, m) flat key
        indices on this grid (column 0 is the top-1), image (B, Ci, Hk, Wk) or None."""
        self._check(q, kf, v, init, image)
        b, c, hq, wq = q.shape
        hk, wk = kf.shape[-2:]
        nq, k = hq * wq, self.k
        qt, kt, vt = (t.flatten(2).transpose(1, 2) for t in (q, kf, v))
        top1 = init[..., 0]
        query_yx = torch.stack(torch.meshgrid(torch.arange(hq, device=q.device),
                                              torch.arange(wq, device=q.device),
                                              indexing="ij"), dim=-1).view(1, nq, 1, 2)
        sides = torch.tensor([hk - 1, wk - 1], device=q.device, dtype=q.dtype)

        h = self.refiner.start(q, _gather(kt, top1).transpose(1, 2).reshape(b, c, hq, wq))
        cands = candidate_window(top1, (hk, wk), self.window, self.dilation)
        for _ in range(self.iterations):
            with torch.no_grad():
                pool = propagated_candidates(cands, (hq, wq), (hk, wk))  # N(.) of DynaST Eq. 4
                kept, kept_logits = best_distinct(pool, _logits(qt, kt, pool, scale, k), k)
            yx = torch.stack([kept.div(wk, rounding_mode="floor"), kept.remainder(wk)], dim=-1)
            features = torch.cat([kept_logits.softmax(-1),
                                  ((yx - query_yx) / (sides + 1)).flatten(-2)], dim=-1)
            h, delta = self.refiner(h, _maps(features, hq, wq))
            moved = yx + delta.flatten(2).transpose(1, 2).reshape(b, nq, k, 2)
            moved = moved.clamp(torch.zeros_like(sides), sides)
            cands = (moved.detach().round().long() * torch.tensor([wk, 1], device=q.device)
                     ).sum(-1)

        logits = _logits(qt, kt, cands, scale, k)
        if moved.requires_grad:  # the straight-through term carrying the GRU's gradient
            logits = logits + _surrogate(qt, kt, moved, (hk, wk), scale, k)
            record_scores("patch_match_surrogate", b * nq * 4 * k, b * nq * 4 * k * c)
        order = logits.detach().argsort(dim=-1, descending=True, stable=True)
        cands, logits = cands.gather(-1, order), logits.gather(-1, order)
        attn = logits.softmax(-1)  # DynaST Eq. 4 over the k candidates; D = 1 (Eq. 7)
        out = torch.einsum("bqn,bqnc->bqc", attn, _gather(vt, cands))
        warp = None
        if image is not None:  # Eq. 12-13 with D = 1 and no epsilon
            warp = torch.einsum("bqn,bqnc->bqc", attn,
                                _gather(image.flatten(2).transpose(1, 2), cands))
            warp = warp.transpose(1, 2).reshape(b, -1, hq, wq)

        extra = 0 if image is None else image.shape[1]
        formed = self.formed_per_query()
        record_scores("patch_match", b * nq * formed,
                      b * nq * ((formed - k) * c + k * (c + v.shape[1] + extra)))
        return Match(out=out.transpose(1, 2).reshape(b, -1, hq, wq),
                     conf=q.new_ones(b, 1, hq, wq), warp=warp, topk=cands,
                     kept=q.new_full((b, nq), float(k)), formed=formed)

    def _check(self, q: torch.Tensor, kf: torch.Tensor, v: torch.Tensor, init: torch.Tensor,
               image: torch.Tensor | None) -> None:
        name = "PatchMatchAttention"
        if q.dim() != 4 or q.shape[1] != self.channels:
            raise ValueError(f"{name}: q has shape {tuple(q.shape)}, expected (B, "
                             f"{self.channels}, Hq, Wq)")
        if kf.dim() != 4 or kf.shape[:2] != q.shape[:2]:
            raise ValueError(f"{name}: kf has shape {tuple(kf.shape)}, expected "
                             f"({q.shape[0]}, {q.shape[1]}, Hk, Wk)")
        for role, t in (("v", v), ("image", image)):
            if t is not None and (t.dim() != 4 or t.shape[0] != q.shape[0]
                                  or t.shape[-2:] != kf.shape[-2:]):
                raise ValueError(f"{name}: {role} has shape {tuple(t.shape)}, expected "
                                 f"({q.shape[0]}, channels, {kf.shape[2]}, {kf.shape[3]})")
        nq, nk = q.shape[2] * q.shape[3], kf.shape[2] * kf.shape[3]
        if init.dim() != 3 or init.shape[:2] != (q.shape[0], nq) or init.shape[2] < 1:
            raise ValueError(f"{name}: init has shape {tuple(init.shape)}, expected "
                             f"({q.shape[0]}, {nq}, m >= 1)")
        if init.dtype != torch.long or init.min() < 0 or init.max() >= nk:
            raise ValueError(f"{name}: init must be int64 flat key indices in [0, {nk}) "
                             f"(dtype {init.dtype}, range [{int(init.min())}, "
                             f"{int(init.max())}])")


def _maps(features: torch.Tensor, hq: int, wq: int) -> torch.Tensor:
    """(B, Hq*Wq, F) per-query features -> (B, F, Hq, Wq) maps for the ConvGRU."""
    return features.transpose(1, 2).reshape(features.shape[0], -1, hq, wq)


def _surrogate(qt: torch.Tensor, kt: torch.Tensor, moved: torch.Tensor,
               grid: tuple[int, int], scale: float, chunk: int) -> torch.Tensor:
    """Straight-through term (B, Nq, k): the logit bilinearly interpolated at the continuous
    positions `moved` (B, Nq, k, 2) = (y, x) in key pixels, minus itself detached. Zero in value;
    only `moved` gets a gradient: the slope of the score across the key cell [y0, y0 + 1] x
    [x0, x0 + 1] holding the position (the last cell at the bottom and right borders). The four
    corner logits are computed without gradient."""
    hk, wk = grid
    with torch.no_grad():
        y0 = moved[..., 0].floor().clamp(0, max(hk - 2, 0)).long()
        x0 = moved[..., 1].floor().clamp(0, max(wk - 2, 0)).long()
        y1, x1 = (y0 + 1).clamp(max=hk - 1), (x0 + 1).clamp(max=wk - 1)
        corners = torch.stack([y0 * wk + x0, y0 * wk + x1, y1 * wk + x0, y1 * wk + x1], dim=-1)
        s00, s01, s10, s11 = _logits(qt, kt, corners.flatten(-2), scale, chunk).view(
            corners.shape).unbind(-1)
    fy, fx = moved[..., 0] - y0, moved[..., 1] - x0
    score = (1 - fy) * ((1 - fx) * s00 + fx * s01) + fy * ((1 - fx) * s10 + fx * s11)
    return score - score.detach()
