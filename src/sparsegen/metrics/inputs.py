"""What metrics accept: aligned float image batches, and uint8 image sets (folder or array)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from sparsegen.io import read_image

# Suffixes clean-fid globs for (recursively, any case); .npy is left out.
IMAGE_SUFFIXES = frozenset({".bmp", ".jpg", ".jpeg", ".pgm", ".png", ".ppm", ".tif", ".tiff",
                            ".webp"})


def image_batch(x: torch.Tensor | np.ndarray, name: str, unit_range: bool = True
                ) -> torch.Tensor:
    """Check an RGB batch (N, 3, H, W) and return it as a float tensor.

    With `unit_range` the values must lie in [0, 1]."""
    t = torch.as_tensor(x)
    if t.dim() != 4 or t.shape[1] != 3:
        raise ValueError(f"{name}: expected an RGB batch (N, 3, H, W), got shape "
                         f"{tuple(t.shape)}")
    if t.shape[0] == 0:
        raise ValueError(f"{name}: empty batch")
    t = t if t.is_floating_point() else t.double()
    if not torch.isfinite(t).all():
        raise ValueError(f"{name}: contains NaN or infinite values")
    if unit_range and (t.min() < 0 or t.max() > 1):
        raise ValueError(f"{name}: values must lie in [0, 1], found "
                         f"[{float(t.min()):.4g}, {float(t.max()):.4g}]")
    return t


def aligned_pair(a: torch.Tensor | np.ndarray, b: torch.Tensor | np.ndarray,
                 names: tuple[str, str], unit_range: bool = True, same_size: bool = True
                 ) -> tuple[torch.Tensor, torch.Tensor]:
    """Two batches paired by index (same N; same H, W unless `same_size` is False)."""
    ta, tb = image_batch(a, names[0], unit_range), image_batch(b, names[1], unit_range)
    if ta.shape[0] != tb.shape[0]:
        raise ValueError(f"{names[0]} has {ta.shape[0]} images but {names[1]} has "
                         f"{tb.shape[0]}; pairs are aligned by index")
    if same_size and ta.shape != tb.shape:
        raise ValueError(f"{names[0]} {tuple(ta.shape)} and {names[1]} {tuple(tb.shape)} "
                         "differ in size")
    return ta, tb


def list_images(folder: Path) -> list[Path]:
    """Image files under `folder`, recursively, sorted (clean-fid's folder convention)."""
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder}: image folder not found")
    files = sorted(p for p in folder.rglob("*")
                   if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
    if not files:
        raise ValueError(f"{folder}: no image files ({', '.join(sorted(IMAGE_SUFFIXES))})")
    return files


@dataclass(frozen=True)
class ImageSet:
    """A set of RGB images: a folder of image files, or a uint8 array (N, 3, H, W)."""

    files: tuple[Path, ...] | None = None
    array: np.ndarray | None = None
    origin: str = "array"

    @classmethod
    def of(cls, source: str | Path | np.ndarray | ImageSet, name: str) -> ImageSet:
        if isinstance(source, ImageSet):
            return source
        if isinstance(source, str | Path):
            return cls(files=tuple(list_images(Path(source))), origin=str(source))
        arr = np.asarray(source)
        if arr.dtype != np.uint8 or arr.ndim != 4 or arr.shape[1] != 3:
            raise ValueError(f"{name}: expected a folder or a uint8 array (N, 3, H, W), got "
                             f"{arr.dtype} {arr.shape}")
        return cls(array=arr)

    def __len__(self) -> int:
        return len(self.files) if self.files is not None else len(self.array)

    @property
    def file_format(self) -> str:
        """'png', 'jpg', 'jpg+png', ... or 'uint8-array' (no file encoding)."""
        if self.files is None:
            return "uint8-array"
        names = {".jpeg": "jpg"}
        return "+".join(sorted({names.get(p.suffix.lower(), p.suffix.lower()[1:])
                                for p in self.files}))

    def batches(self, batch_size: int) -> Iterator[list[np.ndarray]]:
        """Images in order, `batch_size` at a time, each uint8 (H, W, 3)."""
        for start in range(0, len(self), batch_size):
            stop = min(start + batch_size, len(self))
            if self.files is not None:
                yield [read_image(p) for p in self.files[start:stop]]
            else:
                yield [np.ascontiguousarray(img.transpose(1, 2, 0))
                       for img in self.array[start:stop]]

    def name_of(self, index: int) -> str:
        """The file (or array index) of image `index`, for error messages."""
        return str(self.files[index]) if self.files is not None else f"array[{index}]"
