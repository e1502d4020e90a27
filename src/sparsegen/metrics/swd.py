"""Sliced Wasserstein distance of Laplacian-pyramid patches (Progressive GAN, Karras et al. 2018).

Per pyramid level (full resolution down to 16 px): 128 random 7x7 RGB neighbourhoods per image,
each set normalised per channel on its own, then 4 repeats x 128 random unit directions; the
distance of two projected sets is the mean absolute difference of their sorted projections.
Values are x1e3; the metric is the mean over levels (CoCosNet/DynaST report `SWDx1e3_avg`).

Randomness is drawn from numpy generators seeded by `seed` and independent of the batch size:
neighbourhood centres for all images of each set, then the directions, per level.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import ndimage

from sparsegen.metrics.inputs import ImageSet
from sparsegen.metrics.records import Measurement
from sparsegen.metrics.registry import MetricContext, register

NHOOD = 7
NHOODS_PER_IMAGE = 128
DIR_REPEATS = 4
DIRS_PER_REPEAT = 128
MIN_RESOLUTION = 16
SCALE = 1e3
_B = np.array([1.0, 4.0, 6.0, 4.0, 1.0])
BINOMIAL_5x5 = (np.outer(_B, _B) / 256.0).astype(np.float32)


def level_count(height: int, width: int) -> int:
    """Levels while the (shorter) side is at least 16 px: 256 -> 256, 128, 64, 32, 16."""
    n, res = 0, min(height, width)
    while res >= MIN_RESOLUTION:
        n, res = n + 1, res // 2
    return n


def _blur(x: np.ndarray, gain: float = 1.0) -> np.ndarray:
    return ndimage.convolve(x, BINOMIAL_5x5[None, None] * np.float32(gain), mode="mirror")


def pyr_down(x: np.ndarray) -> np.ndarray:
    return _blur(x)[:, :, ::2, ::2]


def pyr_up(x: np.ndarray) -> np.ndarray:
    up = np.zeros((*x.shape[:2], x.shape[2] * 2, x.shape[3] * 2), x.dtype)
    up[:, :, ::2, ::2] = x
    return _blur(up, gain=4.0)


def laplacian_pyramid(images: np.ndarray, levels: int) -> list[np.ndarray]:
    """float32 band-pass levels of an NCHW batch, finest first; the last is the low-pass rest."""
    pyramid = [images.astype(np.float32)]
    for _ in range(1, levels):
        pyramid.append(pyr_down(pyramid[-1]))
        pyramid[-2] = pyramid[-2] - pyr_up(pyramid[-1])[:, :, :pyramid[-2].shape[2],
                                                         :pyramid[-2].shape[3]]
    return pyramid


@dataclass(frozen=True)
class SWDPlan:
    """All random draws: centres[set][level] = (ys, xs), each (n_images, 128);
    directions[level] = DIR_REPEATS unit-column matrices (147, 128), float32."""

    centres: tuple[list[tuple[np.ndarray, np.ndarray]], ...]
    directions: list[list[np.ndarray]]


def draw_plan(seed: int, n_images: int, level_shapes: list[tuple[int, int]]) -> SWDPlan:
    half = NHOOD // 2
    streams = [np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(3)]
    centres = tuple(
        [(rng.integers(half, h - half, size=(n_images, NHOODS_PER_IMAGE)),
          rng.integers(half, w - half, size=(n_images, NHOODS_PER_IMAGE)))
         for h, w in level_shapes]
        for rng in streams[:2])
    directions = []
    for _ in level_shapes:
        reps = []
        for _ in range(DIR_REPEATS):
            d = streams[2].standard_normal((3 * NHOOD * NHOOD, DIRS_PER_REPEAT))
            reps.append((d / np.sqrt((d * d).sum(axis=0, keepdims=True))).astype(np.float32))
        directions.append(reps)
    return SWDPlan(centres, directions)


def neighbourhoods(level: np.ndarray, ys: np.ndarray, xs: np.ndarray) -> np.ndarray:
    """7x7 patches around (ys, xs) of each image: (B, 3, H, W), (B, K) -> (B * K, 3, 7, 7)."""
    off = np.arange(NHOOD) - NHOOD // 2
    b = np.arange(level.shape[0])[:, None, None, None, None]
    c = np.arange(3)[None, None, :, None, None]
    y = (ys[:, :, None] + off)[:, :, None, :, None]
    x = (xs[:, :, None] + off)[:, :, None, None, :]
    return level[b, c, y, x].reshape(-1, 3, NHOOD, NHOOD)


def normalise(desc: np.ndarray) -> np.ndarray:
    """Subtract each RGB channel's mean and divide by its std over the whole set; flatten."""
    desc = desc - desc.mean(axis=(0, 2, 3), keepdims=True)
    desc = desc / desc.std(axis=(0, 2, 3), keepdims=True)
    return desc.reshape(desc.shape[0], -1)


