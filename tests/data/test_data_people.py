"""smoke_people (sparsegen.data.people): procedural people with COCO-18 keypoints, self pairs."""

from __future__ import annotations

import json
import re
from collections import defaultdict

import numpy as np
import pytest
import torch
from PIL import Image

from sparsegen.config import ParamsError
from sparsegen.data import people
from sparsegen.data.labels import KEYPOINTS, load_label, pose_label
from sparsegen.data.manifest import read_manifest
from sparsegen.data.prepare import stretch, write_dataset

SETTINGS = {"source": "smoke_people", "size": 16, "n_train": 16, "n_test": 8, "seed": 3}
RECIPE = re.compile(r"procedural:person identity=(\d+) pose=(\d+) view=(full|close) side=(\d+)")


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    out = tmp_path_factory.mktemp("people") / "smoke_people"
    return write_dataset("smoke_people", people.PEOPLE.build(SETTINGS), SETTINGS, out)


def _identity(sample_id: str) -> str:
    return sample_id.split("_")[1]


def test_identities_are_whole_in_one_split_and_paired_with_themselves(prepared):
    rows = read_manifest(prepared, verify=True)
    assert len(rows) == 24 and sum(r.split == "test" for r in rows) == 8
    by_id = {r.id: r for r in rows}
    splits, counts = defaultdict(set), defaultdict(int)
    for r in rows:
        splits[_identity(r.id)].add(r.split)
        counts[_identity(r.id)] += 1
        exemplar = by_id[r.extra["exemplar"]]               # exists in the same dataset
        assert exemplar.id != r.id and _identity(exemplar.id) == _identity(r.id)
        assert exemplar.split == r.split and r.extra["self_pair"] == "1"
    assert all(len(s) == 1 for s in splits.values()) and set(counts.values()) == {4}
    assert len({r.extra["exemplar"] for r in rows}) > 12       # not always the same partner


def test_keypoint_files_decode_to_frames_of_18_points(prepared):
    for r in read_manifest(prepared):
        assert r.extra["keypoints"] == f"{r.split}/{r.id}_keypoints.json"
        doc = json.loads((prepared / r.extra["keypoints"]).read_text())
        assert doc["frame"] == [32, 32] and len(doc["points"]) == len(KEYPOINTS)
        present = [p for p in doc["points"] if p is not None]
        assert all(0 <= x <= 31 and 0 <= y <= 31 for x, y in present)
        missing = {KEYPOINTS[k] for k, p in enumerate(doc["points"]) if p is None}
        if r.id.endswith("_close"):                          # cut at the thighs
            assert {"r_knee", "r_ankle", "l_knee", "l_ankle"} <= missing
        else:
            assert missing <= {"r_ear", "l_ear"}
        label = load_label(r, "pose", 16)
        assert label.shape == (20, 16, 16)
        assert torch.equal(label, pose_label(doc["points"], (32, 32), 16))


def test_source_column_regenerates_image_and_keypoints(prepared):
    for r in read_manifest(prepared)[:6]:
        m = RECIPE.fullmatch(r.extra["source"])
        assert m is not None and int(m.group(4)) == 32
        identity, pose_seed, view = int(m.group(1)), int(m.group(2)), m.group(3)
        image = people.render(32, identity, pose_seed, view)
        assert np.array_equal(stretch(image, 16), np.asarray(Image.open(r.path)))
        doc = json.loads((prepared / r.extra["keypoints"]).read_text())
        assert doc["points"] == people.keypoints(32, identity, pose_seed, view)


def test_same_seed_same_bytes_other_seed_differs(tmp_path, prepared):
    again = write_dataset("smoke_people", people.PEOPLE.build(SETTINGS), SETTINGS,
                          tmp_path / "again", workers=2)
    assert (again / "manifest.csv").read_bytes() == (prepared / "manifest.csv").read_bytes()
    other = {**SETTINGS, "seed": 4}
    rows = read_manifest(write_dataset("smoke_people", people.PEOPLE.build(other), other,
                                       tmp_path / "other"))
    assert not {r.sha256 for r in rows} & {r.sha256 for r in read_manifest(prepared)}


