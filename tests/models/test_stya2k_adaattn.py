"""The AdaAttN peers of Table 1: `adaattn` (official AdaAttN design: one head, keys from
relu1_1 ... relu_l, seeded key/value sub-sampling) and `adaattn_dense` (the earlier peer),
each against an explicit einsum + softmax computation written here."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from sparsegen.attention.all_to_all import attention_backend, count_scores
from sparsegen.config import load_params
from sparsegen.models.stya2k.losses import feature_targets, target_queries_keys
from sparsegen.models.stya2k.network import CHANNELS, TRANSFER_LAYERS, build_network
from sparsegen.models.stya2k.transforms import (
    ADAATTN_SEED,
    AdaAttN,
    AdaAttNDense,
    build_transform,
)

ORDER = ("relu1_1", "relu2_1", "relu3_1", "relu4_1", "relu5_1")
KEY_WIDTHS = {"relu3_1": 64 + 128 + 256, "relu4_1": 64 + 128 + 256 + 512,
              "relu5_1": 64 + 128 + 256 + 512 + 512}  # official key_planes 448, 960, 1472
EPS = 1e-5


# --- explicit reference, written from the AdaAttN definition -----------------------------------

def _norm(x: torch.Tensor) -> torch.Tensor:
    """Instance normalisation with the unbiased variance + 1e-5 (AdaIN's calc_mean_std)."""
    mean = x.mean((2, 3), keepdim=True)
    return (x - mean) / (x.var((2, 3), keepdim=True, unbiased=True) + EPS).sqrt()


def _nearest(x: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """Nearest resize by integer factors: output pixel i reads input pixel i * factor."""
    ys = torch.arange(h) * x.shape[-2] // h
    xs = torch.arange(w) * x.shape[-1] // w
    return x[:, :, ys][:, :, :, xs]


def _keys(feats: dict[str, torch.Tensor], layer: str) -> torch.Tensor:
    h, w = feats[layer].shape[-2:]
    return torch.cat([_norm(_nearest(feats[j], h, w)) for j in ORDER[: ORDER.index(layer) + 1]],
                     dim=1)


def _conv1x1(conv: nn.Conv2d, x: torch.Tensor) -> torch.Tensor:
    return torch.einsum("oc,bchw->bohw", conv.weight[:, :, 0, 0], x) + conv.bias[:, None, None]


def _attend_stats(q, k, v):
    """q (B, E, Lq), k (B, E, Lk), v (B, C, Lk) -> attention-weighted mean, std (B, C, Lq)."""
    attn = torch.softmax(torch.einsum("beq,bek->bqk", q, k), dim=-1)  # no 1/sqrt(E)
    mean = torch.einsum("bqk,bck->bcq", attn, v)
    var = torch.einsum("bqk,bck->bcq", attn, v * v) - mean * mean
    return mean, (var.clamp_min(0) + EPS).sqrt()


def explicit_adaattn(m: AdaAttN, content, style, keep_k=None, keep_v=None) -> torch.Tensor:
    fc = content[m.layer]
    q = _conv1x1(m.f, _keys(content, m.layer)).flatten(2)
    k = _conv1x1(m.g, _keys(style, m.layer)).flatten(2)
    v = _conv1x1(m.h, style[m.layer]).flatten(2)
    if keep_k is not None:
        k, v = k[..., keep_k], v[..., keep_v]
    mean, std = _attend_stats(q, k, v)
    return std.view_as(fc) * _norm(fc) + mean.view_as(fc)


def explicit_dense(m: AdaAttNDense, fc: torch.Tensor, fs: torch.Tensor) -> torch.Tensor:
    """The earlier peer: per head (contiguous channel groups), same-layer keys, raw values."""
    q, k = _conv1x1(m.q, _norm(fc)).flatten(2), _conv1x1(m.k, _norm(fs)).flatten(2)
    v = fs.flatten(2)
    d = fc.shape[1] // m.heads
    parts = [_attend_stats(q[:, i * d:(i + 1) * d], k[:, i * d:(i + 1) * d],
                           v[:, i * d:(i + 1) * d]) for i in range(m.heads)]
    mean, std = (torch.cat(t, dim=1) for t in zip(*parts, strict=True))
    return std.view_as(fc) * _norm(fc) + mean.view_as(fc)


# --- fixtures ----------------------------------------------------------------------------------

def _feats(h: int, w: int, seed: int) -> dict[str, torch.Tensor]:
    """Random relu1_1 ... relu5_1 maps of an (h, w) image, float64."""
    g = torch.Generator().manual_seed(seed)
    return {layer: torch.rand(2, CHANNELS[layer], h >> i, w >> i, generator=g,
                              dtype=torch.float64) * (1 + i)
            for i, layer in enumerate(ORDER)}


def _randomise(module: nn.Module, seed: int) -> nn.Module:
    g = torch.Generator().manual_seed(seed)
    for p in module.parameters():
        with torch.no_grad():
            p.copy_(torch.randn(p.shape, generator=g) * 0.05)
    return module.double()


def _adaattn(layer: str, max_sample: int, seed: int = 0) -> AdaAttN:
    key = sum(CHANNELS[j] for j in ORDER[: ORDER.index(layer) + 1])
    return _randomise(AdaAttN(layer, CHANNELS[layer], key, max_sample), seed)


# --- adaattn -----------------------------------------------------------------------------------

@pytest.mark.parametrize("backend", ["sdpa", "explicit"])
@pytest.mark.parametrize("layer", TRANSFER_LAYERS)
def test_adaattn_matches_explicit_without_sampling(layer, backend):
    content, style = _feats(32, 48, seed=1), _feats(64, 32, seed=2)
    m = _adaattn(layer, max_sample=10**6)
    with attention_backend(backend), count_scores() as counted:
        out = m(content, style)
    expected = explicit_adaattn(m, content, style)
    assert out.shape == content[layer].shape
    assert torch.allclose(out, expected, atol=1e-9, rtol=1e-7)
    lq, lk = content[layer][0, 0].numel(), style[layer][0, 0].numel()
    assert counted.scores == {"adaattn": 2 * lq * lk}  # one head, every style position


def test_adaattn_samples_the_same_seeded_positions_for_keys_and_values():
    layer, n_keep = "relu3_1", 40
    content, style = _feats(32, 32, seed=3), _feats(64, 64, seed=4)  # relu3_1 style: 256 pos.
    m = _adaattn(layer, max_sample=n_keep)
    n = style[layer][0, 0].numel()
    keep = torch.randperm(n, generator=torch.Generator().manual_seed(ADAATTN_SEED))[:n_keep]
    assert torch.equal(m.sample_positions(n), keep)
    assert m.sample_positions(n_keep) is None  # not more than max_sample: every position

    with count_scores() as counted:
        out = m(content, style)
    assert counted.scores == {"adaattn": 2 * 8 * 8 * n_keep}
    assert torch.allclose(out, explicit_adaattn(m, content, style, keep, keep), atol=1e-9)
    # the check can fail: other value positions, or no sampling, give other outputs
    other = torch.randperm(n, generator=torch.Generator().manual_seed(1))[:n_keep]
    assert not torch.allclose(out, explicit_adaattn(m, content, style, keep, other), atol=1e-3)
    assert not torch.allclose(out, explicit_adaattn(m, content, style), atol=1e-3)

    # deterministic: every forward, training or not, keeps the same positions ...
    assert torch.equal(m(content, style), out)
    assert torch.equal(m.train()(content, style), out)
    # ... and the seed decides which
    m.seed = 1
    assert torch.allclose(m(content, style), explicit_adaattn(m, content, style, other, other),
                          atol=1e-9)


def test_adaattn_draw_is_the_official_test_time_draw_and_leaves_global_rng_alone():
    """Official code at test time: torch.manual_seed(6666); torch.randperm(n)[:max_sample]."""
    m = _adaattn("relu3_1", max_sample=4096)
    n = 128 * 128  # relu3_1 of a 512x512 style image
    with torch.random.fork_rng():
        torch.manual_seed(6666)
        official = torch.randperm(n)[:4096]
        state = torch.get_rng_state()
        ours = m.sample_positions(n)
        assert torch.equal(torch.get_rng_state(), state)
    assert torch.equal(ours, official)


def test_adaattn_keys_include_the_shallower_layers(settings):
    s = copy.deepcopy(settings)
    s["model"]["transform"] = "adaattn"
    net = build_network(s).eval()
    for layer in TRANSFER_LAYERS:  # official key_planes; h keeps the layer's width
        m = net.transform[layer]
        assert m.f.in_channels == m.g.in_channels == m.f.out_channels == KEY_WIDTHS[layer]
        assert m.h.in_channels == m.h.out_channels == CHANNELS[layer]
    torch.manual_seed(0)
    with torch.no_grad():
        fc, fs = net.encode(torch.rand(1, 3, 64, 64)), net.encode(torch.rand(1, 3, 64, 64))
        base = net.transfer(fc, fs)
        style_changed = net.transfer(fc, {**fs, "relu1_1": fs["relu1_1"].flip(-1)})
        content_changed = net.transfer({**fc, "relu2_1": fc["relu2_1"].flip(-2)}, fs)
    for layer in TRANSFER_LAYERS:
        assert not torch.allclose(base[layer], style_changed[layer], atol=1e-6)
        assert not torch.allclose(base[layer], content_changed[layer], atol=1e-6)

    s["model"]["transform"] = "adaattn_dense"  # same-layer keys: relu1_1 is not read
    dense = build_network(s).eval()
    with torch.no_grad():
        base = dense.transfer(fc, fs)
        style_changed = dense.transfer(fc, {**fs, "relu1_1": fs["relu1_1"].flip(-1)})
    for layer in TRANSFER_LAYERS:
        assert torch.equal(base[layer], style_changed[layer])


def test_adaattn_max_sample_comes_from_the_settings():
    model = copy.deepcopy(load_params()["stya2k"]["model"])
    # official: 64*64 for the relu3_1 module, the AdaAttN default 256*256 in its Transformer
    assert model["adaattn_max_sample"] == {"relu3_1": 4096, "relu4_1": 65536, "relu5_1": 65536}
    model["transform"] = "adaattn"
    model["adaattn_max_sample"] = {"relu3_1": 7, "relu4_1": 8, "relu5_1": 9}
    built = {layer: build_transform(model, layer, CHANNELS) for layer in TRANSFER_LAYERS}
    assert [m.max_sample for m in built.values()] == [7, 8, 9]
    assert all(m.seed == ADAATTN_SEED for m in built.values())
    del model["adaattn_max_sample"]["relu4_1"]
    with pytest.raises(ValueError, match="adaattn_max_sample has no entry for relu4_1"):
        build_transform(model, "relu4_1", CHANNELS)


# --- adaattn_dense -----------------------------------------------------------------------------

@pytest.mark.parametrize("heads", [1, 8])
def test_adaattn_dense_is_the_earlier_peer(heads):
    fc, fs = _feats(32, 32, seed=5)["relu3_1"], _feats(48, 32, seed=6)["relu3_1"]
    m = _randomise(AdaAttNDense(CHANNELS["relu3_1"], heads), seed=7)
    assert set(m.state_dict()) == {"q.weight", "q.bias", "k.weight", "k.bias"}  # loads old ckpts
    with count_scores() as counted:
        out = m(fc, fs)
    assert torch.allclose(out, explicit_dense(m, fc, fs), atol=1e-9)
    assert counted.scores == {"dense": 2 * heads * 8 * 8 * 12 * 8}  # no sampling


def test_adaattn_dense_builds_with_model_heads_and_trains_with_dense_targets(settings):
    s = copy.deepcopy(settings)
    s["model"]["transform"] = "adaattn_dense"
    net = build_network(s)
    assert all(isinstance(m, AdaAttNDense) and m.heads == s["model"]["heads"]
               for m in net.transform.values())
    content, style = _feats(32, 32, seed=8), _feats(32, 32, seed=9)
    q, k = target_queries_keys(content, style, "relu3_1", "same_layer")
    with count_scores() as counted:
        plain, ada = feature_targets(s["model"], "relu3_1", q, k, style["relu3_1"],
                                     content["relu3_1"], (True, True))
    assert plain.shape == ada.shape == content["relu3_1"].shape
    assert counted.scores == {"dense": 2 * 2 * s["model"]["heads"] * (8 * 8) ** 2}
