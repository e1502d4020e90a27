"""DynaST's semantic maps S: pose skeletons (DeepFashion) and face edges (CelebA-HQ), as CoCosNet
builds them at load time (`data/deepfashion_dataset.py`, `data/celebahqedge_dataset.py`), with
scipy / scikit-image / PIL in place of OpenCV.

pose (20 channels): the RGB skeleton drawn on a black canvas of the keypoints' frame, then
NEAREST-resized: 18 filled joint circles (radius 4), then the first 17 OpenPose limbs, each a
filled ellipse (half-length |limb| / 2, half-width 4) alpha-blended 0.4 (canvas) / 0.6 (limb
colour); + 17 per-limb distance maps: L1 distance to the limb's ellipse, / 3, floored and clipped
to [0, 255] (uint8), BILINEAR-resized, / 255. The geometry follows the code: joint centres and
the ellipse centre, half-length and angle are truncated to ints; the code draws into a BGR canvas
and converts it to RGB, so joint i's RGB colour is OpenPose's table entry reversed.
A limb with a missing endpoint has an empty mask; OpenCV's distance transform of an image with no
zero pixel is FLT_MAX everywhere (checked with opencv-python-headless 4.14), so after the clip
that map is 255 -> 1.0 everywhere ("far from this limb"), as here.
Keypoint frames smaller or larger than DeepFashion's 256 x 256 are drawn as if at 256: radius
and half-width are round(4 * max(H, W) / 256) (at least 1) and distances are counted in 256-frame
pixels (d * 256 / max(H, W)), so a 64-pixel smoke frame gives radius 1 and the same distance
scale; at 256 every number is the code's.

edge (15 channels): image BILINEAR-resized and part map NEAREST-resized to the load size; part
boundaries = pixels whose part differs from a 4-neighbour (both sides of the change);
`skimage.feature.canny` with default parameters on PIL's grayscale of the image, kept outside the
inner-face parts (background and hair); channels [boundaries OR canny, the 13 parts' L1 distance
maps to their own boundary (/3, as above; 1.0 everywhere for a part absent from the map), the
boundaries].

Rasterisation is written here, not OpenCV's: circles are exact (pixels within the radius, as
cv2.circle); an ellipse is cv2.ellipse2Poly's 1-degree polygon filled by row spans between its
outermost edge crossings plus its outline, as cv2.fillConvexPoly fills it. On random limbs the
masks equal OpenCV 4.14's about half the time and differ by 7 pixels on average (of ~1500), along
the long sides, where OpenCV's fixed-point edge walking of the rounded (slightly non-convex)
polygon rounds differently.
"""

from __future__ import annotations

import colorsys
import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from scipy.ndimage import distance_transform_cdt
from skimage.feature import canny

from sparsegen.data.manifest import Sample
from sparsegen.io import read_image, read_json

LABEL_CHANNELS = {"pose": 20, "edge": 15}

# COCO-18, OpenPose order.
KEYPOINTS = ("nose", "neck", "r_shoulder", "r_elbow", "r_wrist", "l_shoulder", "l_elbow",
             "l_wrist", "r_hip", "r_knee", "r_ankle", "l_hip", "l_knee", "l_ankle", "r_eye",
             "l_eye", "r_ear", "l_ear")
# The first 17 of OpenPose's 19 limbSeq pairs (0-based); the ear-shoulder pairs are not drawn.
LIMBS = ((1, 2), (1, 5), (2, 3), (3, 4), (5, 6), (6, 7), (1, 8), (8, 9), (9, 10), (1, 11),
         (11, 12), (12, 13), (1, 0), (0, 14), (14, 16), (0, 15), (15, 17))
# OpenPose's colour table: 18 hues 20 degrees apart at full saturation, (255, 0, 0),
# (255, 85, 0), ...; drawn as BGR, so the RGB skeleton shows each triplet reversed.
OPENPOSE_COLOURS = tuple(tuple(round(255 * c) for c in colorsys.hsv_to_rgb(i / 18, 1, 1))
                         for i in range(18))
