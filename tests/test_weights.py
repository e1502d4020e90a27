"""Weights manifest: nothing downloads implicitly; files are verified; modes behave."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch

from sparsegen import weights
from sparsegen.nets.vgg import LAYERS, VGGEncoder
from sparsegen.provenance import sha256_file


@pytest.fixture
def fake_spec(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> weights.WeightSpec:
    """A manifest entry served from a local file:// URL, in the AdaIN state-dict format."""
    source = tmp_path / "upstream" / "vgg_normalised.pth"
    source.parent.mkdir()
    torch.save(VGGEncoder(weights.ResolvedWeights("vgg19_normalised", None,
                                                  weights.RANDOM_INIT)).layers.state_dict(),
               source)
    spec = dataclasses.replace(weights.MANIFEST["vgg19_normalised"], url=source.as_uri(),
                               mirrors=(), size=source.stat().st_size,
                               sha256=sha256_file(source))
    monkeypatch.setitem(weights.MANIFEST, "vgg19_normalised", spec)
    return spec


def test_auto_without_file_is_random_init(tmp_path: Path) -> None:
    r = weights.resolve("vgg19_normalised", "auto", tmp_path)
    assert not r.pretrained and r.sha256 == weights.RANDOM_INIT
    assert list(tmp_path.iterdir()) == []  # nothing was downloaded


def test_pretrained_without_file_says_how_to_get_it(tmp_path: Path) -> None:
    with pytest.raises(weights.WeightsError) as info:
        weights.resolve("vgg19_normalised", "pretrained", tmp_path)
    msg = str(info.value)
    assert str(tmp_path / "vgg_normalised.pth") in msg and "fetch weights" in msg


def test_fetch_verifies_and_then_loads(tmp_path: Path, fake_spec: weights.WeightSpec) -> None:
    dest = tmp_path / "weights"
    path = weights.fetch("vgg19_normalised", dest)
    assert path == dest / fake_spec.filename
    r = weights.resolve("vgg19_normalised", "pretrained", dest)
    assert r.pretrained and r.sha256 == fake_spec.sha256
    enc = VGGEncoder(r)
    assert enc.fingerprint == f"vgg19_normalised:sha256:{fake_spec.sha256}"
    feats = enc(torch.rand(1, 3, 32, 32))
    assert list(feats) == list(LAYERS)
    assert feats["relu5_1"].shape == (1, 512, 2, 2)


def test_corrupted_file_is_rejected(tmp_path: Path, fake_spec: weights.WeightSpec) -> None:
    dest = tmp_path / "weights"
    path = weights.fetch("vgg19_normalised", dest)
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(weights.WeightsError, match="sha256"):
        weights.resolve("vgg19_normalised", "auto", dest)


