"""Penn Action: a tiny Penn_Action.tar.gz in the upstream layout (Penn_Action/frames/<video>/
<nnnnnn>.jpg, Penn_Action/labels/<video>.mat written with scipy.io.savemat), fetched through a
file:// URL, unpacked and prepared."""

from __future__ import annotations

import dataclasses
import io
import json
import tarfile
from pathlib import Path

import numpy as np
import pytest
import scipy.io
from PIL import Image

from sparsegen.config import ParamsError
from sparsegen.data import penn_action, sources
from sparsegen.data.manifest import read_manifest
from sparsegen.data.pose_masks import ACTION_KERNELS, LIMBS_13

# video -> (action, train, frames, H, W)
VIDEOS = {"0001": ("baseball_pitch", 1, 7, 32, 32), "0002": ("squat", 1, 5, 24, 40),
          "0003": ("baseball_pitch", -1, 6, 32, 32), "0004": ("squat", -1, 4, 32, 32)}
SETTINGS = {"source": "penn_action", "size": 32, "n_test": 2, "seed": 3, "frame_stride": 3,
            "kernel_unit": "frame"}


def _label(video: str) -> dict:
    action, train, n, h, w = VIDEOS[video]
    rng = np.random.default_rng(int(video))
    vis = (rng.random((n, 13)) < 0.8).astype(np.uint8)
    return {"action": action, "pose": "front", "train": np.array([[train]], float),
            "x": rng.integers(0, 4 * w, (n, 13)) / 4.0, "y": rng.integers(0, 4 * h, (n, 13)) / 4.0,
            "visibility": vis, "nframes": np.array([[n]], float),
            "dimensions": np.array([[h, w, n]], float),
            "bbox": np.tile([0.0, 0.0, w - 1.0, h - 1.0], (n, 1))}


def _mat(doc: dict) -> bytes:
    buf = io.BytesIO()
    scipy.io.savemat(buf, doc)
    return buf.getvalue()


def _frame(video: str, index: int) -> np.ndarray:
    _, _, _, h, w = VIDEOS[video]
    return np.random.default_rng(100 * int(video) + index).integers(0, 256, (h, w, 3), np.uint8)


def _jpeg(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="JPEG", quality=95)
    return buf.getvalue()


def _archive(path: Path, labels: dict[str, bytes] | None = None) -> Path:
    members = {"Penn_Action/README": b"Penn Action"}
    for video, (_, _, n, _, _) in VIDEOS.items():
        members[f"Penn_Action/labels/{video}.mat"] = (labels or {}).get(video) or _mat(
            _label(video))
        for i in range(n):
            members[f"Penn_Action/frames/{video}/{i + 1:06d}.jpg"] = _jpeg(_frame(video, i))
    path.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(path, "w:gz") as tf:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    return path


@pytest.fixture
def remote(tmp_path: Path) -> Path:
    return _archive(tmp_path / "remote" / "Penn_Action.tar.gz")


@pytest.fixture
def source(remote: Path, monkeypatch: pytest.MonkeyPatch) -> penn_action.PennActionSource:
    fake = dataclasses.replace(penn_action.SOURCE, url=remote.as_uri(), n_videos=len(VIDEOS))
    monkeypatch.setitem(sources.SOURCES, "penn_action", fake)
    return fake


def _prepare(raw: Path, out: Path, **settings) -> Path:
    sources.fetch("pa", SETTINGS, raw)
    return sources.prepare("pa", {**SETTINGS, **settings}, raw, out)


def test_fetch_downloads_unpacks_and_pins(source, remote, tmp_path):
    raw = tmp_path / "raw"
    sources.fetch("pa", SETTINGS, raw)
    assert (raw / "Penn_Action.tar.gz").read_bytes() == remote.read_bytes()
    assert sorted(p.name for p in (raw / "Penn_Action" / "labels").iterdir()) == [
        f"{v}.mat" for v in VIDEOS]
    assert not (raw / "Penn_Action" / "README").exists()      # only frames/ and labels/
    assert all(p.exists() for p in sources.raw_files("pa", SETTINGS, raw))
    (raw / "Penn_Action.tar.gz").write_bytes(remote.read_bytes()[:-10] + b"0123456789")
    with pytest.raises(sources.DatasetUnavailable, match="differs from"):
        sources.fetch("pa", SETTINGS, raw)