JOINT_RGB = np.array([c[::-1] for c in OPENPOSE_COLOURS], dtype=np.float64)
RADIUS = 4
STICKWIDTH = 4
REFERENCE_FRAME = 256       # DeepFashion In-shop: keypoints in 256 x 256 images

# CelebAMask-HQ parts, index 1..13 in the part maps (0: background, neck, cloth, ...).
PARTS = ("skin", "l_brow", "r_brow", "l_eye", "r_eye", "l_ear", "r_ear", "nose", "u_lip",
         "mouth", "l_lip", "eye_g", "hair")
HAIR = PARTS.index("hair") + 1

Point = Sequence[float] | None


class LabelError(ValueError):
    """A keypoint or part file is missing, malformed, or of the wrong shape."""


def _distance_map(mask: np.ndarray, unit: float = 1.0) -> np.ndarray:
    """uint8 L1 distance to the True pixels of `mask`, counted in `unit` pixels, / 3, floored
    and clipped to [0, 255] (cv2.distanceTransform(255 - mask, DIST_L1, 3) / 3 -> uint8).
    An empty mask gives 255 everywhere (OpenCV's FLT_MAX, clipped)."""
    if not mask.any():
        return np.full(mask.shape, 255, dtype=np.uint8)
    distance = distance_transform_cdt(~mask, metric="taxicab") / unit
    return np.clip(distance / 3, 0, 255).astype(np.uint8)


def limb_mask(p: Sequence[float], q: Sequence[float], half_width: int,
              frame: tuple[int, int]) -> np.ndarray:
    """Bool (H, W) mask of the limb p -> q ([x, y] pixels) as OpenCV draws it: cv2.ellipse2Poly's
    polygon (integer centre, half-length int(|pq| / 2), half-width, angle int(degrees),
    1-degree steps, vertices rounded), filled like cv2.fillConvexPoly: on each row the span
    between the outermost edge crossings, ends rounded, plus the outline as DDA lines."""
    cx, cy = int((p[0] + q[0]) / 2), int((p[1] + q[1]) / 2)
    half_length = int(math.hypot(p[0] - q[0], p[1] - q[1]) / 2)
    angle = math.radians(int(math.degrees(math.atan2(p[1] - q[1], p[0] - q[0]))))
    t = np.radians(np.arange(361))
    x = cx + half_length * np.cos(t) * math.cos(angle) - half_width * np.sin(t) * math.sin(angle)
    y = cy + half_length * np.cos(t) * math.sin(angle) + half_width * np.sin(t) * math.cos(angle)
    rows, cols = np.rint(y).astype(int), np.rint(x).astype(int)
    mask = np.zeros(frame, dtype=bool)
    r0, r1, c0, c1 = rows[:-1], rows[1:], cols[:-1], cols[1:]
    span = np.arange(max(rows.min(), 0), min(rows.max(), frame[0] - 1) + 1)[:, None]
    if span.size:
        crosses = (span >= np.minimum(r0, r1)) & (span <= np.maximum(r0, r1)) & (r0 != r1)
        with np.errstate(divide="ignore", invalid="ignore"):
            at = np.where(crosses, c0 + (span - r0) * (c1 - c0) / (r1 - r0), np.nan)
        found = crosses.any(axis=1)
        left = np.floor(np.nanmin(np.where(found[:, None], at, 0), axis=1) + 0.5)
        right = np.floor(np.nanmax(np.where(found[:, None], at, -1), axis=1) + 0.5)
        columns = np.arange(frame[1])[None, :]
        mask[span[:, 0]] = found[:, None] & (columns >= left[:, None]) & (columns <= right[:, None])
    steps = np.maximum(np.maximum(np.abs(r1 - r0), np.abs(c1 - c0)), 1)
    edge = np.repeat(np.arange(len(steps)), steps + 1)
    first = np.repeat(np.cumsum(steps + 1) - steps - 1, steps + 1)
    s = (np.arange(edge.size) - first) / steps[edge]
    r = np.rint(r0[edge] + (r1 - r0)[edge] * s).astype(int)
    c = np.rint(c0[edge] + (c1 - c0)[edge] * s).astype(int)
    inside = (r >= 0) & (r < frame[0]) & (c >= 0) & (c < frame[1])
    mask[r[inside], c[inside]] = True
    return mask


