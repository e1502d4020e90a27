"""StyA2K losses (Eq. 14-17) and their targets, against direct computations."""

from __future__ import annotations

import copy

import pytest
import torch

from sparsegen.attention.all_to_all import count_scores
from sparsegen.attention.all_to_key import a2k_star, adaa2k_star
from sparsegen.models.stya2k.losses import (
    StyA2KLoss,
    distance,
    feature_targets,
    global_style_loss,
    target_queries_keys,
)
from sparsegen.models.stya2k.transforms import AdaIN, a2k_spec
from sparsegen.nets.feature_stats import mean_variance_norm
from sparsegen.nets.vgg import LAYERS

CHANNELS = (64, 128, 256, 512, 512)


def _feats(batch: int = 2, side: int = 64, seed: int = 0) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return {layer: torch.rand(batch, c, side >> i, side >> i, generator=gen) * (i + 1)
            for i, (layer, c) in enumerate(zip(LAYERS, CHANNELS, strict=True))}


def test_distance():
    a, b = torch.zeros(2, 3, 2, 2), torch.ones(2, 3, 2, 2)
    b[1] *= 2
    assert distance(a, b, "mse") == pytest.approx((12 + 48) / 24)
    assert distance(a, b, "l2") == pytest.approx((12**0.5 + 48**0.5) / 2)
    with pytest.raises(ValueError, match="'l1' is not one of"):
        distance(a, b, "l1")


def test_global_style_loss_eq_14():
    out, style = _feats(seed=1), _feats(seed=2)
    layers = ["relu1_1", "relu2_1", "relu3_1", "relu4_1"]
    expected = 0.0
    for layer in layers:
        o, s = out[layer].flatten(2), style[layer].flatten(2)
        expected += ((o.mean(-1) - s.mean(-1)) ** 2).mean()
        expected += (((o.var(-1) + 1e-5).sqrt() - (s.var(-1) + 1e-5).sqrt()) ** 2).mean()
    assert global_style_loss(out, style, layers, "mse") == pytest.approx(float(expected),
                                                                         rel=1e-5)


def test_multi_layer_keys_concatenate_shallower_layers():
    content, style = _feats(seed=1), _feats(seed=2)
    for layer, dims in zip(LAYERS[1:], (192, 448, 960, 1472), strict=True):
        q, k = target_queries_keys(content, style, layer, "multi_layer")
        assert q.shape[1] == k.shape[1] == dims
        assert q.shape[-2:] == content[layer].shape[-2:]
    q, k = target_queries_keys(content, style, "relu3_1", "multi_layer")
    resized = torch.nn.functional.interpolate(style["relu1_1"], size=(16, 16), mode="nearest")
    assert torch.allclose(k[:, :64], mean_variance_norm(resized))
    assert torch.allclose(k[:, -256:], mean_variance_norm(style["relu3_1"]))


def test_targets_follow_the_transform(settings):
    content, style = _feats(seed=1), _feats(seed=2)
    model = settings["model"]
    layer = "relu3_1"
    q, k = target_queries_keys(content, style, layer, "same_layer")
    fc, fs = content[layer], style[layer]
    a2k, ada = feature_targets(model, layer, q, k, fs, fc, (True, True))
    spec = a2k_spec(model, layer)
    assert torch.allclose(a2k, a2k_star(q, k, fs, fc, spec))
    assert torch.allclose(ada, adaa2k_star(q, k, fs, fc, spec))

    adain = dict(model, transform="adain")
    plain, ada = feature_targets(adain, layer, q, k, fs, fc, (True, True))
    assert torch.allclose(plain, fc + fs.mean((2, 3), keepdim=True))
    # uniform attention: the Ada-form is AdaIN with the population variance
    flat = fs.flatten(2)
    std = (flat.var(-1, unbiased=False) + 1e-5).sqrt()[..., None, None]
    assert torch.allclose(ada, std * mean_variance_norm(fc) + flat.mean(-1)[..., None, None],
                          atol=1e-5)
    assert torch.allclose(ada, AdaIN()(fc, fs), atol=1e-2)

    dense = dict(model, transform="adaattn")
    with count_scores() as counted:
        feature_targets(dense, layer, q, k, fs, fc, (True, False))
    assert counted.scores == {"dense": 2 * model["heads"] * (16 * 16) ** 2}


def test_total_loss_eq_17_and_skipped_terms(settings):
    content, style, out = _feats(seed=1), _feats(seed=2), _feats(seed=3)
    loss = StyA2KLoss(settings["model"], settings["loss"])
    terms = loss(out, content, style)
    lam = settings["loss"]
    assert float(terms["loss"]) == pytest.approx(float(
        lam["lambda_global"] * terms["global"] + lam["lambda_a2k"] * terms["a2k"]
        + lam["lambda_adaa2k"] * terms["adaa2k"]), rel=1e-6)
    assert all(float(terms[k]) > 0 for k in ("global", "a2k", "adaa2k"))

    only_global = copy.deepcopy(settings["loss"])
    only_global.update(lambda_a2k=0.0, lambda_adaa2k=0.0)
    with count_scores() as counted:
        terms = StyA2KLoss(settings["model"], only_global)(out, content, style)
    assert counted.total_scores == 0  # no target computed
    assert float(terms["a2k"]) == float(terms["adaa2k"]) == 0.0

    no_ada = dict(settings["loss"], lambda_adaa2k=0.0)
    with count_scores() as counted:
        StyA2KLoss(settings["model"], no_ada)(out, content, style)
    per_layer = {"relu2_1": (32, 16), "relu3_1": (16, 8), "relu4_1": (8, 8), "relu5_1": (4, 4)}
    heads = settings["model"]["heads"]
    assert counted.scores["da"] == sum(2 * heads * side**2 * (side // s) ** 2
                                       for side, s in per_layer.values())
