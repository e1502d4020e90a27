"""Hydra neighbourhood attention, StyleNAT Sec. 3.2, Fig. 2 and Appendix B (Fig. 6): the heads are
split into len(kernel_sizes) partitions, each running NA/DiNA with its own kernel size, dilation
and relative positional bias; the partitions' outputs are concatenated and projected.

The 4x4 level's MHSA with RPB is this module with kernel_sizes=[4], dilations=[1] on a 4x4 grid
(kernel == side is full attention; the (2*4-1)^2 table is indexed by the key-minus-query offset,
as the official MHSARPB's flipped index is)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from sparsegen.attention.neighborhood import (
    BACKENDS,
    neighborhood_attention,
    query_attention_map,
)


def head_splits(num_heads: int, partitions: int) -> list[int]:
    """Heads per partition: num_heads // partitions each, the remainder one extra head each to the
    last partitions (Fig. 6), e.g. 10 heads in 4 partitions -> [2, 2, 3, 3]."""
    if not 1 <= partitions <= num_heads:
        raise ValueError(f"Hydra-NA: {partitions} partitions need 1 <= partitions <= num_heads "
                         f"({num_heads})")
    base, extra = divmod(num_heads, partitions)
    return [base] * (partitions - extra) + [base + 1] * extra


class HydraNeighborhoodAttention(nn.Module):
    """x [B, H, W, C] -> [B, H, W, C]: qkv, per-partition NA/DiNA with RPB (q scaled by
    head_dim ** -0.5 unless qk_scale), softmax, attention dropout, concat, proj, proj dropout.

    A single kernel size or dilation is used for every partition given by the other list (as the
    official module does)."""

    def __init__(self, dim: int, num_heads: int, kernel_sizes: Sequence[int],
                 dilations: Sequence[int], qkv_bias: bool = True, qk_scale: float | None = None,
                 attn_drop: float = 0.0, proj_drop: float = 0.0, backend: str = "auto") -> None:
        super().__init__()
        kernel_sizes, dilations = list(kernel_sizes), list(dilations)
        if len(kernel_sizes) == 1:
            kernel_sizes = kernel_sizes * len(dilations)
        if len(dilations) == 1:
            dilations = dilations * len(kernel_sizes)
        if len(kernel_sizes) != len(dilations) or not kernel_sizes:
            raise ValueError(f"Hydra-NA: kernel_sizes {kernel_sizes} and dilations {dilations} "
                             "must be non-empty and of the same length (one per partition)")
        if num_heads < 1 or dim % num_heads:
            raise ValueError(f"Hydra-NA: dim {dim} is not divisible into {num_heads} heads")
        if backend not in BACKENDS or backend == "natten":
            allowed = [b for b in BACKENDS if b != "natten"]
            raise ValueError(f"Hydra-NA: backend {backend!r} is not one of {allowed} (Hydra-NA "
                             "adds a relative positional bias, which NATTEN >= 0.20 lacks)")
        self.num_heads, self.head_dim = num_heads, dim // num_heads
        self.kernel_sizes, self.dilations = kernel_sizes, dilations
        self.head_splits = head_splits(num_heads, len(kernel_sizes))
        self.scale = self.head_dim ** -0.5 if qk_scale is None else qk_scale
        self.backend = backend
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.rpb = nn.ParameterList(
            nn.Parameter(torch.empty(heads, 2 * k - 1, 2 * k - 1))
            for heads, k in zip(self.head_splits, kernel_sizes, strict=True))
        for table in self.rpb:
            nn.init.trunc_normal_(table, std=0.02, a=-2.0, b=2.0)
        self.attn_drop = nn.Dropout(attn_drop)
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(proj_drop)

    def _qkv(self, x: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
        """Per partition (q, k, v), each [B, H, W, heads_g, head_dim]."""
        if x.dim() != 4 or x.shape[-1] != self.num_heads * self.head_dim:
            raise ValueError(f"Hydra-NA: x must be [B, H, W, {self.num_heads * self.head_dim}], "
                             f"got shape {tuple(x.shape)}")
        q, k, v = self.qkv(x).unflatten(-1, (3, self.num_heads, self.head_dim)).unbind(3)
        return list(zip(*(t.split(self.head_splits, dim=3) for t in (q, k, v)), strict=True))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        dropout = self.attn_drop.p if self.training else 0.0
        out = [neighborhood_attention(q, k, v, kernel, dilation, rpb, scale=self.scale,
                                      backend=self.backend, dropout=dropout)
               for (q, k, v), kernel, dilation, rpb
               in zip(self._qkv(x), self.kernel_sizes, self.dilations, self.rpb, strict=True)]
        return self.proj_drop(self.proj(torch.cat(out, dim=3).flatten(3)))

    @torch.no_grad()
    def attention_map(self, x: torch.Tensor, query: tuple[int, int]) -> torch.Tensor:
        """Softmax weights of the query at (row, col) over the grid for every head, [heads, H, W]
        (zero outside each partition's neighbourhood); x is [1, H, W, C]."""
        if x.dim() != 4 or x.shape[0] != 1:
            raise ValueError(f"Hydra-NA attention_map: x must be one map [1, H, W, C], got shape "
                             f"{tuple(x.shape)}")
        maps = [query_attention_map(q, k, query, kernel, dilation, rpb, scale=self.scale)[0]
                for (q, k, _), kernel, dilation, rpb
                in zip(self._qkv(x), self.kernel_sizes, self.dilations, self.rpb, strict=True)]
        return torch.cat(maps)
