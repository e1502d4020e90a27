"""Per-pixel channel norms, SPADE and the SPADE residual block, against numpy re-derivations
and hand-set weights."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils import parametrize

from sparsegen.nets.norms import ChannelLayerNorm, positional_norm
from sparsegen.nets.spade import SPADE, SPADEResBlock


@pytest.fixture(autouse=True)
def _seeded() -> None:
    torch.manual_seed(0)


def _np_standardise(x: np.ndarray, axes: tuple[int, ...], eps: float, ddof: int) -> np.ndarray:
    mean = x.mean(axis=axes, keepdims=True)
    var = x.var(axis=axes, keepdims=True, ddof=ddof)
    return (x - mean) / np.sqrt(var + eps)


def _zero(conv: nn.Conv2d, bias: float = 0.0) -> None:
    with torch.no_grad():
        conv.weight.zero_()
        conv.bias.fill_(bias)


# --- norms -------------------------------------------------------------------------------------

def test_channel_layer_norm_is_layer_norm_on_channels_last() -> None:
    x = torch.randn(2, 6, 5, 4, dtype=torch.float64) * 3 + 1
    ours = ChannelLayerNorm(6).double()
    ref = nn.LayerNorm(6).double()
    with torch.no_grad():
        for p, q in ((ours.weight, ref.weight), (ours.bias, ref.bias)):
            p.copy_(torch.randn(6))
            q.copy_(p)
    expected = ref(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)
    torch.testing.assert_close(ours(x), expected)


def test_channel_layer_norm_without_affine_matches_numpy() -> None:
    x = torch.randn(3, 5, 4, 2, dtype=torch.float64)
    norm = ChannelLayerNorm(5, eps=1e-3, affine=False)
    assert list(norm.parameters()) == []
    expected = _np_standardise(x.numpy(), axes=(1,), eps=1e-3, ddof=0)
    np.testing.assert_allclose(norm(x).numpy(), expected, rtol=1e-12, atol=1e-12)


def test_positional_norm_uses_the_unbiased_channel_variance() -> None:
    x = torch.randn(2, 4, 3, 5, dtype=torch.float64) * 2 - 1
    expected = _np_standardise(x.numpy(), axes=(1,), eps=1e-8, ddof=1)
    np.testing.assert_allclose(positional_norm(x).numpy(), expected, rtol=1e-12, atol=1e-12)
    biased = _np_standardise(x.numpy(), axes=(1,), eps=1e-8, ddof=0)
    assert not np.allclose(positional_norm(x).numpy(), biased)


# --- SPADE -------------------------------------------------------------------------------------

@pytest.mark.parametrize(("norm", "axes", "eps", "ddof"), [
    ("batch", (0, 2, 3), 1e-5, 0), ("instance", (2, 3), 1e-5, 0), ("positional", (1,), 1e-8, 1)])
def test_zero_gamma_beta_reduces_spade_to_the_plain_norm(norm, axes, eps, ddof) -> None:
    spade = SPADE(4, label_channels=3, hidden=8, norm=norm).double()
    _zero(spade.gamma)
    _zero(spade.beta)
    x = torch.randn(3, 4, 6, 5, dtype=torch.float64) * 2 + 0.5
    out = spade(x, torch.randn(3, 3, 6, 5, dtype=torch.float64))
    expected = _np_standardise(x.numpy(), axes=axes, eps=eps, ddof=ddof)
    np.testing.assert_allclose(out.detach().numpy(), expected, rtol=1e-10, atol=1e-10)


def test_spade_applies_one_plus_gamma_and_beta() -> None:
    """shared conv -> constant h = relu(0.5) per hidden channel; gamma conv sums it with weight
    1 at the centre tap plus bias; beta is a constant bias: out = norm(x) * (1 + g) + b."""
    spade = SPADE(2, label_channels=3, hidden=4, norm="positional").double()
    _zero(spade.shared[0], bias=0.5)
    _zero(spade.gamma, bias=0.25)
    with torch.no_grad():
        spade.gamma.weight[0, :, 1, 1] = 1.0  # channel 0: gamma = 4 * 0.5 + 0.25 = 2.25
    _zero(spade.beta, bias=-0.75)
    x = torch.randn(1, 2, 4, 4, dtype=torch.float64)
    out = spade(x, torch.randn(1, 3, 4, 4, dtype=torch.float64))
    normed = _np_standardise(x.numpy(), axes=(1,), eps=1e-8, ddof=1)
    expected = normed * np.array([1 + 2.25, 1 + 0.25])[None, :, None, None] - 0.75
    np.testing.assert_allclose(out.detach().numpy(), expected, rtol=1e-10, atol=1e-10)


def test_label_modulates_the_output_and_receives_gradients() -> None:
    spade = SPADE(4, label_channels=3, hidden=8, norm="instance")
    x = torch.randn(2, 4, 8, 8)
    label = torch.randn(2, 3, 8, 8, requires_grad=True)
    out = spade(x, label)
    assert not torch.allclose(out, spade(x, torch.randn(2, 3, 8, 8)))
    out.square().sum().backward()
    for conv in (spade.shared[0], spade.gamma, spade.beta):
        assert conv.weight.grad is not None and conv.weight.grad.abs().sum() > 0
    assert label.grad.abs().sum() > 0


def _nearest(label: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Nearest-neighbour resize by explicit source indices floor(dst * in / out)."""
    h, w = label.shape[-2:]
    rows = [int(np.floor(i * h / size[0])) for i in range(size[0])]
    cols = [int(np.floor(j * w / size[1])) for j in range(size[1])]
    return label[..., rows, :][..., cols]


