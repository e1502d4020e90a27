"""smoke_people: procedural people for DynaST's pose -> person smoke runs (DeepFashion stand-in).

Each identity is seeded: skin, hair (short or long), build, a top and a bottom (trousers, shorts
or a skirt) patterned with stripes, checks or dots in two identity colours, sleeve length, shoes
and a plain light backdrop, as In-shop's studio photos. It stands in two seeded poses (arm and
leg spread, elbow and knee bends, lean, head tilt and yaw, position) x two views: `full` (head to
feet) and `close` (zoomed in, cut at the thighs, so knees and ankles leave the frame and their
keypoints are null, as OpenPose misses them in In-shop close-ups). Patterns live in body-part
coordinates (torso, each limb segment), so they move with the limbs and a warp can be seen.

Rows: id `person_<identity>_pose<p>_<view>`; aux `keypoints` (`<id>_keypoints.json`, the format
of `sparsegen.data.deepfashion`: {"frame": [H, W], "points": 18 x [x, y] or null}, COCO-18,
pixel coordinates of the rendered image; null outside the frame or for an ear turned away);
`exemplar` = one of the identity's three other images, seeded (a self pair, as DeepFashion's
deepfashion_self_pair.txt), `self_pair` "1". n_train and n_test count images, multiples of 4.

Splits: an identity's four images share a split, fixed by the source (`Item.split`): n_test / 4
identities, chosen by `assign_splits` over the identity names with the dataset seed, are test.
`exclude` drops single images; an exemplar is never an excluded image.
Images render at twice the prepared size (prepare's antialiased resize reduces them, as smoke.py's
recipes); keypoints are in the rendered frame. Deterministic from the seed; the `source` column
is the complete recipe (`render(side, identity, pose, view)`).
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from functools import partial
from itertools import pairwise
from typing import Any

import numpy as np

from sparsegen.config import ParamsError
from sparsegen.data.faces import HAIR, _ellipse, _paint
from sparsegen.data.labels import KEYPOINTS
from sparsegen.data.prepare import Item, assign_splits
from sparsegen.data.procedural import _grid, _hsv, _to_uint8
from sparsegen.data.smoke import PROCEDURAL_LICENCE, SUPERSAMPLE, SyntheticSource, recipe_seed

VIEWS = {"full": (0.84, 0.07), "close": (1.3, 0.05)}   # body height, top of the head (image units)
POSES = 2
PER_IDENTITY = POSES * len(VIEWS)
PATTERNS = ("stripes", "checks", "dots")
# Body proportions in body heights (head top 0, ankles ~0.96).
NECK, TORSO, UPPER_ARM, FOREARM, THIGH, SHIN = 0.18, 0.33, 0.16, 0.145, 0.23, 0.22
HIP_HALF = 0.055


@dataclass(frozen=True)
class Garment:
    colours: np.ndarray      # (2, 3) RGB in [0, 1]
    pattern: str             # one of PATTERNS
    period: float            # body heights
    angle: float             # radians


@dataclass(frozen=True)
class Look:
    """What stays the same across an identity's images."""

    skin: np.ndarray
    hair: np.ndarray
    long_hair: bool
    build: float             # shoulder half-width, body heights
    top: Garment
    bottom: Garment
    sleeve: float            # fraction of the arm covered
    leg: float               # fraction of the leg covered (trousers / shorts), or skirt length
    skirt: bool
    shoes: np.ndarray
    backdrop: np.ndarray


def _garment(rng: np.random.Generator) -> Garment:
    hues = rng.uniform(0, 1) + np.array([0.0, rng.uniform(0.25, 0.75)])
    dark, light = rng.uniform(0.25, 0.5), rng.uniform(0.75, 0.97)
    values = (dark, light) if rng.random() < 0.5 else (light, dark)
    colours = np.stack([_hsv(h, rng.uniform(0.3, 0.9), v) for h, v in zip(hues, values,
                                                                         strict=True)])
    return Garment(colours, PATTERNS[rng.integers(len(PATTERNS))], rng.uniform(0.1, 0.16),
                   rng.choice([0.0, np.pi / 2, np.pi / 4, -np.pi / 4]))


