"""iLAT's pose masks (A.2, Fig. 7): limb skeletons dilated by a per-action square kernel.

A skeleton is its limbs drawn as 1-pixel lines (8-connected, Bresenham, as cv2.line) between
joints that are both visible, plus every visible joint itself, then dilated with a
kernel x kernel square (a max filter, as cv2.dilate with np.ones((k, k)) and its centred
anchor): a pixel spreads k // 2 pixels right/down and (k - 1) // 2 left/up. The mask of a pair
is the union of both poses' dilated skeletons (Sec. 3.3: "the union of conditional and target
masks got by dilating the poses").

Units: points are [x, y] pixel coordinates (pixel centres at integers) of a frame x frame image
and the kernel is counted in pixels of that frame; the paper does not state it, and Penn Action
frames are resized to 256 x 256 (issue 11), so ACTION_KERNELS are 256-frame pixels. Drawing at
another side scales both: x' = (x + 0.5) * side / frame - 0.5, kernel' = max(1, round(kernel *
side / frame)). The canvas is padded by the kernel while drawing, so limbs that leave the frame
still dilate into it.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy.ndimage import maximum_filter
from skimage.draw import line

from sparsegen.data.labels import KEYPOINTS, LIMBS

# Penn Action's 13 joints in the order of its labels/*.mat `x`, `y`, `visibility` columns.
PA_JOINTS = ("head", "l_shoulder", "r_shoulder", "l_elbow", "r_elbow", "l_wrist", "r_wrist",
             "l_hip", "r_hip", "l_knee", "r_knee", "l_ankle", "r_ankle")
_PA_BONES = (("head", "l_shoulder"), ("head", "r_shoulder"), ("l_shoulder", "r_shoulder"),
             ("l_shoulder", "l_elbow"), ("l_elbow", "l_wrist"),
             ("r_shoulder", "r_elbow"), ("r_elbow", "r_wrist"),
             ("l_shoulder", "l_hip"), ("r_shoulder", "r_hip"), ("l_hip", "r_hip"),
             ("l_hip", "l_knee"), ("l_knee", "l_ankle"), ("r_hip", "r_knee"), ("r_knee", "r_ankle"))
LIMBS_13 = tuple((PA_JOINTS.index(a), PA_JOINTS.index(b)) for a, b in _PA_BONES)
# COCO-18 (OpenPose order, sparsegen.data.labels.KEYPOINTS): OpenPose's 17 drawn limbs.
LIMBS_18 = LIMBS
JOINTS = {13: PA_JOINTS, 18: KEYPOINTS}
LIMBS_BY_JOINTS = {13: LIMBS_13, 18: LIMBS_18}

# A.2 / Fig. 7: dilation kernel per Penn Action action, pixels of the 256 x 256 frame.
ACTION_KERNELS = {
    "baseball_pitch": 15, "bowl": 20, "situp": 25, "strum_guitar": 25, "jump_rope": 30,
    "pullup": 30, "pushup": 30, "baseball_swing": 60, "jumping_jacks": 60,
    "tennis_forehand": 60, "tennis_serve": 60, "golf_swing": 70, "bench_press": 120,
    "clean_and_jerk": 120, "squat": 120,
}

Points = Sequence[Sequence[float] | None]


def keypoint_array(points: Points) -> np.ndarray:
    """A keypoints file's `points` (J x [x, y] or null) -> float (J, 3) [x, y, visible];
    a null point is (-1, -1, 0)."""
    out = np.zeros((len(points), 3))
    for j, p in enumerate(points):
        out[j] = (-1.0, -1.0, 0.0) if p is None else (p[0], p[1], 1.0)
    return out


def action_kernel(action: str, scale: float = 1.0) -> int:
    """ACTION_KERNELS[action] * scale, rounded, at least 1 (scale: pixels per 256-frame pixel)."""
    if action not in ACTION_KERNELS:
        raise KeyError(f"action {action!r} has no kernel; Penn Action's actions are "
                       f"{', '.join(sorted(ACTION_KERNELS))}")
    return max(1, round(ACTION_KERNELS[action] * scale))


def dilate(mask: np.ndarray, kernel: int) -> np.ndarray:
    """Binary dilation of a bool (H, W) mask by a kernel x kernel square (kernel >= 1)."""
    if kernel < 1:
        raise ValueError(f"dilation kernel {kernel} is not >= 1")
    return maximum_filter(np.asarray(mask, dtype=bool), size=kernel, mode="constant", cval=False)


def skeleton_mask(points: np.ndarray, limbs: Sequence[tuple[int, int]], kernel: float,
                  side: int, frame: int | None = None) -> np.ndarray:
    """Bool (side, side) mask of one pose: limbs between visible joints as 1-pixel lines and
    the visible joints, dilated by a kernel x kernel square.

    points: (J, 3) [x, y, visible] in pixels of a frame x frame image (frame None: side);
    kernel: pixels of that frame (fractional allowed: it is rounded after rescaling to
    `side`, module docstring)."""
    points = np.asarray(points, dtype=float)
    if points.ndim != 2 or points.shape[1] != 3:
        raise ValueError(f"points have shape {points.shape}; expected (joints, 3) [x, y, visible]")
    if limbs and max(max(limb) for limb in limbs) >= len(points):
        raise ValueError(f"limbs reach joint {max(max(limb) for limb in limbs)} but the pose has "
                         f"{len(points)} points")
    frame = side if frame is None else frame
    scale = side / frame
    k = max(1, round(kernel * scale))
    pad = k
    xy = np.rint((points[:, :2] + 0.5) * scale - 0.5).astype(int) + pad
    visible = points[:, 2] > 0
    canvas = np.zeros((side + 2 * pad, side + 2 * pad), dtype=bool)

    def put(rows: np.ndarray, cols: np.ndarray) -> None:
        keep = (rows >= 0) & (rows < canvas.shape[0]) & (cols >= 0) & (cols < canvas.shape[1])
        canvas[rows[keep], cols[keep]] = True

    for a, b in limbs:
        if visible[a] and visible[b]:
            put(*line(xy[a, 1], xy[a, 0], xy[b, 1], xy[b, 0]))
    put(xy[visible, 1], xy[visible, 0])
    return dilate(canvas, k)[pad:pad + side, pad:pad + side]


def pair_mask(a: np.ndarray, b: np.ndarray, limbs: Sequence[tuple[int, int]], kernel: float,
              side: int, frame: int | None = None) -> np.ndarray:
    """Union of the two poses' dilated skeletons (Sec. 3.3), bool (side, side)."""
    return (skeleton_mask(a, limbs, kernel, side, frame)
            | skeleton_mask(b, limbs, kernel, side, frame))


def action_mask(a: Points, b: Points, action: str, side: int, frame: int,
                kernel_scale: float) -> np.ndarray:
    """The Penn Action pair mask of two keypoints files' `points` (13 x [x, y] or null, pixels
    of a frame x frame image), drawn at `side` with kernel action_kernel(action, kernel_scale)
    in pixels at `side` (kernel_scale: side pixels per 256-frame pixel; 1 at the paper's 256)."""
    kernel = action_kernel(action, kernel_scale) * frame / side      # in frame pixels
    return pair_mask(keypoint_array(a), keypoint_array(b), LIMBS_13, kernel, side, frame)