def test_unreachable_archive_says_where_to_put_it(source, tmp_path, monkeypatch):
    monkeypatch.setitem(sources.SOURCES, "penn_action", dataclasses.replace(
        source, url=(tmp_path / "absent.tar.gz").as_uri()))
    with pytest.raises(sources.DatasetUnavailable) as err:
        sources.fetch("pa", SETTINGS, tmp_path / "raw")
    message = str(err.value)
    assert "Download it by hand" in message and (tmp_path / "absent.tar.gz").as_uri() in message
    assert str((tmp_path / "raw" / "Penn_Action.tar.gz").absolute()) in message


def test_rows_keypoints_and_official_splits(source, tmp_path):
    out = _prepare(tmp_path / "raw", tmp_path / "out")
    samples = {s.id: s for s in read_manifest(out, verify=True)}
    train = {i for i, s in samples.items() if s.split == "train"}
    # Every third frame of each train video, from the first.
    assert train == {f"{v}_{i + 1:06d}" for v, (_, t, n, _, _) in VIDEOS.items() if t == 1
                     for i in range(0, n, 3)}
    for sid, s in samples.items():
        video, frame = sid.split("_")
        index = int(frame) - 1
        action, _, _, h, w = VIDEOS[video]
        assert (s.extra["video"], s.extra["action"]) == (video, action)
        label = _label(video)
        doc = json.loads((out / s.extra["keypoints"]).read_text())
        assert doc["frame"] == [h, w]
        for j, point in enumerate(doc["points"]):
            if label["visibility"][index, j]:
                assert point == [label["x"][index, j], label["y"][index, j]]
            else:
                assert point is None
        image = np.asarray(Image.open(s.path))
        assert image.shape == (32, 32, 3)
        source_frame = np.asarray(Image.open(tmp_path / "raw" / "Penn_Action" / "frames" / video
                                             / f"{frame}.jpg"))
        if (h, w) == (32, 32):   # no resize: the decoded JPEG itself
            assert np.array_equal(image, source_frame)


