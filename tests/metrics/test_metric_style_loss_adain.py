"""AdaIN's style loss (DynaST Eq. 11 l_s) against a numpy re-derivation on VGG features."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from sparsegen.metrics import MetricContext, get
from sparsegen.nets.vgg import LAYERS, VGGEncoder
from sparsegen.weights import RANDOM_INIT, ResolvedWeights


def _np_stat_loss(fa: np.ndarray, fb: np.ndarray) -> np.ndarray:
    """Per image: mean over channels of squared differences of channel means, plus the same for
    channel stds (sqrt of unbiased variance + 1e-5)."""
    def stats(f):
        flat = f.reshape(*f.shape[:2], -1)
        return flat.mean(-1), np.sqrt(flat.var(-1, ddof=1) + 1e-5)
    (ma, sa), (mb, sb) = stats(fa), stats(fb)
    return ((ma - mb) ** 2).mean(1) + ((sa - sb) ** 2).mean(1)


def _features(x: torch.Tensor) -> dict[str, np.ndarray]:
    enc = VGGEncoder(ResolvedWeights("vgg19_normalised", None, RANDOM_INIT))
    with torch.no_grad():
        return {k: v.double().numpy() for k, v in enc(x).items()}


def test_sums_relu1_to_relu4_and_differs_from_stytr2_by_relu5(photos64, ctx_random):
    stylised = (0.6 * photos64[:3] + 0.4 * photos64[3:]).clamp(0, 1)
    style = photos64[3:, :, :56, :48]  # the style image may have another size
    rec = get("style_loss_adain")(stylised, style, ctx_random)
    fs, ft = _features(stylised), _features(style)
    per_layer = {k: _np_stat_loss(fs[k], ft[k]) for k in LAYERS}
    expected = sum(per_layer[k] for k in LAYERS[:4])
    np.testing.assert_allclose(rec.per_sample, expected, rtol=1e-5)
    assert rec.value == pytest.approx(expected.mean(), rel=1e-5)
    assert rec.protocol["layers"] == list(LAYERS[:4]) and not rec.higher_is_better
    assert rec.protocol["style_size"] == [56, 48]
    stytr2 = get("style_loss_stytr2")(stylised, style, ctx_random)
    np.testing.assert_allclose(np.subtract(stytr2.per_sample, rec.per_sample),
                               per_layer["relu5_1"], rtol=1e-4)
    assert stytr2.fingerprint != rec.fingerprint


def test_needs_only_relu4_1_resolution(photos64, tmp_path):
    ctx = MetricContext(weights_mode="random", weights_dir=tmp_path)
    small = photos64[:2, :, :12, :12]  # relu4_1 at 2x2 (ceil pooling): a variance exists
    assert np.isfinite(get("style_loss_adain")(small, small.flip(0), ctx).value)
    with pytest.raises(ValueError, match="relu4_1 needs more than 8 px"):
        get("style_loss_adain")(photos64[:2, :, :8, :8], photos64[2:4], ctx)
    with pytest.raises(ValueError, match="relu5_1 needs more than 16 px"):
        get("style_loss_stytr2")(small, small, ctx)
