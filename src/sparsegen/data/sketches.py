"""XDoG sketches of faces, as iLAT's `generate_xdog_sketch.py` makes them (official_repos §3.4).

On the uint8 grayscale image I: G_s = scipy gaussian_filter(I, s) with I uint8, so each separable
pass is stored back as uint8 (truncated); D = G_sigma - gamma * G_{k sigma} (float, 0-255 units,
so eps = 0.1 is nearly a zero threshold); E = clip(1 + tanh(phi * (D - eps)), 0, 1) * 255
(Winnemoeller's XDoG soft threshold). The code then shrinks E with cv2 INTER_AREA and writes a
PNG, i.e. rounds to uint8 after the resize; `xdog(gray, size=...)` does the same with
`area_resize` (exact pixel-area averaging, what INTER_AREA computes when shrinking).
"""

from __future__ import annotations

import numpy as np
from scipy.ndimage import gaussian_filter

SIGMA, K, GAMMA, PHI, EPSILON = 1.5, 2.5, 0.97, 200.0, 0.1


def _area_weights(n_in: int, n_out: int) -> np.ndarray:
    """(n_out, n_in) weights: the share of output pixel i's footprint that input pixel j covers."""
    scale = n_in / n_out
    edges = np.arange(n_out + 1) * scale
    lo, hi = edges[:-1, None], edges[1:, None]
    j = np.arange(n_in)[None, :]
    return np.clip(np.minimum(hi, j + 1) - np.maximum(lo, j), 0, None) / scale


def area_resize(array: np.ndarray, size: int) -> np.ndarray:
    """Shrink (H, W) or (H, W, C) to size x size by pixel-area averaging -> float64 (as cv2's
    INTER_AREA when downscaling; an integer factor is the block mean)."""
    h, w = array.shape[:2]
    if size > h or size > w:
        raise ValueError(f"area_resize shrinks only: {h}x{w} -> {size}x{size}")
    rows, cols = _area_weights(h, size), _area_weights(w, size)
    # Two matrix products (rows, then columns): an unordered three-operand einsum is O(H W size^2).
    return np.einsum("ih,hw...,jw->ij...", rows, array.astype(np.float64), cols, optimize=True)


def xdog(gray: np.ndarray, sigma: float = SIGMA, k: float = K, gamma: float = GAMMA,
         phi: float = PHI, eps: float = EPSILON, size: int | None = None) -> np.ndarray:
    """XDoG sketch of a uint8 (H, W) grayscale image -> uint8 (H, W), or (size, size) after an
    area resize of the float sketch (module docstring). Edges are dark on white."""
    gray = np.asarray(gray)
    if gray.dtype != np.uint8 or gray.ndim != 2:
        raise ValueError(f"xdog takes a uint8 (H, W) grayscale image, got {gray.dtype} "
                         f"{gray.shape}")
    small, large = gaussian_filter(gray, sigma), gaussian_filter(gray, sigma * k)
    difference = small - gamma * large
    edge = np.clip(1 + np.tanh(phi * (difference - eps)), 0, 1) * 255
    if size is not None:
        edge = area_resize(edge, size)
    return np.rint(edge).astype(np.uint8)