def _frame_scale(frame: tuple[int, int]) -> tuple[float, int, int]:
    """(pixels per 256-frame pixel, joint radius, limb half-width) for a keypoint frame."""
    scale = max(frame) / REFERENCE_FRAME
    return scale, max(1, round(RADIUS * scale)), max(1, round(STICKWIDTH * scale))


def pose_label(points: Sequence[Point], frame: tuple[int, int], size: int) -> torch.Tensor:
    """DeepFashion's 20-channel pose label (float (20, size, size) in [0, 1]) from 18 COCO-18
    keypoints ([x, y] pixels of an H x W `frame`, or None where missing)."""
    if len(points) != len(KEYPOINTS):
        raise LabelError(f"pose_label: {len(points)} keypoints, expected {len(KEYPOINTS)}")
    h, w = int(frame[0]), int(frame[1])
    scale, radius, half_width = _frame_scale((h, w))
    canvas = np.zeros((h, w, 3), dtype=np.uint8)
    for i, point in enumerate(points):
        if point is not None:                      # cv2.circle(filled): |pixel - centre| <= r
            x, y = int(point[0]), int(point[1])
            top, left = max(y - radius, 0), max(x - radius, 0)
            rows = np.arange(top, min(y + radius + 1, h))[:, None]
            cols = np.arange(left, min(x + radius + 1, w))[None, :]
            disk = (cols - x) ** 2 + (rows - y) ** 2 <= radius ** 2
            canvas[top:top + disk.shape[0], left:left + disk.shape[1]][disk] = JOINT_RGB[i]
    distances = []
    for i, (a, b) in enumerate(LIMBS):
        if points[a] is None or points[b] is None:
            distances.append(_distance_map(np.zeros((h, w), dtype=bool)))
            continue
        mask = limb_mask(points[a], points[b], half_width, (h, w))
        blended = np.rint(0.4 * canvas[mask] + 0.6 * JOINT_RGB[i])   # cv2.addWeighted(.4, .6)
        canvas[mask] = blended.astype(np.uint8)
        distances.append(_distance_map(mask, unit=scale))
    skeleton = np.asarray(Image.fromarray(canvas).resize((size, size), Image.Resampling.NEAREST))
    maps = [np.asarray(Image.fromarray(d).resize((size, size), Image.Resampling.BILINEAR))
            for d in distances]
    out = np.concatenate([skeleton.transpose(2, 0, 1), np.stack(maps)])
    return torch.from_numpy(out.astype(np.float32) / 255.0)


def part_boundaries(parts: np.ndarray) -> np.ndarray:
    """Bool mask of pixels whose value differs from any 4-neighbour (both sides of a change)."""
    edge = np.zeros(parts.shape, dtype=bool)
    horizontal = parts[:, 1:] != parts[:, :-1]
    vertical = parts[1:] != parts[:-1]
    edge[:, 1:] |= horizontal
    edge[:, :-1] |= horizontal
    edge[1:] |= vertical
    edge[:-1] |= vertical
    return edge


def edge_label(image: np.ndarray, parts: np.ndarray, size: int) -> torch.Tensor:
    """CelebA-HQ's 15-channel edge label (float (15, size, size) in [0, 1]) from a uint8 RGB
    image (H, W, 3) and its part index map (h, w) (0 background, 1..13 = PARTS)."""
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise LabelError(f"edge_label: image must be uint8 (H, W, 3), got {image.dtype} "
                         f"{image.shape}")
    if parts.ndim != 2:
        raise LabelError(f"edge_label: part map must be (H, W), got {parts.shape}")
    if parts.max(initial=0) > len(PARTS):
        raise LabelError(f"edge_label: part index {int(parts.max())} > {len(PARTS)}")
    rgb = Image.fromarray(image).resize((size, size), Image.Resampling.BILINEAR)
    part = np.asarray(Image.fromarray(parts.astype(np.uint8))
                      .resize((size, size), Image.Resampling.NEAREST))
    boundaries = part_boundaries(part)
    distances = [_distance_map(part_boundaries(part == k)) for k in range(1, len(PARTS) + 1)]
    inner = (part > 0) & (part != HAIR)
    background = canny(np.asarray(rgb.convert("L"))) & ~inner
    out = np.concatenate([(boundaries | background)[None] * 255.0, np.stack(distances),
                          boundaries[None] * 255.0])
    return torch.from_numpy(out.astype(np.float32) / 255.0)


