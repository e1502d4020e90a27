"""MS-COCO and WikiArt: reading the upstream zips (or extracted folders), fetching, and the
messages a user sees when the data is missing, changed or corrupt."""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from sparsegen.data import archives, coco, sources, wikiart
from sparsegen.data.manifest import read_manifest
from sparsegen.io import ImageReadError

COCO = {"source": "coco2014_train", "size": 32, "n_test": 2, "seed": 0}
WIKIART = {"source": "wikiart", "size": 48, "n_test": 2, "seed": 3}


def _pixels(path: Path) -> np.ndarray:
    return np.asarray(Image.open(path)).astype(float)


def test_coco_zip_parsed_converted_and_resized(coco_raw, fake_sizes, coco_colours, tmp_path):
    out = sources.prepare("coco2014_train", COCO, coco_raw, tmp_path / "prepared", workers=2)
    samples = read_manifest(out, verify=True)
    assert [s.id for s in samples] == sorted(Path(n).stem for n in coco_colours)
    assert sum(s.split == "test" for s in samples) == 2
    assert sum(s.split == "train" for s in samples) == 4
    for s in samples:
        member = f"train2014/{s.id}.jpg"
        assert s.extra["source"] == member
        assert "Flickr" in s.extra["licence"]
        img = _pixels(s.path)
        assert img.shape == (32, 32, 3)
        mode, colour = coco_colours[member]
        expected = {"RGB": colour, "L": (colour,) * 3, "CMYK": (255, 0, 0)}[mode]
        np.testing.assert_allclose(img.mean(axis=(0, 1)), expected, atol=6)
    gray = next(s for s in samples if s.id.endswith("36"))
    g = _pixels(gray.path)
    assert np.array_equal(g[..., 0], g[..., 1]) and np.array_equal(g[..., 1], g[..., 2])


def test_extracted_folder_gives_the_same_dataset(coco_raw, fake_sizes, tmp_path):
    zipped = sources.prepare("coco2014_train", COCO, coco_raw, tmp_path / "a")
    folder_raw = tmp_path / "extracted"
    with zipfile.ZipFile(coco_raw / "train2014.zip") as zf:
        zf.extractall(folder_raw)
    assert sources.raw_files("coco2014_train", COCO, folder_raw) == [folder_raw / "train2014"]
    sources.fetch("coco2014_train", COCO, folder_raw)  # nothing to download
    assert sorted(p.name for p in folder_raw.iterdir()) == ["train2014"]
    extracted = sources.prepare("coco2014_train", COCO, folder_raw, tmp_path / "b")
    assert (zipped / "manifest.csv").read_bytes() == (extracted / "manifest.csv").read_bytes()


def test_wikiart_layout_style_column_and_safe_ids(wikiart_raw, fake_sizes, tmp_path):
    out = sources.prepare("wikiart", WIKIART, wikiart_raw, tmp_path / "wikiart")
    samples = read_manifest(out, verify=True)
    assert len(samples) == 6  # README.txt, the stray top-level jpg and __MACOSX are ignored
    assert {s.extra["style"] for s in samples} == {"Impressionism", "Cubism"}
    by_source = {s.extra["source"]: s for s in samples}
    assert by_source["wikiart/Cubism/juan-gris_d.jpg"].id == "Cubism__juan-gris_d"
    accented = by_source["wikiart/Impressionism/pierre-auguste-renoir_café.jpg"]
    assert accented.id.startswith("Impressionism__pierre-auguste-renoir_caf-")
    assert accented.id.isascii() and len(accented.id.rsplit("-", 1)[1]) == 8
    assert all("non-commercial" in s.extra["licence"] for s in samples)
    assert all(_pixels(s.path).shape == (48, 48, 3) for s in samples)


def test_corrupt_member_is_named_and_can_be_excluded(tmp_path, coco_members, write_zip,
                                                     fake_sizes, caplog):
    bad = "train2014/COCO_train2014_000000000099.jpg"
    raw = tmp_path / "raw"
    write_zip(raw / "train2014.zip", {**coco_members, bad: b"\xff\xd8\xff garbage"})
    with pytest.raises(ImageReadError) as err:
        sources.prepare("coco2014_train", COCO, raw, tmp_path / "out")
    message = str(err.value)
    assert bad in message and str(raw / "train2014.zip") in message
    assert "datasets.coco2014_train.exclude" in message
    assert not (tmp_path / "out").exists()

    caplog.set_level(logging.INFO)
    out = sources.prepare("coco2014_train", {**COCO, "exclude": [bad]}, raw, tmp_path / "out")
    samples = read_manifest(out, verify=True)
    assert len(samples) == 6 and bad not in {s.extra["source"] for s in samples}
    assert "1 excluded" in caplog.text and bad in caplog.text


def test_files_with_the_same_id_are_named(tmp_path, coco_members, write_zip, fake_sizes):
    raw = tmp_path / "raw"
    clash = [f"train2014/COCO_train2014_000000000009.{ext}" for ext in ("jpg", "png")]
    write_zip(raw / "train2014.zip", {**coco_members, clash[1]: coco_members[clash[0]]})
    with pytest.raises(ValueError, match="same sample id") as err:
        sources.prepare("coco2014_train", COCO, raw, tmp_path / "out")
    assert all(c in str(err.value) for c in clash)
    out = sources.prepare("coco2014_train", {**COCO, "exclude": clash[1:]}, raw, tmp_path / "out")
    assert len(read_manifest(out)) == 6


