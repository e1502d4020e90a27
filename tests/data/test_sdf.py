"""SDF: In-shop people on Places backgrounds. Built in tmp_path in the upstream formats: the
deepfashion raw folder (img/ JPEGs, CoCosNet pose/ candidate + subset files, back-slashed CRLF
lists) fetched by the deepfashion source, In-shop's Anno/segmentation (colour-coded
`*_segment.png` at twice the resolution, letterboxed onto the 32 x 32 frame) as a zip, and a
Places `val_256.tar` served through a file:// URL."""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import logging
import tarfile
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from sparsegen.config import ParamsError
from sparsegen.data import deepfashion, places, sdf, sources
from sparsegen.data.manifest import read_manifest

FRAME, HI_H, HI_W, LEFT = 32, 64, 40, 6   # highres 64 x 40 -> 32 x 20 centred at column 6
# item folder -> [(image stem, body shift s or None = not segmented, clothes only?)]
ITEMS = {"MEN/Denim/id_00000001": [("01_1_front", 0, False), ("01_2_side", 1, False),
                                   ("01_3_back", 2, False)],
         "WOMEN/Dresses/id_00000002": [("02_1_front", 1, False), ("02_2_side", 0, False)],
         "WOMEN/Tees/id_00000003": [("01_1_front", 2, False), ("01_2_side", 1, False)],
         "MEN/Shirts/id_00000004": [("01_1_front", 0, False), ("01_2_side", 2, False)],
         "WOMEN/Skirts/id_00000005": [("03_1_front", 1, False), ("03_2_side", 0, False),
                                      ("03_4_full", 2, True)],
         "MEN/Solo/id_00000006": [("01_1_front", 0, False), ("01_2_side", None, False)]}
N_SCENES = 12
SETTINGS = {"source": "sdf", "size": FRAME, "n_test": 2, "seed": 0, "train_pairs": 5,
            "mask_dilation": 1}


def _rects(s: int) -> list[tuple[int, int, int, int]]:
    """Head and body of a person with body shift s: (row0, row1, col0, col1), half-open, in
    frame pixels (highres = twice, minus the letterbox offset)."""
    return [(1, 9, 13, 19), (9, 28, 9 + s, 23 + s)]


def _person(s: int, clothes_only: bool = False) -> np.ndarray:
    mask = np.zeros((FRAME, FRAME), bool)
    for r0, r1, c0, c1 in _rects(s)[1 if clothes_only else 0:]:
        mask[r0:r1, c0:c1] = True
    return mask


def _points(s: int) -> list[tuple[float, float] | None]:
    body = {1: (16, 10), 2: (11, 11), 5: (21, 11), 8: (13, 20), 9: (13, 25), 11: (19, 20),
            12: (19, 25)}
    head = {0: (16, 3), 14: (15, 2), 15: (17, 2), 16: (14, 3), 17: (18, 3)}
    pts: list[tuple[float, float] | None] = [None] * 18
    for k, (x, y) in body.items():
        pts[k] = (x + s + 0.25, y + 0.5)
    for k, (x, y) in head.items():
        pts[k] = (x + 0.75, y + 0.25)
    return pts


def _pose(points) -> tuple[bytes, bytes]:
    detected = [k for k, p in enumerate(points) if p is not None]
    cand = "".join(f"{points[k][0]:.18e} {points[k][1]:.18e} {0.9:.18e} {i:.18e}\n"
                   for i, k in enumerate(detected))
    subset = [-1.0] * 18
    for i, k in enumerate(detected):
        subset[k] = float(i)
    sub = " ".join(f"{v:.18e}" for v in (*subset, 10.0, len(detected))) + "\n"
    return cand.encode(), sub.encode()


def _image(seed: int, person: np.ndarray) -> bytes:
    rng = np.random.default_rng(seed)
    img = np.full((FRAME, FRAME, 3), 255, np.uint8)
    img[person] = rng.integers(0, 200, (int(person.sum()), 3))
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format="JPEG", quality=95)
    return buf.getvalue()


