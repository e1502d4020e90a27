"""CelebA-HQ edge data (CelebAMask-HQ + CoCosNet lists): a tiny raw folder in the upstream
layout, 8x8 faces with 4x4 part masks (as 1024 images have 512 masks), built in tmp_path."""

from __future__ import annotations

import hashlib
import io
import json
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from sparsegen.data import celebahq, sources
from sparsegen.data.manifest import read_manifest
from sparsegen.io import ImageReadError

SIDE, MASK = 8, 4
TRAIN, TEST = [5, 17, 2003], [4001, 29]
# parts present per image (the rest have no file, as in CelebAMask-HQ); cloth/neck are ignored
PRESENT = {5: ["skin", "l_eye", "eye_g", "hair", "cloth"], 17: ["skin", "nose", "hair"],
           2003: ["skin", "u_lip", "mouth", "l_lip", "neck"], 4001: ["skin", "l_ear", "r_ear"],
           29: ["hair"]}
REF = [[5, 17, 2003], [17, 2003, 5, 29], [2003, 5], [999, 5]]   # 999: a line nobody uses
REF_TEST = [[4001, 29, 5], [29, 4001]]
# (exemplar, exemplar_hard) written out: the first and the last entry of the image's line
EXPECTED = {5: (17, 2003), 17: (2003, 29), 2003: (5, 5), 4001: (29, 5), 29: (4001, 4001)}
SETTINGS = {"source": "celebahq_edge", "size": 8, "n_test": 1, "seed": 0}
LISTS = ("train.txt", "val.txt", "celebahq_ref.txt", "celebahq_ref_test.txt")


def _masks(number: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(number)
    return {part: np.where(rng.random((MASK, MASK)) < 0.5, 255, 0).astype(np.uint8)
            for part in PRESENT[number]}


def _png(array: np.ndarray, mode: str = "L") -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array).convert(mode).save(buf, format="PNG")
    return buf.getvalue()


def _tree() -> dict[str, bytes]:
    """Image and mask files by path relative to the raw folder."""
    files = {}
    for number in TRAIN + TEST:
        img = np.random.default_rng(number + 1).integers(0, 256, (SIDE, SIDE, 3), np.uint8)
        buf = io.BytesIO()
        Image.fromarray(img).save(buf, format="JPEG", quality=95)
        files[f"CelebA-HQ-img/{number}.jpg"] = buf.getvalue()
        for i, (part, mask) in enumerate(_masks(number).items()):
            rel = f"CelebAMask-HQ-mask-anno/{number // 2000}/{number:05d}_{part}.png"
            files[rel] = _png(mask, "RGB" if i == 1 else "L")   # some masks are saved as RGB
    return files


def _write_lists(raw: Path) -> None:
    (raw / "train.txt").write_text("".join(f"{n}\n" for n in TRAIN))
    (raw / "val.txt").write_text("".join(f"{n}\n" for n in TEST))
    for name, rows in (("celebahq_ref.txt", REF), ("celebahq_ref_test.txt", REF_TEST)):
        (raw / name).write_text("".join(",".join(f"{n}.jpg" for n in r) + "\n" for r in rows))


@pytest.fixture
def raw(tmp_path: Path) -> Path:
    raw = tmp_path / "raw"
    for rel, data in _tree().items():
        (raw / rel).parent.mkdir(parents=True, exist_ok=True)
        (raw / rel).write_bytes(data)
    _write_lists(raw)
    return raw


@pytest.fixture(autouse=True)
def registered(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sources.SOURCES, "celebahq_edge", celebahq.SOURCE)


def _prepare(raw: Path, out: Path, **settings) -> Path:
    sources.fetch("celebahq_edge", SETTINGS, raw)
    return sources.prepare("celebahq_edge", {**SETTINGS, **settings}, raw, out)


def _problem(raw: Path, tmp_path: Path) -> str:
    with pytest.raises(sources.DatasetUnavailable) as err:
        _prepare(raw, tmp_path / "out")
    assert not (tmp_path / "out").exists()
    return str(err.value)


