"""DynaST's semantic maps (sparsegen.data.labels) against explicit re-derivations."""

from __future__ import annotations

import io
import json
import math

import numpy as np
import pytest
import torch
from PIL import Image
from skimage.feature import canny

from sparsegen.data import labels
from sparsegen.data.labels import (
    LABEL_CHANNELS,
    LIMBS,
    LabelError,
    edge_label,
    limb_mask,
    load_label,
    part_boundaries,
    pose_label,
)
from sparsegen.data.manifest import Sample

# OpenPose's colour table as printed in its drawing code (BGR order there).
OPENPOSE = [[255, 0, 0], [255, 85, 0], [255, 170, 0], [255, 255, 0], [170, 255, 0],
            [85, 255, 0], [0, 255, 0], [0, 255, 85], [0, 255, 170], [0, 255, 255],
            [0, 170, 255], [0, 85, 255], [0, 0, 255], [85, 0, 255], [170, 0, 255],
            [255, 0, 255], [255, 0, 170], [255, 0, 85]]


def _brute_l1(mask: np.ndarray, pixels) -> np.ndarray:
    """L1 distance from each (row, col) to the nearest True pixel, by looping."""
    on = np.argwhere(mask)
    return np.array([np.abs(on - np.array(p)).sum(axis=1).min() for p in pixels])


def _points(**named) -> list:
    points = [None] * 18
    for name, xy in named.items():
        points[labels.KEYPOINTS.index(name)] = list(xy)
    return points


def test_tables():
    assert [list(c) for c in labels.OPENPOSE_COLOURS] == OPENPOSE
    assert np.array_equal(labels.JOINT_RGB, np.array(OPENPOSE)[:, ::-1])  # drawn BGR -> RGB
    limb_seq = [[2, 3], [2, 6], [3, 4], [4, 5], [6, 7], [7, 8], [2, 9], [9, 10], [10, 11],
                [2, 12], [12, 13], [13, 14], [2, 1], [1, 15], [15, 17], [1, 16], [16, 18]]
    assert [[a + 1, b + 1] for a, b in LIMBS] == limb_seq
    assert LABEL_CHANNELS["pose"] == 3 + len(LIMBS) == 20
    assert LABEL_CHANNELS["edge"] == 2 + len(labels.PARTS) == 15