def _segment(s: int, clothes_only: bool) -> bytes:
    """Colour-coded highres segment: face (16, 78, 139), top (255, 250, 205); black elsewhere."""
    seg = np.zeros((HI_H, HI_W, 3), np.uint8)
    for (r0, r1, c0, c1), colour in zip(_rects(s), [(16, 78, 139), (255, 250, 205)],
                                        strict=True):
        if clothes_only and colour == (16, 78, 139):
            continue
        seg[2 * r0:2 * r1, 2 * (c0 - LEFT):2 * (c1 - LEFT)] = colour
    buf = io.BytesIO()
    Image.fromarray(seg).save(buf, format="PNG")
    return buf.getvalue()


def _scene(i: int) -> bytes:
    img = np.random.default_rng(1000 + i).integers(0, 256, (FRAME, FRAME, 3), np.uint8)
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format="JPEG", quality=90)
    return buf.getvalue()


def _name(item: str, stem: str) -> str:
    return f"img/{item}/{stem}.jpg"


@pytest.fixture
def root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """`<root>/deepfashion` (fetched) and `<root>/sdf` (segmentation.zip); Places remote."""
    df = tmp_path / "raw" / "deepfashion"
    seg = io.BytesIO()
    names = []
    with zipfile.ZipFile(seg, "w") as zf:
        for n, (item, images) in enumerate(ITEMS.items()):
            for m, (stem, s, clothes_only) in enumerate(images):
                name = _name(item, stem)
                names.append(name)
                shift = 0 if s is None else s
                (df / name).parent.mkdir(parents=True, exist_ok=True)
                (df / name).write_bytes(_image(10 * n + m, _person(shift)))
                cand, sub = _pose(_points(shift))
                stem_path = df / "pose" / item / stem
                stem_path.parent.mkdir(parents=True, exist_ok=True)
                Path(f"{stem_path}_candidate.txt").write_bytes(cand)
                Path(f"{stem_path}_subset.txt").write_bytes(sub)
                if s is not None:
                    zf.writestr(f"In-shop/Anno/segmentation/img_highres/{item}/{stem}_segment.png",
                                _segment(s, clothes_only))
    half = len(names) // 2
    for list_name, part in (("train.txt", names[:half]), ("val.txt", names[half:])):
        (df / list_name).write_bytes("".join(p.replace("/", "\\") + "\r\n" for p in part)
                                     .encode())
    for list_name in (deepfashion.REF, deepfashion.REF_TEST, deepfashion.SELF_PAIR):
        (df / list_name).write_text(f"{names[0]},{names[1]}\n")
    deepfashion.SOURCE.fetch("deepfashion", df)
    raw = tmp_path / "raw" / "sdf"
    raw.mkdir()
    (raw / "segmentation.zip").write_bytes(seg.getvalue())
    tar = tmp_path / "remote" / "val_256.tar"
    tar.parent.mkdir()
    with tarfile.open(tar, "w") as tf:
        for i in range(N_SCENES):
            data = _scene(i)
            info = tarfile.TarInfo(f"val_256/Places365_val_{i + 1:08d}.jpg")
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    archive = places.PlacesArchive(url=tar.as_uri(), size=tar.stat().st_size,
                                   md5=hashlib.md5(tar.read_bytes()).hexdigest(),
                                   n_images=N_SCENES)
    monkeypatch.setitem(sources.SOURCES, "sdf", dataclasses.replace(sdf.SOURCE, places=archive))
    return tmp_path / "raw"


def _prepare(root: Path, out: Path, **settings) -> Path:
    sources.fetch("sdf", SETTINGS, root / "sdf")
    return sources.prepare("sdf", {**SETTINGS, **settings}, root / "sdf", out)


def _lookup() -> dict[str, tuple[str, int]]:
    """In-shop sample id -> (item, body shift)."""
    return {f"{item}/{stem}".replace("/", "__"): (item, s)
            for item, images in ITEMS.items() for stem, s, _ in images}


