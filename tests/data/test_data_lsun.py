"""LSUN church_outdoor: a small LMDB in the upstream layout (hex id -> encoded image bytes,
short side already the target size), zipped as dl.yf.io publishes it, built in tmp_path."""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from sparsegen.data import lsun, sources
from sparsegen.data.manifest import read_manifest

lmdb = pytest.importorskip("lmdb")
torchvision_transforms = pytest.importorskip("torchvision.transforms")

SHORT = 32  # stands in for 256
SHAPES = [(32, 48), (45, 32), (32, 32), (32, 57), (40, 32)]  # (h, w): short side 32
FOLDER = "church_outdoor_train_lmdb"


def _encoded(img: np.ndarray, fmt: str) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format=fmt, quality=75)
    return buf.getvalue()


@pytest.fixture
def upstream(tmp_path: Path) -> dict:
    """`remote/church_outdoor_train_lmdb.zip` holding `church_outdoor_train_lmdb/{data,lock}.mdb`
    with 5 entries (one WebP, the rest JPEG)."""
    rng = np.random.default_rng(0)
    db = tmp_path / "build" / FOLDER
    db.mkdir(parents=True)
    env = lmdb.open(str(db), map_size=1 << 24)
    values = {}
    with env.begin(write=True) as txn:
        for i, (h, w) in enumerate(SHAPES):
            yy, xx = np.mgrid[0:h, 0:w]
            img = np.stack([(xx * 5 + i * 40) % 256, (yy * 7) % 256, rng.integers(0, 256, (h, w))],
                           -1).astype(np.uint8)
            key = hashlib.sha1(f"church{i}".encode()).hexdigest().encode()
            values[key.decode()] = _encoded(img, "WEBP" if i == 2 else "JPEG")
            txn.put(key, values[key.decode()])
    env.close()
    remote = tmp_path / "remote"
    remote.mkdir()
    with zipfile.ZipFile(remote / f"{FOLDER}.zip", "w") as zf:
        for f in ("data.mdb", "lock.mdb"):
            zf.write(db / f, f"{FOLDER}/{f}")
    return {"remote": remote, "values": values}


@pytest.fixture
def source(upstream, monkeypatch) -> lsun.LsunSource:
    fake = dataclasses.replace(lsun.CHURCH_OUTDOOR, n_images=len(SHAPES),
                               base_url=upstream["remote"].as_uri() + "/")
    monkeypatch.setitem(sources.SOURCES, "lsun_church_outdoor", fake)
    return fake


def _settings(size: int) -> dict:
    return {"source": "lsun_church_outdoor", "size": size, "n_test": 0, "seed": 0}


def test_fetch_downloads_extracts_counts_and_records_sha256(source, upstream, tmp_path):
    raw = tmp_path / "raw"
    sources.fetch("lsun_church256", _settings(256), raw)
    archive = raw / f"{FOLDER}.zip"
    digest = hashlib.sha256(archive.read_bytes()).hexdigest()
    assert (raw / f"{FOLDER}.zip.sha256").read_text() == f"{digest}  {FOLDER}.zip\n"
    assert (raw / FOLDER / "data.mdb").is_file()
    assert sources.raw_files("lsun_church256", _settings(256), raw) == [raw / FOLDER, archive]
    sources.fetch("lsun_church256", _settings(256), raw)  # again: verifies, nothing changes
    with open(archive, "ab") as f:
        f.write(b"changed")
    with pytest.raises(sources.DatasetUnavailable, match=r"differs from \w+ recorded"):
        sources.fetch("lsun_church256", _settings(256), raw)


def test_prepare_centre_crops_like_torchvision(source, upstream, tmp_path):
    raw = tmp_path / "raw"
    sources.fetch("lsun_church256", _settings(256), raw)
    out = sources.prepare("lsun_church256", _settings(SHORT), raw, tmp_path / "p", workers=2)
    rows = read_manifest(out, verify=True)
    assert sorted(r.id for r in rows) == sorted(upstream["values"])
    assert all(r.split == "train" for r in rows)
    crop = torchvision_transforms.Compose([torchvision_transforms.Resize(SHORT),
                                           torchvision_transforms.CenterCrop(SHORT)])
    for r in rows:
        decoded = Image.open(io.BytesIO(upstream["values"][r.id])).convert("RGB")
        assert np.array_equal(np.asarray(Image.open(r.path)), np.asarray(crop(decoded)))
        assert r.extra["source"] == f"{FOLDER}:{r.id}" and "LSUN" in r.extra["licence"]
    info = json.loads((out / "dataset.json").read_text())
    assert info["upstream"]["sha256"] == hashlib.sha256(
        (raw / f"{FOLDER}.zip").read_bytes()).hexdigest()


def test_smaller_size_resizes_with_lanczos_then_crops(source, upstream, tmp_path):
    raw = tmp_path / "raw"
    sources.fetch("lsun_church256", _settings(256), raw)
    out = sources.prepare("lsun_church256", _settings(16), raw, tmp_path / "p")
    lanczos = torchvision_transforms.InterpolationMode.LANCZOS
    ref = torchvision_transforms.Compose([torchvision_transforms.Resize(16, lanczos),
                                          torchvision_transforms.CenterCrop(16)])
    for r in read_manifest(out):
        decoded = Image.open(io.BytesIO(upstream["values"][r.id])).convert("RGB")
        assert np.array_equal(np.asarray(Image.open(r.path)), np.asarray(ref(decoded)))


def test_extracted_database_alone_is_enough(source, upstream, tmp_path):
    raw = tmp_path / "raw"
    with zipfile.ZipFile(upstream["remote"] / f"{FOLDER}.zip") as zf:
        zf.extractall(raw)
    sources.fetch("lsun_church256", _settings(256), raw)  # nothing to download
    assert sorted(p.name for p in raw.iterdir()) == [FOLDER]
    assert sources.raw_files("lsun_church256", _settings(256), raw) == [raw / FOLDER]
    rows = read_manifest(sources.prepare("lsun_church256", _settings(SHORT), raw,
                                         tmp_path / "p"))
    assert len(rows) == len(SHAPES)


def test_wrong_count_and_missing_zip_explain_what_to_do(source, upstream, tmp_path, monkeypatch):
    raw = tmp_path / "raw"
    monkeypatch.setitem(sources.SOURCES, "lsun_church_outdoor",
                        dataclasses.replace(source, n_images=126_227))
    with pytest.raises(sources.DatasetUnavailable, match="5 images in the database, expected "
                                                         "126,227"):
        sources.fetch("lsun_church256", _settings(256), raw)
    (upstream["remote"] / f"{FOLDER}.zip").unlink()
    with pytest.raises(sources.DatasetUnavailable) as err:
        sources.fetch("lsun_church256", _settings(256), tmp_path / "empty")
    message = str(err.value)
    assert "download failed" in message and f"{FOLDER}.zip" in message
    assert str((tmp_path / "empty" / FOLDER / "data.mdb").absolute()) in message
    with pytest.raises(sources.DatasetUnavailable, match="run the fetch step"):
        sources.prepare("lsun_church256", _settings(SHORT), tmp_path / "empty", tmp_path / "p")


def test_without_lmdb_the_error_says_what_to_install(source, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "lmdb", None)  # import lmdb -> ImportError
    with pytest.raises(sources.DatasetUnavailable, match=f"pip install {lsun.LMDB_PIN}"):
        sources.fetch("lsun_church256", _settings(256), tmp_path)
