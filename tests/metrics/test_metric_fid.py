import warnings

import numpy as np
import pytest
import torch
from scipy import linalg
from torch import nn

from sparsegen import judge
from sparsegen.io import write_image
from sparsegen.metrics import MetricContext, fid, get
from sparsegen.metrics.inputs import ImageSet
from sparsegen.weights import ResolvedWeights, WeightsError

from .conftest import photos_uint8


def _scipy_fid(f1: np.ndarray, f2: np.ndarray) -> float:
    """Independent route: Tr sqrt(S1 S2) = Tr sqrt(S1^1/2 S2 S1^1/2) via symmetric eigh."""
    mu1, mu2 = f1.mean(0), f2.mean(0)
    s1, s2 = np.cov(f1, rowvar=False), np.cov(f2, rowvar=False)
    w, v = linalg.eigh(s1)
    r1 = (v * np.sqrt(np.clip(w, 0, None))) @ v.T
    inner = linalg.eigvalsh(r1 @ s2 @ r1)
    return float(((mu1 - mu2) ** 2).sum() + np.trace(s1) + np.trace(s2)
                 - 2 * np.sqrt(np.clip(inner, 0, None)).sum())


@pytest.mark.parametrize("n", [200, 12])  # full-rank (sqrtm) and rank-deficient (low-rank)
def test_fid_from_features_matches_independent_scipy(n):
    rng = np.random.default_rng(n)
    f1 = rng.standard_normal((n, 32)) @ rng.standard_normal((32, 32))
    f2 = 0.8 * rng.standard_normal((n + 5, 32)) @ rng.standard_normal((32, 32)) + 0.3
    value, route = fid.fid_from_features(f1, f2)
    assert route == (fid.SQRTM_FULL if n > 32 else fid.SQRTM_LOW_RANK)
    assert value == pytest.approx(_scipy_fid(f1, f2), rel=1e-7)
    assert fid.fid_from_features(f1, f1)[0] == pytest.approx(0, abs=1e-7)


def test_frechet_distance_sqrtm_and_low_rank_trace_agree():
    rng = np.random.default_rng(1)
    f1, f2 = rng.standard_normal((20, 48)), rng.standard_normal((25, 48)) + 0.1
    s1, s2 = np.cov(f1, rowvar=False), np.cov(f2, rowvar=False)
    full = fid.frechet_distance(f1.mean(0), s1, f2.mean(0), s2)
    assert fid.fid_from_features(f1, f2)[0] == pytest.approx(full, rel=1e-6)
    with pytest.raises(ValueError, match="at least 2 feature vectors"):
        fid.fid_from_features(f1[:1], f2)