def test_people_stand_on_their_skeletons():
    for i in range(12):
        identity, pose_seed = 1000 + i, 2000 + i
        side = 128
        image = people.render(side, identity, pose_seed, "full").astype(float)
        backdrop = people.look(identity).backdrop * 255
        assert np.abs(image[2, 2] - backdrop).max() < 12       # plain backdrop in the corner
        points = people.keypoints(side, identity, pose_seed, "full")
        for k in ("neck", "r_shoulder", "l_shoulder", "r_hip", "l_hip", "r_knee", "l_knee",
                  "r_elbow", "l_elbow"):
            x, y = points[KEYPOINTS.index(k)]
            assert np.abs(image[round(y), round(x)] - backdrop).max() > 25, (i, k)
        body = np.abs(image - backdrop).max(axis=2) > 25
        rows = np.nonzero(body.any(axis=1))[0]
        ys = [p[1] for p in points if p is not None]
        assert rows.min() < min(ys) and rows.max() > max(ys)  # head above, feet below joints


def test_garments_are_patterned_in_two_colours():
    spread = []
    for i in range(10):
        identity = 50 + i
        image = people.render(128, identity, 7, "close").astype(float)
        points = people.keypoints(128, identity, 7, "close")
        neck, right, left = (points[KEYPOINTS.index(k)] for k in ("neck", "r_hip", "l_hip"))
        chest = image[int(neck[1]) + 6:int(right[1]) - 6,      # between the hips' columns
                      int(right[0]) + 2:int(left[0]) - 2].reshape(-1, 3)
        assert len(chest) > 500
        top = people.look(identity).top.colours * 255
        near = np.linalg.norm(chest[:, None] - top[None], axis=2).argmin(axis=1)
        spread.append(min(np.mean(near == 0), np.mean(near == 1)))
    assert np.median(spread) > 0.15          # both pattern colours show on the chest


def test_poses_and_views_differ_as_recipes_say():
    identity = 77
    a, b = (np.array(people.pose(identity, s, "full").joints) for s in (1, 2))
    assert np.abs(a - b).max() > 0.02
    full, close = (people.pose(identity, 1, v) for v in ("full", "close"))
    ratio = people.VIEWS["close"][0] / people.VIEWS["full"][0]
    assert np.allclose(close.joints - close.joints[1], (full.joints - full.joints[1]) * ratio)
    assert np.array_equal(people.render(24, identity, 1, "full"),
                          people.render(24, identity, 1, "full"))


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("n_test", [0, 4, 12])
def test_sources_fix_whole_identities_to_a_split(seed, n_test):
    items = people.people_items({**SETTINGS, "n_train": 20, "n_test": n_test, "seed": seed})
    by_identity = defaultdict(set)
    for it in items:
        by_identity[_identity(it.id)].add(it.split)
    assert all(len(s) == 1 for s in by_identity.values())
    assert sum(s == {"test"} for s in by_identity.values()) == n_test // 4
    assert sum(it.split == "test" for it in items) == n_test


def test_exclude_drops_images_and_their_exemplar_roles(tmp_path):
    items = people.people_items(SETTINGS)
    dropped = "person_0002_pose1_full"
    settings = {**SETTINGS, "exclude": [dropped]}
    changed = people.people_items(settings)
    for before, after in zip(items, changed, strict=True):
        assert before.id == after.id and before.split == after.split
        assert after.extra["exemplar"] != dropped
        if before.extra["exemplar"] != dropped:
            assert after.extra["exemplar"] == before.extra["exemplar"]
    assert any(it.extra["exemplar"] == dropped for it in items)
    rows = read_manifest(write_dataset("smoke_people", changed, settings, tmp_path / "x"))
    assert len(rows) == 23 and dropped not in {r.id for r in rows}
    assert {r.extra["exemplar"] for r in rows} <= {r.id for r in rows}
    three = [f"person_0002_pose{p}_{v}" for p in range(2) for v in people.VIEWS][1:]
    with pytest.raises(ParamsError, match="every other image of person_0002 is excluded"):
        people.people_items({**SETTINGS, "exclude": three})


def test_bad_settings_are_refused():
    with pytest.raises(ParamsError, match="n_test 6 is not a multiple of 4"):
        people.people_items({**SETTINGS, "n_test": 6})
    with pytest.raises(ParamsError, match="n_train 10 is not a multiple of 4"):
        people.people_items({**SETTINGS, "n_train": 10})
    with pytest.raises(ParamsError, match="n_train 0 leaves no train identity"):
        people.people_items({**SETTINGS, "n_train": 0})