def test_distance_map_is_floored_l1_over_three():
    rng = np.random.default_rng(0)
    for _ in range(5):
        mask = rng.random((9, 11)) < 0.08
        mask[4, 5] = True
        pixels = [(r, c) for r in range(9) for c in range(11)]
        expected = np.minimum(_brute_l1(mask, pixels) // 3, 255).reshape(9, 11)
        assert np.array_equal(labels._distance_map(mask), expected)
        expected = np.floor(_brute_l1(mask, pixels) / 0.5 / 3).reshape(9, 11)
        assert np.array_equal(labels._distance_map(mask, unit=0.5), expected)
    assert np.all(labels._distance_map(np.zeros((4, 4), dtype=bool)) == 255)
    far = np.zeros((300, 900), dtype=bool)
    far[0, 0] = True
    assert labels._distance_map(far)[-1, -1] == 255            # clipped, not wrapped


def test_joint_circle_at_known_pixels_and_missing_limbs_are_far():
    label = pose_label(_points(nose=(100.7, 50.2)), (256, 256), 256)
    assert label.shape == (20, 256, 256) and label.dtype == torch.float32
    expected = np.zeros((256, 256), dtype=bool)
    for r in range(256):
        for c in range(256):
            expected[r, c] = (c - 100) ** 2 + (r - 50) ** 2 <= 16    # int() of the centre
    assert expected.sum() == 49
    assert torch.equal(label[2], torch.from_numpy(expected).float())   # nose: RGB (0, 0, 255)
    assert not label[:2].any()
    assert torch.all(label[3:] == 1.0)         # no limb has both ends: empty mask -> far


def test_limb_mask_geometry():
    mask = limb_mask((50, 100), (150, 100), 4, (200, 200))
    assert mask[96:105, 100].all() and not mask[94, 100] and not mask[106, 100]
    assert mask[100, 50:151].all() and not mask[100, 48] and not mask[100, 152]
    assert not mask[:90].any() and not mask[111:].any()
    # A slanted limb against the ellipse it approximates (centre, half-length and angle
    # truncated to ints as the official code does): a 1-pixel margin either side.
    p, q = (40.3, 30.9), (150.2, 95.6)
    cx, cy = int((p[0] + q[0]) / 2), int((p[1] + q[1]) / 2)
    a = int(math.hypot(q[0] - p[0], q[1] - p[1]) / 2)
    theta = math.radians(int(math.degrees(math.atan2(p[1] - q[1], p[0] - q[0]))))
    mask = limb_mask(p, q, 5, (128, 192))
    rows, cols = np.mgrid[0:128, 0:192]
    u = (cols - cx) * math.cos(theta) + (rows - cy) * math.sin(theta)
    v = -(cols - cx) * math.sin(theta) + (rows - cy) * math.cos(theta)
    assert mask[(u / (a - 1)) ** 2 + (v / 4) ** 2 <= 1].all()
    assert not mask[(u / (a + 1.5)) ** 2 + (v / 6.5) ** 2 > 1].any()
    clipped = limb_mask((-30, 10), (14, 10), 4, (20, 20))       # partly outside the frame
    assert clipped[10, :15].all() and not clipped[10, 16:].any() and clipped[6:15, 0].all()


def test_limb_is_blended_over_circles_and_has_its_distance_map():
    neck, nose = (128.0, 60.0), (128.0, 20.0)
    label = pose_label(_points(neck=neck, nose=nose), (256, 256), 256)
    rgb = (label[:3] * 255).round().to(torch.int64)
    limb = LIMBS.index((1, 0))              # colour OPENPOSE[12] = BGR (0, 0, 255): RGB red
    assert rgb[:, 40, 128].tolist() == [153, 0, 0]          # round(0.6 * 255) over black
    assert rgb[:, 22, 128].tolist() == [153, 0, 102]        # over the nose circle (blue)
    assert rgb[:, 20, 132].tolist() == [0, 0, 255]          # circle outside the ellipse
    assert rgb[:, 62, 131].tolist() == [0, 85, 255]         # neck circle: BGR (255, 85, 0)
    assert rgb[:, 40, 140].tolist() == [0, 0, 0]
    mask = limb_mask(neck, nose, 4, (256, 256))
    rng = np.random.default_rng(1)
    pixels = rng.integers(0, 256, (60, 2))
    expected = np.minimum(_brute_l1(mask, pixels) // 3, 255) / 255
    got = label[3 + limb].numpy()[pixels[:, 0], pixels[:, 1]]
    assert np.allclose(got, expected)
    others = [3 + i for i in range(len(LIMBS)) if i != limb]
    assert torch.all(label[others] == 1.0)


def test_resized_label_is_the_frame_label_resized_as_the_code_does():
    points = _points(neck=(60, 40), r_shoulder=(40, 45), r_elbow=(30, 80), nose=(61, 20),
                     l_shoulder=(85, 44))
    full = pose_label(points, (120, 120), 120)      # drawn on the frame, nothing resized
    small = pose_label(points, (120, 120), 48)
    rgb = (full[:3] * 255).round().byte().permute(1, 2, 0).numpy()
    expected = np.asarray(Image.fromarray(rgb).resize((48, 48), Image.Resampling.NEAREST))
    assert torch.equal(small[:3], torch.from_numpy(expected.transpose(2, 0, 1).copy()) / 255)
    for k in range(3, 20):
        d = (full[k] * 255).round().byte().numpy()
        resized = np.asarray(Image.fromarray(d).resize((48, 48), Image.Resampling.BILINEAR))
        assert torch.equal(small[k], torch.from_numpy(resized.astype(np.float32)) / 255)


def test_pose_label_draws_on_the_frame_canvas():
    wide = pose_label(_points(nose=(125, 5)), (120, 130), 130)   # (H, W): x runs to 129
    assert wide.shape == (20, 130, 130)
    assert wide[2, :12, 118:].any()
    assert not pose_label(_points(nose=(125, 5)), (130, 120), 130)[:3].any()   # off canvas


def test_small_frames_scale_radius_width_and_distance_units():
    assert labels._frame_scale((256, 256)) == (1.0, 4, 4)
    assert labels._frame_scale((64, 48)) == (0.25, 1, 1)
    assert labels._frame_scale((512, 300)) == (2.0, 8, 8)
    label = pose_label(_points(neck=(30, 20), r_shoulder=(20, 20)), (64, 64), 64)
    drawn = label[:3].sum(0) > 0
    mask = limb_mask((30, 20), (20, 20), 1, (64, 64))
    circles = np.zeros((64, 64), dtype=bool)
    for x, y in ((30, 20), (20, 20)):
        circles[y, x] = circles[y - 1, x] = circles[y + 1, x] = True
        circles[y, x - 1] = circles[y, x + 1] = True
    assert np.array_equal(drawn.numpy(), mask | circles)
    pixels = [(r, c) for r in range(0, 64, 5) for c in range(0, 64, 7)]
    expected = np.minimum(np.floor(_brute_l1(mask, pixels) * 4 / 3), 255) / 255
    got = label[3 + LIMBS.index((1, 2))].numpy()[tuple(np.array(pixels).T)]
    assert np.allclose(got, expected)


def test_pose_label_needs_18_points():
    with pytest.raises(LabelError, match="17 keypoints"):
        pose_label([None] * 17, (64, 64), 32)


def test_part_boundaries_match_a_loop():
    rng = np.random.default_rng(2)
    parts = rng.integers(0, 3, (10, 12))
    expected = np.zeros_like(parts, dtype=bool)
    for r in range(10):
        for c in range(12):
            for dr, dc in ((0, 1), (0, -1), (1, 0), (-1, 0)):
                rr, cc = r + dr, c + dc
                if 0 <= rr < 10 and 0 <= cc < 12 and parts[rr, cc] != parts[r, c]:
                    expected[r, c] = True
    assert np.array_equal(part_boundaries(parts), expected)


def _face_like(size: int) -> tuple[np.ndarray, np.ndarray]:
    """A skin disc with one eye, a hair band on top, and a sharp colour edge in the background,
    one in the hair and one inside the skin (the last must not reach the edge map)."""
    rows, cols = np.mgrid[0:size, 0:size]
    parts = np.zeros((size, size), dtype=np.uint8)
    parts[(rows - size / 2) ** 2 + (cols - size / 2) ** 2 < (size / 3) ** 2] = 1
    parts[(rows - size * 0.45) ** 2 + (cols - size * 0.62) ** 2 < (size / 14) ** 2] = 4
    parts[rows < size // 6] = 13
    image = np.full((size, size, 3), 120, dtype=np.uint8)
    image[:, : size // 8] = 20                                  # background edge, left
    image[: size // 6, size // 2:] = 230                        # edge inside the hair
    image[size // 2: size // 2 + 6, size // 2 - 8: size // 2 + 2] = 250   # inside the skin
    return image, parts


def test_edge_label_channels():
    image, parts = _face_like(64)
    label = edge_label(image, parts, 64)
    assert label.shape == (15, 64, 64)
    boundaries = part_boundaries(parts)
    assert torch.equal(label[14], torch.from_numpy(boundaries).float())
    inner = np.isin(parts, range(1, 13))
    edges = canny(np.asarray(Image.fromarray(image).convert("L")))
    assert (edges & inner & ~boundaries).any()           # the skin edge exists...
    expected = boundaries | (edges & ~inner)              # ...and is dropped; hair kept
    assert (edges & (parts == 13) & ~boundaries).any()
    assert torch.equal(label[0], torch.from_numpy(expected).float())
    pixels = [(r, c) for r in range(0, 64, 3) for c in range(0, 64, 5)]
    for k in range(1, 14):
        channel = label[k].numpy()
        if (parts == k).any():
            own = part_boundaries(parts == k)
            expected_k = np.minimum(_brute_l1(own, pixels) // 3, 255) / 255
            assert np.allclose(channel[tuple(np.array(pixels).T)], expected_k), k
        else:
            assert np.all(channel == 1.0), k       # absent part: no boundary, far everywhere


def test_edge_label_resizes_image_bilinear_and_parts_nearest():
    image, parts = _face_like(96)
    got = edge_label(image, parts, 40)
    small_image = np.asarray(Image.fromarray(image).resize((40, 40), Image.Resampling.BILINEAR))
    small_parts = np.asarray(Image.fromarray(parts).resize((40, 40), Image.Resampling.NEAREST))
    assert torch.equal(got, edge_label(small_image, small_parts, 40))


def test_edge_label_checks_its_inputs():
    image, parts = _face_like(32)
    with pytest.raises(LabelError, match="part index 14"):
        edge_label(image, np.full((32, 32), 14, dtype=np.uint8), 32)
    with pytest.raises(LabelError, match="part map must be"):
        edge_label(image, np.zeros((32, 32, 3), dtype=np.uint8), 32)
    with pytest.raises(LabelError, match="image must be"):
        edge_label(image[..., 0], parts, 32)


# --- load_label on files -------------------------------------------------------------------------

def _sample(root, extra: dict, image: np.ndarray | None = None) -> Sample:
    path = _mk(root) / "x.png"
    Image.fromarray(image if image is not None else np.zeros((16, 16, 3), np.uint8)).save(path)
    return Sample("x", "train", path, "0" * 64, extra)


def _mk(root):
    (root / "train").mkdir(parents=True, exist_ok=True)
    return root / "train"


def _write(path, data: bytes) -> str:
    path.write_bytes(data)
    return f"train/{path.name}"


def test_load_label_reads_keypoints_and_parts(tmp_path):
    points = _points(neck=(20, 10), nose=(21, 4), r_shoulder=(12, 11))
    doc = {"frame": [40, 48], "points": points}
    rel = _write(_mk(tmp_path) / "x_keypoints.json", json.dumps(doc).encode())
    sample = _sample(tmp_path, {"keypoints": rel})
    assert torch.equal(load_label(sample, "pose", 24), pose_label(points, (40, 48), 24))
    image, parts = _face_like(32)
    buffer = io.BytesIO()
    Image.fromarray(parts).save(buffer, format="PNG")
    rel = _write(tmp_path / "train" / "x_parts.png", buffer.getvalue())
    sample = _sample(tmp_path, {"parts": rel}, image)
    assert torch.equal(load_label(sample, "edge", 20), edge_label(image, parts, 20))


@pytest.mark.parametrize(("content", "message"), [
    (None, "keypoint file not found"),
    (b"{not json", "not valid JSON"),
    (b'{"frame": [64, 64]}', "expected"),
    (b'{"frame": [64], "points": []}', "frame"),
    (json.dumps({"frame": [64, 64], "points": [None] * 17}).encode(), "17 points"),
    (json.dumps({"frame": [64, 64], "points": [[1, 2, 3]] + [None] * 17}).encode(),
     "point 0 \\(nose\\)"),
    (json.dumps({"frame": [64, 64], "points": [["a", 2]] + [None] * 17}).encode(), "point 0"),
])
def test_bad_keypoint_files_are_named(tmp_path, content, message):
    path = _mk(tmp_path) / "x_keypoints.json"
    if content is not None:
        path.write_bytes(content)
    sample = _sample(tmp_path, {"keypoints": "train/x_keypoints.json"})
    with pytest.raises(LabelError, match=message) as info:
        load_label(sample, "pose", 16)
    assert str(path) in str(info.value)


def _png(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.mark.parametrize(("content", "message"), [
    (None, "part map not found"),
    (b"not a png", "unreadable or corrupt"),
    (_png(np.zeros((8, 8, 3), np.uint8)), "mode RGB"),
    (_png(np.full((8, 8), 20, np.uint8)), "part index 20"),
])
def test_bad_part_files_are_named(tmp_path, content, message):
    path = _mk(tmp_path) / "x_parts.png"
    if content is not None:
        path.write_bytes(content)
    sample = _sample(tmp_path, {"parts": "train/x_parts.png"})
    with pytest.raises(LabelError, match=message) as info:
        load_label(sample, "edge", 16)
    assert str(path) in str(info.value)


def test_missing_column_and_unknown_task(tmp_path):
    sample = _sample(tmp_path, {})
    with pytest.raises(LabelError, match="no 'keypoints' column") as info:
        load_label(sample, "pose", 16)
    assert str(tmp_path / "manifest.csv") in str(info.value)
    with pytest.raises(ValueError, match="task 'sketch'"):
        load_label(sample, "sketch", 16)
