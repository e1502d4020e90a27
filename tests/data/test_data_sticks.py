"""iLAT smoke datasets (sparsegen.data.sticks): smoke_pa, smoke_sdf, smoke_faces_ilat,
smoke_masks, prepared into tmp through write_dataset."""

from __future__ import annotations

import json
import re
from collections import defaultdict

import numpy as np
import pytest
from PIL import Image

from sparsegen.config import ParamsError, load_params
from sparsegen.data import faces, people, sticks
from sparsegen.data.labels import KEYPOINTS
from sparsegen.data.manifest import read_manifest
from sparsegen.data.pose_masks import (
    LIMBS_13,
    PA_JOINTS,
    action_kernel,
    dilate,
    keypoint_array,
    pair_mask,
    skeleton_mask,
)
from sparsegen.data.prepare import stretch, write_dataset
from sparsegen.data.sketches import xdog
from sparsegen.data.strokes import token_cover

PA = {"source": "smoke_pa", "size": 16, "n_train": 24, "n_test": 8, "seed": 1, "frames": 4,
      "kernel_scale": 16 / 256}
SDF = {"source": "smoke_sdf", "size": 16, "n_train": 8, "n_test": 4, "seed": 2,
       "mask_dilation": 2}
FACES = {"source": "smoke_faces_ilat", "size": 16, "n_train": 4, "n_test": 3, "seed": 3,
         "mask_grid": 4, "mask_fraction": 0.2}
MASKS = {"source": "smoke_masks", "size": 16, "n_train": 6, "n_test": 0, "seed": 4}
STICK = re.compile(r"procedural:stick seed=(\d+) action=(\w+) frame=(\d+) frames=(\d+) "
                   r"side=(\d+)")


def _prepare(tmp_path_factory, source, settings):
    out = tmp_path_factory.mktemp(settings["source"]) / settings["source"]
    return write_dataset(settings["source"], source.build(settings), settings, out)


@pytest.fixture(scope="module")
def pa(tmp_path_factory):
    return _prepare(tmp_path_factory, sticks.PA, PA)


@pytest.fixture(scope="module")
def sdf(tmp_path_factory):
    return _prepare(tmp_path_factory, sticks.SDF, SDF)


def _gray(path) -> np.ndarray:
    return np.asarray(Image.open(path))


def _points(root, row) -> np.ndarray:
    doc = json.loads((root / row.extra["keypoints"]).read_text())
    return doc, keypoint_array(doc["points"])


# --- smoke_pa -----------------------------------------------------------------------------------

def test_pa_rows_videos_and_splits(pa):
    rows = read_manifest(pa, verify=True)
    assert len(rows) == 32 and sum(r.split == "test" for r in rows) == 8
    videos = defaultdict(set)
    for r in rows:
        videos[r.extra["video"]].add(r.split)
        assert r.id.startswith(r.extra["video"] + "_f")
        assert r.extra["action"] in sticks.STICK_ACTIONS
        assert np.asarray(Image.open(r.path)).shape == (16, 16, 3)
    assert all(len(s) == 1 for s in videos.values()) and len(videos) == 8   # whole videos
    assert {r.extra["action"] for r in rows} == set(sticks.STICK_ACTIONS)


def test_pa_keypoints_have_13_joints_in_the_rendered_frame(pa):
    for r in read_manifest(pa):
        doc, points = _points(pa, r)
        assert doc["frame"] == [32, 32] and len(doc["points"]) == len(PA_JOINTS)
        assert all(0 <= x <= 31 and 0 <= y <= 31 for x, y, v in points if v)


def test_pa_test_pairs_are_two_frames_of_one_video_with_their_mask(pa):
    rows = read_manifest(pa)
    by_id = {r.id: r for r in rows}
    for r in rows:
        if r.split == "train":
            assert r.extra["pair"] == "" and r.extra["mask"] == ""
            continue
        target = by_id[r.extra["pair"]]                 # exists in the dataset
        assert target.id != r.id and target.extra["video"] == r.extra["video"]
        mask = _gray(pa / r.extra["mask"])
        assert mask.shape == (16, 16) and set(np.unique(mask)) <= {0, 255}
        hole = mask == 255
        kernel = action_kernel(r.extra["action"], PA["kernel_scale"])
        (_, a), (_, b) = _points(pa, r), _points(pa, target)
        assert np.array_equal(hole, pair_mask(a, b, LIMBS_13, kernel * 2, 16, frame=32))
        for pose in (a, b):                              # covers both skeletons
            assert (skeleton_mask(pose, LIMBS_13, 1, 16, frame=32) <= hole).all()
        assert 0 < hole.mean() < 1


