"""Spatially-adaptive normalisation (SPADE, Park et al. 2019) and the SPADE residual block.

SPADE normalises x without learned affine and re-modulates it per pixel from a label map S:
    SPADE(x, S) = norm(x) * (1 + gamma(S)) + beta(S),
    gamma, beta = conv3x3(h), conv3x3(h),  h = ReLU(conv3x3(S resized nearest to x)).
The parameter-free norm is selectable: 'batch' (the SPADE paper), 'instance', or 'positional'
(PONO over channels per pixel, as DynaST's official code; see `norms.positional_norm`).

DynaST (Sec. 3.2) uses SPADE both as the fallback branch SP(.) of its attention (Eq. 8) and in
the residual blocks that embed queries/keys. Its official variant differs from Park et al.:
hidden width = feature width, reflect padding, PReLU (one shared) and a final PReLU after the
residual sum; all of that is selectable here.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm

from sparsegen.nets.norms import positional_norm

Norm = Literal["batch", "instance", "positional"]
Activation = Literal["leaky_relu", "prelu"]
PaddingMode = Literal["zeros", "reflect"]
NORMS = ("batch", "instance", "positional")
ACTIVATIONS = ("leaky_relu", "prelu")


class SPADE(nn.Module):
    """x -> norm(x) * (1 + gamma(S)) + beta(S) for x (B, channels, H, W) and a label map S
    (B, label_channels, h, w), resized nearest to (H, W) when its size differs.

    `norm`: 'batch' (default, as the SPADE paper; running statistics, no affine), 'instance'
    (no affine, no running statistics) or 'positional' (PONO, DynaST's official code).
    `hidden`: width of the shared label embedding (128 in SPADE; DynaST uses `channels`).
    """

    def __init__(self, channels: int, label_channels: int, hidden: int = 128,
                 norm: Norm = "batch", padding_mode: PaddingMode = "zeros") -> None:
        super().__init__()
        if norm not in NORMS:
            raise ValueError(f"SPADE: norm={norm!r}, expected one of {NORMS}")
        self.norm = norm
        self.param_free_norm = (nn.BatchNorm2d(channels, affine=False) if norm == "batch"
                                else nn.InstanceNorm2d(channels) if norm == "instance"
                                else None)
        conv = dict(kernel_size=3, padding=1, padding_mode=padding_mode)
        self.shared = nn.Sequential(nn.Conv2d(label_channels, hidden, **conv), nn.ReLU())
        self.gamma = nn.Conv2d(hidden, channels, **conv)
        self.beta = nn.Conv2d(hidden, channels, **conv)

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        """The parameter-free normalisation of x alone."""
        return positional_norm(x) if self.param_free_norm is None else self.param_free_norm(x)

    def forward(self, x: torch.Tensor, label: torch.Tensor) -> torch.Tensor:
        if label.shape[-2:] != x.shape[-2:]:
            label = F.interpolate(label, size=x.shape[-2:], mode="nearest")
        h = self.shared(label)
        return self.normalize(x) * (1 + self.gamma(h)) + self.beta(h)


class SPADEResBlock(nn.Module):
    """SPADE ResBlk: x + conv(act(SPADE(conv(act(SPADE(x, S))), S))), middle width
    min(in_ch, out_ch); when in_ch != out_ch the shortcut is conv1x1(SPADE(x, S)) without bias
    (Park et al.), else the identity. `spectral` wraps every conv in spectral normalisation.

    `activation`: 'leaky_relu' (slope 0.2, SPADE) or 'prelu' (one PReLU shared by all uses, as
    DynaST's official block); `final_activation` applies it once more after the residual sum
    (DynaST's official block). `hidden`, `norm`, `padding_mode` go to the SPADE layers; the
    3x3 convs use `padding_mode` too (DynaST: 'reflect').
    """

    def __init__(self, in_ch: int, out_ch: int, label_channels: int, hidden: int = 128,
                 norm: Norm = "batch", spectral: bool = True,
                 activation: Activation = "leaky_relu", final_activation: bool = False,
                 padding_mode: PaddingMode = "zeros") -> None:
        super().__init__()
        if activation not in ACTIVATIONS:
            raise ValueError(f"SPADEResBlock: activation={activation!r}, expected one of "
                             f"{ACTIVATIONS}")
        mid = min(in_ch, out_ch)
        wrap = spectral_norm if spectral else (lambda m: m)
        spade = dict(label_channels=label_channels, hidden=hidden, norm=norm,
                     padding_mode=padding_mode)
        self.norm_0 = SPADE(in_ch, **spade)
        self.conv_0 = wrap(nn.Conv2d(in_ch, mid, 3, padding=1, padding_mode=padding_mode))
        self.norm_1 = SPADE(mid, **spade)
        self.conv_1 = wrap(nn.Conv2d(mid, out_ch, 3, padding=1, padding_mode=padding_mode))
        if in_ch != out_ch:
            self.norm_s = SPADE(in_ch, **spade)
            self.conv_s = wrap(nn.Conv2d(in_ch, out_ch, 1, bias=False))
        self.act = nn.LeakyReLU(0.2) if activation == "leaky_relu" else nn.PReLU()
        self.final_activation = final_activation

    def shortcut(self, x: torch.Tensor, label: torch.Tensor) -> torch.Tensor:
        return self.conv_s(self.norm_s(x, label)) if hasattr(self, "conv_s") else x

    def forward(self, x: torch.Tensor, label: torch.Tensor) -> torch.Tensor:
        dx = self.conv_0(self.act(self.norm_0(x, label)))
        dx = self.conv_1(self.act(self.norm_1(dx, label)))
        out = self.shortcut(x, label) + dx
        return self.act(out) if self.final_activation else out