def test_pairs_composites_keypoints_and_masks(root, tmp_path):
    out = _prepare(root, tmp_path / "out")
    rows = {s.id: s for s in read_manifest(out, verify=True)}
    refs = [s for s in rows.values() if s.extra["pair"]]
    assert len(rows) == 2 * len(refs) == 2 * (2 + 5)
    assert sorted(r.id for r in refs) == [f"test_{k:05d}_ref" for k in range(2)] + [
        f"train_{k:05d}_ref" for k in range(5)]
    lookup = _lookup()
    # Dropped: the clothes-only segment (head keypoints outside) and the unsegmented image;
    # item 6 then has one usable image and is in no pair.
    used = {s.extra["image"] for s in rows.values()}
    assert "WOMEN__Skirts__id_00000005__03_4_full" not in used
    assert not any(i.startswith("MEN__Solo") for i in used)
    split_items = {split: {s.extra["video"] for s in rows.values() if s.split == split}
                   for split in ("train", "test")}
    assert len(split_items["test"]) == 2 and not split_items["test"] & split_items["train"]
    assert len({s.extra["background"] for s in refs}) == len(refs)
    with tarfile.open(tmp_path / "remote" / "val_256.tar") as tf:
        scenes = {Path(m.name).name: np.asarray(Image.open(io.BytesIO(
            tf.extractfile(m).read())).convert("RGB")) for m in tf.getmembers()}
    for ref in refs:
        tgt = rows[ref.extra["pair"]]
        assert ref.split == tgt.split and ref.extra["video"] == tgt.extra["video"]
        assert ref.extra["image"] != tgt.extra["image"]
        assert ref.extra["background"] == tgt.extra["background"]
        assert ref.extra["action"] == "sdf" and not tgt.extra["pair"]
        union = np.zeros((FRAME, FRAME), bool)
        for row in (ref, tgt):
            item, s = lookup[row.extra["image"]]
            assert row.extra["video"] == item.replace("/", "__")
            person = _person(s)
            inshop = np.asarray(Image.open(root / "deepfashion" / _name(
                item, row.extra["image"].split("__")[-1])).convert("RGB"))
            image = np.asarray(Image.open(row.path))
            assert np.array_equal(image[person], inshop[person])
            assert np.array_equal(image[~person], scenes[row.extra["background"]][~person])
            doc = json.loads((out / row.extra["keypoints"]).read_text())
            assert doc["frame"] == [FRAME, FRAME]
            assert doc["points"] == [list(p) if p else None for p in _points(s)]
            for r0, r1, c0, c1 in _rects(s):    # grown by one pixel each way
                union[max(r0 - 1, 0):r1 + 1, max(c0 - 1, 0):c1 + 1] = True
        mask = np.asarray(Image.open(out / ref.extra["mask"]))
        assert np.array_equal(mask, union.astype(np.uint8) * 255)


def test_usable_people_are_segmented_posed_and_covered(root):
    source = sources.SOURCES["sdf"]
    source.fetch("sdf", root / "sdf")
    people = source.people("sdf", root / "sdf", frozenset())
    expected = {f"img/{item}": sorted(_name(item, stem) for stem, s, clothes in images
                                      if s is not None and not clothes)
                for item, images in ITEMS.items()}
    assert {k: sorted(p.name for p in v) for k, v in people.items()} == expected


def test_seeded_and_excludable(root, tmp_path, caplog):
    caplog.set_level(logging.INFO)
    a = {s.id: (s.extra["image"], s.extra["background"]) for s in
         read_manifest(_prepare(root, tmp_path / "a"))}
    b = {s.id: (s.extra["image"], s.extra["background"]) for s in
         read_manifest(sources.prepare("sdf", SETTINGS, root / "sdf", tmp_path / "b"))}
    assert a == b
    gone = "img/MEN/Denim/id_00000001/01_1_front.jpg"
    scene = "val_256/Places365_val_00000001.jpg"
    c = read_manifest(sources.prepare("sdf", {**SETTINGS, "exclude": [gone, scene]},
                                      root / "sdf", tmp_path / "c"))
    assert "MEN__Denim__id_00000001__01_1_front" not in {s.extra["image"] for s in c}
    assert "Places365_val_00000001.jpg" not in {s.extra["background"] for s in c}
    assert "not in the data" not in caplog.text and "2 excluded" in caplog.text


