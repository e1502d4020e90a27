"""DynaST's embedding module (Sec. 3.1, Eq. 1) and positional embedding (Appendix A, Eq. 16-17).

Eq. 1 reads `[E^j(S)' | 0 < j < M]`; with patch sizes 2^j and scales 0 <= i < M we take
0 <= j < M (every patch size, including 1x1), so the finest scale has its own embedding.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn


def conv_block(in_ch: int, out_ch: int) -> nn.Sequential:
    """conv 3x3 -> instance norm -> LeakyReLU(0.2): one of X's / Y's two blocks."""
    return nn.Sequential(nn.Conv2d(in_ch, out_ch, 3, padding=1), nn.InstanceNorm2d(out_ch),
                         nn.LeakyReLU(0.2))


class PatchEmbedding(nn.Module):
    """Eq. 1: F^i = X([E^j(S)' | 0 <= j < M]) for every scale i.

    E^j is a linear patch embedding with patch 2^j (a conv with kernel = stride = 2^j) to
    widths[j] channels; ' is a bilinear resize to scale i's side; X_i is two conv blocks to
    widths[i] channels."""

    def __init__(self, in_channels: int, widths: Sequence[int]) -> None:
        super().__init__()
        self.patches = nn.ModuleList(nn.Conv2d(in_channels, w, 2 ** j, stride=2 ** j)
                                     for j, w in enumerate(widths))
        total = sum(widths)
        self.mix = nn.ModuleList(nn.Sequential(conv_block(total, w), conv_block(w, w))
                                 for w in widths)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Features of every scale, finest (i = 0, the input side) first."""
        embedded = [e(x) for e in self.patches]
        out = []
        for i, mix in enumerate(self.mix):
            side = (x.shape[-2] >> i, x.shape[-1] >> i)
            resized = [e if e.shape[-2:] == side else
                       F.interpolate(e, size=side, mode="bilinear", align_corners=False)
                       for e in embedded]
            out.append(mix(torch.cat(resized, dim=1)))
        return out


class PositionalEmbedding(nn.Module):
    """Appendix A: pos_{M-1} is learned at the coarsest grid; pos_i = LReLU(Conv(Up(pos_{i+1})))
    (Eq. 17). Channels: widths[i] // ratio (the official code's C/4)."""

    def __init__(self, widths: Sequence[int], coarse_side: int, ratio: int) -> None:
        super().__init__()
        channels = [w // ratio for w in widths]
        self.coarse = nn.Parameter(torch.randn(1, channels[-1], coarse_side, coarse_side))
        self.ups = nn.ModuleList(nn.Conv2d(channels[i + 1], channels[i], 3, padding=1)
                                 for i in range(len(widths) - 1))
        self.channels = channels

    def forward(self, coarse_hw: tuple[int, int]) -> list[torch.Tensor]:
        """pos_i for every scale, finest first; the learned tensor is resized bilinearly when the
        coarsest grid differs from training's (inference at 512²)."""
        pos = self.coarse
        if pos.shape[-2:] != coarse_hw:
            pos = F.interpolate(pos, size=coarse_hw, mode="bilinear", align_corners=False)
        out = [pos]
        for conv in reversed(self.ups):
            up = F.interpolate(out[0], scale_factor=2, mode="bilinear", align_corners=False)
            out.insert(0, F.leaky_relu(conv(up), 0.2))  # Eq. 17
        return out
