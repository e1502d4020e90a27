"""Hole masks for face editing: DeepFill v2 free-form strokes, token-budgeted edit strokes, and
procedural object silhouettes (the offline stand-in for COCO instance masks).

Free-form strokes follow DeepFill v2's released generator (Yu et al. 2019, `brush_stroke_mask`),
with its parameters at 256 pixels scaled to the side: 1-3 strokes; each of 4-11 vertices from
a random start, alternating turns drawn in mean 2pi/5 +- up to 2pi/15; segment length
N(r, r // 2) clipped to [0, 2r] with r = side * sqrt(2) / 8 (the diagonal / 8); one width per
stroke uniform in [12, 40) * side / 256; the polyline drawn that wide with a disc at every
vertex; then a random left-right and up-down flip. True = hole. Everything is drawn by a numpy
Generator, so a seed fixes the mask.
"""

from __future__ import annotations

import math

import numpy as np
from PIL import Image, ImageDraw

from sparsegen.data.procedural import _grid

MAX_STROKES = 3
VERTICES = (4, 12)                           # numpy randint bounds: 4..11 vertices
MEAN_ANGLE, ANGLE_RANGE = 2 * math.pi / 5, 2 * math.pi / 15
WIDTH = (12.0, 40.0)                         # brush width at side 256
REFERENCE_SIDE = 256


def _polyline(side: int, vertices: list[tuple[float, float]], width: int) -> np.ndarray:
    """Bool (side, side): the polyline `width` wide with a disc of diameter `width` at each
    vertex ([x, y] pixels)."""
    image = Image.new("L", (side, side), 0)
    draw = ImageDraw.Draw(image)
    draw.line(vertices, fill=1, width=width)
    r = width // 2
    for x, y in vertices:
        draw.ellipse((x - r, y - r, x + r, y + r), fill=1)
    return np.asarray(image, dtype=bool)


def _stroke(side: int, rng: np.random.Generator) -> tuple[list[tuple[float, float]], int]:
    """One DeepFill v2 stroke: its vertices and its width (module docstring)."""
    n = int(rng.integers(*VERTICES))
    lo = MEAN_ANGLE - rng.uniform(0, ANGLE_RANGE)
    hi = MEAN_ANGLE + rng.uniform(0, ANGLE_RANGE)
    angles = [2 * math.pi - rng.uniform(lo, hi) if i % 2 == 0 else rng.uniform(lo, hi)
              for i in range(n)]
    radius = math.sqrt(2) * side / 8
    vertices = [(float(rng.integers(0, side)), float(rng.integers(0, side)))]
    for angle in angles:
        r = float(np.clip(rng.normal(radius, radius // 2), 0, 2 * radius))
        x, y = vertices[-1]
        vertices.append((float(np.clip(x + r * math.cos(angle), 0, side)),
                         float(np.clip(y + r * math.sin(angle), 0, side))))
    width = max(1, int(rng.uniform(*WIDTH) * side / REFERENCE_SIDE))
    return vertices, width


def free_form_mask(side: int, rng: np.random.Generator) -> np.ndarray:
    """A DeepFill v2 free-form mask, bool (side, side), True = hole."""
    mask = np.zeros((side, side), dtype=bool)
    for _ in range(int(rng.integers(1, MAX_STROKES + 1))):
        mask |= _polyline(side, *_stroke(side, rng))
    if rng.normal() > 0:
        mask = mask[:, ::-1]
    if rng.normal() > 0:
        mask = mask[::-1, :]
    return np.ascontiguousarray(mask)


def token_cover(mask: np.ndarray, grid: int) -> np.ndarray:
    """Bool (grid, grid): a token is masked when any of its pixels is (side % grid == 0)."""
    side = mask.shape[0]
    if mask.shape != (side, side) or side % grid:
        raise ValueError(f"mask of shape {mask.shape} does not tile into a {grid}x{grid} grid")
    cell = side // grid
    return mask.reshape(grid, cell, grid, cell).any(axis=(1, 3))


def edit_mask(side: int, grid: int, fraction: float, rng: np.random.Generator,
              tries: int = 200) -> np.ndarray:
    """Free-form strokes covering about `fraction` of the grid's tokens (at least one token),
    bool (side, side). Strokes are laid segment by segment (DeepFill v2 vertices and widths);
    a segment that would push the masked-token count past round(fraction * grid^2) is dropped
    and a new stroke begins, until the count is reached or `tries` strokes were started; if
    nothing fits, the central half of a random token."""
    target = max(1, round(fraction * grid * grid))
    mask = np.zeros((side, side), dtype=bool)
    count = 0
    for _ in range(tries):
        vertices, width = _stroke(side, rng)
        for i in range(1, len(vertices)):
            trial = mask | _polyline(side, vertices[i - 1:i + 1], width)
            n = int(token_cover(trial, grid).sum())
            if n > target:
                break
            mask, count = trial, n
            if count == target:
                return mask
    if count == 0:
        cell = side // grid
        top, left = rng.integers(0, grid, 2) * cell + cell // 4
        mask[top:top + cell - 2 * (cell // 4), left:left + cell - 2 * (cell // 4)] = True
    return mask


def silhouette(side: int, rng: np.random.Generator) -> np.ndarray:
    """An object-like silhouette, bool (side, side), True = hole: a star-shaped body (radius a
    sum of low harmonics of the angle) with 0-4 elliptic appendages, at a random place and
    scale (covering roughly 3-40% of the image, partly outside it at times)."""
    y, x = _grid(side)
    cx, cy = rng.uniform(0.2, 0.8, 2)
    size = rng.uniform(0.1, 0.32)
    theta = np.arctan2(y - cy, x - cx)
    wobble = sum(rng.uniform(0, 0.25) / k * np.cos(k * theta + rng.uniform(0, 2 * np.pi))
                 for k in range(2, 6))
    stretch = rng.uniform(0.6, 1.0)
    angle = rng.uniform(0, np.pi)
    u = (x - cx) * np.cos(angle) + (y - cy) * np.sin(angle)
    v = (-(x - cx) * np.sin(angle) + (y - cy) * np.cos(angle)) / stretch
    mask = np.hypot(u, v) < size * (1 + wobble)
    for _ in range(int(rng.integers(0, 5))):
        phi = rng.uniform(0, 2 * np.pi)
        reach = size * rng.uniform(0.8, 1.6)
        ax, ay = cx + reach * np.cos(phi), cy + reach * np.sin(phi)
        length, width = size * rng.uniform(0.5, 1.0), size * rng.uniform(0.12, 0.3)
        du, dv = x - (cx + ax) / 2, y - (cy + ay) / 2
        pu = du * np.cos(phi) + dv * np.sin(phi)
        pv = -du * np.sin(phi) + dv * np.cos(phi)
        mask |= (pu / length) ** 2 + (pv / width) ** 2 < 1
    return mask
