"""StyleSwin's wavelet discriminator, used unchanged by StyleNAT (official `sn: True` setting).

The image enters as its Haar wavelet sub-bands (half resolution, 12 channels). At every scale a
FromRGB reads the sub-bands of the image at that scale (inverse Haar, blur-downsample, Haar,
1x1 conv) and adds them to the running features, which a ConvBlock (3x3 conv, blurred stride-2
3x3 conv) halves. At 4x4: minibatch standard deviation, 3x3 conv, two linear layers -> one logit.
Every conv and linear layer is spectrally normalised (in place of equalised learning rate).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm

from sparsegen.models.stylenat import architecture as arch
from sparsegen.models.stylenat.layers import BLUR_KERNEL, Blur, FusedLeakyReLU

STDDEV_GROUP = 4    # minibatch standard deviation over groups of up to 4 samples, 1 feature
FINAL_SIDE = 4


def haar_dwt(x: torch.Tensor) -> torch.Tensor:
    """Orthonormal 2-D Haar transform [B, C, H, W] -> [B, 4C, H/2, W/2], sub-bands ordered
    (LL, LH, HL, HH); LH differences rows (top - bottom), HL columns (left - right)."""
    a, b = x[..., 0::2, 0::2], x[..., 0::2, 1::2]
    c, d = x[..., 1::2, 0::2], x[..., 1::2, 1::2]
    return torch.cat([a + b + c + d, a + b - c - d, a - b + c - d, a - b - c + d], dim=1) / 2


def haar_iwt(x: torch.Tensor) -> torch.Tensor:
    """Inverse of `haar_dwt`: [B, 4C, H, W] -> [B, C, 2H, 2W]."""
    ll, lh, hl, hh = x.chunk(4, dim=1)
    a = (ll + lh + hl + hh) / 2
    b = (ll + lh - hl - hh) / 2
    c = (ll - lh + hl - hh) / 2
    d = (ll - lh - hl + hh) / 2
    top = torch.stack([a, b], dim=-1).flatten(-2)       # interleave columns
    bottom = torch.stack([c, d], dim=-1).flatten(-2)
    return torch.stack([top, bottom], dim=-2).flatten(-3, -2)  # interleave rows


class ConvLayer(nn.Sequential):
    """[blur ->] spectrally normalised conv (no bias; stride 2 when downsampling) -> bias +
    scaled leaky ReLU."""

    def __init__(self, cin: int, cout: int, kernel_size: int, downsample: bool = False) -> None:
        layers: list[nn.Module] = []
        if downsample:
            p = len(BLUR_KERNEL) - 2 + kernel_size - 1
            layers.append(Blur(pad=((p + 1) // 2, p // 2)))
            conv = nn.Conv2d(cin, cout, kernel_size, stride=2, bias=False)
        else:
            conv = nn.Conv2d(cin, cout, kernel_size, padding=kernel_size // 2, bias=False)
        super().__init__(*layers, spectral_norm(conv), FusedLeakyReLU(cout))


class ConvBlock(nn.Module):
    """3x3 conv at the input width, then a blurred stride-2 3x3 conv to the output width."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.conv1 = ConvLayer(cin, cin, 3)
        self.conv2 = ConvLayer(cin, cout, 3, downsample=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv2(self.conv1(x))


class FromRGB(nn.Module):
    """Halve the wavelet input (inverse Haar, blur-downsample, Haar) unless it is the first scale,
    and add its 1x1-conv features to the running features."""

    def __init__(self, cout: int, downsample: bool) -> None:
        super().__init__()
        self.downsample = Blur(pad=(1, 1), down=2) if downsample else None
        self.conv = ConvLayer(3 * 4, cout, 1)

    def forward(self, wavelets: torch.Tensor, features: torch.Tensor | None
                ) -> tuple[torch.Tensor, torch.Tensor]:
        if self.downsample is not None:
            wavelets = haar_dwt(self.downsample(haar_iwt(wavelets)))
        out = self.conv(wavelets)
        return wavelets, out if features is None else out + features


def minibatch_stddev(x: torch.Tensor, group: int = STDDEV_GROUP) -> torch.Tensor:
    """Append one channel: the std over groups of samples (sample n is in group n mod B/G),
    averaged over channels and positions."""
    b, c, h, w = x.shape
    g = min(b, group)
    if b % g:
        raise ValueError(f"discriminator: batch size {b} must be a multiple of the minibatch-"
                         f"stddev group {g}")
    std = torch.sqrt(x.view(g, -1, c, h, w).var(dim=0, correction=0) + 1e-8)
    std = std.mean(dim=(1, 2, 3)).view(-1, 1, 1, 1).repeat(g, 1, h, w)
    return torch.cat([x, std], dim=1)


class Discriminator(nn.Module):
    """images [B, 3, R, R] (ImageNet-normalised) -> logits [B, 1]."""

    def __init__(self, model: Mapping[str, Any]) -> None:
        super().__init__()
        problems = arch.discriminator_problems(model)
        if problems:
            raise ValueError("stylenat model settings: " + "; ".join(problems))
        r = model["resolution"]
        width = {side: arch.channels(model, side) for side in (2 ** i for i in range(2, 11))}
        # Official indexing: the features at side s carry the width listed for side 2s.
        self.from_rgbs = nn.ModuleList()
        self.convs = nn.ModuleList()
        cin, side = width[r], r // 2
        while side > FINAL_SIDE:
            cout = width[side // 2]
            self.from_rgbs.append(FromRGB(cin, downsample=side != r // 2))
            self.convs.append(ConvBlock(cin, cout))
            cin, side = cout, side // 2
        self.from_rgbs.append(FromRGB(width[FINAL_SIDE], downsample=True))
        c4 = width[FINAL_SIDE]
        self.final_conv = ConvLayer(cin + 1, c4, 3)
        self.final_linear = nn.Sequential(
            spectral_norm(nn.Linear(c4 * FINAL_SIDE * FINAL_SIDE, c4)), FusedLeakyReLU(c4),
            spectral_norm(nn.Linear(c4, 1)))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        wavelets, features = haar_dwt(images), None
        for from_rgb, conv in zip(self.from_rgbs, self.convs, strict=False):
            wavelets, features = from_rgb(wavelets, features)
            features = conv(features)
        _, features = self.from_rgbs[-1](wavelets, features)
        out = self.final_conv(minibatch_stddev(features))
        return self.final_linear(out.flatten(1))


def build_discriminator(model: Mapping[str, Any]) -> Discriminator:
    """The discriminator for `stylenat.model` settings (its widths follow the generator's table)."""
    return Discriminator(model)
