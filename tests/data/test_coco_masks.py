"""COCO instance masks: polygon and RLE segmentations decoded without pycocotools, checked
against hand-made examples and an independent encoder; a tiny annotations zip in the upstream
layout (annotations/instances_train2014.json) fetched through a file:// URL and prepared."""

from __future__ import annotations

import dataclasses
import io
import json
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from sparsegen.config import ParamsError
from sparsegen.data import coco_masks, sources
from sparsegen.data.manifest import read_manifest
from sparsegen.io import ImageReadError

SETTINGS = {"source": "coco_masks", "size": 16, "n_test": 0, "seed": 0, "min_area": 0.05,
            "max_area": 0.6, "max_masks": 0, "crowd": False}


def _runs(mask: np.ndarray) -> list[int]:
    """Uncompressed COCO RLE by an explicit loop over the pixels in column-major order."""
    runs, current, length = [], False, 0
    for c in range(mask.shape[1]):
        for r in range(mask.shape[0]):
            if bool(mask[r, c]) != current:
                runs.append(length)
                current, length = not current, 0
            length += 1
    return [*runs, length]


def _compress(runs: list[int]) -> str:
    """COCO's string encoding, written from its description (maskApi.c rleToString)."""
    out = []
    for i, run in enumerate(runs):
        x = run - runs[i - 2] if i > 2 else run
        more = True
        while more:
            c = x & 0x1F
            x >>= 5
            more = x != -1 if c & 0x10 else x != 0
            if more:
                c |= 0x20
            out.append(chr(c + 48))
    return "".join(out)


def test_rle_hand_made_examples():
    mask = np.array([[0, 1, 1], [0, 1, 0]], bool)     # column-major: 0 0 | 1 1 | 1 0
    assert _runs(mask) == [2, 3, 1]
    assert np.array_equal(coco_masks.decode_rle([2, 3, 1], 2, 3), mask)
    # Worked by hand: 100 -> 'T3' (4 | 0x20, then 3); 3 -> '3'; 5 -> '5'; the fourth count is
    # stored as 1 - 3 = -2 -> 30 = 0b11110 (sign bit 0x10 set) -> 'N'.
    assert coco_masks.rle_counts("T335N") == [100, 3, 5, 1]
    # 40 -> 'X1'; fourth: 1 - 40 = -39 -> groups 25 | 0x20 = 'i', 30 = 'N'.
    assert coco_masks.rle_counts("1X12iN") == [1, 40, 2, 1]
    assert np.array_equal(coco_masks.decode_rle("T335N", 109, 1)[:, 0],
                          np.repeat([False, True, False, True], [100, 3, 5, 1]))
    with pytest.raises(ValueError, match="sum to 5"):
        coco_masks.decode_rle([2, 3], 2, 3)
    with pytest.raises(ValueError, match="ends inside a count"):
        coco_masks.rle_counts("T")


def test_rle_against_an_independent_encoder():
    rng = np.random.default_rng(0)
    for h, w in ((5, 7), (13, 4), (40, 31)):
        mask = rng.random((h, w)) < rng.uniform(0.1, 0.9)
        runs = _runs(mask)
        assert np.array_equal(coco_masks.decode_rle(runs, h, w), mask)
        assert coco_masks.rle_counts(_compress(runs)) == runs
        assert np.array_equal(coco_masks.decode_rle(_compress(runs), h, w), mask)


def test_polygons_fill_their_pixels():
    square = [2.0, 1.0, 6.0, 1.0, 6.0, 4.0, 2.0, 4.0]
    mask = coco_masks.polygon_mask([square, [8, 8, 9, 8], [8, 6, 9, 6, 9, 7]], 10, 10)
    expected = np.zeros((10, 10), bool)
    expected[1:5, 2:7] = True                 # corners included, as COCO's outlines are
    triangle = coco_masks.polygon_mask([[8, 6, 9, 6, 9, 7]], 10, 10)
    assert triangle[6, 8] and triangle[6, 9] and triangle[7, 9]
    assert np.array_equal(mask & ~triangle, expected)     # the 2-point "polygon" is skipped
    assert coco_masks.segmentation_mask({"counts": [2, 3, 1], "size": [2, 3]}, 2, 3)[0, 1]
    with pytest.raises(ValueError, match="size"):
        coco_masks.segmentation_mask({"counts": [6], "size": [3, 2]}, 2, 3)


