"""iLAT's examples on the smoke datasets (models/ilat/data.py): the kind of each dataset; a
Penn Action training example is two frames of one training video under their pair mask, drawn
as prepare draws the test masks (so training and test masks agree); pose conditions; the edited
sketch of a face test example; bad input fails naming the file and the row."""

from __future__ import annotations

import copy
import json
import re
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

from sparsegen.config import load_params, resolve
from sparsegen.data import sources
from sparsegen.data.manifest import Sample, read_manifest
from sparsegen.data.pose_masks import action_mask
from sparsegen.models.ilat import data

SIDE = 32
# Tiny smoke datasets: 2 training videos + 1 test video of 8 frames; 2 + 2 SDF items;
# 4 training + 3 test faces; 4 silhouettes.
COUNTS = {"smoke_pa": {"n_train": 16, "n_test": 8}, "smoke_sdf": {"n_train": 4, "n_test": 4},
          "smoke_faces_ilat": {"n_train": 4, "n_test": 3}, "smoke_masks": {"n_train": 4}}
VARIANTS = {"smoke_pa": "ts_pa", "smoke_sdf": "ts_sdf", "smoke_faces_ilat": "ts_ffhq"}


@pytest.fixture(scope="module")
def params() -> dict[str, Any]:
    return load_params(overrides={"preset": "smoke"})


@pytest.fixture(scope="module")
def prepared(tmp_path_factory: pytest.TempPathFactory, params: dict[str, Any]) -> Path:
    root = tmp_path_factory.mktemp("prepared")
    for name, counts in COUNTS.items():
        sources.prepare(name, {**params["datasets"][name], **counts}, None, root / name)
    return root


def settings_on(params: dict[str, Any], root: Path, dataset: str) -> dict[str, Any]:
    """The smoke settings of the tokenizer variant reading `dataset`, prepared under root."""
    s = copy.deepcopy(resolve(params, "ilat", VARIANTS[dataset]))
    assert s["datasets"]["images"]["name"] == dataset
    s["paths"] = {**s["paths"], "prepared": str(root)}
    return s


def examples(params: dict[str, Any], root: Path, dataset: str) -> data.Examples:
    return data.Examples(settings_on(params, root, dataset))


def png(path: Path) -> np.ndarray:
    with Image.open(path) as im:
        return np.asarray(im).copy()


def rgb(path: Path) -> torch.Tensor:
    """(3, H, W) in [-1, 1], read independently of the module."""
    return torch.from_numpy(png(path)).permute(2, 0, 1).float() / 127.5 - 1


def aux(row: Sample, column: str) -> Path:
    return row.path.parent.parent / row.extra[column]


def keypoints(row: Sample) -> dict[str, Any]:
    return json.loads(aux(row, "keypoints").read_text())


def prepared_pa_mask(ex: data.Examples, a: Sample, b: Sample) -> np.ndarray:
    """The pair mask as the smoke_pa prepare step draws its test masks (sticks._stick_mask)."""
    ka, kb = keypoints(a), keypoints(b)
    frame = ka["frame"][0]
    return action_mask(ka["points"], kb["points"], a.extra["action"], SIDE, frame,
                       ex.kernel_scale)


@pytest.fixture
def copied(params, prepared, tmp_path) -> tuple[Path, dict[str, Any]]:
    """A writable copy of the prepared datasets (to break), and the params."""
    root = tmp_path / "prepared"
    shutil.copytree(prepared, root)
    return root, params


def at(path: Path, message: str) -> str:
    """The pattern of an error that starts with the file at fault."""
    return re.escape(f"{path}: {message}")


def _write_mask(path: Path, array: np.ndarray) -> None:
    Image.fromarray(array.astype(np.uint8), mode="L").save(path)


def test_kinds(params, prepared):
    assert examples(params, prepared, "smoke_pa").kind == "frames"
    assert examples(params, prepared, "smoke_sdf").kind == "pairs"
    assert examples(params, prepared, "smoke_faces_ilat").kind == "faces"


def test_a_pa_training_example_is_two_frames_of_one_training_video(params, prepared):
    ex = examples(params, prepared, "smoke_pa")
    assert len(ex.videos) == 2 and all(len(v) == 8 for v in ex.videos)
    seen = set()
    for seed in range(6):
        e = ex.training_example(torch.Generator().manual_seed(seed))
        ref = ex.index[e.id]
        assert ref.split == "train"
        video = [r for r in ex.split("train") if r.extra["video"] == ref.extra["video"]]
        assert torch.equal(e.condition, rgb(ref.path))
        targets = [r for r in video if torch.equal(rgb(r.path), e.target)]
        assert len(targets) == 1 and targets[0].id != ref.id
        tgt = targets[0]
        assert torch.equal(e.truth, e.target)
        expected = prepared_pa_mask(ex, ref, tgt)
        assert expected.any() and not expected.all()
        assert torch.equal(e.mask, torch.from_numpy(expected).float()[None])
        assert torch.equal(e.mask, data.pose_pair_mask(ref, tgt, 13, SIDE, ex.kernel_unit,
                                                       ex.kernel_scale))
        assert torch.equal(e.pose, data.pose_condition(tgt, 13))
        seen.add((ref.id, tgt.id))
    assert len(seen) > 3  # pairs are drawn per step, not fixed


