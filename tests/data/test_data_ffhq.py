"""FFHQ: fetch with per-file MD5 + size verification against the official metadata JSON,
resumable via the sidecar; prepare with PIL Lanczos and per-image licences. Upstream faked in
tmp_path in the official layout, served through file:// URLs."""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import io
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from sparsegen import progress
from sparsegen.data import ffhq, sources
from sparsegen.data.manifest import read_manifest
from sparsegen.provenance import sha256_file

LICENCES = [("Attribution License", "https://creativecommons.org/licenses/by/2.0/"),
            ("Attribution-NonCommercial License", "https://creativecommons.org/licenses/by-nc/2.0/"),
            ("Public Domain Mark", "https://creativecommons.org/publicdomain/mark/1.0/")]
N = 5
SIDE = 64  # stands in for 1024


def _md5(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


def _png(seed: int) -> tuple[bytes, np.ndarray]:
    """A smooth random colour image with detail, encoded as PNG."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:SIDE, 0:SIDE] / SIDE
    img = np.stack([np.sin(2 * np.pi * (f * xx + g * yy) + p) for f, g, p in
                    rng.uniform(0.5, 4, (3, 3))], -1) * 100 + 128
    img = np.clip(img + rng.normal(0, 10, img.shape), 0, 255).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format="PNG")
    return buf.getvalue(), img


@pytest.fixture
def upstream(tmp_path: Path) -> dict:
    """A 'remote' folder in the official layout + a metadata JSON whose URLs point to it."""
    remote = tmp_path / "remote"
    meta, pixels = {}, {}
    for i in range(N):
        data, img = _png(i)
        rel = f"images1024x1024/{i - i % 1000:05d}/{i:05d}.png"
        (remote / rel).parent.mkdir(parents=True, exist_ok=True)
        (remote / rel).write_bytes(data)
        name, url = LICENCES[i % len(LICENCES)]
        meta[str(i)] = {
            "category": "training" if i < 4 else "validation",
            "metadata": {"photo_url": f"https://www.flickr.com/photos/x/{i}/",
                         "photo_title": f"IMG_{i}.JPG", "author": f"Author, No. {i}",
                         "country": "", "license": name, "license_url": url,
                         "date_uploaded": "2010-01-01", "date_crawled": "2018-10-10"},
            "image": {"file_url": (remote / rel).as_uri(), "file_path": rel,
                      "file_size": len(data), "file_md5": _md5(data),
                      "pixel_size": [SIDE, SIDE], "pixel_md5": _md5(img.tobytes()),
                      "face_landmarks": [[1.0, 2.0]] * 68},
        }
        pixels[rel] = img
    blob = json.dumps(meta).encode()
    (remote / ffhq.METADATA).write_bytes(blob)
    return {"remote": remote, "meta": meta, "pixels": pixels, "json_md5": _md5(blob),
            "json_size": len(blob), "json_sha256": hashlib.sha256(blob).hexdigest()}


@pytest.fixture
def source(upstream, monkeypatch) -> ffhq.FfhqSource:
    """The real FFHQ source, pointed at the fake upstream (its metadata URL, md5, size, count)."""
    fake = dataclasses.replace(ffhq.SOURCE, metadata_url=(upstream["remote"] / ffhq.METADATA)
                               .as_uri(), metadata_size=upstream["json_size"],
                               metadata_md5=upstream["json_md5"], n_images=N)
    monkeypatch.setitem(sources.SOURCES, "ffhq", fake)
    return fake


def _settings(size: int) -> dict:
    return {"source": "ffhq", "size": size, "n_test": 0, "seed": 0}


def _verified(raw: Path) -> dict[str, dict]:
    with open(raw / ffhq.VERIFIED, newline="") as f:
        return {r["path"]: r for r in csv.DictReader(f, delimiter="\t")}


def test_fetch_downloads_verifies_and_records(source, upstream, tmp_path):
    raw = tmp_path / "raw"
    sources.fetch("ffhq256", _settings(256), raw)
    for rel in upstream["pixels"]:
        assert (raw / rel).read_bytes() == (upstream["remote"] / rel).read_bytes()
    stamps = _verified(raw)
    assert set(stamps) == set(upstream["pixels"])
    assert all(stamps[e["image"]["file_path"]]["md5"] == e["image"]["file_md5"]
               for e in upstream["meta"].values())
    json_path = raw / ffhq.METADATA
    assert (raw / (ffhq.METADATA + ".sha256")).read_text().split()[0] == upstream["json_sha256"]
    assert sources.raw_files("ffhq256", _settings(256), raw) == [json_path, raw / ffhq.IMAGES,
                                                                 raw / ffhq.VERIFIED]
    assert all(p.exists() for p in sources.raw_files("ffhq256", _settings(256), raw))


def test_fetch_reports_one_overall_progress(source, upstream, tmp_path, capsys, monkeypatch):
    made = []
    real_init = progress.Progress.__init__

    def recording_init(self, total, desc="", **kw):
        made.append((desc, total, kw.get("disable", False)))
        real_init(self, total, desc, **kw)

    monkeypatch.setattr(progress.Progress, "__init__", recording_init)
    monkeypatch.setenv(progress.ENV_MODE, "lines")
    monkeypatch.setenv(progress.ENV_INTERVAL, "0")  # a line at every update
    capsys.readouterr()
    sources.fetch("ffhq256", _settings(256), tmp_path / "raw")
    shown = [(desc, total) for desc, total, disabled in made if not disabled]
    assert shown == [(f"download {ffhq.METADATA}", upstream["json_size"]), ("fetch ffhq256", N)]
    assert sum(disabled for *_, disabled in made) == N  # the per-image downloads: silent
    lines = capsys.readouterr().err.splitlines()
    fetch = [x for x in lines if x.startswith("fetch ffhq256: ")]
    assert len(fetch) == N + 1  # one per image at interval 0, one at the end
    assert all(x.startswith((f"download {ffhq.METADATA}: ", "fetch ffhq256: ")) for x in lines)
    data = progress.format_size(sum(e["image"]["file_size"] for e in upstream["meta"].values()))
    assert fetch[0].startswith(f"fetch ffhq256: 1/{N} img ({100 / N:.1f}%) · ")
    assert fetch[-1].startswith(f"fetch ffhq256: {N}/{N} img (100.0%) · ")
    assert fetch[-1].endswith(f" · done · data={data}/{data}")


def test_refetch_skips_verified_files_and_checks_hand_placed_ones(source, upstream, tmp_path,
                                                                   monkeypatch):
    raw = tmp_path / "raw"
    # Placed by hand before the first fetch (as download_ffhq.py --json --images leaves them).
    hand = "images1024x1024/00000/00002.png"
    (raw / hand).parent.mkdir(parents=True)
    (raw / hand).write_bytes((upstream["remote"] / hand).read_bytes())
    (raw / ffhq.METADATA).write_bytes((upstream["remote"] / ffhq.METADATA).read_bytes())
    fetched, checked = [], []
    real_fetch, real_check = ffhq._fetch_file, ffhq.check_file
    monkeypatch.setattr(ffhq, "_fetch_file", lambda url, dest, *a: fetched.append(dest.name)
                        or real_fetch(url, dest, *a))
    monkeypatch.setattr(ffhq, "check_file", lambda path, **kw: checked.append(Path(path).name)
                        or real_check(path, **kw))
    sources.fetch("ffhq256", _settings(256), raw)
    assert sorted(fetched) == sorted(Path(r).name for r in upstream["pixels"] if r != hand)
    present = [c for c in checked if not c.startswith(".")]  # not the downloads' temp files
    assert present == [ffhq.METADATA, "00002.png"]
    fetched.clear()
    checked.clear()
    sources.fetch("ffhq256", _settings(256), raw)
    assert fetched == [] and checked == [ffhq.METADATA]  # images: sidecar stamps only


def test_corrupt_present_file_names_file_and_md5s(source, upstream, tmp_path):
    raw = tmp_path / "raw"
    sources.fetch("ffhq256", _settings(256), raw)
    rel = "images1024x1024/00000/00003.png"
    data = bytearray((raw / rel).read_bytes())
    data[100] ^= 0xFF
    (raw / rel).write_bytes(bytes(data))
    expected = upstream["meta"]["3"]["image"]["file_md5"]
    with pytest.raises(sources.DatasetUnavailable) as err:
        sources.fetch("ffhq256", _settings(256), raw)
    message = str(err.value)
    assert str(raw / rel) in message
    assert f"md5 {_md5(bytes(data))}, expected {expected}" in message
    assert "1 image file(s) failed verification" in message
    assert rel not in _verified(raw)  # not counted as verified; the others still are
    assert len(_verified(raw)) == N - 1
    with pytest.raises(sources.DatasetUnavailable, match=r"00003\.png\); run the fetch step"):
        sources.prepare("ffhq256", _settings(32), raw, tmp_path / "out")


def test_corrupt_download_is_not_kept_and_the_rest_is(source, upstream, tmp_path):
    bad = "images1024x1024/00000/00001.png"
    (upstream["remote"] / bad).write_bytes(b"\x89PNG truncated")
    raw = tmp_path / "raw"
    with pytest.raises(sources.DatasetUnavailable) as err:
        sources.fetch("ffhq256", _settings(256), raw)
    expected = upstream["meta"]["1"]["image"]["file_md5"]
    assert "00001.png" in str(err.value) and "expected" in str(err.value)
    assert str(upstream["meta"]["1"]["image"]["file_size"]) in str(err.value)
    assert not (raw / bad).exists()
    assert set(_verified(raw)) == set(upstream["pixels"]) - {bad}
    assert expected not in {r["md5"] for r in _verified(raw).values()}


def test_quota_page_stops_with_manual_instructions(source, upstream, tmp_path):
    page = b"<!DOCTYPE html><html><head><title>Google Drive - Quota exceeded</title></head></html>"
    for rel in upstream["pixels"]:
        (upstream["remote"] / rel).write_bytes(page)
    raw = tmp_path / "raw"
    with pytest.raises(sources.DatasetUnavailable) as err:
        sources.fetch("ffhq256", _settings(256), raw)
    message = str(err.value)
    assert "Quota exceeded" in message
    assert str((raw / ffhq.METADATA).absolute()) in message
    assert "images1024x1024/00000/00000.png" in message and "download_ffhq.py" in message


def test_missing_metadata_explains_where_to_put_it(source, upstream, tmp_path):
    (upstream["remote"] / ffhq.METADATA).unlink()
    with pytest.raises(sources.DatasetUnavailable) as err:
        sources.fetch("ffhq256", _settings(256), tmp_path / "raw")
    assert "download failed" in str(err.value) and "Google Drive" in str(err.value)
    with pytest.raises(sources.DatasetUnavailable, match=r"not found \(run the fetch step"):
        sources.prepare("ffhq256", _settings(256), tmp_path / "raw", tmp_path / "out")


def test_prepare_lanczos_licences_and_all_train(source, upstream, tmp_path):
    raw = tmp_path / "raw"
    sources.fetch("ffhq256", _settings(256), raw)
    small = sources.prepare("ffhq256", _settings(32), raw, tmp_path / "p32", workers=2)
    full = sources.prepare("ffhq1024", _settings(SIDE), raw, tmp_path / "p64")
    rows = read_manifest(small, verify=True)
    assert [r.id for r in rows] == [f"{i:05d}" for i in range(N)]
    assert all(r.split == "train" for r in rows)  # n_test 0: unconditional training set
    for r in rows:
        entry = upstream["meta"][str(int(r.id))]
        src = upstream["pixels"][entry["image"]["file_path"]]
        ref = np.asarray(Image.fromarray(src).resize((32, 32), Image.Resampling.LANCZOS))
        assert np.array_equal(np.asarray(Image.open(r.path)), ref)
        meta = entry["metadata"]
        assert r.extra["licence"] == f"{meta['license']} ({meta['license_url']})"
        assert r.extra["author"] == meta["author"] and r.extra["photo_url"] == meta["photo_url"]
        assert r.extra["ffhq_category"] == entry["category"]
        assert r.extra["source"] == entry["image"]["file_path"]
    for r in read_manifest(full):  # at the upstream size the pixels are kept
        rel = upstream["meta"][str(int(r.id))]["image"]["file_path"]
        assert np.array_equal(np.asarray(Image.open(r.path)), upstream["pixels"][rel])
    info = json.loads((small / "dataset.json").read_text())
    assert info["counts"] == {"train": N, "test": 0}
    assert info["upstream"]["metadata_sha256"] == sha256_file(raw / ffhq.METADATA)


def test_prepare_refuses_files_changed_after_fetch(source, upstream, tmp_path):
    raw = tmp_path / "raw"
    sources.fetch("ffhq256", _settings(256), raw)
    rel = "images1024x1024/00000/00004.png"
    (raw / rel).write_bytes((raw / "images1024x1024/00000/00000.png").read_bytes())
    with pytest.raises(sources.DatasetUnavailable, match=r"00004\.png\); run the fetch step again"):
        sources.prepare("ffhq256", _settings(32), raw, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_metadata_with_wrong_count_or_fields_is_rejected(source, upstream, tmp_path,
                                                         monkeypatch):
    raw = tmp_path / "raw"
    monkeypatch.setitem(sources.SOURCES, "ffhq", dataclasses.replace(source, n_images=70_000))
    with pytest.raises(sources.DatasetUnavailable, match="lists 5 images, expected 70,000"):
        sources.fetch("ffhq256", _settings(256), raw)
    broken = raw / "broken.json"
    broken.write_text(json.dumps({"0": {"image": {"file_path": "../x.png"}}}))
    with pytest.raises(sources.DatasetUnavailable, match="entry '0' lacks the official fields"):
        ffhq.read_metadata(broken)


def test_drive_links_skip_the_virus_scan_page():
    assert ffhq._direct("https://drive.google.com/uc?id=16N0RV4fHI6joBuKbQAoG34V_cQk7vxSA") == (
        "https://drive.google.com/uc?export=download&confirm=t"
        "&id=16N0RV4fHI6joBuKbQAoG34V_cQk7vxSA")
    assert ffhq._direct("file:///tmp/a.png") == "file:///tmp/a.png"