def look(identity: int) -> Look:
    """The appearance of the identity seeded `identity`."""
    rng = np.random.default_rng(identity)
    skin = _hsv(rng.uniform(0.03, 0.09), rng.uniform(0.25, 0.6), rng.uniform(0.35, 0.95))
    hair = _hsv(*HAIR[rng.integers(len(HAIR))]) * rng.uniform(0.85, 1.15)
    long_hair, build = bool(rng.random() < 0.4), rng.uniform(0.1, 0.125)
    top, bottom = _garment(rng), _garment(rng)
    sleeve = float(rng.choice([0.3, 0.55, 1.0]))
    skirt = bool(rng.random() < 0.3)
    leg = rng.uniform(0.35, 0.7) if skirt else float(rng.choice([0.4, 1.0]))
    shoes = _hsv(rng.uniform(0, 1), rng.uniform(0, 0.5), rng.uniform(0.1, 0.4))
    backdrop = _hsv(rng.uniform(0, 1), rng.uniform(0, 0.08), rng.uniform(0.86, 0.97))
    return Look(skin, hair, long_hair, build, top, bottom, sleeve, leg, skirt, shoes, backdrop)


def _rot(v: np.ndarray, angle: float) -> np.ndarray:
    c, s = math.cos(angle), math.sin(angle)
    return np.array([c * v[0] - s * v[1], s * v[0] + c * v[1]])


@dataclass(frozen=True)
class Pose:
    joints: np.ndarray       # (18, 2) COCO-18 (x, y) in image units
    hidden: frozenset[int]   # keypoints turned away from the camera (an ear)
    height: float            # body height, image units
    down: np.ndarray         # torso axis, unit vector
    tilt: float              # head roll, radians
    yaw: float               # head turn, -0.35 .. 0.35 (> 0: nose towards image right)


def pose(identity: int, pose_seed: int, view: str) -> Pose:
    """The skeleton of identity `identity` in pose `pose_seed`, seen in `view` (VIEWS)."""
    h, top = VIEWS[view]
    build = look(identity).build
    rng = np.random.default_rng(pose_seed)
    cx, lean = 0.5 + rng.uniform(-0.05, 0.05), rng.normal(0, 0.04)
    tilt, yaw = rng.normal(0, 0.08), rng.uniform(-0.35, 0.35)
    arms = [(rng.uniform(0.05, 0.6), rng.uniform(-0.2, 1.4)) for _ in range(2)]
    legs = [(rng.uniform(0.0, 0.22), rng.uniform(-0.15, 0.25)) for _ in range(2)]
    down, right = _rot(np.array([0.0, 1.0]), lean), _rot(np.array([1.0, 0.0]), lean)
    hip = np.array([cx, top + (NECK + TORSO) * h])
    neck = hip - TORSO * h * down
    head_down, head_right = _rot(down, tilt), _rot(right, tilt)
    head = neck - 0.1 * h * head_down
    joints = np.zeros((len(KEYPOINTS), 2))
    joints[0] = head + h * (0.018 * head_down + 0.045 * yaw * head_right)
    joints[1] = neck
    for side, (shoulder, elbow, wrist), (spread, bend) in zip(
            (-1, 1), ((2, 3, 4), (5, 6, 7)), arms, strict=True):   # subject's right = image left
        joints[shoulder] = neck + h * (0.02 * down + side * build * right)
        upper = _rot(down, -side * spread)
        joints[elbow] = joints[shoulder] + UPPER_ARM * h * upper
        joints[wrist] = joints[elbow] + FOREARM * h * _rot(upper, side * bend)
    for side, (hip_k, knee, ankle), (spread, bend) in zip(
            (-1, 1), ((8, 9, 10), (11, 12, 13)), legs, strict=True):
        joints[hip_k] = hip + side * HIP_HALF * h * right
        thigh = _rot(down, -side * spread)
        joints[knee] = joints[hip_k] + THIGH * h * thigh
        joints[ankle] = joints[knee] + SHIN * h * _rot(thigh, side * bend)
    for side, eye, ear in ((-1, 14, 16), (1, 15, 17)):
        joints[eye] = head + h * (-0.008 * head_down + (side * 0.022 + 0.04 * yaw) * head_right)
        joints[ear] = head + h * (side * 0.058 + 0.012 * yaw) * head_right
    hidden = frozenset({17} if yaw > 0.2 else {16} if yaw < -0.2 else set())
    return Pose(joints, hidden, h, down, tilt, yaw)