def sliced_wasserstein(a: np.ndarray, b: np.ndarray, directions: list[np.ndarray]) -> float:
    """Mean over repeats of the mean |sorted(a @ d) - sorted(b @ d)| over samples and d."""
    if a.shape != b.shape:
        raise ValueError(f"descriptor sets differ in shape: {a.shape} vs {b.shape}")
    per_repeat = [np.abs(np.sort(a @ d, axis=0) - np.sort(b @ d, axis=0)).mean()
                  for d in directions]
    return float(np.mean(per_repeat))


def _set_descriptors(images: ImageSet, shape: tuple[int, int], levels: int,
                     centres: list[tuple[np.ndarray, np.ndarray]], batch_size: int
                     ) -> list[np.ndarray]:
    per_level: list[list[np.ndarray]] = [[] for _ in range(levels)]
    start = 0
    for batch in images.batches(batch_size):
        for i, img in enumerate(batch):
            if img.shape[:2] != shape:
                raise ValueError(f"{images.name_of(start + i)}: image is {img.shape[:2]}, "
                                 f"expected {shape} like the first image")
        stop = start + len(batch)
        pyramid = laplacian_pyramid(np.stack(batch).transpose(0, 3, 1, 2), levels)
        for lod, level in enumerate(pyramid):
            ys, xs = centres[lod]
            per_level[lod].append(neighbourhoods(level, ys[start:stop], xs[start:stop]))
        start = stop
    return [normalise(np.concatenate(d)) for d in per_level]


def _first_shape(images: ImageSet) -> tuple[int, int]:
    return next(images.batches(1))[0].shape[:2]


@register("swd_pggan", higher_is_better=False,
          description="Progressive GAN sliced Wasserstein distance x1e3, mean over Laplacian "
          "pyramid levels down to 16 px (128 7x7 patches per image, 4x128 directions)")
def swd_pggan(a: Any, b: Any, ctx: MetricContext, *, seed: int = 0) -> Measurement:
    sets = (ImageSet.of(a, "images"), ImageSet.of(b, "references"))
    if len(sets[0]) != len(sets[1]):
        raise ValueError(f"SWD needs sets of equal size; got {len(sets[0])} ({sets[0].origin}) "
                         f"and {len(sets[1])} ({sets[1].origin})")
    shape = _first_shape(sets[0])
    levels = level_count(*shape)
    if levels == 0:
        raise ValueError(f"SWD needs images of at least {MIN_RESOLUTION} px, got {shape}")
    level_shapes = [(-(-shape[0] // 2**i), -(-shape[1] // 2**i)) for i in range(levels)]
    plan = draw_plan(seed, len(sets[0]), level_shapes)
    desc = [_set_descriptors(s, shape, levels, plan.centres[k], ctx.batch_size)
            for k, s in enumerate(sets)]
    per_level = [SCALE * sliced_wasserstein(da, db, dirs)
                 for da, db, dirs in zip(desc[0], desc[1], plan.directions, strict=True)]
    names = [f"SWDx1e3_{h}" if h == w else f"SWDx1e3_{h}x{w}" for h, w in level_shapes]
    return Measurement(
        value=float(np.mean(per_level)), n_samples=len(sets[0]), seeds=[seed],
        protocol={"pyramid": "laplacian, 5x5 binomial, mirror boundary",
                  "levels": [list(s) for s in level_shapes], "neighbourhood": NHOOD,
                  "per_image": NHOODS_PER_IMAGE, "dir_repeats": DIR_REPEATS,
                  "dirs_per_repeat": DIRS_PER_REPEAT, "normalisation": "per set, per channel",
                  "scale": SCALE, "reduction": "mean over levels", "seed": seed,
                  "rng": "numpy SeedSequence(seed).spawn(3): centres a, centres b, directions",
                  "n_a": len(sets[0]), "n_b": len(sets[1]), "image_size": list(shape),
                  "file_format": {"a": sets[0].file_format, "b": sets[1].file_format}},
        extra={"per_level": dict(zip(names, per_level, strict=True)),
               "inputs": {"a": sets[0].origin, "b": sets[1].origin}})