def test_needs_deepfashion_segmentation_and_places(root, tmp_path, monkeypatch):
    (root / "sdf" / "segmentation.zip").rename(tmp_path / "seg.zip")
    with pytest.raises(sources.DatasetUnavailable) as err:
        sources.fetch("sdf", SETTINGS, root / "sdf")
    assert "segmentation.zip" in str(err.value) and "Anno/segmentation" in str(err.value)
    (tmp_path / "seg.zip").rename(root / "sdf" / "segmentation.zip")
    bad = dataclasses.replace(sources.SOURCES["sdf"].places, md5="0" * 32)
    monkeypatch.setitem(sources.SOURCES, "sdf", dataclasses.replace(sources.SOURCES["sdf"],
                                                                    places=bad))
    with pytest.raises(sources.DatasetUnavailable) as err:
        sources.fetch("sdf", SETTINGS, root / "sdf")
    assert "expected " + "0" * 32 in str(err.value) and "val_256.tar" in str(err.value)
    (root / "deepfashion" / deepfashion.RECEIPT).unlink()
    with pytest.raises(sources.DatasetUnavailable, match="fetch that source first"):
        sources.fetch("sdf", SETTINGS, root / "sdf")


def test_bad_pose_and_clothes_only_segments_are_reported(root, tmp_path):
    sources.fetch("sdf", SETTINGS, root / "sdf")
    broken = root / "deepfashion" / "pose" / "WOMEN/Tees/id_00000003/01_2_side_subset.txt"
    broken.write_text("1 2 3\n")
    with pytest.raises(sources.DatasetUnavailable) as err:
        sources.prepare("sdf", SETTINGS, root / "sdf", tmp_path / "out")
    assert f"{broken}:1: 3 numbers, expected 20" in str(err.value)
    assert "img/WOMEN/Tees/id_00000003/01_2_side.jpg" in str(err.value)
    # Every segment clothes-only: the check refuses the segmentation as a whole.
    seg = root / "sdf" / "segmentation"
    for path in seg.rglob("*_segment.png"):
        rgb = np.asarray(Image.open(path).convert("RGB")).copy()
        rgb[(rgb == (16, 78, 139)).all(axis=2)] = 0
        Image.fromarray(rgb).save(path)
    with pytest.raises(sources.DatasetUnavailable, match="cover the whole person"):
        sources.prepare("sdf", {**SETTINGS, "exclude": [
            "img/WOMEN/Tees/id_00000003/01_2_side.jpg"]}, root / "sdf", tmp_path / "out")


def test_settings_are_checked(root, tmp_path):
    sources.fetch("sdf", SETTINGS, root / "sdf")
    with pytest.raises(ParamsError, match="mask_dilation"):
        sources.prepare("sdf", {**SETTINGS, "mask_dilation": -1}, root / "sdf", tmp_path / "o")
    with pytest.raises(ParamsError, match="train_pairs 11"):   # 6 + 2 + 2 ordered pairs
        sources.prepare("sdf", {**SETTINGS, "train_pairs": 11}, root / "sdf", tmp_path / "o")
    with pytest.raises(ParamsError, match="n_test: 6"):
        sources.prepare("sdf", {**SETTINGS, "n_test": 6}, root / "sdf", tmp_path / "o")


def test_segment_keys_letterbox_and_coverage():
    assert sdf.segment_key("x/img_highres/MEN/Denim/id_1/01_1_front_segment.png") == \
        sdf.segment_key("img/MEN/Denim/id_1/01_1_front.jpg") == "MEN/Denim/id_1/01_1_front"
    tall = np.zeros((8, 4), bool)
    tall[2:6, 0:2] = True
    boxed = sdf.letterbox(tall, (4, 4))       # 8 x 4 -> 4 x 2 centred: columns 1..2
    expected = np.zeros((4, 4), bool)
    expected[1:3, 1:2] = True
    assert np.array_equal(boxed, expected)
    mask = np.zeros((20, 20), bool)
    mask[5:10, 5:10] = True
    points = [(7.0, 7.0), (12.0, 7.0), (16.0, 7.0), None, (30.0, 1.0)]
    assert sdf.coverage(mask, points, tolerance=3) == 2 / 4   # (12, 7) is 3 px from column 9
    assert sdf.coverage(mask, [None]) is None


def test_places_tar_reader(root, tmp_path):
    archive = sources.SOURCES["sdf"].places
    archive.fetch("sdf", root / "sdf")
    reader = archive.open("sdf", root / "sdf")
    names = reader.names()
    assert names == [f"val_256/Places365_val_{i + 1:08d}.jpg" for i in range(N_SCENES)]
    expected = np.asarray(Image.open(io.BytesIO(_scene(4))).convert("RGB"))
    assert np.array_equal(reader.read(names[4]), expected)
    with pytest.raises(Exception, match="not in the archive"):
        reader.read("val_256/absent.jpg")
