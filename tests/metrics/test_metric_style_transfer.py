import numpy as np
import pytest
import torch
from torch import nn

from sparsegen import judge
from sparsegen.metrics import MetricContext, get
from sparsegen.nets.vgg import LAYERS, VGGEncoder
from sparsegen.weights import ResolvedWeights, WeightsError

# AdaIN's normalised-VGG nn.Sequential indices ending at relu1_1 ... relu5_1.
_ENDS = (4, 11, 18, 31, 44)


def _np_mean_std(f: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    flat = f.reshape(*f.shape[:2], -1)
    return flat.mean(-1), np.sqrt(flat.var(-1, ddof=1) + 1e-5)


def _np_content(fa: dict, fb: dict) -> np.ndarray:
    def norm(f):
        m, s = _np_mean_std(f)
        return (f - m[..., None, None]) / s[..., None, None]
    return sum(((norm(fa[k]) - norm(fb[k])) ** 2).reshape(len(fa[k]), -1).mean(1)
               for k in ("relu4_1", "relu5_1"))


def _np_style(fa: dict, fb: dict) -> np.ndarray:
    out = 0
    for k in LAYERS:
        (ma, sa), (mb, sb) = _np_mean_std(fa[k]), _np_mean_std(fb[k])
        out = out + ((ma - mb) ** 2).mean(1) + ((sa - sb) ** 2).mean(1)
    return out


def _features(run, x: torch.Tensor) -> dict[str, np.ndarray]:
    with torch.no_grad():
        return {k: v.double().numpy() for k, v in run(x).items()}


def _pairs(photos64):
    stylised = (0.6 * photos64[:4] + 0.4 * photos64[[4, 5, 4, 5]]).clamp(0, 1)
    return stylised, photos64[:4], photos64[[4, 5, 4, 5]]


def test_losses_match_independent_formula_on_vgg_features(photos64, ctx_random):
    stylised, content, style = _pairs(photos64)
    enc = VGGEncoder(ResolvedWeights("vgg19_normalised", None, "random-init"))
    fs, fc, fst = (_features(enc, x) for x in (stylised, content, style))
    rec_c = get("content_loss_stytr2")(stylised, content, ctx_random)
    rec_s = get("style_loss_stytr2")(stylised, style, ctx_random)
    np.testing.assert_allclose(rec_c.per_sample, _np_content(fs, fc), rtol=1e-5)
    np.testing.assert_allclose(rec_s.per_sample, _np_style(fs, fst), rtol=1e-5)
    assert rec_c.value == pytest.approx(np.mean(rec_c.per_sample), rel=1e-12)
    assert rec_c.value > 0 and rec_s.value > 0
    same = get("content_loss_stytr2")(content, content, ctx_random)
    assert same.value == pytest.approx(0, abs=1e-6)


def test_batch_size_independence(photos64, tmp_path):
    stylised, content, style = _pairs(photos64)
    for name, ref in (("content_loss_stytr2", content), ("style_loss_stytr2", style)):
        vals = [get(name)(stylised, ref, MetricContext(weights_mode="random", batch_size=bs,
                                                        weights_dir=tmp_path)).value
                for bs in (1, 4)]
        assert vals[0] == pytest.approx(vals[1], rel=1e-6)


def test_loads_an_adain_format_file_and_is_comparable(photos64, tmp_path):
    # A normalised-VGG-layout Sequential with torch's default init, saved in AdaIN's key
    # format ("0.weight", "2.weight", ...); features are then computed here by slicing it.
    torch.manual_seed(123)
    layers = [nn.Conv2d(3, 3, 1)]
    in_ch = 3
    for b, widths in enumerate(((64, 64), (128, 128), (256,) * 4, (512,) * 4, (512,))):
        if b:
            layers.append(nn.MaxPool2d(2, 2, ceil_mode=True))
        for w in widths:
            layers += [nn.ReflectionPad2d(1), nn.Conv2d(in_ch, w, 3), nn.ReLU()]
            in_ch = w
    seq = nn.Sequential(*layers)
    path = tmp_path / "vgg_normalised.pth"
    torch.save(seq.state_dict(), path)

    def run(x):
        out, start = {}, 0
        for name, end in zip(LAYERS, _ENDS, strict=True):
            x = seq[start:end](x)
            out[name], start = x, end
        return out

    stylised, content, style = _pairs(photos64)
    w = ResolvedWeights("vgg19_normalised", path, "12" * 32)
    ctx = MetricContext(weights_mode="pretrained", weights_dir=tmp_path, pretrained={w.name: w})
    rec = get("content_loss_stytr2")(stylised, content, ctx)
    np.testing.assert_allclose(rec.per_sample, _np_content(_features(run, stylised),
                                                           _features(run, content)), rtol=1e-5)
    assert not judge.reasons(rec, {}, {}) and rec.extractor_weights == {"name": "vgg19_normalised",
                                                        "sha256": "12" * 32}
    assert "12" * 32 in rec.protocol["extractor"]
    assert rec.protocol["image_size"] == [64, 64] and rec.protocol["resize"] == "none"
    rec_s = get("style_loss_stytr2")(stylised, style[:, :, :48, :40], ctx)  # other size is fine
    np.testing.assert_allclose(rec_s.per_sample, _np_style(_features(run, stylised),
                                                           _features(run, style[:, :, :48, :40])),
                               rtol=1e-5)
    assert rec_s.protocol["style_size"] == [48, 40]


def test_offline_behaviour(photos64, ctx_random, tmp_path):
    rec = get("style_loss_stytr2")(photos64[:2], photos64[2:4], ctx_random)
    assert "vgg19_normalised" in judge.reasons(rec, {}, {})[0]
    assert rec.extractor_weights == {"name": "vgg19_normalised", "sha256": "random-init"}
    with pytest.raises(WeightsError, match=r"vgg_normalised\.pth"):
        get("content_loss_stytr2")(photos64[:2], photos64[2:4],
                                   MetricContext(weights_mode="pretrained", weights_dir=tmp_path))
    with pytest.raises(ValueError, match="differ in size"):
        get("content_loss_stytr2")(photos64[:2], photos64[2:4, :, :32], ctx_random)
    with pytest.raises(ValueError, match="more than 16 px"):
        get("style_loss_stytr2")(photos64[:2, :, :16, :16], photos64[2:4], ctx_random)
