"""Per-position normalisations of (B, C, H, W) feature maps: statistics over channels only.

`ChannelLayerNorm` is the "Norm" (layer normalisation) of DynaST Eq. 8-9 applied to image
features: at every pixel the C-vector is standardised and an optional per-channel affine is
applied, exactly as `nn.LayerNorm(C)` on the channels-last tensor. `positional_norm` is
positional normalisation (PONO, Li et al. 2019) as DynaST's official code writes it: the same
per-pixel standardisation without affine, but with the unbiased variance and eps 1e-8.
"""

from __future__ import annotations

import torch
from torch import nn


class ChannelLayerNorm(nn.Module):
    """LayerNorm over the channels at each position of a (B, C, H, W) map (biased variance)."""

    def __init__(self, channels: int, eps: float = 1e-5, affine: bool = True) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(channels)) if affine else None
        self.bias = nn.Parameter(torch.zeros(channels)) if affine else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mean = x.mean(dim=1, keepdim=True)
        var = x.var(dim=1, keepdim=True, unbiased=False)
        x = (x - mean) * torch.rsqrt(var + self.eps)
        if self.weight is None:
            return x
        return x * self.weight[:, None, None] + self.bias[:, None, None]


def positional_norm(x: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """PONO: (x - mean_C) / sqrt(var_C + eps) at each pixel of (B, C, H, W); the variance is the
    unbiased one (divisor C - 1), as in the official DynaST/CoCosNet code."""
    mean = x.mean(dim=1, keepdim=True)
    var = x.var(dim=1, keepdim=True, unbiased=True)
    return (x - mean) / (var + eps).sqrt()