def keypoints(side: int, identity: int, pose_seed: int, view: str) -> list[list[float] | None]:
    """COCO-18 [x, y] pixel coordinates in the side x side render; None outside it or hidden."""
    p = pose(identity, pose_seed, view)
    out: list[list[float] | None] = []
    for k, (x, y) in enumerate(p.joints * side - 0.5):
        inside = 0 <= x <= side - 1 and 0 <= y <= side - 1
        out.append([round(float(x), 2), round(float(y), 2)] if inside and k not in p.hidden
                   else None)
    return out


def _keypoints_json(side: int, identity: int, pose_seed: int, view: str) -> bytes:
    doc = {"frame": [side, side], "points": keypoints(side, identity, pose_seed, view)}
    return json.dumps(doc, separators=(",", ":")).encode()


# --- rendering ----------------------------------------------------------------------------------

def _pattern(g: Garment, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Garment colour at garment coordinates (u, v) (body heights) -> (H, W, 3)."""
    c, s = math.cos(g.angle), math.sin(g.angle)
    a, b = (u * c + v * s) / g.period, (-u * s + v * c) / g.period
    if g.pattern == "stripes":
        t = np.sin(2 * np.pi * a) * 4 + 0.5
    elif g.pattern == "checks":
        t = np.sin(2 * np.pi * a) * np.sin(2 * np.pi * b) * 8 + 0.5
    else:
        t = (0.28 - np.hypot(a - np.round(a), b - np.round(b))) * 12
    t = np.clip(t, 0, 1)[..., None]
    return g.colours[0] + (g.colours[1] - g.colours[0]) * t


def _segment(x: np.ndarray, y: np.ndarray, a: np.ndarray, b: np.ndarray
             ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(distance to the segment a-b, position along it (0..1 on it), signed offset across)."""
    d = b - a
    length = float(np.hypot(*d)) + 1e-12
    along = ((x - a[0]) * d[0] + (y - a[1]) * d[1]) / length ** 2
    across = ((y - a[1]) * d[0] - (x - a[0]) * d[1]) / length
    t = np.clip(along, 0, 1)
    return np.hypot(x - a[0] - t * d[0], y - a[1] - t * d[1]), along, across


def _convex(x: np.ndarray, y: np.ndarray, corners: list[np.ndarray]) -> np.ndarray:
    """Signed distance (< 0 inside, exact inside) to a convex polygon."""
    centre = np.mean(corners, axis=0)
    sdf = np.full(x.shape, -np.inf)
    for a, b in zip(corners, corners[1:] + corners[:1], strict=True):
        n = np.array([b[1] - a[1], a[0] - b[0]]) / (np.hypot(*(b - a)) + 1e-12)
        if n @ (centre - a) > 0:
            n = -n
        sdf = np.maximum(sdf, (x - a[0]) * n[0] + (y - a[1]) * n[1])
    return sdf


def _limb(img: np.ndarray, x: np.ndarray, y: np.ndarray, a: np.ndarray, b: np.ndarray,
          radii: tuple[float, float], colour: np.ndarray | Garment, h: float, offset: float,
          px: float) -> np.ndarray:
    """Paint a tapered capsule a -> b, shaded across; a Garment is patterned in the limb's own
    coordinates (across, along + offset), so the pattern moves with the limb."""
    dist, along, across = _segment(x, y, a, b)
    t = np.clip(along, 0, 1)
    radius = radii[0] + (radii[1] - radii[0]) * t
    shade = (1 - 0.2 * np.clip(across / radius, -1, 1) ** 2)[..., None]
    if isinstance(colour, Garment):
        length = float(np.hypot(*(b - a)))
        colour = _pattern(colour, across / h, along * length / h + offset)
    return _paint(img, dist - radius, colour * shade, px)


def _covered(img: np.ndarray, x: np.ndarray, y: np.ndarray, joints: list[np.ndarray],
             fraction: float, radii: tuple[float, float], garment: Garment, h: float,
             px: float) -> np.ndarray:
    """A sleeve or trouser leg: `fraction` of the limb path joints[0] -> joints[1] -> joints[2]
    covered from its root."""
    left, offset = fraction * sum(float(np.hypot(*(q - p))) for p, q in pairwise(joints)), 0.0
    for p, q in pairwise(joints):
        length = float(np.hypot(*(q - p)))
        if left <= 0:
            break
        end = p + (q - p) * min(1.0, left / length)
        img = _limb(img, x, y, p, end, radii, garment, h, offset, px)
        left, offset = left - length, offset + length / h
    return img


def render(side: int, identity: int, pose_seed: int, view: str) -> np.ndarray:
    """The person `identity` in pose `pose_seed` and `view`, uint8 (side, side, 3)."""
    lk, p = look(identity), pose(identity, pose_seed, view)
    y, x = _grid(side)
    h, j, px = p.height, list(p.joints), float(side)
    down = p.down
    right = np.array([down[1], -down[0]])
    img = lk.backdrop * (1.0 - 0.06 * y)[..., None] * np.ones(3)
    feet = (j[10] + j[13]) / 2 + 0.03 * h * down
    img = img * (1 - 0.12 * np.exp(-((x - feet[0]) / (0.2 * h)) ** 2
                                   - ((y - feet[1]) / (0.025 * h)) ** 2))[..., None]

    head_down, head_right = _rot(down, p.tilt), _rot(right, p.tilt)
    head = j[1] - 0.1 * h * head_down
    hu = ((x - head[0]) * head_right[0] + (y - head[1]) * head_right[1]) / h
    hv = ((x - head[0]) * head_down[0] + (y - head[1]) * head_down[1]) / h
    if lk.long_hair:                               # behind the head, down past the shoulders
        dist, _, _ = _segment(x, y, head, j[1] + 0.1 * h * down)
        img = _paint(img, dist - 0.075 * h, lk.hair, px)

    for hip, knee, ankle in ((j[8], j[9], j[10]), (j[11], j[12], j[13])):
        img = _limb(img, x, y, hip, knee, (0.042 * h, 0.035 * h), lk.skin, h, 0, px)
        img = _limb(img, x, y, knee, ankle, (0.035 * h, 0.027 * h), lk.skin, h, 0, px)
        shoe = ankle + 0.02 * h * down
        img = _paint(img, _ellipse(x, y, shoe[0], shoe[1], 0.04 * h, 0.022 * h), lk.shoes, px)
    mid_hip = (j[8] + j[11]) / 2
    waist = [mid_hip - 0.075 * h * right - 0.05 * h * down,
             mid_hip + 0.075 * h * right - 0.05 * h * down]
    bu = ((x - mid_hip[0]) * right[0] + (y - mid_hip[1]) * right[1]) / h
    bv = ((x - mid_hip[0]) * down[0] + (y - mid_hip[1]) * down[1]) / h
    if lk.skirt:
        spread = max(0.13 * h, abs(float((j[12] - j[9]) @ right)) / 2 + 0.06 * h)
        hem = mid_hip + lk.leg * (THIGH + SHIN) * h * down
        skirt = _convex(x, y, [*waist, hem + spread * right, hem - spread * right])
        img = _paint(img, skirt - 0.01 * h, _pattern(lk.bottom, bu, bv), px)
    else:
        seat = _convex(x, y, [*waist, j[11] + 0.04 * h * down, j[8] + 0.04 * h * down])
        img = _paint(img, seat - 0.03 * h, _pattern(lk.bottom, bu, bv), px)
        for hip, knee, ankle in ((j[8], j[9], j[10]), (j[11], j[12], j[13])):
            img = _covered(img, x, y, [hip, knee, ankle], lk.leg, (0.052 * h, 0.04 * h),
                           lk.bottom, h, px)

    img = _limb(img, x, y, j[1], head, (0.028 * h, 0.026 * h), lk.skin * 0.85, h, 0, px)
    torso = _convex(x, y, [j[2] - 0.035 * h * right - 0.015 * h * down,
                           j[5] + 0.035 * h * right - 0.015 * h * down,
                           j[11] + 0.035 * h * right + 0.01 * h * down,
                           j[8] - 0.035 * h * right + 0.01 * h * down])
    tu = ((x - j[1][0]) * right[0] + (y - j[1][1]) * right[1]) / h
    tv = ((x - j[1][0]) * down[0] + (y - j[1][1]) * down[1]) / h
    shade = (1 - 0.15 * np.clip(tu / (lk.build + 0.03), -1, 1) ** 2)[..., None]
    img = _paint(img, torso - 0.012 * h, _pattern(lk.top, tu, tv) * shade, px)
    for shoulder, elbow, wrist in ((j[2], j[3], j[4]), (j[5], j[6], j[7])):
        img = _limb(img, x, y, shoulder, elbow, (0.034 * h, 0.028 * h), lk.skin, h, 0, px)
        img = _limb(img, x, y, elbow, wrist, (0.028 * h, 0.022 * h), lk.skin, h, 0, px)
        hand = wrist + 0.025 * h * (wrist - elbow) / (np.hypot(*(wrist - elbow)) + 1e-12)
        img = _paint(img, np.hypot(x - hand[0], y - hand[1]) - 0.026 * h, lk.skin * 0.95, px)
        img = _covered(img, x, y, [shoulder, elbow, wrist], lk.sleeve, (0.042 * h, 0.034 * h),
                       lk.top, h, px)

    for k in (16, 17):
        if k not in p.hidden:
            ear = j[k] - 0.012 * h * (j[k] - head) / (np.hypot(*(j[k] - head)) + 1e-12)
            img = _paint(img, np.hypot(x - ear[0], y - ear[1]) - 0.014 * h, lk.skin * 0.85, px)
    img = _paint(img, _ellipse(hu, hv, 0, 0, 0.06, 0.075), lk.skin, px * h)
    hairline = -0.028 + 2.5 * (hu - 0.02 * p.yaw) ** 2
    cap = np.maximum(_ellipse(hu, hv, 0, -0.01, 0.066, 0.08), hv - hairline)
    img = _paint(img, cap, lk.hair, px * h)
    for k in (14, 15):
        img = _paint(img, np.hypot(x - j[k][0], y - j[k][1]) - 0.008 * h, _hsv(0, 0, 0.12), px)
    mouth = j[0] + 0.03 * h * head_down
    mu = ((x - mouth[0]) * head_right[0] + (y - mouth[1]) * head_right[1]) / h
    mv = ((x - mouth[0]) * head_down[0] + (y - mouth[1]) * head_down[1]) / h
    img = _paint(img, _ellipse(mu, mv, 0, 0, 0.016, 0.006), _hsv(0.98, 0.5, 0.55), px * h)
    return _to_uint8(img)


# --- the source ---------------------------------------------------------------------------------

def people_items(settings: Mapping[str, Any]) -> list[Item]:
    """n_train + n_test images, 4 per identity (2 poses x 2 views), identities split whole."""
    n_train, n_test, seed = settings["n_train"], settings["n_test"], settings["seed"]
    side = SUPERSAMPLE * settings["size"]
    exclude = frozenset(settings.get("exclude") or ())
    for key, value in (("n_train", n_train), ("n_test", n_test)):
        if value % PER_IDENTITY or value < 0:
            raise ParamsError(f"smoke_people: {key} {value} is not a multiple of "
                              f"{PER_IDENTITY} (each identity: {POSES} poses x {len(VIEWS)} views)")
    if n_train == 0:
        raise ParamsError("smoke_people: n_train 0 leaves no train identity")
    names = [f"person_{i:04d}" for i in range((n_train + n_test) // PER_IDENTITY)]
    split_of = assign_splits(names, n_test // PER_IDENTITY, seed)
    items = []
    for i, name in enumerate(names):
        identity = recipe_seed(seed, i)
        shots = [(recipe_seed(identity, p), f"{name}_pose{p}_{view}", view)
                 for p in range(POSES) for view in VIEWS]
        pick = np.random.default_rng(recipe_seed(identity, POSES))
        for pose_seed, sample_id, view in shots:
            # a seeded preference order over the other three: excluding an image changes
            # only the exemplars that were that image
            others = [other for _, other, _ in shots if other != sample_id]
            kept = [others[k] for k in pick.permutation(len(others)) if others[k] not in exclude]
            if not kept and sample_id not in exclude:
                raise ParamsError(f"smoke_people: every other image of {name} is excluded, so "
                                  f"{sample_id} has no exemplar; exclude it too")
            exemplar = kept[0] if kept else ""
            recipe = f"identity={identity} pose={pose_seed} view={view} side={side}"
            items.append(Item(
                id=sample_id, name=sample_id, source=f"procedural:person {recipe}",
                licence=PROCEDURAL_LICENCE, load=partial(render, side, identity, pose_seed, view),
                split=split_of[name], extra={"exemplar": exemplar, "self_pair": "1"},
                aux={"keypoints": ("_keypoints.json",
                                   partial(_keypoints_json, side, identity, pose_seed, view))}))
    return items


PEOPLE = SyntheticSource("smoke_people", people_items,
                         "procedural people with COCO-18 keypoints (DeepFashion stand-in)")