def test_failed_fetch_leaves_nothing_and_explains(tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    spec = dataclasses.replace(weights.MANIFEST["alexnet_torchvision"],
                               url=(tmp_path / "absent.pth").as_uri())
    monkeypatch.setitem(weights.MANIFEST, "alexnet_torchvision", spec)
    with pytest.raises(weights.WeightsError) as info:
        weights.fetch("alexnet_torchvision", tmp_path / "w")
    assert "alexnet-owt-7be5be79.pth" in str(info.value)
    assert not (tmp_path / "w" / spec.filename).exists()


def test_random_init_encoder_is_reproducible() -> None:
    r = weights.resolve("vgg19_normalised", "random", "unused")
    x = torch.rand(1, 3, 32, 32)
    assert torch.equal(VGGEncoder(r)(x)["relu3_1"], VGGEncoder(r)(x)["relu3_1"])


def test_torchvision_vgg19_maps_onto_the_normalised_layout(tmp_path: Path) -> None:
    """Our encoder with torchvision weights equals torchvision's VGG-19 on normalised input."""
    import torchvision

    torch.manual_seed(0)
    tv = torchvision.models.vgg19(weights=None).eval()
    path = tmp_path / "vgg19-dcbb9e9d.pth"
    torch.save(tv.state_dict(), path)
    enc = VGGEncoder(weights.ResolvedWeights("vgg19_torchvision", path, "test"))
    x = torch.rand(2, 3, 48, 48)
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    with torch.no_grad():
        ours = enc(x)
        ref = {"relu1_1": tv.features[:2]((x - mean) / std),
               "relu4_1": tv.features[:21]((x - mean) / std),
               "relu5_1": tv.features[:30]((x - mean) / std)}
    for layer, expected in ref.items():
        torch.testing.assert_close(ours[layer], expected, rtol=1e-4, atol=1e-5)


def test_jobs_see_a_weights_file_appear(tmp_path: Path, fake_spec: weights.WeightSpec) -> None:
    """Under `weights: auto` a job's params name what each network loads, so a file that
    appears later changes them (and Snakemake reruns the jobs that load it)."""
    from sparsegen.config import load_params
    from sparsegen.layout import Layout

    params = load_params()
    params["paths"] = {**params["paths"], "weights": str(tmp_path / "w")}
    lay = Layout(params)
    assert lay.weights_state("stya2k", "full", "train") == {
        "vgg19_normalised": weights.RANDOM_INIT}
    weights.fetch("vgg19_normalised", tmp_path / "w")
    assert lay.weights_state("stya2k", "full", "train") == {"vgg19_normalised": fake_spec.sha256}
    assert set(lay.weights_state("stya2k", "full", "evaluate")) == {"vgg19_normalised",
                                                                   "alexnet_torchvision"}


def test_released_entries_pin_their_hash_at_first_fetch(tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """The authors' checkpoints publish no hash: the first fetch records one beside the file,
    and a file that changes afterwards is refused, naming both hashes."""
    source = tmp_path / "upstream" / "FFHQ256_940k_flip.pt"
    source.parent.mkdir()
    torch.save({"g_ema": {"w": torch.ones(3)}}, source)
    spec = dataclasses.replace(weights.MANIFEST["stylenat_ffhq256"], url=source.as_uri())
    assert spec.sha256 is None and spec.size is None
    monkeypatch.setitem(weights.MANIFEST, "stylenat_ffhq256", spec)
    dest = tmp_path / "weights"
    path = weights.fetch("stylenat_ffhq256", dest)
    record = (dest / "FFHQ256_940k_flip.pt.fetched.json")
    pinned = sha256_file(source)
    assert record.is_file() and pinned in record.read_text() and source.as_uri() in \
        record.read_text()
    assert weights.verify(spec, path) == pinned
    torch.save({"g_ema": {"w": torch.zeros(3)}}, path)  # replaced later by another file
    with pytest.raises(weights.WeightsError, match="differs from the one recorded when it was "
                                                    "fetched"):
        weights.verify(spec, path)


def test_released_manifest_entries_name_the_official_files() -> None:
    m = weights.MANIFEST
    assert m["stylenat_ffhq256"].url.endswith("/stylenat/checkpoints/FFHQ256_940k_flip.pt")
    assert m["stylenat_ffhq1024"].filename == "FFHQ1024_700k.pt"
    for module in ("A2K", "transform", "decoder"):
        spec = m[f"stya2k_{module.lower()}"]
        assert spec.url == ("https://raw.githubusercontent.com/LearningHx/StyA2K/"
                            f"{weights.STYA2K_COMMIT}/checkpoints/A2K/latest_net_{module}.pth")
    assert m["stya2k_a2k"].size == 2_111_249


def test_dynast_manifest_entries_point_at_the_authors_drive_files(tmp_path: Path) -> None:
    """Drive needs a browser: fetching explains where to download and where to save."""
    m = weights.MANIFEST
    vgg = m["vgg19_cocosnet"]
    assert vgg.filename == "vgg19_conv.pth" and vgg.sha256 is None
    assert vgg.url.endswith("/1xc7CBEsn45a3Pc3K9Tfh5wxKOx2LyC41")  # DynaST README
    assert vgg.mirrors == ("https://drive.google.com/file/d/1fp7DAiXdf0Ay-jANb8f0RHYLTRyjNv4m",)
    assert m["dynast_deepfashion"].url.endswith("/1UJ9xsQBBWZEXOz-jizerR4Qjo7n1kYmy")
    for name in ("vgg19_cocosnet", "dynast_deepfashion"):
        spec = m[name]
        with pytest.raises(weights.WeightsError) as info:
            weights.fetch(name, tmp_path / "w")
        msg = str(info.value)
        assert "needs a browser" in msg and str(tmp_path / "w" / spec.filename) in msg
        assert spec.url in msg
        assert not (tmp_path / "w" / spec.filename).exists()
        r = weights.resolve(name, "auto", tmp_path / "w")
        assert r.sha256 == weights.RANDOM_INIT


def test_a_saved_vgg19_conv_file_loads_with_its_hash(tmp_path: Path) -> None:
    names = [f"conv{b}_{i}" for b, n in ((1, 2), (2, 2), (3, 4), (4, 4), (5, 4))
             for i in range(1, n + 1)]
    widths = [64, 64, 128, 128, *[256] * 4, *[512] * 8]
    state, cin = {}, 3
    for name, cout in zip(names, widths, strict=True):
        state[f"{name}.weight"], state[f"{name}.bias"] = torch.zeros(cout, cin, 3, 3), \
            torch.full((cout,), 0.5)
        cin = cout
    torch.save(state, tmp_path / "vgg19_conv.pth")  # downloaded by hand into the weights dir
    r = weights.resolve("vgg19_cocosnet", "pretrained", tmp_path)
    assert r.sha256 == sha256_file(tmp_path / "vgg19_conv.pth")
    enc = VGGEncoder(r, deepest="relu5_2")
    assert enc.fingerprint == f"vgg19_cocosnet:sha256:{r.sha256}"
    out = enc.extract(torch.rand(1, 3, 32, 32), ["relu5_2"])["relu5_2"]
    assert torch.all(out == 0.5)  # zero kernels: every ReLU passes the bias only
