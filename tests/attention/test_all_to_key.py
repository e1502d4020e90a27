"""All-to-key attention (Eq. 6-12, 19): values against loop references, locality of DA and PA,
parameter counts, the attention cost, and the Fig. 5 inspection maps."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from sparsegen.attention.all_to_all import (
    attention_backend,
    count_scores,
    dense_attention,
)
from sparsegen.attention.all_to_key import (
    A2KSpec,
    AllToKeyAttention,
    a2k_star,
    adaa2k_star,
    block_shape,
    distributed,
    inspect_query,
    progressive,
)
from sparsegen.models.stya2k.losses import StyA2KLoss
from sparsegen.nets.feature_stats import mean_variance_norm

F64 = torch.float64


def _maps(content_hw=(8, 8), style_hw=(8, 12), c=4, cv=6, batch=2):
    q = torch.randn(batch, c, *content_hw, dtype=F64)
    k = torch.randn(batch, c, *style_hw, dtype=F64)
    v = torch.randn(batch, cv, *style_hw, dtype=F64)
    return q, k, v


@pytest.mark.parametrize("heads", [1, 2])
@pytest.mark.parametrize("backend", ["sdpa", "explicit"])
def test_distributed_matches_reference(refs, heads, backend):
    q, k, v = _maps()
    with attention_backend(backend):
        assert torch.allclose(distributed(q, k, v, (4, 4), heads), refs.dilated(q, k, v, 4, heads))
        out = distributed(q, k, v, (4, 4), heads, "aggregated", alpha=0.7, beta=-0.2)
    assert torch.allclose(out, refs.aggregated(q, k, v, 4, heads, alpha=0.7, beta=-0.2))


@pytest.mark.parametrize("heads", [1, 2])
@pytest.mark.parametrize("backend", ["sdpa", "explicit"])
def test_progressive_matches_reference(refs, heads, backend):
    q, k, v = _maps()
    with attention_backend(backend):
        assert torch.allclose(progressive(q, k, v, (4, 4), heads),
                              refs.progressive(q, k, v, 4, heads))
        q, k, v = _maps(style_hw=(8, 8))
        assert torch.allclose(progressive(q, k, v, (4, 4), heads, step1=False),
                              refs.progressive(q, k, v, 4, heads, step1=False))


def test_progressive_without_step1_needs_equal_sizes():
    q, k, v = _maps(style_hw=(8, 12))
    with pytest.raises(ValueError, match="content has 4 blocks, style 6"):
        progressive(q, k, v, (4, 4), 1, step1=False)


def test_stats_forms_match_reference(refs):
    q, k, v = _maps()
    mean, std = distributed(q, k, v, (4, 4), 2, stats=True)
    ref_mean, ref_std = refs.stats(refs.dilated, q, k, v, 4, 2)
    assert torch.allclose(mean, ref_mean) and torch.allclose(std, ref_std)
    mean, std = progressive(q, k, v, (4, 4), 2, stats=True)
    ref_mean, ref_std = refs.stats(refs.progressive, q, k, v, 4, 2)
    assert torch.allclose(mean, ref_mean) and torch.allclose(std, ref_std)


def test_a2k_star_and_adaa2k_star_match_eq_12_and_19(refs):
    fc = torch.randn(1, 4, 8, 8, dtype=F64)
    fs = torch.randn(1, 4, 8, 12, dtype=F64)
    qn, kn = refs.instance_norm(fc), refs.instance_norm(fs)
    spec = A2KSpec(block=4, heads=2)
    expected = fc + refs.dilated(qn, kn, fs, 4, 2) + refs.progressive(qn, kn, fs, 4, 2)
    assert torch.allclose(a2k_star(qn, kn, fs, fc, spec), expected)
    md, sd = refs.stats(refs.dilated, qn, kn, fs, 4, 2)
    mp, sp = refs.stats(refs.progressive, qn, kn, fs, 4, 2)
    assert torch.allclose(adaa2k_star(qn, kn, fs, fc, spec), (sd + sp) * qn + md + mp)
    # ablation flags apply: without DA the target is the PA term alone
    no_da = A2KSpec(block=4, heads=2, distributed=False)
    assert torch.allclose(a2k_star(qn, kn, fs, fc, no_da), fc + refs.progressive(qn, kn, fs, 4, 2))
    assert torch.allclose(adaa2k_star(qn, kn, fs, fc, no_da), sp * qn + mp)


def _identity_convs(module: AllToKeyAttention) -> None:
    with torch.no_grad():
        for conv in module.modules():
            if isinstance(conv, torch.nn.Conv2d):
                conv.weight.copy_(torch.eye(conv.in_channels)[..., None, None])
                conv.bias.zero_()


@pytest.mark.parametrize("da_form", ["dilated", "aggregated"])
def test_parameter_free_targets_are_the_module_without_learnable_convs(da_form):
    spec = A2KSpec(block=2, heads=4, da_form=da_form)
    module = AllToKeyAttention(8, spec).double()
    n_params = sum(p.numel() for p in module.parameters())
    assert n_params == 8 * (8 * 8 + 8) + (2 if da_form == "aggregated" else 0)
    _identity_convs(module)
    fc, fs = torch.randn(2, 8, 4, 6, dtype=F64), torch.randn(2, 8, 6, 4, dtype=F64)
    target = a2k_star(mean_variance_norm(fc), mean_variance_norm(fs), fs, fc, spec)
    assert torch.allclose(module(fc, fs), target)


# --- the loss targets carry no gradient (Eq. 15-16) ------------------------------------------

_TOY_LAYERS = ("relu1_1", "relu2_1", "relu3_1")  # 16x16, 8x8, 4x4 maps of 8 channels


class _ToyStyleNet(torch.nn.Module):
    """A trainable stand-in for encoder, A2K module and decoder: I_cs = D(M(E(I_c), E(I_s))).

    The encoder is trainable here (VGG is frozen in StyA2K), so that its parameters reach both
    sides of Eq. 15/16: the prediction E(I_cs) and, unless the targets are detached, the
    targets M*(E(I_c), E(I_s))."""

    def __init__(self, spec: A2KSpec) -> None:
        super().__init__()
        self.enc = torch.nn.ModuleList([torch.nn.Conv2d(3, 8, 3, padding=1),
                                        torch.nn.Conv2d(8, 8, 3, padding=1),
                                        torch.nn.Conv2d(8, 8, 3, padding=1)])
        self.a2k = AllToKeyAttention(8, spec)
        self.dec = torch.nn.Conv2d(8, 3, 1)

    def encode(self, image: torch.Tensor) -> dict[str, torch.Tensor]:
        feats, x = {}, image
        for i, (layer, conv) in enumerate(zip(_TOY_LAYERS, self.enc, strict=True)):
            x = torch.relu(conv(x if i == 0 else torch.nn.functional.avg_pool2d(x, 2)))
            feats[layer] = x
        return feats

    def stylise(self, content: dict[str, torch.Tensor], style: dict[str, torch.Tensor]
                ) -> torch.Tensor:
        fcs = self.a2k(content["relu3_1"], style["relu3_1"])
        return self.dec(torch.nn.functional.interpolate(fcs, scale_factor=4.0))


def _loss_grads(net: _ToyStyleNet, loss: StyA2KLoss, images: tuple[torch.Tensor, torch.Tensor],
                detach_inputs: bool) -> dict[str, torch.Tensor]:
    net.zero_grad(set_to_none=True)
    content, style = (net.encode(x) for x in images)
    out = net.encode(net.stylise(content, style))
    if detach_inputs:  # the reference: targets built from constants
        content = {k: v.detach() for k, v in content.items()}
        style = {k: v.detach() for k, v in style.items()}
    loss(out, content, style)["loss"].backward()
    return {n: p.grad.clone() if p.grad is not None else torch.zeros_like(p)
            for n, p in net.named_parameters()}


@pytest.mark.parametrize("target_keys", ["same_layer", "multi_layer"])
@pytest.mark.parametrize(("lambda_a2k", "lambda_adaa2k"), [(1.0, 0.0), (0.0, 1.0)])
def test_no_parameter_gets_gradient_through_the_loss_targets(target_keys, lambda_a2k,
                                                             lambda_adaa2k):
    """L_A2K* / L_AdaA2K* backpropagate into the network only through E(I_cs): the gradients
    equal those obtained with the target inputs detached, and the targets have no grad_fn."""
    model = {"transform": "a2k", "block_sizes": {"relu2_1": 4, "relu3_1": 2},
             "block_mode": "size", "heads": 2, "distributed": True, "progressive": True,
             "pa_step1": True, "da_form": "dilated"}
    loss = StyA2KLoss(model, {"lambda_global": 0.0, "lambda_a2k": lambda_a2k,
                              "lambda_adaa2k": lambda_adaa2k, "distance": "mse",
                              "global_layers": list(_TOY_LAYERS),
                              "feature_layers": ["relu2_1", "relu3_1"],
                              "target_keys": target_keys})
    net = _ToyStyleNet(A2KSpec(block=2, heads=2)).double()
    images = (torch.rand(2, 3, 16, 16, dtype=F64), torch.rand(2, 3, 16, 16, dtype=F64))

    content, style = (net.encode(x) for x in images)
    assert content["relu2_1"].requires_grad and style["relu3_1"].requires_grad
    targets = loss.targets(content, style)
    assert sorted(targets) == ["relu2_1", "relu3_1"]
    attached = [(layer, form) for layer, pair in targets.items()
                for form, t in zip(("A2K*", "AdaA2K*"), pair, strict=True)
                if t is not None and (t.grad_fn is not None or t.requires_grad)]
    assert attached == []

    got = _loss_grads(net, loss, images, detach_inputs=False)
    expected = _loss_grads(net, loss, images, detach_inputs=True)
    # not vacuous: the encoder does learn, through the prediction side
    assert all(expected[f"enc.{i}.weight"].abs().sum() > 0 for i in range(3))
    differ = [name for name, grad in expected.items()
              if not torch.allclose(got[name], grad, rtol=1e-9, atol=1e-12)]
    assert differ == []


@pytest.mark.parametrize("heads", [1, 8])
@pytest.mark.parametrize(("content_hw", "style_hw"), [((16, 16), (16, 16)), ((16, 24), (32, 8))])
@pytest.mark.parametrize("da_form", ["dilated", "aggregated"])
def test_module_output_shape(heads, content_hw, style_hw, da_form):
    module = AllToKeyAttention(16, A2KSpec(block=4, heads=heads, da_form=da_form))
    out = module(torch.randn(2, 16, *content_hw), torch.randn(2, 16, *style_hw))
    assert out.shape == (2, 16, *content_hw)


def test_count_mode_blocks_per_side():
    spec = A2KSpec(block=2, block_mode="count", layer="relu4_1")
    assert block_shape(spec, (16, 8), (32, 12)) == (8, 4)  # content 2x2 blocks of 8x4
    out = AllToKeyAttention(8, A2KSpec(block=2, block_mode="count", heads=2))(
        torch.randn(1, 8, 16, 8), torch.randn(1, 8, 32, 12))
    assert out.shape == (1, 8, 16, 8)


def test_indivisible_side_names_layer_side_and_block():
    spec = A2KSpec(block=4, layer="relu5_1")
    with pytest.raises(ValueError, match="relu5_1: style feature width 6 is not divisible by "
                                         "the block size 4"):
        block_shape(spec, (8, 8), (8, 6))
    with pytest.raises(ValueError, match="relu3_1: content feature height 9 is not divisible "
                                         "by the block count 2"):
        block_shape(A2KSpec(block=2, block_mode="count", layer="relu3_1"), (9, 8), (8, 8))
    with pytest.raises(ValueError, match="needs DA or PA"):
        A2KSpec(block=4, distributed=False, progressive=False)


def _offset_mask(h: int, w: int, s: int, oy: int, ox: int) -> torch.Tensor:
    ys, xs = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    return (ys % s == oy) & (xs % s == ox)


def test_da_only_mixes_tokens_at_the_same_offset():
    q, k, v = _maps(content_hw=(8, 12), style_hw=(12, 8))
    at = _offset_mask(12, 8, 4, 1, 2)
    v2 = v.clone()
    v2[..., at] += torch.randn_like(v2[..., at])
    changed = (distributed(q, k, v2, (4, 4), 2) - distributed(q, k, v, (4, 4), 2)).abs()
    changed = changed.amax((0, 1)) > 1e-9
    assert torch.equal(changed, _offset_mask(8, 12, 4, 1, 2))


def test_da_module_only_mixes_tokens_at_the_same_offset():
    """Learnable module, DA branch only; key conv zeroed so that the style perturbation reaches
    the output through the values alone (keys would move the instance-norm statistics)."""
    module = AllToKeyAttention(6, A2KSpec(block=4, heads=2, progressive=False)).double()
    with torch.no_grad():
        module.da.k.weight.zero_()
    fc, fs = torch.randn(1, 6, 8, 8, dtype=F64), torch.randn(1, 6, 8, 12, dtype=F64)
    at = _offset_mask(8, 12, 4, 3, 0)
    fs2 = fs.clone()
    fs2[..., at] += 1.0
    changed = (module(fc, fs2) - module(fc, fs)).abs().amax((0, 1)) > 1e-9
    assert torch.equal(changed, _offset_mask(8, 8, 4, 3, 0))


def test_pa_step2_reads_only_the_argmax_block(refs):
    q, k, v = _maps(content_hw=(8, 8), style_hw=(12, 8), batch=1)
    k = k.abs() + 0.1
    q = q.abs()  # all block scores positive, so halving the others keeps the argmax
    heads, s = 1, 4
    chosen = refs.chosen_blocks(q, k, s, heads)
    qy, qx = 4, 0
    ky, kx = chosen[0, 0, qy, qx]
    inside = torch.zeros(12, 8, dtype=torch.bool)
    inside[ky:ky + s, kx:kx + s] = True
    base = progressive(q, k, v, (s, s), heads)[..., qy:qy + s, qx:qx + s]

    k2, v2 = k.clone(), v.clone()
    k2[..., ~inside] *= 0.5
    v2[..., ~inside] = torch.randn_like(v2[..., ~inside])
    other = progressive(q, k2, v2, (s, s), heads)[..., qy:qy + s, qx:qx + s]
    assert torch.equal(other, base)

    v3 = v.clone()
    v3[..., inside] += 1.0
    moved = progressive(q, k, v3, (s, s), heads)[..., qy:qy + s, qx:qx + s]
    assert (moved - base).abs().min() > 0.5


# --- attention cost ---------------------------------------------------------------------------

def _a2k_scores(side: int, s: int, heads: int = 1, channels: int = 4) -> dict[str, int]:
    m = AllToKeyAttention(channels, A2KSpec(block=s, heads=heads))
    x = torch.randn(1, channels, side, side)
    with torch.no_grad(), count_scores() as counted:
        m(x, x)
    return counted.scores


def _dense_scores(side: int, heads: int = 1, channels: int = 4) -> int:
    x = torch.randn(1, channels, side, side)
    with count_scores() as counted:
        dense_attention(x, x, x, heads)
    return counted.total_scores


@pytest.mark.parametrize(("side", "s", "heads"), [(16, 4, 1), (24, 4, 2), (32, 8, 4)])
def test_score_count_equals_formula(side, s, heads):
    hw, r = side * side, s * s
    n = hw // r
    assert _a2k_scores(side, s, heads, channels=8) == {
        "da": heads * hw * n,  # Eq. 7: each query against one key per block
        "pa_step1": heads * n * n,  # Eq. 8: block-to-block scores
        "pa_step2": heads * hw * r,  # Eq. 10: each query against its matched block
    }
    assert _dense_scores(side, heads, channels=8) == heads * hw * hw


def test_cost_growth_with_image_size():
    """Fixed block size s: A2K forms HW^2/s^2 + HW^2/s^4 + HW s^2 scores, i.e. 1/s^2 of dense
    attention plus lower-order terms, and grows quadratically in HW (not linearly, as the paper
    states). With balanced blocks (s^2 = n = sqrt(HW), Sec. 4.1) it grows as HW^1.5."""
    s = 4
    for side in (16, 32, 64):
        hw = side * side
        ratio = sum(_a2k_scores(side, s).values()) / _dense_scores(side)
        assert ratio == pytest.approx(1 / s**2 + 1 / s**4 + s**2 / hw)
    fixed = [sum(_a2k_scores(side, s).values()) for side in (64, 128)]
    assert math.log(fixed[1] / fixed[0]) / math.log(4) > 1.9  # quadratic in HW

    sides = (16, 64, 256)  # s = side^(1/2): s^2 blocks of s^2 pixels
    balanced = [sum(_a2k_scores(side, math.isqrt(side), channels=1).values())
                for side in sides]
    slope = np.polyfit(np.log([side * side for side in sides]), np.log(balanced), 1)[0]
    assert slope == pytest.approx(1.5, abs=0.05)


def test_cost_growth_in_count_mode():
    """Fixed block count b (Eq. 6, 13): DA grows linearly (HW b^2) and PA step 1 is constant
    (b^4), but PA step 2 forms HW^2/b^2 scores: quadratic, which Eq. 13 leaves out."""
    m = AllToKeyAttention(4, A2KSpec(block=4, block_mode="count", heads=1))
    counts = []
    for side in (32, 64):
        x = torch.randn(1, 4, side, side)
        with torch.no_grad(), count_scores() as counted:
            m(x, x)
        counts.append(counted.scores)
    assert counts[1]["da"] == 4 * counts[0]["da"]
    assert counts[1]["pa_step1"] == counts[0]["pa_step1"] == 16 * 16
    assert counts[1]["pa_step2"] == 16 * counts[0]["pa_step2"]


# --- Fig. 5 inspection maps -----------------------------------------------------------------

def test_inspect_query_maps():
    s = 4
    fc, fs = torch.randn(8, 8, 12), torch.randn(8, 12, 8)
    maps = inspect_query(fc, fs, s, (5, 6), heads=1)
    assert {m.shape for m in maps.values()} == {(12, 8)}
    offset = _offset_mask(12, 8, s, 5 % s, 6 % s)
    assert maps["all_to_all_softmax"].sum() == pytest.approx(1.0, abs=1e-5)
    assert torch.allclose(maps["all_to_all_softmax"],
                          torch.softmax(maps["all_to_all_logits"].flatten(), 0).view(12, 8))
    assert torch.equal(maps["da_logits"] != 0, offset)
    assert torch.equal(maps["da_logits"][offset], maps["all_to_all_logits"][offset])
    assert maps["da_softmax"].sum() == pytest.approx(1.0, abs=1e-5)
    chosen = maps["pa_block_argmax"] == 1
    assert chosen.sum() == s * s and maps["pa_block_argmax"][~chosen].eq(0).all()
    assert maps["pa_block_scores"][chosen].max() == maps["pa_block_scores"].max()
    assert torch.equal(maps["pa_softmax"] > 0, chosen)
    assert maps["pa_softmax"].sum() == pytest.approx(1.0, abs=1e-5)
    # each block's score is painted uniformly over the block
    per_block = maps["pa_block_scores"].view(3, s, 2, s).permute(0, 2, 1, 3).flatten(2)
    assert torch.allclose(per_block, per_block[..., :1].expand_as(per_block))


def test_inspect_query_multi_head_averages():
    fc, fs = torch.randn(8, 8, 8), torch.randn(8, 8, 8)
    maps = inspect_query(fc, fs, 4, (0, 0), heads=2)
    assert maps["pa_block_argmax"].sum() == pytest.approx(16.0)  # mean of two one-block maps
    assert maps["da_softmax"].sum() == pytest.approx(1.0, abs=1e-5)
