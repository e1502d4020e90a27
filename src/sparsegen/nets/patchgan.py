"""Multiscale PatchGAN discriminator (pix2pixHD, Wang et al. 2018; as used by SPADE, CoCosNet
and DynaST).

Each discriminator: conv4x4/s2 (ndf) + LeakyReLU(0.2), then n_layers-1 blocks of spectrally
normalised conv4x4 (widths doubling up to 512; stride 2, the last stride 1) + InstanceNorm +
LeakyReLU(0.2), then a conv4x4/s1 to one channel (the patch logits). The first and last convs
have neither spectral norm nor InstanceNorm. Discriminator d > 0 sees the input average-pooled
d times (3x3, stride 2, padding 1, padding not counted). `forward` returns every block's output
per discriminator, the logits last, for the hinge loss and feature matching (`gan_losses`).

`NLayerDiscriminator` is the single-scale pix2pix PatchGAN that taming-transformers' VQGAN
(and iLAT's TS-VQGAN) trains against: BatchNorm, no spectral norm, padding 1.

`padding` is 2 (= ceil((k-1)/2), pix2pixHD and SPADE); DynaST's official code (inherited from
CoCosNet) uses int((k-1)/2) = 1, which shrinks every map and needs inputs of at least 48 px
with two discriminators.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm

KERNEL = 4
MAX_WIDTH = 512
LEAK = 0.2


def downsample(x: torch.Tensor) -> torch.Tensor:
    """The pyramid step between discriminators: 3x3 average, stride 2, border pixels averaged
    over their in-image neighbours only."""
    return F.avg_pool2d(x, kernel_size=3, stride=2, padding=1, count_include_pad=False)


class PatchDiscriminator(nn.Module):
    """One PatchGAN; `forward` returns the output of every block, the (B, 1, h, w) logits last."""

    def __init__(self, in_channels: int, ndf: int = 64, n_layers: int = 4,
                 padding: int = 2) -> None:
        super().__init__()
        self.strides = [2] * n_layers + [1]
        self.strides[n_layers - 1] = 1
        self.padding = padding
        conv = dict(kernel_size=KERNEL, padding=padding)
        blocks = [nn.Sequential(nn.Conv2d(in_channels, ndf, stride=2, **conv),
                                nn.LeakyReLU(LEAK))]
        width = ndf
        for n in range(1, n_layers):
            prev, width = width, min(width * 2, MAX_WIDTH)
            blocks.append(nn.Sequential(
                spectral_norm(nn.Conv2d(prev, width, stride=self.strides[n], bias=False, **conv)),
                nn.InstanceNorm2d(width), nn.LeakyReLU(LEAK)))
        blocks.append(nn.Sequential(nn.Conv2d(width, 1, stride=1, **conv)))
        self.blocks = nn.ModuleList(blocks)

    def output_side(self, side: int) -> int:
        """Side of the logits for an input side (conv arithmetic)."""
        for stride in self.strides:
            side = (side + 2 * self.padding - KERNEL) // stride + 1
        return side

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        features = []
        for block in self.blocks:
            x = block(x)
            features.append(x)
        return features


class MultiscalePatchGAN(nn.Module):
    """`num_d` PatchDiscriminators on an average-pooling pyramid of the input (in_channels: for
    conditional GANs the label map and the image concatenated by the caller)."""

    def __init__(self, in_channels: int, ndf: int = 64, n_layers: int = 4, num_d: int = 2,
                 padding: int = 2) -> None:
        super().__init__()
        self.discriminators = nn.ModuleList(
            PatchDiscriminator(in_channels, ndf, n_layers, padding) for _ in range(num_d))

    def _check_size(self, x: torch.Tensor) -> None:
        sides = x.shape[-2:]
        for d, disc in enumerate(self.discriminators):
            if min(disc.output_side(s) for s in sides) < 1:
                raise ValueError(f"MultiscalePatchGAN: input {tuple(x.shape[-2:])} is too "
                                 f"small: discriminator {d} (input {tuple(sides)}, "
                                 f"padding={disc.padding}) has no output pixel")
            sides = [(s - 1) // 2 + 1 for s in sides]  # the 3x3/s2/p1 pooling

    def forward(self, x: torch.Tensor) -> list[list[torch.Tensor]]:
        """Per discriminator (finest first) its block outputs, logits last."""
        self._check_size(x)
        outputs = []
        for d, disc in enumerate(self.discriminators):
            if d > 0:
                x = downsample(x)
            outputs.append(disc(x))
        return outputs


class NLayerDiscriminator(nn.Module):
    """pix2pix's PatchGAN as taming's VQGAN uses it: conv4x4/s2 (ndf) + LeakyReLU(0.2), then
    n_layers - 1 blocks of conv4x4/s2 + BatchNorm + LeakyReLU with widths doubling up to 8 ndf,
    one conv4x4/s1 block of the same kind, and a conv4x4/s1 to one channel; padding 1, convs
    before BatchNorm without bias. Weights N(0, 0.02), BatchNorm scales N(1, 0.02) (pix2pix)."""

    def __init__(self, in_channels: int = 3, ndf: int = 64, n_layers: int = 3) -> None:
        super().__init__()
        conv = dict(kernel_size=KERNEL, padding=1)
        layers: list[nn.Module] = [nn.Conv2d(in_channels, ndf, stride=2, **conv),
                                   nn.LeakyReLU(LEAK)]
        width = ndf
        for n in range(1, n_layers + 1):
            prev, width = width, ndf * min(2 ** n, 8)
            layers += [nn.Conv2d(prev, width, stride=2 if n < n_layers else 1, bias=False,
                                 **conv),
                       nn.BatchNorm2d(width), nn.LeakyReLU(LEAK)]
        layers.append(nn.Conv2d(width, 1, stride=1, **conv))
        self.main = nn.Sequential(*layers)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.normal_(m.weight, 0.0, 0.02)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.normal_(m.weight, 1.0, 0.02)
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 1, h, w) patch logits."""
        return self.main(x)
