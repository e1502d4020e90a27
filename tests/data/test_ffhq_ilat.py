"""FFHQ for iLAT: a tiny FFHQ folder in the official layout (metadata JSON + images1024x1024/),
fetched and verified by the `ffhq` source into `<raw root>/ffhq`, then prepared by `ffhq_ilat`
from that sibling folder (64 x 64 PNGs stand in for 1024, prepared at 16)."""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from scipy.ndimage import gaussian_filter

from sparsegen.config import ParamsError
from sparsegen.data import ffhq, ffhq_ilat, sources
from sparsegen.data.manifest import read_manifest

N, SIDE, SIZE, TRAIN_IDS = 9, 64, 16, 5
SETTINGS = {"source": "ffhq_ilat", "size": SIZE, "n_test": 3, "seed": 1, "mask_fraction": 0.25,
            "mask_grid": 4}


def _png(seed: int) -> bytes:
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:SIDE, 0:SIDE] / SIDE
    img = np.stack([np.sin(2 * np.pi * (f * xx + g * yy) + p)
                    for f, g, p in rng.uniform(0.5, 4, (3, 3))], -1) * 100 + 128
    img = np.clip(img + rng.normal(0, 10, img.shape), 0, 255).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format="PNG")
    return buf.getvalue()


@pytest.fixture
def raw_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """`<root>/ffhq` fetched by the (faked) ffhq source; ffhq_ilat registered on top of it."""
    remote, meta = tmp_path / "remote", {}
    for i in range(N):
        data, rel = _png(i), f"images1024x1024/{i - i % 1000:05d}/{i:05d}.png"
        (remote / rel).parent.mkdir(parents=True, exist_ok=True)
        (remote / rel).write_bytes(data)
        meta[str(i)] = {"category": "training",
                        "metadata": {"license": "Public Domain Mark", "author": f"A{i}",
                                     "photo_url": f"https://flickr/{i}"},
                        "image": {"file_url": (remote / rel).as_uri(), "file_path": rel,
                                  "file_size": len(data),
                                  "file_md5": hashlib.md5(data).hexdigest()}}
    blob = json.dumps(meta).encode()
    (remote / ffhq.METADATA).write_bytes(blob)
    fake_ffhq = dataclasses.replace(
        ffhq.SOURCE, metadata_url=(remote / ffhq.METADATA).as_uri(), metadata_size=len(blob),
        metadata_md5=hashlib.md5(blob).hexdigest(), n_images=N)
    source = dataclasses.replace(ffhq_ilat.SOURCE, ffhq=fake_ffhq, n_train_ids=TRAIN_IDS)
    monkeypatch.setitem(sources.SOURCES, "ffhq", fake_ffhq)
    monkeypatch.setitem(sources.SOURCES, "ffhq_ilat", source)
    return tmp_path / "raw"


def _fetch_ffhq(root: Path) -> None:
    sources.fetch("ffhq256", {"source": "ffhq"}, root / "ffhq")


def _prepare(root: Path, out: Path, **settings) -> Path:
    sources.fetch("faces", SETTINGS, root / "ffhq_ilat")
    return sources.prepare("faces", {**SETTINGS, **settings}, root / "ffhq_ilat", out)


def _block_mean(array: np.ndarray) -> np.ndarray:
    """Area shrink SIDE -> SIZE by an integer factor: the block mean."""
    f = SIDE // SIZE
    return array.reshape(SIZE, f, SIZE, f, *array.shape[2:]).astype(float).mean(axis=(1, 3))


def _xdog(gray: np.ndarray) -> np.ndarray:
    """iLAT's XDoG written out: uint8 gaussian filters, soft threshold, then area shrink."""
    d = gaussian_filter(gray, 1.5).astype(float) - 0.97 * gaussian_filter(gray, 3.75)
    edge = np.clip(1 + np.tanh(200 * (d - 0.1)), 0, 1) * 255
    return np.rint(_block_mean(edge)).astype(np.uint8)