def _aux_path(sample: Sample, column: str) -> Path:
    """Absolute path of a sample's aux file (its manifest column is relative to the dataset)."""
    root = sample.path.parent.parent
    if not sample.extra.get(column):
        raise LabelError(f"{root / 'manifest.csv'}: sample {sample.id!r} has no {column!r} "
                         f"column (not a dataset with {column} files)")
    return root / sample.extra[column]


def read_keypoints(path: Path) -> tuple[tuple[int, int], list[Point]]:
    """Frame (H, W) and 18 points of a keypoints JSON file."""
    try:
        doc = read_json(path)
    except FileNotFoundError:
        raise LabelError(f"{path}: keypoint file not found") from None
    except ValueError as e:
        raise LabelError(str(e)) from None
    if not isinstance(doc, dict) or "frame" not in doc or "points" not in doc:
        raise LabelError(f"{path}: expected {{\"frame\": [H, W], \"points\": [...]}}")
    frame, points = doc["frame"], doc["points"]
    if (not isinstance(frame, list) or len(frame) != 2
            or not all(type(v) is int and v > 0 for v in frame)):
        raise LabelError(f"{path}: frame {frame!r} is not [H, W] (positive ints)")
    if not isinstance(points, list) or len(points) != len(KEYPOINTS):
        count = len(points) if isinstance(points, list) else type(points).__name__
        raise LabelError(f"{path}: {count} points, expected {len(KEYPOINTS)} (COCO-18)")
    for k, p in enumerate(points):
        if p is not None and not (isinstance(p, list) and len(p) == 2 and all(
                type(v) in (int, float) and math.isfinite(v) for v in p)):
            raise LabelError(f"{path}: point {k} ({KEYPOINTS[k]}) {p!r} is not [x, y] or null")
    return (frame[0], frame[1]), points


def read_parts(path: Path) -> np.ndarray:
    """uint8 (H, W) part index map of a single-channel PNG."""
    try:
        image = Image.open(path)
        image.load()
    except FileNotFoundError:
        raise LabelError(f"{path}: part map not found") from None
    except (OSError, SyntaxError, ValueError) as e:
        raise LabelError(f"{path}: unreadable or corrupt part map ({e})") from None
    with image:
        if image.mode not in ("L", "P"):
            raise LabelError(f"{path}: part map has mode {image.mode}, expected a "
                             f"single-channel index map (L or P)")
        parts = np.array(image)
    if parts.max(initial=0) > len(PARTS):
        raise LabelError(f"{path}: part index {int(parts.max())} > {len(PARTS)} ({PARTS[-1]})")
    return parts


def load_label(sample: Sample, task: str, size: int) -> torch.Tensor:
    """The semantic map of a prepared sample: "pose" from its `keypoints` aux file, "edge" from
    its `parts` aux file and its image; float (LABEL_CHANNELS[task], size, size)."""
    if task == "pose":
        frame, points = read_keypoints(_aux_path(sample, "keypoints"))
        return pose_label(points, frame, size)
    if task == "edge":
        path = _aux_path(sample, "parts")
        parts = read_parts(path)
        try:
            return edge_label(read_image(sample.path), parts, size)
        except LabelError as e:
            raise LabelError(f"{path}: {e}") from None
    raise ValueError(f"task {task!r} is not one of {', '.join(LABEL_CHANNELS)}")