def test_pa_source_column_regenerates_frames(pa):
    for r in read_manifest(pa)[::5]:
        m = STICK.fullmatch(r.extra["source"])
        seed, action, frame, frames, side = (int(m[1]), m[2], int(m[3]), int(m[4]), int(m[5]))
        assert side == 32 and action == r.extra["action"]
        image = sticks.render_stick(side, seed, action, frame, frames)
        assert np.array_equal(stretch(image, 16), np.asarray(Image.open(r.path)))
        doc, _ = _points(pa, r)
        assert doc["points"] == sticks.stick_keypoints(side, seed, action, frame, frames)


def test_pa_same_seed_same_bytes(tmp_path, pa):
    again = write_dataset("smoke_pa", sticks.PA.build(PA), PA, tmp_path / "again", workers=2)
    assert (again / "manifest.csv").read_bytes() == (pa / "manifest.csv").read_bytes()


@pytest.mark.parametrize("action", sticks.STICK_ACTIONS)
def test_stick_figures_move_with_rigid_bones_and_stand_on_the_ground(action):
    seed = 11
    actor = sticks.actor(seed)
    joints = [sticks.stick_joints(seed, action, t, 8) for t in range(8)]
    bones = {("l_shoulder", "l_elbow"): sticks.UPPER_ARM, ("r_elbow", "r_wrist"): sticks.FOREARM,
             ("l_hip", "l_knee"): sticks.THIGH, ("r_knee", "r_ankle"): sticks.SHIN}
    for j in joints:
        for (a, b), length in bones.items():
            d = j[PA_JOINTS.index(a)] - j[PA_JOINTS.index(b)]
            assert np.isclose(np.hypot(*d), length * actor.height)
        feet = max(j[PA_JOINTS.index("l_ankle"), 1], j[PA_JOINTS.index("r_ankle"), 1])
        assert feet <= actor.ground + 1e-12
    assert max(np.abs(j - joints[0]).max() for j in joints) > 0.05   # the pose changes
    image = sticks.render_stick(64, seed, action, 3, 8).astype(float)
    scene = sticks._scene(64, actor.scene).astype(float)
    head = sticks.stick_keypoints(64, seed, action, 3, 8)[0]
    assert np.abs(image[round(head[1]), round(head[0])] - scene[round(head[1]),
                                                                round(head[0])]).max() > 10


def test_pa_settings_are_checked():
    with pytest.raises(ParamsError, match="settings lack 'kernel_scale'"):
        sticks.pa_items({k: v for k, v in PA.items() if k != "kernel_scale"})
    with pytest.raises(ParamsError, match="n_test 6 is not a multiple of 4"):
        sticks.pa_items({**PA, "n_test": 6})
    test_video = next(it for it in sticks.pa_items(PA) if it.split == "test").extra["video"]
    others = [f"{test_video}_f{t:03d}" for t in range(1, 4)]
    with pytest.raises(ParamsError, match="has no pair; exclude it too"):
        sticks.pa_items({**PA, "exclude": others})
    kept = sticks.pa_items({**PA, "exclude": others[:2]})     # pairs avoid excluded frames
    assert {it.extra["pair"] for it in kept if it.extra["video"] == test_video
            and it.id not in others[:2]} == {f"{test_video}_f000", others[2]}


# --- smoke_sdf ----------------------------------------------------------------------------------

def test_sdf_items_pair_two_poses_of_one_person_in_both_splits(sdf):
    rows = read_manifest(sdf, verify=True)
    by_id = {r.id: r for r in rows}
    items = defaultdict(set)
    for r in rows:
        items[r.extra["video"]].add(r.split)
        assert r.extra["action"] == "sdf" and r.extra["background"].startswith("procedural:scene")
        doc, _ = _points(sdf, r)
        assert doc["frame"] == [32, 32] and len(doc["points"]) == len(KEYPOINTS)
    assert all(len(s) == 1 for s in items.values())            # test items unseen in training
    refs = [r for r in rows if r.extra["pair"]]
    assert {r.split for r in refs} == {"train", "test"} and len(refs) == 6
    for r in refs:
        target = by_id[r.extra["pair"]]
        assert target.extra["video"] == r.extra["video"] and target.id != r.id
        assert target.extra["background"] == r.extra["background"]