def test_label_is_resized_nearest_to_the_feature_size() -> None:
    spade = SPADE(3, label_channels=2, hidden=4, norm="instance")
    x = torch.randn(1, 3, 12, 16)
    small = torch.randn(1, 2, 5, 7)
    big = _nearest(small, (12, 16))
    torch.testing.assert_close(big, F.interpolate(small, size=(12, 16), mode="nearest"))
    torch.testing.assert_close(spade(x, small), spade(x, big))
    assert not torch.allclose(spade(x, small),
                              spade(x, F.interpolate(small, size=(12, 16), mode="bilinear")))


def test_invalid_choices_name_the_value() -> None:
    with pytest.raises(ValueError, match="'layer'"):
        SPADE(3, 2, norm="layer")
    with pytest.raises(ValueError, match="'relu'"):
        SPADEResBlock(3, 3, 2, activation="relu")


# --- SPADE residual block ----------------------------------------------------------------------

@pytest.mark.parametrize(("cin", "cout"), [(8, 8), (8, 4), (4, 6)])
def test_resblock_shapes_shortcut_and_spectral_norm(cin, cout) -> None:
    block = SPADEResBlock(cin, cout, label_channels=3, hidden=16)
    out = block(torch.randn(2, cin, 8, 8), torch.randn(2, 3, 4, 4))
    assert out.shape == (2, cout, 8, 8)
    assert block.conv_0.out_channels == min(cin, cout) == block.conv_1.in_channels
    assert hasattr(block, "conv_s") == (cin != cout)
    convs = [block.conv_0, block.conv_1] + ([block.conv_s] if cin != cout else [])
    assert all(parametrize.is_parametrized(c, "weight") for c in convs)
    if cin != cout:
        assert block.conv_s.kernel_size == (1, 1) and block.conv_s.bias is None
    plain = SPADEResBlock(cin, cout, label_channels=3, hidden=16, spectral=False)
    assert not any(parametrize.is_parametrized(m) for m in plain.modules())


def test_zero_residual_branch_leaves_the_identity_or_prelu_of_it() -> None:
    x = torch.randn(2, 4, 6, 6)
    label = torch.randn(2, 3, 6, 6)
    block = SPADEResBlock(4, 4, label_channels=3, hidden=8, spectral=False)
    _zero(block.conv_1)
    torch.testing.assert_close(block(x, label), x)

    dynast = SPADEResBlock(4, 4, label_channels=3, hidden=4, norm="positional", spectral=False,
                           activation="prelu", final_activation=True, padding_mode="reflect")
    prelus = [m for m in dynast.modules() if isinstance(m, nn.PReLU)]
    assert len(prelus) == 1 and prelus[0].weight.numel() == 1
    _zero(dynast.conv_1)
    torch.testing.assert_close(dynast(x, label), torch.where(x > 0, x, 0.25 * x))


def test_learned_shortcut_is_a_bias_free_1x1_conv_of_spade() -> None:
    x = torch.randn(2, 4, 5, 5, dtype=torch.float64)
    label = torch.randn(2, 3, 5, 5, dtype=torch.float64)
    block = SPADEResBlock(4, 6, label_channels=3, hidden=8, norm="instance",
                          spectral=False).double()
    _zero(block.conv_1)
    _zero(block.norm_s.gamma)
    _zero(block.norm_s.beta)
    normed = torch.from_numpy(_np_standardise(x.numpy(), axes=(2, 3), eps=1e-5, ddof=0))
    expected = torch.einsum("oc,bchw->bohw", block.conv_s.weight[:, :, 0, 0], normed)
    torch.testing.assert_close(block(x, label), expected)


@pytest.mark.parametrize(("final", "calls"), [(False, 2), (True, 3)])
def test_activation_runs_after_each_spade_and_optionally_after_the_sum(final, calls) -> None:
    block = SPADEResBlock(4, 4, label_channels=3, hidden=8, spectral=False,
                          final_activation=final)
    assert isinstance(block.act, nn.LeakyReLU) and block.act.negative_slope == 0.2
    seen = []
    block.act.register_forward_hook(lambda m, i, o: seen.append(i[0].shape))
    block(torch.randn(1, 4, 6, 6), torch.randn(1, 3, 6, 6))
    assert len(seen) == calls
