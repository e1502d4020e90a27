"""The 60 Deep Photo Style Transfer pairs: fetched from a fake upstream (file:// URLs in the
repository's `examples/` layout), pinned in the receipt, prepared as test items."""

from __future__ import annotations

import dataclasses
import hashlib
import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from sparsegen.data import dpst, sources
from sparsegen.data.manifest import read_manifest

SETTINGS = {"source": "dpst_pairs", "size": 8, "n_test": 1, "seed": 0}


def _png(seed: int, shape=(6, 10, 3)) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(seed).integers(0, 256, shape, np.uint8)).save(
        buf, format="PNG")
    return buf.getvalue()


@pytest.fixture
def server(tmp_path: Path) -> Path:
    """examples/input/in<n>.png and examples/style/tar<n>.png; pair 23 is one image twice."""
    root = tmp_path / "server"
    for sub in ("input", "style"):
        (root / "examples" / sub).mkdir(parents=True)
    for n in range(1, 61):
        (root / f"examples/input/in{n}.png").write_bytes(_png(n))
        (root / f"examples/style/tar{n}.png").write_bytes(_png(n if n == 23 else 100 + n))
    return root


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def source(server: Path, monkeypatch: pytest.MonkeyPatch) -> dpst.DpstSource:
    """The real source pointed at the fake upstream, with the fake pair 23's sha256."""
    digest = _sha(server / "examples/input/in23.png")
    fake = dataclasses.replace(dpst.SOURCE, base_url=(server / "examples").as_uri() + "/",
                               known_sha256={"input/in23.png": digest,
                                             "style/tar23.png": digest})
    monkeypatch.setitem(sources.SOURCES, "dpst_pairs", fake)
    return fake


def test_the_real_source_is_pinned_to_one_commit():
    s = dpst.SOURCE
    assert s.base_url == ("https://raw.githubusercontent.com/luanfujun/deep-photo-styletransfer/"
                          "97c35ef3c7176d1020de358f50927d114f0c8e04/examples/")
    files = s.files()
    assert len(set(files)) == 120 and files[:2] == ["input/in1.png", "style/tar1.png"]
    assert s.known_sha256 == {"input/in23.png": dpst.ISSUE_8_SHA256,
                              "style/tar23.png": dpst.ISSUE_8_SHA256}
    assert dpst.ISSUE_8_SHA256.startswith("1889c009")


def test_fetch_downloads_pins_and_prepare_pairs_content_with_style(source, server, tmp_path,
                                                                   monkeypatch):
    raw = tmp_path / "raw"
    sources.fetch("dpst_pairs", SETTINGS, raw)
    receipt = (raw / "SHA256SUMS").read_text().splitlines()
    assert len(receipt) == 120
    assert f"{_sha(server / 'examples/style/tar7.png')}  style/tar7.png" in receipt
    assert (raw / "input/in60.png").read_bytes() == (server / "examples/input/in60.png") \
        .read_bytes()

    def no_download(*args, **kwargs):
        raise AssertionError("pinned files must not be downloaded again")

    monkeypatch.setattr(dpst, "download", no_download)
    sources.fetch("dpst_pairs", SETTINGS, raw)
    out = sources.prepare("dpst_pairs", SETTINGS, raw, tmp_path / "out")
    samples = {s.id: s for s in read_manifest(out, verify=True)}
    assert set(samples) == {f"in{n}" for n in range(1, 61)}
    for n in (1, 23, 60):
        s = samples[f"in{n}"]
        assert s.split == "test" and s.extra["exemplar"] == ""
        assert s.extra["source"] == source.base_url + f"input/in{n}.png"
        assert "non-commercial" in s.extra["licence"]
        assert (out / s.extra["style"]).read_bytes() == \
            (server / f"examples/style/tar{n}.png").read_bytes()
        assert s.extra["style"] == f"test/in{n}_style.png"
        assert np.asarray(Image.open(s.path)).shape == (8, 8, 3)


def test_items_aux_loader_returns_the_style_bytes(source, server, tmp_path):
    raw = tmp_path / "raw"
    source.fetch("dpst_pairs", raw)
    with source.items("dpst_pairs", SETTINGS, raw) as items:
        assert len(items) == 60 and {it.split for it in items} == {"test"}
        suffix, load = items[4].aux["style"]
        assert suffix == "_style.png"
        assert load() == (server / "examples/style/tar5.png").read_bytes()


def test_a_changed_file_fails_fetch_and_prepare(source, tmp_path):
    raw = tmp_path / "raw"
    sources.fetch("dpst_pairs", SETTINGS, raw)
    (raw / "style/tar9.png").write_bytes(_png(999))
    with pytest.raises(sources.DatasetUnavailable, match="the file changed") as err:
        sources.fetch("dpst_pairs", SETTINGS, raw)
    assert str(raw / "style/tar9.png") in str(err.value)
    with pytest.raises(sources.DatasetUnavailable, match="the file changed"):
        sources.prepare("dpst_pairs", SETTINGS, raw, tmp_path / "out")


def test_missing_upstream_file_names_the_url_and_the_manual_way(source, server, tmp_path):
    (server / "examples/style/tar7.png").unlink()
    raw = tmp_path / "raw"
    with pytest.raises(sources.DatasetUnavailable) as err:
        sources.fetch("dpst_pairs", SETTINGS, raw)
    message = str(err.value)
    assert source.base_url + "style/tar7.png" in message and "download failed" in message
    assert dpst.COMMIT in message and str((raw / "style").absolute()) in message
    assert not (raw / "SHA256SUMS").exists()
    with pytest.raises(sources.DatasetUnavailable, match="run the fetch step"):
        sources.prepare("dpst_pairs", SETTINGS, raw, tmp_path / "out")


def test_the_published_sha256_is_checked(server, tmp_path, monkeypatch):
    wrong = dataclasses.replace(dpst.SOURCE, base_url=(server / "examples").as_uri() + "/")
    monkeypatch.setitem(sources.SOURCES, "dpst_pairs", wrong)   # the real issue-8 digest
    with pytest.raises(sources.DatasetUnavailable, match=f"expected {dpst.ISSUE_8_SHA256}"):
        sources.fetch("dpst_pairs", SETTINGS, tmp_path / "raw")


def test_an_html_page_instead_of_a_png_is_rejected(source, server, tmp_path):
    (server / "examples/input/in3.png").write_bytes(b"<html>rate limited</html>")
    with pytest.raises(sources.DatasetUnavailable, match=r"in3\.png: not a PNG file"):
        sources.fetch("dpst_pairs", SETTINGS, tmp_path / "raw")