def test_training_masks_are_drawn_as_the_prepared_test_masks(params, prepared):
    """The consistency between training and test masks: the per-step mask of a test pair
    equals the mask file prepare wrote for it."""
    ex = examples(params, prepared, "smoke_pa")
    rows = ex.test_rows()
    assert len(rows) == 8
    for row in rows:
        partner = ex.partner(row)
        drawn = data.pose_pair_mask(row, partner, 13, SIDE, ex.kernel_unit, ex.kernel_scale)
        file = png(aux(row, "mask"))
        assert set(np.unique(file)) <= {0, 255} and file.any()
        assert torch.equal(drawn, torch.from_numpy(file == 255).float()[None]), row.id


def test_a_pa_test_example_edits_the_reference_under_the_mask(params, prepared):
    ex = examples(params, prepared, "smoke_pa")
    row = ex.test_rows()[0]
    partner = ex.partner(row)
    e = ex.test_example(row)
    assert partner.extra["video"] == row.extra["video"] and partner.id != row.id
    assert torch.equal(e.condition, rgb(row.path))
    assert torch.equal(e.target, rgb(row.path))  # "the same pose in the inference phase"
    assert torch.equal(e.truth, rgb(partner.path))
    assert torch.equal(e.mask, torch.from_numpy(png(aux(row, "mask")) == 255).float()[None])
    assert torch.equal(e.pose, data.pose_condition(partner, 13))


def test_pose_condition_normalises_by_the_frame_and_marks_missing_joints(tmp_path):
    root = tmp_path / "d"
    (root / "train").mkdir(parents=True)
    points = [[30.0, 12.0], None, [0.0, 39.0], [19.5, 0.0], None]
    (root / "train/x_keypoints.json").write_text(json.dumps({"frame": [40, 20],
                                                             "points": points}))
    row = Sample("x", "train", root / "train/x.png", "", {"keypoints": "train/x_keypoints.json"})
    expected = [[30 / 20, 12 / 40, 1], [-1, -1, 0], [0, 39 / 40, 1], [19.5 / 20, 0, 1],
                [-1, -1, 0]]
    assert torch.allclose(data.pose_condition(row, 5), torch.tensor(expected))


def test_pose_condition_of_a_prepared_frame(params, prepared):
    ex = examples(params, prepared, "smoke_pa")
    rows = ex.split("train") + ex.split("test")
    missing = 0
    for row in rows:
        doc = keypoints(row)
        h, w = doc["frame"]
        pose = data.pose_condition(row, 13).numpy()
        assert pose.shape == (13, 3)
        for p, (x, y, v) in zip(doc["points"], pose, strict=True):
            if p is None:
                missing += 1
                assert (x, y, v) == (-1, -1, 0)
            else:
                assert v == 1 and 0 <= x <= 1 and 0 <= y <= 1
                assert np.isclose(x, p[0] / w) and np.isclose(y, p[1] / h)
    sdf = examples(params, prepared, "smoke_sdf")
    assert data.pose_condition(sdf.split("train")[0], 18).shape == (18, 3)


def test_an_sdf_training_example_is_a_fixed_pair_with_its_mask(params, prepared):
    ex = examples(params, prepared, "smoke_sdf")
    pairs = ex.pairs("train")
    assert len(pairs) == 2
    e = ex.training_example(torch.Generator().manual_seed(0))
    ref = ex.index[e.id]
    tgt = ex.partner(ref)
    assert ref in pairs and tgt.extra["video"] == ref.extra["video"]
    assert torch.equal(e.condition, rgb(ref.path)) and torch.equal(e.target, rgb(tgt.path))
    assert torch.equal(e.mask, torch.from_numpy(png(aux(ref, "mask")) == 255).float()[None])
    assert torch.equal(e.pose, data.pose_condition(tgt, 18))


def test_a_face_test_example_draws_the_partner_sketch_inside_the_mask(copied):
    root, params = copied
    ex = examples(params, root, "smoke_faces_ilat")
    rows = ex.test_rows()
    assert len(rows) == 3
    rng = np.random.default_rng(0)
    for row in rows:  # noise sketches: every pixel tells whose sketch it is
        Image.fromarray(rng.integers(0, 256, (SIDE, SIDE), dtype=np.uint8)).save(
            aux(row, "sketch"))
    for row in rows:
        partner = ex.partner(row)
        assert partner.id != row.id and partner.split == "test"
        e = ex.test_example(row)
        hole = png(aux(row, "mask")) == 255
        assert hole.any() and not hole.all()
        own = png(aux(row, "sketch")) / 127.5 - 1
        other = png(aux(partner, "sketch")) / 127.5 - 1
        expected = np.where(hole, other, own)
        assert e.condition.shape == (1, SIDE, SIDE) and e.pose is None
        assert np.allclose(e.condition[0].numpy(), expected, atol=1e-6)
        assert torch.equal(e.target, rgb(row.path)) and torch.equal(e.truth, e.target)
        assert torch.equal(e.mask[0], torch.from_numpy(hole).float())


