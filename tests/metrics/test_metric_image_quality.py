import numpy as np
import pytest
import torch
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from sparsegen.metrics import MetricContext, get


def _distorted(x: torch.Tensor, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return (x * 0.9 + 0.05 + 0.08 * torch.randn(x.shape, generator=g)).clamp(0, 1)


def _hwc(t: torch.Tensor) -> np.ndarray:
    return t.permute(1, 2, 0).double().numpy()


@pytest.mark.parametrize("data_range", [1.0, 255.0])
def test_ssim_matches_skimage_wang_settings(photos64, data_range):
    a = photos64[:4] * (data_range if data_range > 1 else 1)
    b = _distorted(photos64[:4]) * (data_range if data_range > 1 else 1)
    if data_range > 1:
        a, b = a.round(), b.round()  # uint8-valued images in [0, 255]
    rec = get("ssim_gauss11")(a, b, MetricContext(batch_size=3), data_range=data_range)
    ref = [structural_similarity(_hwc(x), _hwc(y), gaussian_weights=True, sigma=1.5,
                                 use_sample_covariance=False, data_range=data_range,
                                 channel_axis=-1) for x, y in zip(a, b, strict=True)]
    np.testing.assert_allclose(rec.per_sample, ref, rtol=1e-10, atol=1e-12)
    assert rec.value == pytest.approx(np.mean(ref), rel=1e-12)
    assert 0.2 < rec.value < 0.99 and rec.protocol["data_range"] == data_range


def test_ssim_identity_and_non_square_and_batch_independence(photos64):
    a = photos64[:4, :, :, :48]  # 64x48
    assert get("ssim_gauss11")(a, a, MetricContext(), data_range=1.0).value == pytest.approx(1)
    b = _distorted(a, seed=1)
    vals = [get("ssim_gauss11")(a, b, MetricContext(batch_size=bs), data_range=1.0).value
            for bs in (1, 4)]
    assert vals[0] == pytest.approx(vals[1], abs=1e-12)
    ref = np.mean([structural_similarity(_hwc(x), _hwc(y), gaussian_weights=True, sigma=1.5,
                                         use_sample_covariance=False, data_range=1.0,
                                         channel_axis=-1) for x, y in zip(a, b, strict=True)])
    assert vals[0] == pytest.approx(ref, rel=1e-10)


def test_ssim_and_psnr_require_an_explicit_data_range(photos64):
    with pytest.raises(TypeError, match="data_range"):
        get("ssim_gauss11")(photos64[:1], photos64[:1], MetricContext())
    with pytest.raises(TypeError, match="data_range"):
        get("psnr")(photos64[:1], photos64[:1], MetricContext())
    with pytest.raises(ValueError, match="data_range must be a positive number"):
        get("psnr")(photos64[:1], photos64[:1], MetricContext(), data_range=0)


def test_psnr_matches_skimage_per_image(photos64):
    a, b = photos64, _distorted(photos64, seed=2)
    rec = get("psnr")(a, b, MetricContext(batch_size=4), data_range=1.0)
    ref = [peak_signal_noise_ratio(_hwc(x), _hwc(y), data_range=1.0)
           for x, y in zip(a, b, strict=True)]
    np.testing.assert_allclose(rec.per_sample, ref, rtol=1e-12)
    assert rec.value == pytest.approx(np.mean(ref), rel=1e-12)  # mean of per-image PSNRs
    whole = peak_signal_noise_ratio(a.double().numpy(), b.double().numpy(), data_range=1.0)
    assert rec.value != pytest.approx(whole, rel=1e-6)  # not the PSNR of the pooled MSE
    assert rec.n_samples == 6


def test_l1_matches_numpy_and_checks_inputs(photos64):
    a, b = photos64, _distorted(photos64, seed=3)
    rec = get("l1")(a, b, MetricContext(batch_size=4))
    ref = np.abs(a.double().numpy() - b.double().numpy()).reshape(6, -1).mean(1)
    np.testing.assert_allclose(rec.per_sample, ref, rtol=1e-12)
    assert rec.value == pytest.approx(ref.mean(), rel=1e-12) and not rec.higher_is_better
    with pytest.raises(ValueError, match=r"images: values must lie in \[0, 1\]"):
        get("l1")(a * 255, b, MetricContext())
    with pytest.raises(ValueError, match="images has 6 images but references has 5"):
        get("l1")(a, b[:5], MetricContext())
    with pytest.raises(ValueError, match=r"expected an RGB batch \(N, 3, H, W\)"):
        get("l1")(a[0], b[0], MetricContext())


def test_gray_ssim_matches_skimage_on_pil_luma(photos64):
    """Against PIL's own grayscale conversion (a different implementation of BT.601 luma, with
    rounding to uint8: agreement to 1e-2) and skimage's default window."""
    from PIL import Image

    a, b = photos64[:3], photos64[3:6]
    rec = get("ssim_gray_skimage")(a, b, MetricContext())

    def luma(x):
        array = (x.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
        return np.asarray(Image.fromarray(array).convert("L"), dtype=np.float64)

    expected = [structural_similarity(luma(x), luma(y), data_range=255)
                for x, y in zip(a, b, strict=True)]
    np.testing.assert_allclose(rec.per_sample, expected, atol=1e-2)
    assert rec.value == pytest.approx(np.mean(rec.per_sample))
    assert get("ssim_gray_skimage")(a, a, MetricContext()).value == pytest.approx(1.0)
    assert rec.value < 0.9  # different photos