def test_test_pairs_one_video_each_with_fixed_masks(source, tmp_path):
    out = _prepare(tmp_path / "raw", tmp_path / "out")
    samples = {s.id: s for s in read_manifest(out)}
    refs = [s for s in samples.values() if s.extra["pair"]]
    assert len(refs) == SETTINGS["n_test"]
    assert {s.split for s in refs} == {"test"}
    assert {s.extra["video"] for s in refs} == {"0003", "0004"}    # one pair per test video
    tests = {i for i, s in samples.items() if s.split == "test"}
    assert tests == {s.id for s in refs} | {s.extra["pair"] for s in refs}
    for ref in refs:
        target = samples[ref.extra["pair"]]
        assert target.extra["video"] == ref.extra["video"] and target.id != ref.id
        assert not target.extra["pair"] and not target.extra.get("mask")
        mask = np.asarray(Image.open(out / ref.extra["mask"]))
        assert mask.dtype == np.uint8 and mask.shape == (32, 32)
        assert set(np.unique(mask)) <= {0, 255}
        # Frames are 32 x 32 = size: the mask is the frame-pixel mask itself. Independent
        # bounds: each visible joint of either pose dilates to its k x k square (cv2 anchor),
        # and nothing lies farther than k/2 + 1 (Chebyshev) from a joint or limb segment.
        label, k = _label(ref.extra["video"]), ACTION_KERNELS[ref.extra["action"]]
        hole = mask == 255
        rows, cols = np.mgrid[0:32, 0:32]
        near = np.zeros((32, 32), bool)
        for sid in (ref.id, target.id):
            i = int(sid.split("_")[1]) - 1
            pts = np.stack([label["x"][i], label["y"][i]], -1)
            vis = label["visibility"][i].astype(bool)
            for j in np.flatnonzero(vis):
                x, y = np.rint(pts[j]).astype(int)
                square = ((cols >= x - (k - 1) // 2) & (cols <= x + k // 2)
                          & (rows >= y - (k - 1) // 2) & (rows <= y + k // 2))
                assert hole[square].all()
            for a, b in LIMBS_13:
                if vis[a] and vis[b]:
                    for t in np.linspace(0, 1, 200):
                        px, py = pts[a] + t * (pts[b] - pts[a])
                        near |= np.maximum(abs(cols - px), abs(rows - py)) <= k / 2 + 1
            for j in np.flatnonzero(vis):
                near |= np.maximum(abs(cols - pts[j][0]), abs(rows - pts[j][1])) <= k / 2 + 1
        assert not (hole & ~near).any()


def test_kernel_unit_resized_scales_the_kernel(source, tmp_path):
    frame = _prepare(tmp_path / "raw", tmp_path / "a")
    resized = sources.prepare("pa", {**SETTINGS, "kernel_unit": "resized"}, tmp_path / "raw",
                              tmp_path / "b")
    a = {s.id: s for s in read_manifest(frame) if s.extra["pair"]}
    b = {s.id: s for s in read_manifest(resized) if s.extra["pair"]}
    assert a.keys() == b.keys()     # same pairs; only the kernel's unit differs
    for sid in a:
        ma = np.asarray(Image.open(frame / a[sid].extra["mask"])) == 255
        mb = np.asarray(Image.open(resized / b[sid].extra["mask"])) == 255
        # 32-pixel frames resized to 32: "resized" counts the kernel in 256-frame pixels, so it
        # is 8x smaller and its mask lies inside the frame-unit one.
        assert mb.sum() < ma.sum() and not (mb & ~ma).any()


def test_pairs_are_seeded_and_excluded_frames_stay_out(source, tmp_path):
    out1 = _prepare(tmp_path / "raw", tmp_path / "a")
    out2 = sources.prepare("pa", SETTINGS, tmp_path / "raw", tmp_path / "b")
    pairs = {s.id: s.extra["pair"] for s in read_manifest(out1) if s.extra["pair"]}
    assert pairs == {s.id: s.extra["pair"] for s in read_manifest(out2) if s.extra["pair"]}
    excluded = [f"frames/{sid.replace('_', '/')}.jpg" for sid in pairs]
    out3 = sources.prepare("pa", {**SETTINGS, "exclude": [*excluded, "frames/0001/000004.jpg"]},
                           tmp_path / "raw", tmp_path / "c")
    rows = {s.id: s for s in read_manifest(out3)}
    assert not set(pairs) & set(rows) and "0001_000004" not in rows
    assert len([s for s in rows.values() if s.extra["pair"]]) == SETTINGS["n_test"]


def test_draw_pairs_cycles_videos_with_distinct_references():
    videos = [penn_action.Video(v, "squat", False, np.zeros((n, 13, 3)),
                                tuple(f"frames/{v}/{i:06d}.jpg" for i in range(n)))
              for v, n in (("a", 3), ("b", 2))]
    pairs = penn_action.draw_pairs(videos, 5, 0, lambda f: True)
    assert [p[0].id for p in pairs[:2]] in (["a", "b"], ["b", "a"])
    refs = [p[0].frames[p[1]] for p in pairs]
    assert len(set(refs)) == 5 and all(p[1] != p[2] for p in pairs)
    with pytest.raises(ParamsError, match="n_test 6"):
        penn_action.draw_pairs(videos, 6, 0, lambda f: True)


def test_bad_labels_and_frames_name_file_and_video(source, remote, tmp_path, monkeypatch):
    bad = _label("0002")
    bad["x"] = bad["x"][:, :12]
    archive = _archive(tmp_path / "remote2" / "Penn_Action.tar.gz", {"0002": _mat(bad)})
    monkeypatch.setitem(sources.SOURCES, "penn_action",
                        dataclasses.replace(source, url=archive.as_uri()))
    raw = tmp_path / "raw"
    sources.fetch("pa", SETTINGS, raw)
    (raw / "Penn_Action" / "frames" / "0004" / "000004.jpg").unlink()
    with pytest.raises(sources.DatasetUnavailable) as err:
        sources.prepare("pa", SETTINGS, raw, tmp_path / "out")
    message = str(err.value)
    assert "labels/0002.mat: field 'x' has shape (5, 12)" in message and "video 0002" in message
    assert "frames/0004: 3 frame file(s)" in message and "video 0004" in message
    assert not (tmp_path / "out").exists()


def test_settings_are_checked(source, tmp_path):
    sources.fetch("pa", SETTINGS, tmp_path / "raw")
    for key, value in (("frame_stride", 0), ("kernel_unit", "inches")):
        with pytest.raises(ParamsError, match=key):
            sources.prepare("pa", {**SETTINGS, key: value}, tmp_path / "raw", tmp_path / "out")
    with pytest.raises(ParamsError, match="n_test 11"):
        sources.prepare("pa", {**SETTINGS, "n_test": 11}, tmp_path / "raw", tmp_path / "out")