class _TinyInception(nn.Module):
    """Stands in for the TorchScript file: a `layers` module from [-1, 1] to 2048 features."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(3)
        self.layers = nn.Sequential(nn.Conv2d(3, 2048, 13, stride=12), nn.Tanh(),
                                    nn.AdaptiveAvgPool2d(1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)


@pytest.fixture(scope="module")
def torchscript_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("w") / "inception-2015-12-05.pt"
    with warnings.catch_warnings():  # TorchScript is deprecated; the real file is TorchScript
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.jit.save(torch.jit.script(_TinyInception()), str(path))
    return ResolvedWeights("inception_fid_torchscript", path, "34" * 32)


def _folder(tmp_path, images: np.ndarray, suffix: str = ".png"):
    for i, img in enumerate(images):
        write_image(tmp_path / f"sub{i % 2}" / f"{i:02d}{suffix}",
                    np.ascontiguousarray(img.transpose(1, 2, 0)))
    return tmp_path


@pytest.mark.filterwarnings("ignore:`torch.jit.load` is deprecated:DeprecationWarning")
def test_clean_extractor_matches_cleanfid_wrapper(torchscript_file):
    from cleanfid.inception_torchscript import InceptionV3W

    x = torch.rand(2, 3, 299, 299) * 255
    extract, fp = fid.build_extractor("clean", torchscript_file, torch.device("cpu"))
    ref = InceptionV3W(str(torchscript_file.path.parent), download=False)
    with torch.no_grad():
        torch.testing.assert_close(extract(x), ref(x), rtol=0, atol=0)
    assert fp == f"inception_fid_torchscript:sha256:{'34' * 32}"


@pytest.mark.parametrize("mode", ["clean", "legacy_pytorch"])
def test_image_loading_and_resize_match_cleanfid(tmp_path, torchscript_file, mode):
    from cleanfid.fid import get_folder_features

    images = photos_uint8(40)[:5]
    folder = _folder(tmp_path, images)
    extract, _ = fid.build_extractor("clean", torchscript_file, torch.device("cpu"))
    ctx = MetricContext(batch_size=2)
    ours, sizes = fid.image_features(ImageSet.of(folder, "a"), extract, mode, ctx)
    ref = get_folder_features(str(folder), model=extract, num_workers=0, batch_size=3,
                              device=torch.device("cpu"), mode=mode, verbose=False)
    np.testing.assert_allclose(ours, ref, rtol=1e-5, atol=1e-6)
    in_folder_order = images[[0, 2, 4, 1, 3]]  # sorted paths: sub0/00, 02, 04, sub1/01, 03
    from_array, _ = fid.image_features(ImageSet.of(in_folder_order, "a"), extract, mode, ctx)
    np.testing.assert_allclose(from_array, ours, rtol=1e-5, atol=1e-6)  # PNG is lossless
    assert sizes == [[40, 40]]


def test_fid_record_protocol_and_batch_size_independence(tmp_path, torchscript_file):
    a = _folder(tmp_path / "a", photos_uint8(48)[:4], ".jpg")
    b = photos_uint8(32)[2:6]
    recs = [get("fid_clean")(a, b, MetricContext(batch_size=bs, weights_mode="pretrained",
                                                 weights_dir=tmp_path,
                                                 pretrained={"inception_fid_torchscript":
                                                             torchscript_file}))
            for bs in (1, 4)]
    assert recs[0].value == pytest.approx(recs[1].value, rel=1e-6) and recs[0].value > 0
    p = recs[0].protocol
    assert p["mode"] == "clean" and p["n_a"] == 4 and p["n_b"] == 4
    assert p["file_format"] == {"a": "jpg", "b": "uint8-array"}
    assert p["image_size"] == {"a": [48, 48], "b": [32, 32]} and "PIL bicubic" in p["resize"]
    assert not judge.reasons(recs[0], {}, {}) and recs[0].n_samples == 4
    assert recs[0].extractor_weights == {"name": "inception_fid_torchscript",
                                         "sha256": "34" * 32}


@pytest.mark.filterwarnings("ignore::UserWarning:torchvision")  # clean-fid's pretrained= kwarg
def test_legacy_pytorch_file_loads_like_cleanfid_inception(tmp_path, monkeypatch):
    from cleanfid import inception_pytorch

    net = fid.PytorchFIDInception(ResolvedWeights("inception_fid_pytorch", None, "random-init"))
    state = {k.removeprefix("net."): v for k, v in net.state_dict().items()}  # upstream keys
    path = tmp_path / "pt_inception-2015-12-05-6726825d.pth"
    torch.save(state, path)
    w = ResolvedWeights("inception_fid_pytorch", path, "6726825d" + "0" * 56)
    extract, fp = fid.build_extractor("legacy_pytorch", w, torch.device("cpu"))
    monkeypatch.setattr(inception_pytorch, "load_state_dict_from_url", lambda *a, **k: state)
    ref = inception_pytorch.InceptionV3(output_blocks=[3], resize_input=False).eval()
    x = torch.rand(2, 3, 96, 96) * 255  # the network is fully convolutional up to pool3
    with torch.no_grad():
        ours, theirs = extract(x), ref(x / 255)[0].squeeze(-1).squeeze(-1)
        one = extract(x[1:])
    torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(one, ours[1:], rtol=1e-5, atol=1e-6)  # batch-size independent
    assert ours.std(0).mean() > 1e-3  # random-init features are not degenerate
    assert fp.endswith("6726825d" + "0" * 56)


def test_random_mode_is_non_comparable_and_offline_errors(tmp_path):
    imgs = photos_uint8(32)
    rec = get("fid_legacy_pytorch")(imgs[:2], imgs[2:4],
                                    MetricContext(weights_mode="random", weights_dir=tmp_path))
    assert "inception_fid_pytorch" in judge.reasons(rec, {}, {})[0]
    assert rec.protocol["extractor"].startswith("inception_fid_pytorch:random-init")
    assert rec.value > 0 and rec.protocol["trace_sqrt"] == fid.SQRTM_LOW_RANK
    _, fp = fid.build_extractor("clean", ResolvedWeights("inception_fid_torchscript", None,
                                                         "random-init"), torch.device("cpu"))
    assert fp.startswith("inception_fid_torchscript:random-init") and "stand-in" in fp
    for name, file in (("fid_legacy_pytorch", "pt_inception-2015-12-05-6726825d.pth"),
                       ("fid_clean", "inception-2015-12-05.pt")):
        with pytest.raises(WeightsError, match=file):
            get(name)(imgs[:3], imgs[3:6],
                      MetricContext(weights_mode="pretrained", weights_dir=tmp_path))
    with pytest.raises(ValueError, match="at least 2 images per set; set b"):
        get("fid_clean")(imgs[:3], imgs[3:4], MetricContext(weights_mode="random"))
    with pytest.raises(ValueError, match="uint8 array"):
        get("fid_clean")(imgs[:3].astype(np.float32), imgs[3:6], MetricContext())
    with pytest.raises(FileNotFoundError, match="nowhere: image folder not found"):
        get("fid_clean")(tmp_path / "nowhere", imgs[3:6], MetricContext())


def _resized_independently(img: np.ndarray, mode: str, side: int) -> np.ndarray:
    """clean-fid's two resizes written out: torch bilinear on float [0, 255] (legacy_pytorch),
    PIL bicubic per channel in float mode 'F' (clean); (3, side, side) float32."""
    from PIL import Image

    if mode == "legacy_pytorch":
        x = torch.from_numpy(img.transpose(2, 0, 1).astype(np.float32))[None]
        return torch.nn.functional.interpolate(x, size=(side, side), mode="bilinear",
                                               align_corners=False)[0].clamp(0, 255).numpy()
    return np.stack([np.asarray(Image.fromarray(img[..., c].astype(np.float32), mode="F")
                                .resize((side, side), Image.BICUBIC)).clip(0, 255)
                     for c in range(3)])


@pytest.mark.parametrize("mode", ["clean", "legacy_pytorch"])
def test_other_inception_side_resizes_as_cleanfid_does(mode):
    from cleanfid.resize import build_resizer

    images = photos_uint8(40)[:3]
    seen = []

    def extract(x: torch.Tensor) -> torch.Tensor:
        seen.append(x.clone())
        return x.flatten(1)[:, :4].double()

    fid.image_features(ImageSet.of(images, "a"), extract, mode, MetricContext(batch_size=3),
                       side=96)
    expected = np.stack([_resized_independently(img.transpose(1, 2, 0), mode, 96)
                         for img in images])
    np.testing.assert_allclose(seen[0].numpy(), expected, rtol=0, atol=1e-3)
    # The protocol's side stays clean-fid's own resizer, bit for bit.
    img = images[0].transpose(1, 2, 0)
    with warnings.catch_warnings():
        np.testing.assert_array_equal(fid.resizer(mode)(img), build_resizer(mode)(img))
    assert fid.resize_description(mode) == fid.resize_description(mode, 299)
    assert "299x299" in fid.resize_description(mode)
    assert "96x96" in fid.resize_description(mode, 96)
    with pytest.raises(ValueError, match=r"side must be an integer >= 75 .*got 64"):
        fid.resizer(mode, 64)


def test_input_size_is_recorded_and_changes_the_fingerprint(tmp_path):
    imgs = photos_uint8(48)
    ctx = MetricContext(weights_mode="random", weights_dir=tmp_path, batch_size=6)
    small = get("fid_legacy_pytorch")(imgs[:3], imgs[3:], ctx, input_size=80)
    full = get("fid_legacy_pytorch")(imgs[:3], imgs[3:], ctx)
    assert small.protocol["input_size"] == 80 and "80x80" in small.protocol["resize"]
    assert full.protocol["input_size"] == 299 and "299x299" in full.protocol["resize"]
    assert small.fingerprint != full.fingerprint and small.value != full.value
    with pytest.raises(ValueError, match="got 50"):
        get("fid_clean")(imgs[:3], imgs[3:], ctx, input_size=50)


def test_reference_features_are_cached_by_content(tmp_path, monkeypatch):
    imgs = photos_uint8(40)
    real = _folder(tmp_path / "real", imgs)
    digests = [f"{i:064x}" for i in range(len(imgs))]
    ctx = MetricContext(weights_mode="random", weights_dir=tmp_path, batch_size=6)
    cache = tmp_path / "cache"
    options = {"input_size": 80, "cache_dir": cache, "reference_digests": digests}
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 2048, 16, stride=16), nn.Tanh(), nn.AdaptiveAvgPool2d(1))
    # A small fixed extractor (the cache does not depend on the network; Inception is slow).
    monkeypatch.setattr(fid, "build_extractor", lambda mode, weights, device: (
        lambda x: net(x / 128 - 1).flatten(1), f"small:{mode}:{weights.sha256}"))
    computed = []
    original = fid.image_features

    def counting(images, *args, **kwargs):
        computed.append(images.origin)
        return original(images, *args, **kwargs)

    monkeypatch.setattr(fid, "image_features", counting)
    first = get("fid_legacy_pytorch")(imgs[:3], real, ctx, **options)
    assert computed == ["array", str(real)] and not first.extra["reference_cache"]["hit"]
    stored = list(cache.glob("legacy_pytorch_80_*.npz"))
    assert len(stored) == 1 and stored[0].name.endswith(
        first.extra["reference_cache"]["key"] + ".npz")
    second = get("fid_legacy_pytorch")(imgs[1:4], real, ctx, **options)
    assert computed[2:] == ["array"] and second.extra["reference_cache"]["hit"]
    uncached = get("fid_legacy_pytorch")(imgs[1:4], real, ctx, input_size=80)
    assert second.value == pytest.approx(uncached.value, rel=1e-6)
    assert second.fingerprint == uncached.fingerprint == first.fingerprint
    # Any ingredient of the key changes the address: files, mode, extractor, side.
    key = fid.feature_cache_key(digests, "legacy_pytorch", "x", 80)
    assert len({key, fid.feature_cache_key(digests[::-1], "legacy_pytorch", "x", 80),
                fid.feature_cache_key(digests, "clean", "x", 80),
                fid.feature_cache_key(digests, "legacy_pytorch", "y", 80),
                fid.feature_cache_key(digests, "legacy_pytorch", "x", 96)}) == 5
    with pytest.raises(ValueError, match="lists 2 sha256 values for 6 images"):
        get("fid_legacy_pytorch")(imgs[:3], real, ctx, input_size=80, cache_dir=cache,
                                  reference_digests=digests[:2])
    with pytest.raises(ValueError, match="needs both cache_dir and reference_digests"):
        get("fid_legacy_pytorch")(imgs[:3], real, ctx, cache_dir=cache)
    stored[0].write_bytes(b"not a zip")
    with pytest.raises(ValueError, match=f"{stored[0]}: unreadable FID feature cache"):
        get("fid_legacy_pytorch")(imgs[:3], real, ctx, **options)


def test_set_notes_enter_the_protocol(tmp_path):
    imgs = photos_uint8(32)
    ctx = MetricContext(weights_mode="random", weights_dir=tmp_path, batch_size=6)
    notes = {"b": {"subset_seed": 3}}
    rec = get("fid_legacy_pytorch")(imgs[:3], imgs[3:], ctx, input_size=75, sets=notes)
    other = get("fid_legacy_pytorch")(imgs[:3], imgs[3:], ctx, input_size=75,
                                      sets={"b": {"subset_seed": 4}})
    assert rec.protocol["sets"] == notes and rec.fingerprint != other.fingerprint


@pytest.mark.filterwarnings("ignore::scipy.linalg.LinAlgWarning")  # clean-fid's singular sqrtm
def test_fid_end_to_end_matches_cleanfid_compute_fid(tmp_path):
    """Our `fid_legacy_pytorch` (the paper's FID) on two PNG folders against
    `cleanfid.compute_fid` on the same folders, given the same random-init Inception as a custom
    feature extractor: file discovery, decoding, resize, statistics and Fréchet distance.

    With 5 images per set clean-fid takes scipy's sqrtm of a singular 2048 x 2048 product, whose
    rounding noise shifts its FID by about 2e-5; we use the exact low-rank trace. abs=1e-4 is
    five times that noise and about 3e-5 of the value."""
    from cleanfid.fid import compute_fid

    a = _folder(tmp_path / "a", photos_uint8(40)[:5])  # in two sub-folders
    b = _folder(tmp_path / "b", 255 - photos_uint8(48)[1:6])
    ctx = MetricContext(weights_mode="random", weights_dir=tmp_path / "weights", batch_size=4)
    ours = get("fid_legacy_pytorch")(a, b, ctx)
    assert ours.protocol["n_a"] == ours.protocol["n_b"] == 5
    assert ours.protocol["file_format"] == {"a": "png", "b": "png"}

    extract, _ = fid.build_extractor("legacy_pytorch", ctx.resolve("inception_fid_pytorch"),
                                     torch.device("cpu"))
    theirs = compute_fid(str(a), str(b), mode="legacy_pytorch", custom_feat_extractor=extract,
                         num_workers=0, batch_size=3, device=torch.device("cpu"), verbose=False)
    assert theirs > 1.0  # far from 0: the tolerance below is tight relative to the value
    assert ours.value == pytest.approx(theirs, rel=0, abs=1e-4)
