"""iLAT pose masks (sparsegen.data.pose_masks): limb lines, square dilation, unions, scaling."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.ndimage import label

from sparsegen.data import labels
from sparsegen.data.pose_masks import (
    ACTION_KERNELS,
    LIMBS_13,
    LIMBS_18,
    PA_JOINTS,
    action_kernel,
    action_mask,
    dilate,
    keypoint_array,
    pair_mask,
    skeleton_mask,
)


def _pose(*points) -> np.ndarray:
    """[x, y] or None per joint -> (J, 3) [x, y, visible]."""
    return keypoint_array(list(points))


def _square_dilation(mask: np.ndarray, k: int) -> np.ndarray:
    """Explicit loops: each True pixel spreads k // 2 right/down, (k - 1) // 2 left/up."""
    out = np.zeros_like(mask)
    h, w = mask.shape
    for r, c in zip(*np.nonzero(mask), strict=True):
        for dr in range(-((k - 1) // 2), k // 2 + 1):
            for dc in range(-((k - 1) // 2), k // 2 + 1):
                if 0 <= r + dr < h and 0 <= c + dc < w:
                    out[r + dr, c + dc] = True
    return out


def test_kernel_table_is_appendix_a2():
    by_kernel = {15: ["baseball_pitch"], 20: ["bowl"], 25: ["situp", "strum_guitar"],
                 30: ["jump_rope", "pullup", "pushup"],
                 60: ["baseball_swing", "jumping_jacks", "tennis_forehand", "tennis_serve"],
                 70: ["golf_swing"], 120: ["bench_press", "clean_and_jerk", "squat"]}
    expected = {a: k for k, actions in by_kernel.items() for a in actions}
    assert expected == ACTION_KERNELS and len(ACTION_KERNELS) == 15   # Penn Action's 15 actions
    assert action_kernel("squat") == 120 and action_kernel("squat", 32 / 256) == 15
    assert action_kernel("baseball_pitch", 0.01) == 1                  # never below one pixel
    with pytest.raises(KeyError, match="'dance' has no kernel"):
        action_kernel("dance")


def test_joint_sets_and_limbs():
    assert PA_JOINTS[0] == "head" and len(PA_JOINTS) == 13
    assert PA_JOINTS[1:3] == ("l_shoulder", "r_shoulder") and PA_JOINTS[-2:] == ("l_ankle",
                                                                                  "r_ankle")
    assert LIMBS_18 == labels.LIMBS
    for limbs, n in ((LIMBS_13, 13), (LIMBS_18, 18)):
        graph = np.zeros((n, n), dtype=bool)
        for a, b in limbs:
            assert a != b
            graph[a, b] = graph[b, a] = True
        reach = np.eye(n, dtype=bool)
        for _ in range(n):
            reach = reach | (reach.astype(int) @ graph.astype(int) > 0)
        assert reach.all()                                # one connected skeleton


def test_limb_pixels_are_a_one_pixel_line_between_visible_joints():
    limbs = [(0, 1), (1, 2)]
    flat = skeleton_mask(_pose([2, 5], [10, 5], None), limbs, 1, 16)
    expected = np.zeros((16, 16), dtype=bool)
    expected[5, 2:11] = True                              # the second limb has a hidden end
    assert np.array_equal(flat, expected)
    diagonal = skeleton_mask(_pose([1, 1], [6, 6], None), limbs, 1, 16)
    assert np.array_equal(np.argwhere(diagonal), [[i, i] for i in range(1, 7)])
    lone = skeleton_mask(_pose(None, [4, 9], None), limbs, 1, 16)
    assert np.argwhere(lone).tolist() == [[9, 4]]         # a visible joint alone is a pixel


def test_random_limbs_are_thin_connected_and_on_the_segment():
    rng = np.random.default_rng(0)
    for _ in range(30):
        a, b = rng.uniform(0, 31, 2), rng.uniform(0, 31, 2)
        mask = skeleton_mask(_pose(a, b), [(0, 1)], 1, 32)
        p, q = np.rint(a), np.rint(b)
        assert mask.sum() == int(np.abs(q - p).max()) + 1
        assert mask[int(p[1]), int(p[0])] and mask[int(q[1]), int(q[0])]
        assert label(mask, structure=np.ones((3, 3)))[1] == 1
        d = q - p
        for r, c in np.argwhere(mask):                    # within a pixel of the line p-q
            cross = abs((c - p[0]) * d[1] - (r - p[1]) * d[0]) / max(np.hypot(*d), 1e-9)
            assert cross <= 0.75


@pytest.mark.parametrize("k", [1, 3, 4, 7, 10])
def test_dilation_is_a_k_by_k_square(k):
    point = skeleton_mask(_pose([12, 9]), [], k, 32)
    rows, cols = np.nonzero(point)
    assert point.sum() == k * k
    assert (rows.min(), rows.max()) == (9 - (k - 1) // 2, 9 + k // 2)
    assert (cols.min(), cols.max()) == (12 - (k - 1) // 2, 12 + k // 2)
    pose = _pose([5, 6], [20, 9], [14, 25], None)
    thin = skeleton_mask(pose, [(0, 1), (1, 2), (2, 3)], 1, 32)
    assert np.array_equal(skeleton_mask(pose, [(0, 1), (1, 2), (2, 3)], k, 32),
                          _square_dilation(thin, k))
    assert np.array_equal(dilate(thin, k), _square_dilation(thin, k))


def test_limbs_leaving_the_frame_still_dilate_into_it():
    mask = skeleton_mask(_pose([-6, 8], [-2, 8]), [(0, 1)], 5, 16)   # both ends outside
    assert mask[:, :1].any() and not mask[:, 1:].any()               # reaches column 0 only
    assert np.array_equal(np.nonzero(mask[:, 0])[0], np.arange(6, 11))


def test_pair_mask_is_the_union_and_covers_both_poses():
    rng = np.random.default_rng(1)
    a = np.column_stack([rng.uniform(0, 63, (13, 2)), rng.random(13) < 0.8])
    b = np.column_stack([rng.uniform(0, 63, (13, 2)), rng.random(13) < 0.8])
    union = pair_mask(a, b, LIMBS_13, 6, 64)
    ma, mb = skeleton_mask(a, LIMBS_13, 6, 64), skeleton_mask(b, LIMBS_13, 6, 64)
    assert np.array_equal(union, ma | mb) and (union & ~ma).any() and (union & ~mb).any()
    for pose in (a, b):
        for x, y, visible in pose:
            if visible:
                assert union[round(y), round(x)]


def test_drawing_at_another_side_scales_points_and_kernel():
    rng = np.random.default_rng(2)
    pose = np.column_stack([rng.uniform(4, 123, (13, 2)), np.ones(13)])
    at_64 = skeleton_mask(pose, LIMBS_13, 16, 64, frame=128)
    scaled = pose.copy()
    scaled[:, :2] = (pose[:, :2] + 0.5) * 0.5 - 0.5
    assert np.array_equal(at_64, skeleton_mask(scaled, LIMBS_13, 8, 64))
    assert np.array_equal(skeleton_mask(pose, LIMBS_13, 16, 128, frame=128),
                          skeleton_mask(pose, LIMBS_13, 16, 128))
    full = skeleton_mask(pose, LIMBS_13, 16, 128).reshape(64, 2, 64, 2).mean(axis=(1, 3)) >= 0.5
    assert (full & at_64).sum() / (full | at_64).sum() > 0.9     # same region at half the side


def test_action_masks_use_the_action_kernel_at_the_drawn_side():
    lone = [None] * 13
    lone[0] = [40.0, 30.0]                                    # only the head, 64-pixel frame
    for action, k in (("squat", 15), ("bowl", 2), ("golf_swing", 9)):   # 120, 20, 70 / 8
        mask = action_mask(lone, lone, action, 32, 64, 32 / 256)
        assert mask.sum() == k * k                            # one k x k square at side 32
    rng = np.random.default_rng(3)
    a, b = (rng.uniform(0, 255, (13, 2)).tolist() for _ in range(2))
    assert np.array_equal(action_mask(a, b, "pullup", 256, 256, 1.0),
                          pair_mask(keypoint_array(a), keypoint_array(b), LIMBS_13, 30, 256))


def test_bad_points_are_refused():
    with pytest.raises(ValueError, match=r"shape \(13, 2\)"):
        skeleton_mask(np.zeros((13, 2)), LIMBS_13, 3, 16)
    with pytest.raises(ValueError, match="reach joint 17 but the pose has 13"):
        skeleton_mask(np.zeros((13, 3)), LIMBS_18, 3, 16)
    assert keypoint_array([[1.5, 2.0], None]).tolist() == [[1.5, 2.0, 1.0], [-1.0, -1.0, 0.0]]
