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


# --- StyleNAT stand-in: outdoor churches (LSUN church_outdoor) -----------------------------------

def church(side: int, rng: np.random.Generator) -> np.ndarray:
    """An outdoor church: sky, far tree line, ground, a gabled nave in three-quarter view with
    arched windows and a door, a tower with belfry and spire (cross on top), flanking trees."""
    y, x = _grid(side)
    tex = fractal_noise(side, rng, base=6, octaves=3)
    hue = rng.choice([0.58, 0.6, 0.08]) + rng.normal(0, 0.02)       # blue sky, haze, evening
    grey = rng.random() < 0.3                                       # overcast
    top = _hsv(hue, 0.05 if grey else rng.uniform(0.4, 0.8), rng.uniform(0.55, 0.85))
    low = _hsv(hue + 0.03, 0.05 if grey else rng.uniform(0.1, 0.35), rng.uniform(0.85, 1.0))
    ground_y = rng.uniform(0.72, 0.88)
    img = top + (low - top) * np.clip(y / ground_y, 0, 1)[..., None]
    for _ in range(rng.integers(0, 4)):                              # clouds
        cx, cy, w = rng.uniform(0, 1), rng.uniform(0.05, 0.4), rng.uniform(0.06, 0.15)
        blob = np.exp(-(((x - cx) / w) ** 2 + ((y - cy) / (0.35 * w)) ** 2))
        img = img + (0.97 - img) * (0.8 * blob)[..., None]

    ridge = ground_y - rng.uniform(0.03, 0.1) - 0.04 * fractal_noise(side, rng, base=5)[0]
    far = _hsv(rng.uniform(0.22, 0.36), rng.uniform(0.3, 0.6), rng.uniform(0.25, 0.45))
    img = np.where((y > ridge[None, :])[..., None], far * (0.8 + 0.3 * tex)[..., None], img)
    paved = rng.random() < 0.35
    ground = (_hsv(0.1, 0.1, rng.uniform(0.45, 0.7)) if paved
              else _hsv(rng.uniform(0.2, 0.3), rng.uniform(0.4, 0.7), rng.uniform(0.35, 0.6)))
    img = np.where((y > ground_y)[..., None], ground * (0.85 + 0.3 * tex)[..., None], img)

    stone = rng.choice([_hsv(0.09, 0.2, 0.8), _hsv(0.0, 0.0, 0.9), _hsv(0.03, 0.55, 0.55),
                        _hsv(0.1, 0.3, 0.6), _hsv(0.0, 0.0, 0.55)]) * rng.uniform(0.9, 1.1)
    roof = rng.choice([_hsv(0.6, 0.1, 0.3), _hsv(0.02, 0.6, 0.45), _hsv(0.45, 0.3, 0.4)])
    dark = _hsv(0.62, 0.3, rng.uniform(0.12, 0.3))
    cx = rng.uniform(0.35, 0.65)
    fw, fh = rng.uniform(0.24, 0.4), rng.uniform(0.2, 0.34)   # gable facade width, wall height
    gable = fw * rng.uniform(0.35, 0.6)
    depth = rng.uniform(0.15, 0.35) * rng.choice([-1, 1])       # side wall, left or right
    x0, x1 = cx - fw / 2, cx + fw / 2
    eave = ground_y - fh

    # side wall and its roof slope (darker: in shade), drawn first so the facade covers it
    sx0, sx1 = (x1, x1 + depth) if depth > 0 else (x0 + depth, x0)
    side_wall = (x >= sx0) & (x <= sx1) & (y > eave) & (y < ground_y)
    img[side_wall] = stone * 0.72 * (0.9 + 0.2 * tex[side_wall])[:, None]
    side_roof = (x >= sx0) & (x <= sx1) & (y <= eave) & (y > eave - 0.6 * gable)
    img[side_roof] = roof * (0.85 + 0.3 * tex[side_roof])[:, None]
    n_win = int(rng.integers(2, 5))
    for k in range(n_win):                                        # arched windows, side wall
        wx = sx0 + (k + 0.5) * (sx1 - sx0) / n_win
        ww = 0.25 * abs(depth) / n_win
        arch = eave + 0.35 * fh
        win = (np.abs(x - wx) < ww) & (y > arch) & (y < eave + 0.75 * fh)
        win |= np.hypot((x - wx) / ww, (y - arch) / ww) < 1
        img[win & side_wall] = dark

    facade = (x >= x0) & (x <= x1) & (y > eave) & (y < ground_y)
    facade |= (y <= eave) & (y > eave - gable) & (np.abs(x - cx) < fw / 2 * (y - eave + gable)
                                                     / gable)
    img[facade] = stone * (0.9 + 0.2 * tex[facade])[:, None]
    door_w, door_h = fw * rng.uniform(0.12, 0.2), fh * rng.uniform(0.35, 0.55)
    door = (np.abs(x - cx) < door_w) & (y > ground_y - door_h) & (y < ground_y)
    door |= np.hypot((x - cx) / door_w, (y - (ground_y - door_h)) / door_w) < 1
    img[door] = _hsv(0.07, 0.6, rng.uniform(0.15, 0.35))
    if rng.random() < 0.6:                                        # rose window in the gable
        rose = np.hypot(x - cx, y - (eave - 0.3 * gable)) < 0.22 * gable
        img[rose] = _hsv(rng.uniform(0.55, 0.7), 0.5, 0.35)

    # tower: beside the facade or rising from it, with a belfry opening and a spire
    tw = rng.uniform(0.08, 0.14)
    tx = rng.choice([cx, x0 - tw / 2 if depth > 0 else x1 + tw / 2])
    t_top = ground_y - rng.uniform(0.42, 0.62)
    tower = (np.abs(x - tx) < tw / 2) & (y > t_top) & (y < ground_y)
    img[tower] = stone * 0.95 * (0.9 + 0.2 * tex[tower])[:, None]
    bel = (np.abs(x - tx) < tw / 5) & (y > t_top + 0.2 * tw) & (y < t_top + 0.9 * tw)
    img[bel] = dark
    tip = t_top - rng.uniform(0.1, 0.22)
    spire = (y <= t_top) & (y > tip) & (np.abs(x - tx) < tw / 2 * (y - tip) / (t_top - tip))
    img[spire] = roof * (0.85 + 0.3 * tex[spire])[:, None]
    arm = 0.02
    cross = ((np.abs(x - tx) < 0.004) & (y > tip - 2.5 * arm) & (y <= tip)) | \
            ((np.abs(x - tx) < arm * 0.6) & (np.abs(y - (tip - 1.7 * arm)) < 0.004))
    img[cross] = _hsv(0.12, 0.3, 0.25)

    for _ in range(rng.integers(1, 5)):                          # trees at the sides, in front
        px = rng.choice([rng.uniform(0.0, max(0.05, x0 - 0.1)), rng.uniform(min(0.95, x1 + 0.1),
                                                                            1.0)])
        r, base = rng.uniform(0.04, 0.09), ground_y + rng.uniform(0.0, 0.08)
        img[(np.abs(x - px) < r / 5) & (y < base) & (y > base - 2 * r)] = _hsv(.07, .6, .3)
        crown = np.hypot(x - px, (y - (base - 2.4 * r)) / 1.3) < r
        green = _hsv(rng.uniform(0.22, 0.38), rng.uniform(0.5, 0.85), rng.uniform(0.2, 0.45))
        img[crown] = green * (0.8 + 0.4 * tex[crown])[:, None]
    return _to_uint8(img)
