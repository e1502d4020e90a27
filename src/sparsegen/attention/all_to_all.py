"""Dense (all-to-all) attention, StyA2K Eq. 4-5, and the softmax-attention primitive that every
attention form in this package calls.

`attend` is softmax(Q K^T) V over the last two axes (no 1/sqrt(d) scaling: Eq. 5 has none).
It runs through `F.scaled_dot_product_attention` (fused kernels on GPU, scores never
materialised) or, under `attention_backend("explicit")`, as einsum + softmax as in Alg. 1.
`count_scores()` records how many query-key scores each attention form computes (and, for forms
that prune links, how many links they keep).
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from sparsegen.attention.blocking import block, unblock
from sparsegen.nets.feature_stats import EPS, mean_variance_norm

BACKENDS = ("sdpa", "explicit")
MAX_GRID = 65535
_state: dict[str, object] = {"backend": "sdpa", "counters": []}


@dataclass
class ScoreCount:
    """Query-key scores (logit entries), multiply-accumulates and kept (unpruned) links per
    attention kind."""

    scores: dict[str, int] = field(default_factory=dict)
    macs: dict[str, int] = field(default_factory=dict)
    kept: dict[str, int] = field(default_factory=dict)

    @property
    def total_scores(self) -> int:
        return sum(self.scores.values())

    @property
    def total_macs(self) -> int:
        return sum(self.macs.values())


@contextmanager
def count_scores() -> Iterator[ScoreCount]:
    """Count the scores formed by every attention call inside the block."""
    counter = ScoreCount()
    counters = _state["counters"]
    assert isinstance(counters, list)
    counters.append(counter)
    try:
        yield counter
    finally:
        counters.remove(counter)


def record_scores(kind: str, scores: int, macs: int) -> None:
    """Add `scores` logit entries costing `macs` multiply-accumulates to the active counters."""
    for counter in _state["counters"]:  # type: ignore[attr-defined]
        counter.scores[kind] = counter.scores.get(kind, 0) + scores
        counter.macs[kind] = counter.macs.get(kind, 0) + macs


def record_kept(kind: str, links: int | torch.Tensor) -> None:
    """Add `links` kept (unpruned) query-key links to the active counters. A tensor count is
    read (a device sync) only when a counter is active."""
    for counter in _state["counters"]:  # type: ignore[attr-defined]
        counter.kept[kind] = counter.kept.get(kind, 0) + int(links)


@contextmanager
def attention_backend(name: str) -> Iterator[None]:
    """Run `attend` with `name`: 'sdpa' (default) or 'explicit' (materialised, as Alg. 1)."""
    if name not in BACKENDS:
        raise ValueError(f"attention backend {name!r} is not one of {BACKENDS}")
    previous = _state["backend"]
    _state["backend"] = name
    try:
        yield
    finally:
        _state["backend"] = previous


def attend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, kind: str = "dense"
           ) -> torch.Tensor:
    """softmax(q k^T) v: q (..., Lq, E), k (..., Lk, E), v (..., Lk, Ev) -> (..., Lq, Ev)."""
    *lead, lq, e = q.shape
    lk, ev = k.shape[-2], v.shape[-1]
    n = math.prod(lead) * lq * lk
    record_scores(kind, n, n * (e + ev))
    if _state["backend"] == "explicit":
        return torch.softmax(q @ k.transpose(-2, -1), dim=-1) @ v
    # Fused kernels take (N, H, L, E); fold every leading axis into H.
    shape4 = (lead[0] if lead else 1, -1)
    out = _sdpa(q.reshape(*shape4, lq, e), k.reshape(*shape4, lk, e), v.reshape(*shape4, lk, ev))
    return out.reshape(*lead, lq, ev)


def _sdpa(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Unscaled SDPA on (N, H, L, E); H is processed in chunks of at most MAX_GRID (the CUDA grid
    limit the fused kernels map heads onto). Fused kernels need a unit stride on E."""
    if q.shape[1] > MAX_GRID:
        return torch.cat([_sdpa(q[:, i:i + MAX_GRID], k[:, i:i + MAX_GRID], v[:, i:i + MAX_GRID])
                          for i in range(0, q.shape[1], MAX_GRID)], dim=1)
    return F.scaled_dot_product_attention(q.contiguous(), k.contiguous(), v.contiguous(),
                                          scale=1.0)


def with_squares(v: torch.Tensor) -> torch.Tensor:
    """Values and their squares side by side, so one attention pass yields both moments."""
    return torch.cat([v, v * v], dim=-1)


def moments_to_stats(out: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Attended `with_squares` values -> mean M and std S = sqrt(E_attn[v^2] - M^2) (Eq. 18).

    EPS is added under the root (as in `mean_std`): without it a zero weighted variance gives
    an infinite gradient, which turns AdaAttN training to NaN."""
    mean, second = out.chunk(2, dim=-1)
    return mean, ((second - mean * mean).clamp_min(0) + EPS).sqrt()


def attend_stats(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, kind: str = "dense"
                 ) -> tuple[torch.Tensor, torch.Tensor]:
    """Attention-weighted mean and standard deviation of the values (Eq. 18)."""
    return moments_to_stats(attend(q, k, with_squares(v), kind))


def _tokens(x: torch.Tensor, heads: int) -> torch.Tensor:
    """(B, C, H, W) -> (B, heads, HW, C/heads): one block covering the whole map."""
    return block(x, tuple(x.shape[-2:]), heads)[:, :, 0]


def _untokens(t: torch.Tensor, hw: tuple[int, int]) -> torch.Tensor:
    return unblock(t[:, :, None], hw, hw)


def dense_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, heads: int
                    ) -> torch.Tensor:
    """Eq. 5 on maps: every query position attends to every key position, per head."""
    out = attend(_tokens(q, heads), _tokens(k, heads), _tokens(v, heads), "dense")
    return _untokens(out, tuple(q.shape[-2:]))


def dense_stats(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, heads: int
                ) -> tuple[torch.Tensor, torch.Tensor]:
    """Eq. 18 on maps: all-to-all attention-weighted mean and std of the values."""
    hw = tuple(q.shape[-2:])
    mean, std = attend_stats(_tokens(q, heads), _tokens(k, heads), _tokens(v, heads), "dense")
    return _untokens(mean, hw), _untokens(std, hw)


class AllToAllAttention(nn.Module):
    """The all-to-all peer of the A2K module (Table 2): the same learnable 1x1 convs, dense
    attention over all style positions: out = fusion(softmax(Q K^T) V) + F_c (Eq. 4-5)."""

    def __init__(self, channels: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.q, self.k, self.v, self.fusion = (nn.Conv2d(channels, channels, 1) for _ in range(4))

    def forward(self, content: torch.Tensor, style: torch.Tensor) -> torch.Tensor:
        q = self.q(mean_variance_norm(content))  # Eq. 4
        k = self.k(mean_variance_norm(style))
        return self.fusion(dense_attention(q, k, self.v(style), self.heads)) + content
