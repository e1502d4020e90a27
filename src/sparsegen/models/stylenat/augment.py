"""The augmentations of balanced consistency regularisation (bCR, Zhao et al. 2021), as StyleSwin
and StyleNAT train with them (StyleNAT Sec. 4: "use Balanced Consistency Regularization").

Every sample gets its own: horizontal flip (p = 1/2), translation by up to side/8 pixels per
axis with zeros shifted in, brightness + U[-0.5, 0.5), saturation x U[0, 2), contrast
x U[0.5, 1.5), and a zeroed square of half the side centred anywhere in the image (clipped at
the border). They act on ImageNet-normalised images, the space the discriminator sees, so
"zero" is the ImageNet mean colour there. The parameters are drawn by `draw` from a
`torch.Generator` (in the loop's batch, so a step's augmentations are a pure function of the
step) and applied by `apply`.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

TRANSLATION = 1 / 8   # largest shift, as a fraction of the side
CUTOUT = 1 / 2        # side of the cut-out square, as a fraction of the image side


@dataclass(frozen=True)
class Augmentation:
    """Per-sample parameters of one bCR augmentation of a batch of B images."""

    flip: torch.Tensor        # [B] bool
    shift: torch.Tensor       # [B, 2] int64 (rows, columns) the content moves by
    brightness: torch.Tensor  # [B] added
    saturation: torch.Tensor  # [B] factor on the deviation from the per-pixel channel mean
    contrast: torch.Tensor    # [B] factor on the deviation from the per-image mean
    cutout: torch.Tensor      # [B, 2] int64 centre (row, column) of the zeroed square


def _round_half_up(x: float) -> int:
    return int(x + 0.5)


def max_shift(side: int) -> int:
    return _round_half_up(side * TRANSLATION)


def cutout_side(side: int) -> int:
    return _round_half_up(side * CUTOUT)


def draw(n: int, height: int, width: int, generator: torch.Generator) -> Augmentation:
    """Parameters for `n` images of `height` x `width`, drawn from `generator` only."""
    def uniform(low: float, high: float) -> torch.Tensor:
        return low + (high - low) * torch.rand(n, generator=generator)

    flip = torch.rand(n, generator=generator) < 0.5
    shift = torch.stack([torch.randint(-s, s + 1, (n,), generator=generator)
                         for s in (max_shift(height), max_shift(width))], 1)
    brightness = uniform(-0.5, 0.5)
    saturation = uniform(0.0, 2.0)
    contrast = uniform(0.5, 1.5)
    # Centres 0..side (even square) or 0..side-1 (odd): the official offsets' range.
    cutout = torch.stack([torch.randint(0, side + 1 - cutout_side(side) % 2, (n,),
                                        generator=generator) for side in (height, width)], 1)
    return Augmentation(flip, shift, brightness, saturation, contrast, cutout)


def hflip(x: torch.Tensor, flip: torch.Tensor) -> torch.Tensor:
    """Mirror the samples where `flip` is true."""
    return torch.where(flip.to(x.device).view(-1, 1, 1, 1), x.flip(-1), x)


def translate(x: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
    """out[b, :, i, j] = x[b, :, i - shift[b, 0], j - shift[b, 1]], zero outside the image."""
    b, _, h, w = x.shape
    pad = int(shift.abs().max()) if shift.numel() else 0
    padded = F.pad(x, (pad, pad, pad, pad))
    shift = shift.to(x.device)
    rows = torch.arange(h, device=x.device) + pad - shift[:, :1]   # [B, H]
    cols = torch.arange(w, device=x.device) + pad - shift[:, 1:]   # [B, W]
    batch = torch.arange(b, device=x.device).view(b, 1, 1)
    return padded.permute(0, 2, 3, 1)[batch, rows[:, :, None], cols[:, None, :]].permute(
        0, 3, 1, 2)


def brightness(x: torch.Tensor, delta: torch.Tensor) -> torch.Tensor:
    return x + delta.to(x).view(-1, 1, 1, 1)


def saturation(x: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    mean = x.mean(1, keepdim=True)
    return (x - mean) * factor.to(x).view(-1, 1, 1, 1) + mean


def contrast(x: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    mean = x.mean((1, 2, 3), keepdim=True)
    return (x - mean) * factor.to(x).view(-1, 1, 1, 1) + mean


def cutout(x: torch.Tensor, centre: torch.Tensor) -> torch.Tensor:
    """Zero a square of half the image side (per axis) around `centre`, clipped at the border."""
    _, _, h, w = x.shape
    centre = centre.to(x.device)
    inside = []
    for axis, (side, size) in enumerate(((h, cutout_side(h)), (w, cutout_side(w)))):
        start = centre[:, axis:axis + 1] - size // 2                   # [B, 1]
        pos = torch.arange(side, device=x.device)
        inside.append((pos >= start) & (pos < start + size))         # [B, side]
    keep = ~(inside[0][:, :, None] & inside[1][:, None, :])
    return x * keep[:, None].to(x.dtype)


def apply(x: torch.Tensor, aug: Augmentation) -> torch.Tensor:
    """The augmented batch: flip, translation, brightness, saturation, contrast, cutout."""
    x = translate(hflip(x, aug.flip), aug.shift)
    x = contrast(saturation(brightness(x, aug.brightness), aug.saturation), aug.contrast)
    return cutout(x, aug.cutout)