def test_needs_the_ffhq_source_fetched_first(raw_root):
    with pytest.raises(sources.DatasetUnavailable) as err:
        sources.fetch("faces", SETTINGS, raw_root / "ffhq_ilat")
    assert "fetch that source first" in str(err.value)
    assert str((raw_root / "ffhq").absolute()) in str(err.value)


def test_splits_images_sketches_and_edits(raw_root, tmp_path):
    _fetch_ffhq(raw_root)
    assert all(p.exists() for p in sources.raw_files("faces", SETTINGS, raw_root / "ffhq_ilat"))
    out = _prepare(raw_root, tmp_path / "out")
    samples = {s.id: s for s in read_manifest(out, verify=True)}
    train = sorted(i for i, s in samples.items() if s.split == "train")
    test = sorted(i for i, s in samples.items() if s.split == "test")
    assert train == [f"{i:05d}" for i in range(TRAIN_IDS)]
    assert len(test) == 3 and all(int(i) >= TRAIN_IDS for i in test)
    pairs = {i: samples[i].extra["pair"] for i in test}
    assert set(pairs.values()) == set(test) and all(pairs[i] != i for i in test)
    assert all(samples[i].extra["pair"] == "" and not samples[i].extra["mask"] for i in train)
    for sid, s in samples.items():
        original = np.asarray(Image.open(raw_root / "ffhq" / "images1024x1024" / "00000"
                                         / f"{sid}.png"))
        image = np.asarray(Image.open(s.path))
        assert np.array_equal(image, np.rint(_block_mean(original)).astype(np.uint8))
        gray = np.asarray(Image.fromarray(original).convert("L"))
        sketch = np.asarray(Image.open(out / s.extra["sketch"]))
        assert np.array_equal(sketch, _xdog(gray))
        assert s.extra["author"] == f"A{int(sid)}"
    for sid in test:
        mask = np.asarray(Image.open(out / samples[sid].extra["mask"]))
        assert mask.shape == (SIZE, SIZE) and set(np.unique(mask)) <= {0, 255}
        tokens = (mask == 255).reshape(4, 4, 4, 4).any(axis=(1, 3)).sum()
        assert 1 <= tokens <= round(0.25 * 16)


def test_test_faces_and_masks_are_seeded(raw_root, tmp_path):
    _fetch_ffhq(raw_root)
    a = {s.id: s for s in read_manifest(_prepare(raw_root, tmp_path / "a"))}
    b = {s.id: s for s in read_manifest(_prepare(raw_root, tmp_path / "b"))}
    c = {s.id: s for s in read_manifest(_prepare(raw_root, tmp_path / "c", seed=2))}
    assert a.keys() == b.keys()
    assert all(a[i].extra["mask_sha256"] == b[i].extra["mask_sha256"] for i in a
               if a[i].split == "test")
    masks = {i: a[i].extra["mask_sha256"] for i in a if a[i].split == "test"}
    assert len(set(masks.values())) == len(masks)      # each face its own seeded edit
    assert {i for i in c if c[i].split == "test"} != set(masks) or any(
        c[i].extra["mask_sha256"] != masks[i] for i in masks)


def test_excluded_faces_and_too_many_test_faces(raw_root, tmp_path):
    _fetch_ffhq(raw_root)
    excluded = "images1024x1024/00000/00001.png"
    out = _prepare(raw_root, tmp_path / "out", exclude=[excluded], n_test=4)
    samples = {s.id: s for s in read_manifest(out)}
    assert "00001" not in samples and len([s for s in samples.values()
                                           if s.split == "test"]) == 4
    with pytest.raises(ParamsError, match="n_test: 5"):
        _prepare(raw_root, tmp_path / "x", n_test=5)
    with pytest.raises(ParamsError, match="n_test 1"):
        _prepare(raw_root, tmp_path / "x", n_test=1)
    with pytest.raises(ParamsError, match="mask_grid"):
        _prepare(raw_root, tmp_path / "x", mask_grid=3)