def _expected_map(number: int) -> np.ndarray:
    """Explicit loops: the last part (in PARTS order) whose 2x-upsampled mask covers a pixel."""
    masks = _masks(number)
    out = np.zeros((SIDE, SIDE), np.uint8)
    for y in range(SIDE):
        for x in range(SIDE):
            for k, part in enumerate(celebahq.PARTS, start=1):
                if part in masks and masks[part][y // 2, x // 2] == 255:
                    out[y, x] = k
    return out


# --- prepare ------------------------------------------------------------------------------------

def test_official_splits_part_maps_and_exemplars(raw, tmp_path):
    out = _prepare(raw, tmp_path / "out")
    samples = {s.id: s for s in read_manifest(out, verify=True)}
    assert set(samples) == {"00005", "00017", "02003", "04001", "00029"}
    for number in TRAIN + TEST:
        s = samples[f"{number:05d}"]
        assert s.split == ("train" if number in TRAIN else "test")
        assert s.extra["source"] == f"CelebA-HQ-img/{number}.jpg"
        assert "no redistribution" in s.extra["licence"]
        exemplar, hard = EXPECTED[number]
        assert (s.extra["exemplar"], s.extra["exemplar_hard"], s.extra["self_pair"]) == \
            (f"{exemplar:05d}", f"{hard:05d}", "0")
        assert s.extra["parts"] == f"{s.split}/{s.id}_parts.png"
        with Image.open(out / s.extra["parts"]) as im:
            assert im.mode == "L"
            parts = np.asarray(im)
        np.testing.assert_array_equal(parts, _expected_map(number))
    # overlaps really occur in the fixture: eye_g (12) over l_eye (4), hair (13) over skin (1)
    five, masks = _expected_map(5), {p: np.kron(m, np.ones((2, 2))) for p, m in
                                     _masks(5).items()}
    assert ((masks["l_eye"] == 255) & (five == 12)).any()
    assert ((masks["skin"] == 255) & (five == 13)).any()
    assert json.loads((out / "dataset.json").read_text())["counts"] == {"train": 3, "test": 2}


def test_items_aux_loader_returns_the_png_bytes(raw):
    celebahq.SOURCE.fetch("celebahq_edge", raw)
    with celebahq.SOURCE.items("celebahq_edge", SETTINGS, raw) as items:
        item = next(it for it in items if it.id == "02003")
        suffix, load = item.aux["parts"]
        data = load()
        assert suffix == "_parts.png" and data.startswith(b"\x89PNG")
        np.testing.assert_array_equal(np.asarray(Image.open(io.BytesIO(data))),
                                      _expected_map(2003))
        assert item.split == "train" and item.load().shape == (SIDE, SIDE, 3)


# --- bad input ----------------------------------------------------------------------------------

def test_list_line_that_is_not_a_number(raw, tmp_path):
    (raw / "train.txt").write_text("5\nseventeen\n2003\n")
    assert f"{raw / 'train.txt'}:2: 'seventeen' is not an image number" in \
        _problem(raw, tmp_path)


def test_list_line_naming_an_absent_image(raw, tmp_path):
    (raw / "CelebA-HQ-img/4001.jpg").unlink()
    assert f"{raw / 'val.txt'}:1: names CelebA-HQ-img/4001.jpg, which is not in" in \
        _problem(raw, tmp_path)


def test_image_without_any_mask(raw, tmp_path):
    for part in PRESENT[17]:
        (raw / f"CelebAMask-HQ-mask-anno/0/00017_{part}.png").unlink()
    assert (f"{raw / 'train.txt'}:2: no part mask of CelebA-HQ-img/17.jpg (expected "
            f"{raw / 'CelebAMask-HQ-mask-anno/0/00017_<part>.png'})") in _problem(raw, tmp_path)


def test_key_missing_from_the_ref_list(raw, tmp_path):
    (raw / "celebahq_ref_test.txt").write_text("4001.jpg,29.jpg\n")
    message = _problem(raw, tmp_path)
    assert f"{raw / 'val.txt'}:2: CelebA-HQ-img/29.jpg has no line in celebahq_ref_test.txt" \
        in message and "DynaST#7" in message


def test_unknown_exemplar_names_the_ref_line(raw, tmp_path):
    (raw / "celebahq_ref.txt").write_text("5.jpg,17.jpg\n17.jpg,2003.jpg\n2003.jpg,7.jpg\n")
    assert f"{raw / 'celebahq_ref.txt'}:3: exemplar CelebA-HQ-img/7.jpg of " \
           f"CelebA-HQ-img/2003.jpg is not listed in train.txt or val.txt" in \
        _problem(raw, tmp_path)


def test_corrupt_mask_is_named_with_the_exclude_hint(raw, tmp_path):
    bad = raw / "CelebAMask-HQ-mask-anno/0/00017_nose.png"
    bad.write_bytes(b"\x89PNG broken")
    with pytest.raises(ImageReadError) as err:
        _prepare(raw, tmp_path / "out")
    assert str(bad) in str(err.value) and "datasets.celebahq_edge.exclude" in str(err.value)


# --- fetch and the receipt ----------------------------------------------------------------------

def test_fetch_names_every_missing_file_and_the_terms(tmp_path):
    raw = tmp_path / "empty"
    with pytest.raises(sources.DatasetUnavailable) as err:
        sources.fetch("celebahq_edge", SETTINGS, raw)
    message = str(err.value)
    assert "6 missing" in message
    for rel in ("CelebAMask-HQ.zip", *LISTS):
        assert str(raw.absolute() / rel) in message
    for drive_id in ("1badu11NqxGf6qM3PTTooQDJvQbejgbTv", "1y2vvt3Cy_rh3UdYOY27g1Gxnp9Q_Kgv4",
                     "1WQmRKRdRb_E-AMh_K-iGcoEYEqll4pWz"):
        assert drive_id in message
    assert "non-commercial" in message and "no redistribution" in message


def test_official_zip_is_unpacked_and_pinned_and_a_changed_list_caught(raw, tmp_path):
    folders = _prepare(raw, tmp_path / "a")
    zipped = tmp_path / "zipped"
    zipped.mkdir()
    _write_lists(zipped)
    with zipfile.ZipFile(zipped / "CelebAMask-HQ.zip", "w") as zf:
        zf.writestr("CelebAMask-HQ/CelebAMask-HQ-attribute-anno.txt", b"30000\n")
        for rel, data in _tree().items():
            zf.writestr(f"CelebAMask-HQ/{rel}", data)
    out = _prepare(zipped, tmp_path / "b")
    assert (out / "manifest.csv").read_bytes() == (folders / "manifest.csv").read_bytes()
    assert not (zipped / "CelebAMask-HQ-attribute-anno.txt").exists()
    receipt = (zipped / "SHA256SUMS").read_text().splitlines()
    assert receipt == [f"{hashlib.sha256((zipped / n).read_bytes()).hexdigest()}  {n}"
                       for n in sorted(("CelebAMask-HQ.zip", *LISTS))]
    (zipped / "celebahq_ref.txt").write_text("5.jpg,2003.jpg\n")
    with pytest.raises(sources.DatasetUnavailable, match="the file changed") as err:
        sources.fetch("celebahq_edge", SETTINGS, zipped)
    assert str(zipped / "celebahq_ref.txt") in str(err.value)
