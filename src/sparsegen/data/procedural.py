"""Seeded procedural images: landscape scenes (content stand-ins), paintings and textures (style).

Every generator takes a side length and a numpy Generator and returns uint8 (side, side, 3); the
same seed gives the same bytes. Shapes are drawn as masks over normalised coordinates, so a recipe
looks alike at any side length.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from scipy.spatial import cKDTree
from skimage.color import hsv2rgb
from skimage.transform import resize as sk_resize

Generator = Callable[[int, np.random.Generator], np.ndarray]


def _grid(side: int) -> tuple[np.ndarray, np.ndarray]:
    """(y, x) pixel-centre coordinates in [0, 1)."""
    c = (np.arange(side) + 0.5) / side
    return c[:, None] + 0 * c[None, :], 0 * c[:, None] + c[None, :]


def _to_uint8(rgb: np.ndarray) -> np.ndarray:
    return np.round(np.clip(rgb, 0, 1) * 255).astype(np.uint8)


def _hsv(h: float, s: float, v: float) -> np.ndarray:
    return hsv2rgb(np.array([[[h % 1.0, np.clip(s, 0, 1), np.clip(v, 0, 1)]]]))[0, 0]


def palette(rng: np.random.Generator, n: int = 5) -> np.ndarray:
    """n RGB colours in [0, 1] from a random harmony (analogous, complementary or triadic),
    sorted dark to light so gradient maps read as shading."""
    h0 = rng.random()
    scheme = rng.integers(3)
    if scheme == 0:
        hues = h0 + np.linspace(-0.09, 0.09, n)
    else:
        step = 0.5 if scheme == 1 else 1 / 3
        hues = h0 + step * (np.arange(n) % (2 if scheme == 1 else 3))
    hues = hues + rng.normal(0, 0.02, n)
    sat, val = rng.uniform(0.3, 0.95, n), rng.uniform(0.25, 1.0, n)
    colours = np.stack([_hsv(h, s, v) for h, s, v in zip(hues, sat, val, strict=True)])
    return colours[np.argsort(colours @ np.array([0.299, 0.587, 0.114]))]


def gradient_map(t: np.ndarray, colours: np.ndarray) -> np.ndarray:
    """Map t in [0, 1] (H, W) piecewise-linearly through evenly spaced colours -> (H, W, 3)."""
    x = np.clip(t, 0, 1) * (len(colours) - 1)
    i = np.minimum(x.astype(int), len(colours) - 2)
    f = (x - i)[..., None]
    return colours[i] * (1 - f) + colours[i + 1] * f


def fractal_noise(side: int, rng: np.random.Generator, base: int = 3, octaves: int = 4,
                  persistence: float = 0.5) -> np.ndarray:
    """Sum of bicubically upsampled random grids (value noise), rescaled to [0, 1]."""
    out = np.zeros((side, side))
    amp = 1.0
    for o in range(octaves):
        cells = base * 2**o + 1
        out += amp * sk_resize(rng.random((cells, cells)), (side, side), order=3, mode="edge")
        amp *= persistence
    return (out - out.min()) / (np.ptp(out) + 1e-12)


# --- content: landscapes ------------------------------------------------------------------------

def scene(side: int, rng: np.random.Generator) -> np.ndarray:
    """Sky gradient, sun, clouds, hill ridges, a road, houses and trees."""
    y, x = _grid(side)
    hue = rng.choice([0.58, 0.07, 0.75]) + rng.normal(0, 0.02)    # day, sunset, dusk
    horizon = rng.uniform(0.42, 0.6)
    top, low = _hsv(hue, 0.7, 0.65), _hsv(hue + 0.05, 0.3, 0.98)
    img = top + (low - top) * np.clip(y / horizon, 0, 1)[..., None] ** 0.8

    sx, sy, sr = rng.uniform(0.15, 0.85), rng.uniform(0.08, horizon - 0.15), rng.uniform(.04, .08)
    d = np.hypot(x - sx, y - sy)
    sun = _hsv(rng.uniform(0.1, 0.16), 0.5, 1.0)
    img = img + 0.35 * np.exp(-(d / (3 * sr)) ** 2)[..., None] * sun
    img[d < sr] = sun

    for _ in range(rng.integers(1, 4)):
        cx, cy, w = rng.uniform(0, 1), rng.uniform(0.05, horizon - 0.1), rng.uniform(0.05, 0.12)
        alpha = np.zeros_like(x)
        for px, py in zip(cx + rng.uniform(-w, w, 4), cy + rng.uniform(-w / 4, w / 4, 4),
                          strict=True):
            alpha = np.maximum(alpha, np.clip(1.6 - ((x - px) / w) ** 2
                                              - ((y - py) / (0.45 * w)) ** 2, 0, 1))
        img = img + (0.95 - img) * (0.85 * alpha)[..., None]

    tex = fractal_noise(side, rng, base=8, octaves=3)
    ground = np.full_like(x[0], horizon)
    n_layers = 3
    for k in range(n_layers):
        xs = x[0]
        ridge = horizon - 0.06 + 0.09 * k + sum(
            rng.uniform(0.01, 0.05) / (j + 1) * np.sin(2 * np.pi * (j + 1) * rng.uniform(.6, 1.6)
                                                         * xs + rng.uniform(0, 2 * np.pi))
            for j in range(3))
        colour = _hsv(rng.uniform(0.2, 0.38) if rng.random() < 0.8 else rng.uniform(0.05, 0.12),
                      rng.uniform(0.4, 0.8), 0.35 + 0.15 * (n_layers - k) / n_layers)
        colour = colour + (low - colour) * 0.5 * (n_layers - 1 - k) / n_layers   # aerial haze
        mask = y > ridge[None, :]
        shade = (0.85 + 0.3 * tex)[..., None] * colour
        img = np.where(mask[..., None], shade, img)
        ground = ridge

    if rng.random() < 0.7:                       # road towards a vanishing point on the ridge
        vx = rng.uniform(0.3, 0.7)
        vy = float(np.interp(vx, x[0], ground)) + 0.01
        bx, bw = rng.uniform(0.3, 0.7), rng.uniform(0.15, 0.3)
        t = np.clip((y - vy) / (1 - vy), 0, 1)
        cx, hw = vx + (bx - vx) * t, bw * t
        road = (y > vy) & (np.abs(x - cx) < hw)
        img[road] = _hsv(0, 0, rng.uniform(0.3, 0.45))
        dash = road & (np.abs(x - cx) < 0.06 * hw) & ((np.sqrt(t) * 10) % 1 < 0.5)
        img[dash] = _hsv(0.14, 0.2, 0.95)

    for _ in range(rng.integers(1, 5)):           # houses
        px, w = rng.uniform(0.08, 0.92), rng.uniform(0.06, 0.13)
        base = float(np.interp(px, x[0], ground)) + rng.uniform(0.02, 0.12)
        h, rh = w * rng.uniform(0.6, 1.0), w * rng.uniform(0.35, 0.6)
        body = (np.abs(x - px) < w / 2) & (y < base) & (y > base - h)
        img[body] = _hsv(rng.random(), rng.uniform(0.1, 0.5), rng.uniform(0.6, 0.95))
        top = base - h - rh
        roof = (y >= top) & (y <= base - h) & (np.abs(x - px) < 0.6 * w * (y - top) / rh)
        img[roof] = _hsv(rng.uniform(0.0, 0.06), rng.uniform(0.5, 0.8), rng.uniform(0.3, 0.6))
        for wx in (px - w / 4, px + w / 4):
            win = (np.abs(x - wx) < w / 10) & (np.abs(y - (base - 0.6 * h)) < w / 10)
            img[win] = _hsv(0.13, 0.6, 0.95)
        img[(np.abs(x - px) < w / 10) & (y < base) & (y > base - 0.45 * h)] = _hsv(.08, .6, .3)

    for _ in range(rng.integers(2, 8)):           # trees
        px, r = rng.uniform(0.03, 0.97), rng.uniform(0.025, 0.06)
        base = float(np.interp(px, x[0], ground)) + rng.uniform(0.03, 0.3)
        img[(np.abs(x - px) < r / 4) & (y < base) & (y > base - 2 * r)] = _hsv(.07, .6, .3)
        green = _hsv(rng.uniform(0.22, 0.4), rng.uniform(0.5, 0.9), rng.uniform(0.25, 0.55))
        if rng.random() < 0.5:
            crown = np.hypot(x - px, y - (base - 2.5 * r)) < 1.1 * r
        else:
            tip = base - 5 * r
            crown = (y > tip) & (y < base - r) & (np.abs(x - px) < 0.35 * (y - tip))
        img[crown] = green * (0.8 + 0.4 * tex[crown])[:, None]
    return _to_uint8(img)


# --- style: paintings and textures -------------------------------------------------------------

def brush_strokes(side: int, rng: np.random.Generator) -> np.ndarray:
    """Tapered strokes with bristle streaks following a smooth flow field over an underpainting."""
    pal = palette(rng, 5)
    img = gradient_map(fractal_noise(side, rng, base=2, octaves=3), pal)
    colour_field = fractal_noise(side, rng, base=2, octaves=2)
    flow = rng.uniform(0, np.pi) + rng.uniform(1, 4) * fractal_noise(side, rng, 2, 2)
    for _ in range(260):
        cx, cy = rng.uniform(0, side, 2)
        i, j = min(int(cy), side - 1), min(int(cx), side - 1)
        angle = flow[i, j] + rng.normal(0, 0.15)
        length = side * rng.uniform(0.05, 0.16)
        width = length * rng.uniform(0.12, 0.3)
        colour = gradient_map(np.array([colour_field[i, j] + rng.normal(0, 0.1)]), pal)[0]
        colour = colour * rng.uniform(0.9, 1.1)
        r = int(length / 2 + width) + 1
        y0, y1, x0, x1 = max(i - r, 0), min(i + r, side), max(j - r, 0), min(j + r, side)
        yy, xx = np.mgrid[y0:y1, x0:x1] + 0.5
        dx, dy = xx - cx, yy - cy
        u = dx * np.cos(angle) + dy * np.sin(angle)
        v = -dx * np.sin(angle) + dy * np.cos(angle)
        half = width / 2 * np.sqrt(np.clip(1 - (2 * u / length) ** 2, 0, 1))
        alpha = np.clip(half - np.abs(v), 0, 1)[..., None] * rng.uniform(0.7, 1.0)
        streaks = 1 + 0.12 * np.sin(2 * np.pi * rng.integers(3, 7) * v / width + rng.random() * 6)
        patch = img[y0:y1, x0:x1]
        img[y0:y1, x0:x1] = patch + (colour * streaks[..., None] - patch) * alpha
    return _to_uint8(img)


def waves(side: int, rng: np.random.Generator) -> np.ndarray:
    """Stripes bent by a slower sine and a little noise."""
    y, x = _grid(side)
    theta = rng.uniform(0, np.pi)
    u = x * np.cos(theta) + y * np.sin(theta)
    v = -x * np.sin(theta) + y * np.cos(theta)
    bend = rng.uniform(0.5, 3) * np.sin(2 * np.pi * rng.uniform(0.5, 3) * v + rng.uniform(0, 6))
    phase = bend + 2.0 * fractal_noise(side, rng, base=2, octaves=3)
    t = 0.5 + 0.5 * np.sin(2 * np.pi * rng.uniform(3, 12) * u + phase)
    return _to_uint8(gradient_map(t, palette(rng, int(rng.integers(3, 6)))))


def marbling(side: int, rng: np.random.Generator) -> np.ndarray:
    """Classic marble: a sine of position perturbed by strong turbulence, sharpened into veins."""
    y, x = _grid(side)
    theta = rng.uniform(0, np.pi)
    turbulence = rng.uniform(4, 10) * fractal_noise(side, rng, base=3, octaves=5)
    t = 0.5 + 0.5 * np.sin(2 * np.pi * rng.uniform(1, 4) * (x * np.cos(theta) + y * np.sin(theta))
                           + turbulence)
    veins = t ** rng.uniform(0.4, 2.5)
    return _to_uint8(gradient_map(veins, palette(rng, int(rng.integers(3, 7)))))


def voronoi(side: int, rng: np.random.Generator) -> np.ndarray:
    """Stained glass: palette-coloured Voronoi cells shaded towards their edges, dark leading."""
    n = int(rng.integers(20, 90))
    tree = cKDTree(rng.uniform(0, side, (n, 2)))
    yy, xx = np.mgrid[0:side, 0:side] + 0.5
    dist, idx = tree.query(np.stack([yy.ravel(), xx.ravel()], axis=1), k=2)
    pal = palette(rng, 5)
    colours = pal[rng.integers(len(pal), size=n)] * rng.uniform(0.85, 1.15, (n, 1))
    shade = 1 - 0.35 * dist[:, 0] / (dist[:, 0].max() + 1e-12)
    img = colours[idx[:, 0]] * shade[:, None]
    img[dist[:, 1] - dist[:, 0] < max(1.0, 0.006 * side)] = pal[0] * 0.3
    return _to_uint8(img.reshape(side, side, 3))


def dots(side: int, rng: np.random.Generator) -> np.ndarray:
    """Pointillism: jittered dots coloured by a smooth palette field on a light ground."""
    pal = palette(rng, 5)
    spacing = side * rng.uniform(0.025, 0.05)
    g = np.arange(spacing / 2, side, spacing)
    centres = np.stack(np.meshgrid(g, g, indexing="ij"), -1).reshape(-1, 2)
    centres = np.clip(centres + rng.normal(0, 0.25 * spacing, centres.shape), 0, side - 1)
    field = fractal_noise(side, rng, base=2, octaves=3)
    t = field[centres[:, 0].astype(int), centres[:, 1].astype(int)]
    t = t + rng.normal(0, 0.08, len(centres))
    colours = gradient_map(t, pal)
    radius = spacing * rng.uniform(0.3, 0.6, len(centres))
    yy, xx = np.mgrid[0:side, 0:side] + 0.5
    dist, idx = cKDTree(centres).query(np.stack([yy.ravel(), xx.ravel()], axis=1))
    img = np.tile(pal[-1] * 0.3 + 0.7, (side * side, 1))
    inside = dist < radius[idx]
    img[inside] = colours[idx[inside]]
    return _to_uint8(img.reshape(side, side, 3))


def colourise(gray: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A grayscale texture (H, W) uint8 gradient-mapped through a seeded palette."""
    g = gray.astype(float)
    t = (g - g.min()) / (np.ptp(g) + 1e-12)
    return _to_uint8(gradient_map(t, palette(rng, int(rng.integers(3, 6)))))


PAINTINGS: dict[str, Generator] = {
    "brush_strokes": brush_strokes,
    "waves": waves,
    "marbling": marbling,
    "voronoi": voronoi,
    "dots": dots,
}