def test_face_training_masks_are_strokes_or_instance_masks(params, prepared):
    s = settings_on(params, prepared, "smoke_faces_ilat")
    ex = data.Examples(s)
    masks = read_manifest(prepared / "smoke_masks")
    silhouettes = [torch.from_numpy(png(r.path)[..., 0] == 255).float()[None] for r in masks]
    instance = strokes = 0
    for seed in range(10):
        e = ex.training_example(torch.Generator().manual_seed(seed), masks)
        row = ex.index[e.id]
        assert row.split == "train"
        assert torch.equal(e.target, rgb(row.path))
        assert torch.allclose(e.condition[0], torch.from_numpy(png(aux(row, "sketch"))).float()
                              / 127.5 - 1, atol=1e-6)
        assert set(e.mask.unique().tolist()) <= {0.0, 1.0} and e.mask.any()
        if any(torch.equal(e.mask, m) for m in silhouettes):
            instance += 1
        else:
            strokes += 1
    assert instance and strokes
    without = [ex.training_example(torch.Generator().manual_seed(seed)).mask
               for seed in range(4)]
    assert not any(torch.equal(m, s) for m in without for s in silhouettes)


# --- bad input -----------------------------------------------------------------------------

def test_a_non_binary_mask_names_file_and_row(copied):
    root, params = copied
    ex = examples(params, root, "smoke_pa")
    row = ex.test_rows()[0]
    path = aux(row, "mask")
    array = png(path).copy()
    array[0, 0] = 128
    _write_mask(path, array)
    with pytest.raises(data.ExampleError, match=at(path, f"row '{row.id}': mask is not binary")):
        ex.test_example(row)


def test_an_unreadable_mask_names_file_and_row(copied):
    root, params = copied
    ex = examples(params, root, "smoke_faces_ilat")
    row = ex.test_rows()[0]
    path = aux(row, "mask")
    path.write_bytes(b"not a png")
    with pytest.raises(data.ExampleError, match=at(path, f"row '{row.id}': unreadable mask")):
        ex.test_example(row)


def test_a_mask_of_the_prepared_size_loads_exactly(copied):
    root, params = copied
    ex = examples(params, root, "smoke_sdf")
    row = ex.test_rows()[0]
    file = png(aux(row, "mask"))
    assert file.shape == (SIDE, SIDE)
    assert torch.equal(data.load_mask(row, SIDE), torch.from_numpy(file == 255).float()[None])


def test_a_wrong_size_mask_names_file_and_row(copied):
    root, params = copied
    ex = examples(params, root, "smoke_sdf")
    row = ex.test_rows()[0]
    path = aux(row, "mask")
    _write_mask(path, png(path)[::2, ::2])  # 16 x 16 for a 32 x 32 image
    with pytest.raises(data.ExampleError, match=at(path, f"row '{row.id}'")):
        ex.test_example(row)


def test_missing_keypoints_name_file_and_row(copied):
    root, params = copied
    ex = examples(params, root, "smoke_pa")
    row = ex.test_rows()[0]
    partner = ex.partner(row)
    path = aux(partner, "keypoints")
    path.unlink()
    with pytest.raises(data.ExampleError, match=at(path, f"the keypoints file of row "
                                                        f"'{partner.id}' is missing")):
        ex.test_example(row)
    bare = Sample(row.id, row.split, row.path, row.sha256, {**row.extra, "keypoints": ""})
    with pytest.raises(data.ExampleError, match=rf"manifest.csv: row '{row.id}' has no "
                                                r"'keypoints' file"):
        data.pose_condition(bare, 13)


def test_a_wrong_joint_count_names_file_and_row(copied):
    root, params = copied
    ex = examples(params, root, "smoke_pa")
    row = ex.test_rows()[0]
    partner = ex.partner(row)
    path = aux(partner, "keypoints")
    doc = json.loads(path.read_text())
    path.write_text(json.dumps({**doc, "points": doc["points"][:12]}))
    with pytest.raises(data.ExampleError, match=at(path, f"row '{partner.id}' has 12 points, the "
                                                        f"model expects 13")):
        ex.test_example(row)
    path.write_text("{}")
    with pytest.raises(data.ExampleError, match=at(path, f"row '{partner.id}': expected")):
        ex.test_example(row)


def test_a_missing_sketch_names_file_and_row(copied):
    root, params = copied
    ex = examples(params, root, "smoke_faces_ilat")
    row = ex.test_rows()[0]
    partner = ex.partner(row)
    path = aux(partner, "sketch")
    path.unlink()
    with pytest.raises(data.ExampleError, match=at(path, f"the sketch file of row "
                                                        f"'{partner.id}' is missing")):
        ex.test_example(row)
