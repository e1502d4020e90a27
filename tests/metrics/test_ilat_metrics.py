"""iLAT's metrics (psnr_ilat, ssim_ilat, fid_inception_imagenet, masked rates) against explicit
re-derivations, and pipeline/claims/ilat.yaml against the paper's printed tables."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from sparsegen import judge
from sparsegen.claims import load_claims
from sparsegen.metrics import MetricContext, fid, get, image_quality, names
from sparsegen.metrics.inputs import ImageSet
from sparsegen.provenance import REPO_ROOT
from sparsegen.weights import ResolvedWeights

from .conftest import photos_uint8

ILAT_NAMES = ("psnr_ilat", "ssim_ilat", "fid_inception_imagenet", "masked_rate_pixel",
              "masked_rate_token")


def _pairs(n: int = 3, h: int = 12, w: int = 13, seed: int = 0) -> tuple[torch.Tensor, ...]:
    g = torch.Generator().manual_seed(seed)
    a = torch.rand(n, 3, h, w, generator=g, dtype=torch.float64)
    b = (0.8 * a + 0.2 * torch.rand(n, 3, h, w, generator=g, dtype=torch.float64)).clamp(0, 1)
    return a, b


def test_the_ilat_metrics_are_registered():
    assert set(ILAT_NAMES) <= set(names())
    assert get("psnr_ilat").higher_is_better and get("ssim_ilat").higher_is_better
    assert not get("fid_inception_imagenet").higher_is_better


# --- PSNR ------------------------------------------------------------------------------------

def test_psnr_ilat_is_the_official_formula_per_image():
    a, b = _pairs(4, 16, 16)
    rec = get("psnr_ilat")(a, b, MetricContext(batch_size=3))
    expected = []
    for x, y in zip(a.numpy(), b.numpy(), strict=True):
        mse = np.mean((x - y) ** 2)
        expected.append(1.0 - 10 * math.log10(mse + 1e-7))
    np.testing.assert_allclose(rec.per_sample, expected, rtol=1e-12)
    assert rec.value == pytest.approx(np.mean(expected), rel=1e-12)
    standard = get("psnr")(a, b, MetricContext(), data_range=1.0)
    np.testing.assert_allclose(np.subtract(rec.per_sample, standard.per_sample), 1.0, atol=1e-4)
    assert get("psnr_ilat")(a, a, MetricContext()).value == pytest.approx(71.0)  # 1 + 70 dB
    with pytest.raises(ValueError, match=r"images: values must lie in \[0, 1\]"):
        get("psnr_ilat")(a * 255, b, MetricContext())


# --- SSIM ------------------------------------------------------------------------------------

def _gray_of_bgr(img: np.ndarray) -> np.ndarray:
    """(3, H, W) RGB -> gray as rgb2gray computes it on the channel-reversed (cv2) array:
    0.2125 x first + 0.7154 x second + 0.0721 x third channel of B, G, R."""
    blue, green, red = img[2], img[1], img[0]
    return 0.2125 * blue + 0.7154 * green + 0.0721 * red


def _ssim_windows(x: np.ndarray, y: np.ndarray, data_range: float = 2.0, win: int = 7) -> float:
    """SSIM written out window by window: every fully inside 7x7 window, sample (N-1)
    statistics, the SSIM formula, mean over windows."""
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    values = []
    for i in range(x.shape[0] - win + 1):
        for j in range(x.shape[1] - win + 1):
            px, py = x[i:i + win, j:j + win].ravel(), y[i:i + win, j:j + win].ravel()
            mx, my = px.mean(), py.mean()
            vx, vy = px.var(ddof=1), py.var(ddof=1)
            cxy = ((px - mx) * (py - my)).sum() / (px.size - 1)
            values.append((2 * mx * my + c1) * (2 * cxy + c2)
                          / ((mx * mx + my * my + c1) * (vx + vy + c2)))
    return float(np.mean(values))


def test_ssim_ilat_matches_the_window_by_window_formula_on_bgr_gray():
    a, b = _pairs(3, 12, 13)
    rec = get("ssim_ilat")(a, b, MetricContext())
    expected = [_ssim_windows(_gray_of_bgr(x), _gray_of_bgr(y))
                for x, y in zip(a.numpy(), b.numpy(), strict=True)]
    np.testing.assert_allclose(rec.per_sample, expected, rtol=1e-10)
    assert rec.value == pytest.approx(np.mean(expected), rel=1e-12)
    # The quirks change the number: RGB-ordered gray, and the [0, 1] data range.
    rgb_order = [_ssim_windows(_gray_of_bgr(x[::-1]), _gray_of_bgr(y[::-1]))
                 for x, y in zip(a.numpy(), b.numpy(), strict=True)]
    unit_range = [_ssim_windows(_gray_of_bgr(x), _gray_of_bgr(y), data_range=1.0)
                  for x, y in zip(a.numpy(), b.numpy(), strict=True)]
    assert not np.allclose(rec.per_sample, rgb_order, rtol=1e-4)
    assert min(np.subtract(rec.per_sample, unit_range)) > 1e-3  # data range 2 inflates SSIM
    assert get("ssim_ilat")(a, a, MetricContext()).value == pytest.approx(1.0)
    assert rec.protocol["data_range"] == 2.0 and rec.protocol["window"] == "7x7 uniform"


def test_bgr_gray_is_skimage_rgb2gray_of_the_channel_reversed_image():
    from skimage.color import rgb2gray

    img = torch.from_numpy(photos_uint8(16)[:2]).double() / 255
    ours = image_quality.bgr_gray(img)
    for x, g in zip(img, ours, strict=True):
        bgr = x.numpy().transpose(1, 2, 0)[..., ::-1]
        np.testing.assert_allclose(g.numpy(), rgb2gray(bgr), rtol=1e-12)


def test_ssim_ilat_rejects_images_smaller_than_its_window():
    a, b = _pairs(1, 6, 9)
    with pytest.raises(ValueError, match="at least 7 px, got 6x9"):
        get("ssim_ilat")(a, b, MetricContext())


# --- masked rates ----------------------------------------------------------------------------

def _token_rate_loop(mask: np.ndarray, grid: int) -> float:
    cell = mask.shape[0] // grid
    hits = sum(bool(mask[i * cell:(i + 1) * cell, j * cell:(j + 1) * cell].any())
               for i in range(grid) for j in range(grid))
    return hits / grid ** 2


def test_masked_rates_match_explicit_counts():
    rng = np.random.default_rng(0)
    masks = rng.random((5, 32, 32)) < 0.02  # sparse holes: token rate >> pixel rate
    masks[4] = False
    pixel, token = image_quality.masked_rates(masks, 8)
    np.testing.assert_allclose(pixel.numpy(), masks.reshape(5, -1).mean(1), rtol=1e-12)
    np.testing.assert_allclose(token.numpy(), [_token_rate_loop(m, 8) for m in masks],
                               rtol=1e-12)
    assert token[4] == 0 and (token[:4] > 2 * pixel[:4]).all()
    as_float = torch.from_numpy(masks).float().unsqueeze(1)  # (N, 1, H, W) float, 1 = hole
    rec = get("masked_rate_token")(as_float, None, MetricContext(), grid=8)
    assert rec.value == pytest.approx(token.mean().item(), rel=1e-12) and rec.n_samples == 5
    assert rec.protocol["grid"] == 8 and rec.protocol["image_size"] == [32, 32]
    rec = get("masked_rate_pixel")(as_float, None, MetricContext())
    assert rec.value == pytest.approx(masks.mean(), rel=1e-12)


def test_one_hole_pixel_masks_its_token_as_in_table2():
    mask = np.zeros((1, 256, 256), bool)
    for k in range(82):  # one pixel in each of 82 of the 256 tokens (PA: 31.97% printed)
        i, j = divmod(k * 3, 16)
        mask[0, i * 16 + 5, j * 16 + 11] = True
    _, token = image_quality.masked_rates(mask, 16)
    assert token.item() == pytest.approx(82 / 256)  # the paper's 31.97% averages masks


def test_masked_rates_reject_bad_masks():
    ok = np.zeros((2, 16, 16))
    with pytest.raises(ValueError, match=r"values must be 0 or 1 .*found 255\.0"):
        image_quality.masked_rates(ok + 255, 4)
    with pytest.raises(ValueError, match="grid 5 must be a positive integer dividing"):
        image_quality.masked_rates(ok, 5)
    with pytest.raises(ValueError, match=r"expected a non-empty batch \(N, 1, H, W\)"):
        image_quality.masked_rates(ok[0, 0], 4)
    with pytest.raises(ValueError, match="pass None as the reference"):
        get("masked_rate_pixel")(ok, ok, MetricContext())


# --- FID on torchvision's ImageNet Inception-v3 -----------------------------------------------

RANDOM = ResolvedWeights(fid.IMAGENET_WEIGHTS, None, "random-init")


@pytest.fixture(scope="module")
def imagenet_file(tmp_path_factory):
    """A torchvision-layout Inception-v3 state dict (seeded random weights, BN running
    variances perturbed so that the loaded statistics matter)."""
    net = fid.ImageNetInception(RANDOM).net
    g = torch.Generator().manual_seed(1)
    state = net.state_dict()
    for k, v in state.items():
        if k.endswith("running_var"):
            state[k] = v * (0.5 + torch.rand(v.shape, generator=g))
    path = tmp_path_factory.mktemp("w") / "inception_v3_google-0cc3c7bd.pth"
    torch.save(state, path)
    return ResolvedWeights(fid.IMAGENET_WEIGHTS, path, "0cc3c7bd" + "0" * 56)


def test_imagenet_extractor_is_torchvision_inception_with_transform_input(imagenet_file):
    """Our extractor on [0, 255] against torchvision's own forward with transform_input=True on
    [0, 1] (the avgpool output, read with a hook)."""
    from torchvision.models import inception_v3

    extract, fp = fid.build_extractor("imagenet", imagenet_file, torch.device("cpu"))
    ref = inception_v3(weights=None, aux_logits=True, init_weights=False, transform_input=True)
    ref.load_state_dict(torch.load(imagenet_file.path, weights_only=True))
    ref.eval()
    pooled = []
    ref.avgpool.register_forward_hook(lambda m, i, o: pooled.append(o.flatten(1)))
    x = torch.rand(2, 3, 96, 96) * 255  # fully convolutional up to pool3
    with torch.no_grad():
        ours = extract(x)
        ref(x / 255)
    torch.testing.assert_close(ours, pooled[0], rtol=1e-5, atol=1e-5)
    assert ours.shape == (2, fid.FEATURE_DIM) and ours.std(0).mean() > 1e-3
    assert fp == f"{fid.IMAGENET_WEIGHTS}:sha256:0cc3c7bd{'0' * 56}"


def test_imagenet_mode_resizes_with_torch_bilinear():
    images = photos_uint8(40)[:2]
    seen = []

    def extract(x: torch.Tensor) -> torch.Tensor:
        seen.append(x.clone())
        return x.flatten(1)[:, :4].double()

    fid.image_features(ImageSet.of(images, "a"), extract, "imagenet", MetricContext())
    x = torch.from_numpy(images.astype(np.float32))
    expected = torch.nn.functional.interpolate(x, size=(299, 299), mode="bilinear",
                                               align_corners=False)
    torch.testing.assert_close(seen[0], expected, rtol=0, atol=1e-3)
    assert "bilinear to 299x299" in fid.resize_description("imagenet")


def test_fid_inception_imagenet_record(tmp_path, imagenet_file):
    imgs = photos_uint8(48)
    ctx = MetricContext(batch_size=3, pretrained={fid.IMAGENET_WEIGHTS: imagenet_file})
    rec = get("fid_inception_imagenet")(imgs[:3], imgs[3:], ctx, input_size=80)
    assert rec.value > 0 and rec.protocol["mode"] == "imagenet"
    assert rec.protocol["extractor"].startswith(f"{fid.IMAGENET_WEIGHTS}:sha256:0cc3c7bd")
    assert rec.extractor_weights["sha256"].startswith("0cc3c7bd") and not judge.reasons(
        rec, {}, {})
    random = get("fid_inception_imagenet")(
        imgs[:3], imgs[3:], MetricContext(pretrained={fid.IMAGENET_WEIGHTS: RANDOM}),
        input_size=80)
    assert "randomly initialised" in judge.reasons(random, {}, {})[0]
    assert random.protocol["extractor"] == f"{fid.IMAGENET_WEIGHTS}:random-init:" \
                                           "kaiming-normal-seed0"


def test_a_wrong_state_dict_names_the_file(tmp_path):
    path = tmp_path / "inception_v3_google-0cc3c7bd.pth"
    torch.save({"fc.weight": torch.zeros(2, 2)}, path)
    with pytest.raises(ValueError, match=r"inception_v3_google-0cc3c7bd\.pth: not a torchvision "
                                         r"Inception-v3 state dict"):
        fid.ImageNetInception(ResolvedWeights(fid.IMAGENET_WEIGHTS, path, "0" * 64))


# --- claims ----------------------------------------------------------------------------------

CLAIMS = REPO_ROOT / "pipeline" / "claims" / "ilat.yaml"
# Table 1 as printed (methods as columns; PSNR, SSIM, MAE, FID), Table 2 and Table 4.
TABLE1 = {
    "patn": "20.83 0.744 0.062 82.79", "pn_gan": "21.36 0.761 0.062 64.43",
    "posewarp": "21.76 0.794 0.053 93.61", "mr_net": "21.79 0.792 0.066 79.50",
    "taming_pa": "21.43 0.746 0.057 33.53", "ilat_star_pa": "21.68 0.748 0.056 31.83",
    "ilat_pa": "22.94 0.800 0.046 27.36", "taming_sdf": "16.25 0.539 0.107 72.77",
    "ilat_sdf": "16.71 0.599 0.096 70.58",
}
TABLE2 = {"pa": "31.97% 8.551 3.426", "sdf": "28.09% 8.372 3.898", "ffhq": "6.64% 8.183 1.180"}
TABLE4 = {"taming": "0.33", "taming_star": "3.33", "sc_fegan": "17.33", "ilat": "38.33"}


def _printed(table, rid: str, cid: str) -> str:
    return f"{table.cells[rid][cid]:.{table.columns[cid].decimals}f}"


def test_ilat_claims_hold_every_printed_cell():
    claims = load_claims(CLAIMS)
    assert list(claims.tables) == ["1", "2", "4"] and claims.paper == "ilat"
    t1, t2, t4 = (claims.tables[k] for k in ("1", "2", "4"))
    assert {rid: " ".join(_printed(t1, rid, c) for c in ("psnr", "ssim", "mae", "fid"))
            for rid in t1.rows} == TABLE1
    assert all(t1.cells[r][c] is None for r in t1.rows
               for c in ("psnr_standard", "ssim_standard", "fid_legacy", "fid_clean"))
    assert {rid: f"{100 * t2.cells[rid]['masked_rate']:.2f}% " + " ".join(
        _printed(t2, rid, c) for c in ("taming", "ilat")) for rid in t2.rows} == TABLE2
    assert {rid: _printed(t4, rid, "score") for rid in t4.rows} == TABLE4


def test_ilat_claims_map_rows_to_variants_and_columns_to_registered_metrics():
    claims = load_claims(CLAIMS)
    registered = set(names()) | {"inference_time_s"}  # timing records come from the sampler
    for table in claims.tables.values():
        assert all(c.metric in registered for c in table.columns.values() if c.metric)
    t1, t2 = claims.tables["1"], claims.tables["2"]
    assert {r.variant for r in t1.rows.values()} == {
        None, "taming_pa", "ilat_star_pa", "ilat_pa", "taming_sdf", "ilat_sdf"}
    assert [t1.columns[c].metric for c in ("psnr", "ssim", "mae", "fid")] == [
        "psnr_ilat", "ssim_ilat", "l1", "fid_inception_imagenet"]
    assert {rid: (t2.rows[rid].variant, t2.sources[rid]["taming"].variant) for rid in t2.rows} \
        == {"pa": ("ilat_pa", "taming_pa"), "sdf": ("ilat_sdf", "taming_sdf"),
            "ffhq": ("ilat_ffhq", "taming_ffhq")}
    assert t2.columns["taming"].hardware_bound and t2.columns["ilat"].hardware_bound
    assert claims.tables["4"].columns["score"].not_reproduced
