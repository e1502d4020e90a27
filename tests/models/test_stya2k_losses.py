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


# --- Eq. 14-17 written out independently (torch ops only; F.unfold/F.fold blocking as Alg. 2) ---

PAPER_LAMBDAS = (10.0, 0.5, 1.5)  # lambda_1, lambda_2, lambda_3 (Sec. 4.1)
PAPER_GLOBAL_LAYERS = ("relu1_1", "relu2_1", "relu3_1", "relu4_1")  # Eq. 14: l = 1..4
PAPER_BLOCKS = {"relu2_1": 16, "relu3_1": 8, "relu4_1": 8, "relu5_1": 4}  # Eq. 15-16: l = 2..5
PAPER_HEADS = 8
EPS = 1e-5  # under every square root (AdaIN / official-code convention, not in the paper)


def _dist(a: torch.Tensor, b: torch.Tensor, kind: str) -> torch.Tensor:
    diff = (a - b).flatten(1)
    return (diff * diff).mean() if kind == "mse" else (diff * diff).sum(1).sqrt().mean()


def _mu_sigma(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    flat = x.flatten(2)
    mu = flat.sum(-1) / flat.shape[-1]
    var = ((flat - mu[..., None]) ** 2).sum(-1) / (flat.shape[-1] - 1)
    return mu, (var + EPS).sqrt()


def _norm(x: torch.Tensor) -> torch.Tensor:
    mu, sigma = _mu_sigma(x)
    return (x - mu[..., None, None]) / sigma[..., None, None]


def _blocks(x: torch.Tensor, s: int, heads: int) -> torch.Tensor:
    """(B, C, H, W) -> (B, heads, C/heads, s*s offsets, L blocks) via F.unfold (Alg. 2)."""
    b, c = x.shape[:2]
    return torch.nn.functional.unfold(x, s, stride=s).view(b, heads, c // heads, s * s, -1)


def _unblocks(t: torch.Tensor, s: int, hw: tuple[int, int]) -> torch.Tensor:
    b, heads, d, r, n = t.shape
    return torch.nn.functional.fold(t.reshape(b, heads * d * r, n), hw, s, stride=s)


def _da(q, k, v, s, heads):
    """Eq. 7 (dilated): for each in-block offset, softmax over the style blocks."""
    qb, kb, vb = (_blocks(x, s, heads) for x in (q, k, v))
    w = torch.softmax(torch.einsum("bhdri,bhdrj->bhrij", qb, kb), dim=-1)
    return _unblocks(torch.einsum("bhrij,bherj->bheri", w, vb), s, q.shape[-2:])


def _pa(q, k, v, s, heads):
    """Eq. 8-10: argmax block match, reshuffle, softmax over the matched block's pixels."""
    qb, kb, vb = (_blocks(x, s, heads) for x in (q, k, v))
    idx = torch.einsum("bhdri,bhdrj->bhij", qb, kb).argmax(-1)  # (B, heads, Lq)

    def reshuffle(t: torch.Tensor) -> torch.Tensor:
        return torch.gather(t, 4, idx[:, :, None, None, :].expand(*t.shape[:4], idx.shape[-1]))

    kb, vb = reshuffle(kb), reshuffle(vb)
    w = torch.softmax(torch.einsum("bhdri,bhdti->bhirt", qb, kb), dim=-1)
    return _unblocks(torch.einsum("bhirt,bheti->bheri", w, vb), s, q.shape[-2:])


def _weighted_mean_std(attn, q, k, v, s, heads):
    """Eq. 19: M = attn(v), S = sqrt(attn(v * v) - M * M)."""
    m = attn(q, k, v, s, heads)
    return m, ((attn(q, k, v * v, s, heads) - m * m).clamp_min(0) + EPS).sqrt()


def _independent_terms(out, content, style, kind):
    global_ = sum(_dist(a, b, kind) for layer in PAPER_GLOBAL_LAYERS
                  for a, b in zip(_mu_sigma(out[layer]), _mu_sigma(style[layer]), strict=True))
    a2k = ada = 0.0
    for layer, s in PAPER_BLOCKS.items():
        fc, fs = content[layer], style[layer]
        qn, kn = _norm(fc), _norm(fs)
        target = fc + _da(qn, kn, fs, s, PAPER_HEADS) + _pa(qn, kn, fs, s, PAPER_HEADS)  # Eq. 12
        md, sd = _weighted_mean_std(_da, qn, kn, fs, s, PAPER_HEADS)
        mp, sp = _weighted_mean_std(_pa, qn, kn, fs, s, PAPER_HEADS)
        a2k = a2k + _dist(out[layer], target, kind)  # Eq. 15
        ada = ada + _dist(out[layer], (sd + sp) * qn + md + mp, kind)  # Eq. 16, 19
    lam1, lam2, lam3 = PAPER_LAMBDAS
    return {"global": global_, "a2k": a2k, "adaa2k": ada,
            "loss": lam1 * global_ + lam2 * a2k + lam3 * ada}  # Eq. 17


@pytest.mark.parametrize("kind", ["mse", "l2"])
def test_loss_terms_match_independent_eq_14_to_17(settings, kind):
    """Each term and the total of the full model's loss against the paper's equations, with the
    paper's layers, block sizes, heads and lambdas (a wrong layer list, block size, weight,
    distance or target changes the value)."""
    content, style, out = ({k: v.double() for k, v in _feats(side=128, seed=s).items()}
                           for s in (1, 2, 3))
    loss = StyA2KLoss(settings["model"], dict(settings["loss"], distance=kind))
    terms = loss(out, content, style)
    expected = _independent_terms(out, content, style, kind)
    for name in ("global", "a2k", "adaa2k", "loss"):
        assert float(terms[name]) == pytest.approx(float(expected[name]), rel=1e-9), name
    assert all(float(expected[k]) > 0 for k in ("global", "a2k", "adaa2k"))


def test_skipped_terms(settings):
    content, style, out = _feats(seed=1), _feats(seed=2), _feats(seed=3)
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