def test_sdf_masks_are_dilated_person_unions_covering_both_people(sdf):
    recipe = re.compile(r"procedural:sdf identity=(\d+) pose=(\d+) background=(\d+) side=32")
    rows = read_manifest(sdf)
    by_id = {r.id: r for r in rows}
    for r in (r for r in rows if r.extra["pair"]):
        hole = _gray(sdf / r.extra["mask"])
        assert set(np.unique(hole)) <= {0, 255}
        hole = hole == 255
        people_masks = []
        for row in (r, by_id[r.extra["pair"]]):
            m = recipe.fullmatch(row.extra["source"])
            identity, pose_seed, background = (int(v) for v in m.groups())
            person = sticks.person_mask(16, identity, pose_seed)
            assert person.any() and (person <= hole).all()
            people_masks.append(person)
            # outside the (slightly grown) person the image is the background scene
            image = sticks.render_sdf(32, identity, pose_seed, background)
            away = ~dilate(sticks.person_mask(32, identity, pose_seed), 3)
            assert np.array_equal(image[away], sticks._scene(32, background)[away])
            assert np.array_equal(stretch(image, 16), np.asarray(Image.open(row.path)))
        grown = [np.zeros_like(hole), np.zeros_like(hole)]       # mask_dilation 2: +-2 pixels
        for g, person in zip(grown, people_masks, strict=True):
            for dy in range(-2, 3):
                for dx in range(-2, 3):
                    g |= np.roll(np.pad(person, 2), (dy, dx), axis=(0, 1))[2:-2, 2:-2]
        assert np.array_equal(hole, grown[0] | grown[1])
        assert hole.mean() < 0.9


def test_sdf_keypoints_are_the_people_skeletons(sdf):
    for r in read_manifest(sdf):
        identity, pose_seed = (int(v) for v in re.findall(r"(?:identity|pose)=(\d+)",
                                                          r.extra["source"]))
        doc, _ = _points(sdf, r)
        assert doc["points"] == people.keypoints(32, identity, pose_seed, "full")


def test_sdf_settings_are_checked():
    with pytest.raises(ParamsError, match="settings lack 'mask_dilation'"):
        sticks.sdf_items({k: v for k, v in SDF.items() if k != "mask_dilation"})
    with pytest.raises(ParamsError, match="sdf_0001_pose1 is excluded"):
        sticks.sdf_items({**SDF, "exclude": ["sdf_0001_pose1"]})


# --- smoke_faces_ilat, smoke_masks --------------------------------------------------------------

def test_faces_have_sketches_and_test_edits(tmp_path_factory):
    root = _prepare(tmp_path_factory, sticks.FACES, FACES)
    rows = read_manifest(root, verify=True)
    tests = {r.id for r in rows if r.split == "test"}
    assert len(tests) == 3
    originals = {it.id: it for it in faces.generated("face", FACES)}
    for r in rows:
        assert np.array_equal(np.asarray(Image.open(r.path)),
                              stretch(originals[r.id].load(), 16))      # smoke_faces' images
        sketch = _gray(root / r.extra["sketch"])
        seed = int(re.search(r"seed=(\d+)", r.extra["source"])[1])
        gray = np.asarray(Image.fromarray(faces._face_image(32, seed)).convert("L"))
        assert sketch.shape == (16, 16) and sketch.dtype == np.uint8
        assert (sketch < 128).any() and (sketch > 128).mean() > 0.5     # dark lines on white
        assert np.array_equal(sketch, xdog(gray, size=16))              # of the rendered gray
        if r.id in tests:
            assert r.extra["pair"] in tests - {r.id}
            hole = _gray(root / r.extra["mask"])
            assert hole.shape == (16, 16) and set(np.unique(hole)) <= {0, 255}
            assert token_cover(hole == 255, 4).sum() == round(0.2 * 16)
        else:
            assert r.extra["pair"] == "" and r.extra["mask"] == ""
    with pytest.raises(ParamsError, match="n_test must be >= 2"):
        sticks.faces_items({**FACES, "n_test": 1})


def test_masks_are_binary_silhouettes_all_train(tmp_path_factory):
    root = _prepare(tmp_path_factory, sticks.MASKS, MASKS)
    rows = read_manifest(root, verify=True)
    assert len(rows) == 6 and {r.split for r in rows} == {"train"}
    for r in rows:
        image = np.asarray(Image.open(r.path))
        assert image.shape == (16, 16, 3) and set(np.unique(image)) <= {0, 255}
        assert (image[..., 0] == image[..., 2]).all() and 0 < (image == 255).mean() < 1
    with pytest.raises(ParamsError, match="n_test 2 must be 0"):
        sticks.masks_items({**MASKS, "n_test": 2})


@pytest.mark.parametrize(("name", "source"), [("smoke_pa", sticks.PA), ("smoke_sdf", sticks.SDF),
                                              ("smoke_faces_ilat", sticks.FACES),
                                              ("smoke_masks", sticks.MASKS)])
def test_params_entries_build(name, source):
    settings = load_params()["datasets"][name]
    assert settings["source"] == source.name
    items = source.build(settings)
    assert len(items) == settings["n_train"] + settings["n_test"]
    fixed = [it.split for it in items if it.split is not None]
    if fixed:
        assert fixed.count("test") == settings["n_test"]