def _document() -> dict:
    crowd = np.zeros((32, 32), bool)
    crowd[4:20, 8:24] = True                               # 256 / 1024 = 0.25
    blob = np.zeros((32, 48), bool)
    blob[10:26, 0:30] = True                               # 480 / 1536 = 0.3125
    return {
        "images": [{"id": 1, "file_name": "COCO_train2014_000000000001.jpg", "height": 32,
                    "width": 32},
                   {"id": 2, "file_name": "COCO_train2014_000000000002.jpg", "height": 32,
                    "width": 48}],
        "categories": [{"id": 1, "name": "person"}, {"id": 3, "name": "car"}],
        "annotations": [
            {"id": 10, "image_id": 1, "category_id": 1, "iscrowd": 0, "area": 192.0,
             "segmentation": [[4, 2, 19.5, 2, 19.5, 13.5, 4, 13.5]]},          # 16 x 12
            {"id": 11, "image_id": 1, "category_id": 3, "iscrowd": 1, "area": 256.0,
             "segmentation": {"counts": _runs(crowd), "size": [32, 32]}},
            {"id": 12, "image_id": 2, "category_id": 3, "iscrowd": 0, "area": 480.0,
             "segmentation": {"counts": _compress(_runs(blob)), "size": [32, 48]}},
            {"id": 13, "image_id": 2, "category_id": 1, "iscrowd": 0, "area": 20.0,
             "segmentation": [[0, 0, 4, 0, 4, 4]]},                                # too small
            {"id": 14, "image_id": 1, "category_id": 1, "iscrowd": 0, "area": 1000.0,
             "segmentation": [[0, 0, 31, 0, 31, 31, 0, 31]]},                      # too large
        ]}


def _zip(path: Path, doc: dict, member: str = "annotations/instances_train2014.json") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr(member, json.dumps(doc))
        zf.writestr("annotations/captions_train2014.json", "{}")
    return path


