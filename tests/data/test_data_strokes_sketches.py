"""XDoG sketches and area resize (sparsegen.data.sketches); stroke, edit and silhouette masks
(sparsegen.data.strokes)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.ndimage import binary_erosion, label

from sparsegen.data import sketches, strokes


def _gauss_uint8(image: np.ndarray, sigma: float) -> np.ndarray:
    """Separable Gaussian (radius int(4 sigma + 0.5), mirrored edges d c b a | a b c d), each
    pass truncated back to uint8, rows first: what scipy does to a uint8 input."""
    radius = int(4 * sigma + 0.5)
    taps = np.exp(-0.5 * (np.arange(-radius, radius + 1) / sigma) ** 2)
    taps /= taps.sum()
    out = image
    for axis in (0, 1):
        moved = np.moveaxis(out.astype(np.float64), axis, 0)
        padded = np.pad(moved, [(radius, radius), (0, 0)], mode="symmetric")
        acc = sum(t * padded[i:i + moved.shape[0]] for i, t in enumerate(taps))
        out = np.moveaxis(np.floor(acc), 0, axis).astype(np.uint8)
    return out


def _xdog_reference(gray: np.ndarray) -> np.ndarray:
    d = _gauss_uint8(gray, 1.5).astype(float) - 0.97 * _gauss_uint8(gray, 3.75)
    return np.clip(1 + np.tanh(200 * (d - 0.1)), 0, 1) * 255


def _picture(side: int, seed: int) -> np.ndarray:
    """Smooth shapes plus noise: edges for XDoG to find, values off the integers."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:side, 0:side]
    img = 120 + 40 * np.sin(xx / 3.0) + rng.normal(0, 12, (side, side))
    img[np.hypot(yy - side / 2, xx - side / 3) < side / 4] -= 90
    return np.clip(img, 0, 255).astype(np.uint8)


@pytest.mark.parametrize("side", [24, 40])
def test_xdog_matches_an_independent_computation(side):
    gray = _picture(side, side)
    expected = _xdog_reference(gray)
    got = sketches.xdog(gray)
    assert got.dtype == np.uint8 and got.shape == gray.shape
    assert np.array_equal(got, np.rint(expected).astype(np.uint8))
    assert (got < 128).mean() > 0.02 and (got > 128).mean() > 0.3       # lines on white
    shrunk = expected.reshape(side // 2, 2, side // 2, 2).mean(axis=(1, 3))
    assert np.array_equal(sketches.xdog(gray, size=side // 2), np.rint(shrunk).astype(np.uint8))


def test_xdog_blurs_in_uint8_as_the_code_does():
    gray = _picture(40, 3)
    from scipy.ndimage import gaussian_filter

    d = gaussian_filter(gray.astype(float), 1.5) - 0.97 * gaussian_filter(gray.astype(float), 3.75)
    in_float = np.rint(np.clip(1 + np.tanh(200 * (d - 0.1)), 0, 1) * 255).astype(np.uint8)
    assert not np.array_equal(sketches.xdog(gray), in_float)
    with pytest.raises(ValueError, match="uint8 \\(H, W\\)"):
        sketches.xdog(gray.astype(float))


def test_area_resize_is_the_pixel_area_average():
    rng = np.random.default_rng(0)
    image = rng.uniform(0, 255, (6, 6, 3))
    blocks = image.reshape(3, 2, 3, 2, 3).mean(axis=(1, 3))
    assert np.allclose(sketches.area_resize(image, 3), blocks)
    # 5 -> 3: supersample each pixel 3x, then average blocks of 5 (exact area overlap)
    small = rng.uniform(0, 255, (5, 5))
    fine = np.repeat(np.repeat(small, 3, axis=0), 3, axis=1)
    assert np.allclose(sketches.area_resize(small, 3), fine.reshape(3, 5, 3, 5).mean(axis=(1, 3)))
    assert np.allclose(sketches.area_resize(small, 5), small)
    with pytest.raises(ValueError, match="shrinks only"):
        sketches.area_resize(small, 8)


def test_free_form_masks_are_seeded_strokes():
    a = strokes.free_form_mask(128, np.random.default_rng(5))
    assert a.dtype == bool and a.shape == (128, 128)
    assert np.array_equal(a, strokes.free_form_mask(128, np.random.default_rng(5)))
    masks = [strokes.free_form_mask(256, np.random.default_rng(s)) for s in range(20)]
    assert len({m.tobytes() for m in masks}) == 20
    cover = np.array([m.mean() for m in masks])
    assert 0.05 < cover.mean() < 0.4 and cover.min() > 0
    for m in masks:                                   # brushes at least 12 px wide
        assert binary_erosion(m, np.ones((9, 9))).any()


@pytest.mark.parametrize("side", [64, 256])
def test_stroke_parameters_scale_with_the_side(side):
    rng = np.random.default_rng(side)
    radius = side * math.sqrt(2) / 8                  # DeepFill v2: the diagonal / 8
    for _ in range(50):
        vertices, width = strokes._stroke(side, rng)
        assert 5 <= len(vertices) <= 12               # start + 4..11 vertices
        assert max(1, int(12 * side / 256)) <= width < 40 * side / 256
        steps = np.diff(np.array(vertices), axis=0)
        assert (np.hypot(*steps.T) <= 2 * radius + 1e-9).all()
        assert all(0 <= c <= side for v in vertices for c in v)


def test_token_cover_marks_a_token_when_any_pixel_is_a_hole():
    rng = np.random.default_rng(1)
    mask = rng.random((32, 32)) < 0.01
    expected = [[mask[4 * r:4 * r + 4, 4 * c:4 * c + 4].any() for c in range(8)]
                for r in range(8)]
    assert strokes.token_cover(mask, 8).tolist() == expected
    with pytest.raises(ValueError, match="5x5 grid"):
        strokes.token_cover(mask, 5)


@pytest.mark.parametrize(("side", "grid", "fraction", "target"),
                         [(32, 8, 0.0664, 4), (256, 16, 0.0664, 17), (64, 16, 0.3197, 82),
                          (32, 8, 0.001, 1)])
def test_edit_masks_cover_about_the_requested_tokens(side, grid, fraction, target):
    counts = []
    for seed in range(6):
        mask = strokes.edit_mask(side, grid, fraction, np.random.default_rng(seed))
        assert np.array_equal(mask, strokes.edit_mask(side, grid, fraction,
                                                      np.random.default_rng(seed)))
        counts.append(int(strokes.token_cover(mask, grid).sum()))
    assert min(counts) >= 1 and max(counts) <= target
    assert np.mean(counts) >= 0.8 * target


def test_silhouettes_are_single_seeded_objects():
    covers = []
    for seed in range(20):
        m = strokes.silhouette(64, np.random.default_rng(seed))
        assert np.array_equal(m, strokes.silhouette(64, np.random.default_rng(seed)))
        assert label(m)[1] == 1                       # one object
        covers.append(m.mean())
    assert min(covers) > 0.01 and max(covers) < 0.6 and np.std(covers) > 0.03
