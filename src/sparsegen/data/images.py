"""Image tensors: loading with clear errors, resizing, seeded crops and flips."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from sparsegen.io import read_image


def to_tensor(array: np.ndarray) -> torch.Tensor:
    """uint8 (H, W, 3) -> float (3, H, W) in [0, 1]."""
    return torch.from_numpy(np.ascontiguousarray(array)).permute(2, 0, 1).float().div_(255.0)


def to_uint8(image: torch.Tensor) -> np.ndarray:
    """float (3, H, W) in [0, 1] -> uint8 (H, W, 3), clamped and rounded."""
    return (image.detach().clamp(0, 1).mul(255).round().byte().permute(1, 2, 0).cpu().numpy())


def resize(image: torch.Tensor, size: int | tuple[int, int]) -> torch.Tensor:
    """Bilinear antialiased resize of (3, H, W) or (B, 3, H, W) to size x size (aspect not kept)."""
    hw = (size, size) if isinstance(size, int) else size
    batched = image.dim() == 4
    x = image if batched else image[None]
    if tuple(x.shape[-2:]) != hw:
        x = F.interpolate(x, size=hw, mode="bilinear", align_corners=False, antialias=True)
    return x if batched else x[0]


def load_rgb(path: str | Path, size: int | None = None) -> torch.Tensor:
    """Decode an image file to (3, H, W) in [0, 1], optionally resized to size x size."""
    image = to_tensor(read_image(path))
    return resize(image, size) if size is not None else image


def random_crop_flip(image: torch.Tensor, crop: int, hflip: bool,
                     generator: torch.Generator) -> torch.Tensor:
    """Seeded random crop (and horizontal flip) of a (3, H, W) image."""
    _, h, w = image.shape
    if crop > h or crop > w:
        raise ValueError(f"crop {crop} larger than image {h}x{w}")
    top = int(torch.randint(0, h - crop + 1, (1,), generator=generator))
    left = int(torch.randint(0, w - crop + 1, (1,), generator=generator))
    out = image[:, top:top + crop, left:left + crop]
    if hflip and bool(torch.rand((), generator=generator) < 0.5):
        out = out.flip(-1)
    return out