@pytest.fixture
def remote(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = _zip(tmp_path / "remote" / "annotations_trainval2014.zip", _document())
    monkeypatch.setitem(sources.SOURCES, "coco_masks",
                        dataclasses.replace(coco_masks.SOURCE, url=path.as_uri()))
    return path


def _prepare(raw: Path, out: Path, **settings) -> Path:
    sources.fetch("masks", SETTINGS, raw)
    return sources.prepare("masks", {**SETTINGS, **settings}, raw, out)


def _fit(mask: np.ndarray) -> np.ndarray:
    """Exact 2x / 2x-by-3x shrink: hole where at least half of the block is."""
    h, w = mask.shape
    fh, fw = h // 16, w // 16
    return mask.reshape(16, fh, 16, fw).mean(axis=(1, 3)) >= 0.5


def test_rows_are_filtered_binary_masks(remote, tmp_path):
    raw = tmp_path / "raw"
    out = _prepare(raw, tmp_path / "out")
    assert (raw / "annotations_trainval2014.zip.sha256").is_file()
    rows = {s.id: s for s in read_manifest(out, verify=True)}
    assert set(rows) == {"coco_10", "coco_12"}               # crowd, tiny, huge left out
    assert {s.split for s in rows.values()} == {"train"}
    assert rows["coco_12"].extra["image"] == "COCO_train2014_000000000002.jpg"
    assert rows["coco_12"].extra["category"] == "car"
    doc = _document()
    for sid, ann_id in (("coco_10", 10), ("coco_12", 12)):
        ann = next(a for a in doc["annotations"] if a["id"] == ann_id)
        image = next(i for i in doc["images"] if i["id"] == ann["image_id"])
        full = np.zeros((image["height"], image["width"]), bool)
        if ann_id == 10:
            full[2:14, 4:20] = True
        else:
            full[10:26, 0:30] = True
        mask = np.asarray(Image.open(rows[sid].path))
        assert mask.shape == (16, 16) and set(np.unique(mask)) <= {0, 255}
        assert np.array_equal(mask == 255, _fit(full))
    crowd = {s.id for s in read_manifest(sources.prepare("masks", {**SETTINGS, "crowd": True},
                                                         raw, tmp_path / "crowd"))}
    assert crowd == {"coco_10", "coco_11", "coco_12"}


def test_subset_is_seeded_and_exclude_applies(remote, tmp_path):
    raw = tmp_path / "raw"
    sources.fetch("masks", SETTINGS, raw)
    picks = [{s.id for s in read_manifest(sources.prepare(
        "masks", {**SETTINGS, "crowd": True, "max_masks": 2, "seed": seed}, raw,
        tmp_path / f"s{seed}-{n}"))} for seed in (0, 1, 2, 3) for n in (0, 1)]
    assert all(len(p) == 2 for p in picks)
    assert all(picks[2 * k] == picks[2 * k + 1] for k in range(4))
    assert len({frozenset(p) for p in picks}) > 1
    rows = read_manifest(sources.prepare("masks", {**SETTINGS, "exclude": [
        "instances_train2014#10"]}, raw, tmp_path / "x"))
    assert {s.id for s in rows} == {"coco_12"}


def test_bad_segmentations_name_file_and_annotation(tmp_path, monkeypatch):
    doc = _document()
    doc["annotations"][0]["segmentation"] = {"counts": [3, 4], "size": [32, 32]}
    path = _zip(tmp_path / "remote" / "annotations_trainval2014.zip", doc)
    monkeypatch.setitem(sources.SOURCES, "coco_masks",
                        dataclasses.replace(coco_masks.SOURCE, url=path.as_uri()))
    with pytest.raises(ImageReadError) as err:
        _prepare(tmp_path / "raw", tmp_path / "out")
    assert "annotation 10" in str(err.value) and "instances_train2014.json" in str(err.value)
    assert "instances_train2014#10" in str(err.value)         # what to exclude
    doc["annotations"][0]["image_id"] = 99
    path = _zip(tmp_path / "remote2" / "annotations_trainval2014.zip", doc)
    raw = tmp_path / "raw2"
    monkeypatch.setitem(sources.SOURCES, "coco_masks",
                        dataclasses.replace(coco_masks.SOURCE, url=path.as_uri()))
    with pytest.raises(sources.DatasetUnavailable, match="annotation 10 names image 99"):
        _prepare(raw, tmp_path / "out")


def test_fetch_checks_the_zip_and_settings(tmp_path, monkeypatch):
    path = _zip(tmp_path / "remote" / "annotations_trainval2014.zip", {},
                member="annotations/instances_val2014.json")
    monkeypatch.setitem(sources.SOURCES, "coco_masks",
                        dataclasses.replace(coco_masks.SOURCE, url=path.as_uri()))
    with pytest.raises(sources.DatasetUnavailable) as err:
        sources.fetch("masks", SETTINGS, tmp_path / "raw")
    assert "holds no annotations/instances_train2014.json" in str(err.value)
    assert str((tmp_path / "raw" / "annotations_trainval2014.zip").absolute()) in str(err.value)
    with pytest.raises(ParamsError, match="min_area"):
        sources.prepare("masks", {**SETTINGS, "min_area": 0.7}, tmp_path / "raw",
                        tmp_path / "out")


def test_mask_helpers():
    mask = np.zeros((6, 9), bool)
    mask[0:3, 0:3] = True
    assert np.array_equal(coco_masks.fit_mask(mask, (2, 3)), [[1, 0, 0], [0, 0, 0]])
    data = coco_masks.mask_png(mask)
    assert np.array_equal(np.asarray(Image.open(io.BytesIO(data))), mask * 255)