def test_real_coco_spec_rejects_a_wrong_size_archive(coco_raw, tmp_path):
    with pytest.raises(sources.DatasetUnavailable, match="expected 13,510,573,713"):
        sources.prepare("coco2014_train", COCO, coco_raw, tmp_path / "out")


def test_missing_archive_says_where_to_get_it_and_where_to_put_it(tmp_path):
    raw = tmp_path / "raw" / "coco2014_train"
    with pytest.raises(sources.DatasetUnavailable) as err:
        sources.prepare("coco2014_train", COCO, raw, tmp_path / "out")
    message = str(err.value)
    assert coco.SOURCE.url in message
    assert str((raw / "train2014.zip").absolute()) in message
    assert "13,510,573,713 bytes" in message and "fetch step checks" in message
    assert sources.raw_files("coco2014_train", COCO, raw) == [raw / "train2014.zip"]


# --- fetch -------------------------------------------------------------------------------------

def _serve(monkeypatch, name, source, archive: Path, **changes):
    """Point a source's URL at a local file (file://), as if it were the upstream server."""
    patched = dataclasses.replace(source, url=archive.as_uri(), **changes)
    monkeypatch.setitem(sources.SOURCES, name, patched)
    return patched


def test_fetch_downloads_verifies_and_records_sha256(tmp_path, coco_members, write_zip,
                                                     monkeypatch):
    upstream = write_zip(tmp_path / "server" / "train2014.zip", coco_members)
    _serve(monkeypatch, "coco2014_train", coco.SOURCE, upstream,
           size=upstream.stat().st_size, n_images=6)
    raw = tmp_path / "raw"
    sources.fetch("coco2014_train", COCO, raw)
    digest = hashlib.sha256(upstream.read_bytes()).hexdigest()
    assert (raw / "train2014.zip").read_bytes() == upstream.read_bytes()
    assert (raw / "train2014.zip.sha256").read_text() == f"{digest}  train2014.zip\n"

    def no_download(*args, **kwargs):
        raise AssertionError("a verified archive must not be downloaded again")

    monkeypatch.setattr(archives, "download", no_download)
    sources.fetch("coco2014_train", COCO, raw)  # present and verified: kept


def test_fetch_detects_a_changed_archive(tmp_path, coco_members, write_zip, monkeypatch):
    upstream = write_zip(tmp_path / "server" / "train2014.zip", coco_members)
    _serve(monkeypatch, "coco2014_train", coco.SOURCE, upstream, size=None, n_images=6)
    raw = tmp_path / "raw"
    sources.fetch("coco2014_train", COCO, raw)
    members = dict(coco_members)
    members.pop(next(iter(members)))
    members["train2014/COCO_train2014_000000000777.jpg"] = coco_members[next(iter(coco_members))]
    write_zip(raw / "train2014.zip", members)
    with pytest.raises(sources.DatasetUnavailable, match="the file changed"):
        sources.fetch("coco2014_train", COCO, raw)


def test_fetch_with_wrong_size_fails_and_leaves_nothing(tmp_path, coco_members, write_zip,
                                                        monkeypatch):
    upstream = write_zip(tmp_path / "server" / "train2014.zip", coco_members)
    _serve(monkeypatch, "coco2014_train", coco.SOURCE, upstream,
           size=upstream.stat().st_size + 1)
    raw = tmp_path / "raw"
    with pytest.raises(sources.DatasetUnavailable) as err:
        sources.fetch("coco2014_train", COCO, raw)
    message = str(err.value)
    assert upstream.as_uri() in message and "expected" in message
    assert str((raw / "train2014.zip").absolute()) in message
    assert not raw.exists() or list(raw.iterdir()) == []


def test_wikiart_fetch_rejects_a_non_zip_and_names_the_browser_mirror(tmp_path, monkeypatch):
    upstream = tmp_path / "server" / "wikiart.zip"
    upstream.parent.mkdir()
    upstream.write_bytes(b"<html>moved</html>")
    _serve(monkeypatch, "wikiart", wikiart.SOURCE, upstream)
    raw = tmp_path / "raw"
    with pytest.raises(sources.DatasetUnavailable) as err:
        sources.fetch("wikiart", WIKIART, raw)
    message = str(err.value)
    assert "not a readable zip" in message
    assert "drive.google.com/file/d/182-pFiKvXPB25DbTfAYjJ6gDE-ZCRXz0" in message
    assert str((raw / "wikiart.zip").absolute()) in message and "non-commercial" in message
    assert not raw.exists() or list(raw.iterdir()) == []


def test_unreachable_url_gives_the_manual_download_message(tmp_path, monkeypatch):
    _serve(monkeypatch, "wikiart", wikiart.SOURCE, tmp_path / "nowhere" / "wikiart.zip")
    with pytest.raises(sources.DatasetUnavailable, match="Download it by hand"):
        sources.fetch("wikiart", WIKIART, tmp_path / "raw")


def test_wikiart_fetch_counts_images_of_the_layout(tmp_path, wikiart_members, write_zip,
                                                   monkeypatch, caplog):
    upstream = write_zip(tmp_path / "server" / "wikiart.zip", wikiart_members)
    _serve(monkeypatch, "wikiart", wikiart.SOURCE, upstream)
    caplog.set_level(logging.INFO)
    sources.fetch("wikiart", WIKIART, tmp_path / "raw")
    assert "(6 images" in caplog.text
