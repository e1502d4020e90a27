"""StyleNAT networks: per-level layout (Tables 5, 6), parameter counts (Table 1), shapes at the
smoke presets, layers' invariants, the wavelet discriminator."""

from __future__ import annotations

import functools
import math
from typing import Any

import pytest
import torch
from torch import nn
from torch.nn.utils import parametrize

from sparsegen.attention.hydra import HydraNeighborhoodAttention
from sparsegen.attention.window import SwinSplitAttention
from sparsegen.config import load_params, resolve
from sparsegen.models.stylenat import architecture as arch
from sparsegen.models.stylenat.discriminator import (
    build_discriminator,
    haar_dwt,
    haar_iwt,
    minibatch_stddev,
)
from sparsegen.models.stylenat.generator import build_generator
from sparsegen.models.stylenat.layers import (
    AdaIN,
    BlurUpsample,
    from_unit_range,
    sinusoidal_grid,
    to_unit_range,
    upfirdn2d,
)


@functools.cache
def _params(preset: str) -> dict[str, Any]:
    return load_params(overrides={"preset": preset})


def model_settings(variant: str, preset: str) -> dict[str, Any]:
    return resolve(_params(preset), "stylenat", variant, check=False)["model"]


VARIANTS = list(_params("paper")["stylenat"]["variants"])


def smoke_model(variant: str) -> dict[str, Any]:
    return {**model_settings(variant, "smoke"), "backend": "torch"}


def n_params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def meta_generator(model: dict[str, Any]) -> nn.Module:
    with torch.device("meta"):
        return build_generator(model)


# -- per-level layout ------------------------------------------------------------------------

def test_paper_layout_channels_heads_dilations():
    m = model_settings("stylenat", "paper")
    table = {r: (arch.channels(m, r), arch.heads(m, r), arch.dilations(m, r))
             for r in arch.levels(m)}
    assert table == {4: (512, 16, [1]), 8: (512, 16, [1, 1]), 16: (512, 16, [1, 2]),
                     32: (512, 16, [1, 4]), 64: (512, 16, [1, 8]), 128: (256, 8, [1, 16]),
                     256: (128, 4, [1, 32])}
    assert arch.kernel_sizes(m, 4) == [4] and arch.kernel_sizes(m, 64) == [7, 7]


def test_channel_table_at_1024_and_multiplier_one():
    m = model_settings("ffhq1024", "paper")
    assert [arch.channels(m, r) for r in arch.levels(m)] == [512] * 5 + [256, 128, 64, 32]
    assert [arch.heads(m, r) for r in (512, 1024)] == [4, 4]  # head_dim 16 and 8
    cm1 = {**m, "channel_multiplier": 1}
    assert [arch.channels(cm1, r) for r in arch.levels(cm1)] == [512] * 4 + [256, 128, 64, 32, 16]


def test_table5_two_partition_dilations():
    m = {**model_settings("ffhq1024", "paper"), "partitions": 2, "dilations": "progressive"}
    sparse = {r: arch.dilations(m, r)[-1] for r in arch.levels(m) if r > 4}
    assert sparse == {8: 1, 16: 2, 32: 4, 64: 8, 128: 16, 256: 32, 512: 64, 1024: 128}
    assert all(arch.dilations(m, r)[0] == 1 for r in sparse)


def test_table6_pyramid_dilations():
    m = {**model_settings("ffhq1024", "paper"), "dilations": "pyramid", "min_heads": 8}
    got = {r: arch.dilations(m, r) for r in arch.levels(m) if r > 4}
    expected = [1, 2, 4, 8, 16, 32, 64, 128]
    assert got == {8 * 2 ** i: expected[: i + 1] for i in range(8)}
    assert arch.problems(m) == []


def test_progressive_and_local_partitions():
    m = model_settings("prog_di4", "paper")
    assert arch.dilations(m, 256) == [1, 3, 10, 32]
    assert arch.dilations(m, 64) == [1, 2, 4, 8]
    assert arch.dilations(m, 8) == [1, 1, 1, 1]
    assert arch.dilations(model_settings("na", "paper"), 256) == [1, 1]


def test_uneven_partitions_give_tail_heads_the_remainder():
    m = smoke_model("church_p6")  # 8 heads, 6 partitions
    side = m["resolution"]
    assert arch.heads(m, side) == 8 and len(arch.dilations(m, side)) == 6
    attn = build_generator(m).attention_layers()[f"{side}.0"]
    assert attn.head_splits == [1, 1, 1, 1, 2, 2]
    assert [t.shape[0] for t in attn.rpb] == [1, 1, 1, 1, 2, 2]


def test_every_variant_is_valid_in_both_presets():
    for preset in ("paper", "smoke"):
        for v in VARIANTS:
            assert arch.problems(model_settings(v, preset)) == [], (preset, v)


def test_problems_name_key_and_level():
    m = model_settings("stylenat", "paper")
    (msg,) = arch.problems({**m, "partitions": 6})
    assert "model.partitions" in msg and "level 256" in msg and "4 heads" in msg
    assert "model.kernel_size" in arch.problems({**m, "kernel_size": 9})[0]
    assert "model.kernel_size" in arch.problems({**m, "kernel_size": 6})[0]
    assert "model.resolution" in arch.problems({**m, "resolution": 96})[0]
    assert "discriminator" in arch.problems({**m, "resolution": 8})[0]
    assert arch.generator_problems({**m, "resolution": 8}) == []
    odd = arch.problems({**m, "attention": "swin", "head_dim": 128, "min_heads": 3})
    assert any("StyleSwin" in p and "level 256" in p for p in odd)
    assert "model.window_size" in arch.problems({**m, "attention": "swin", "window_size": 6})[0]
    with pytest.raises(ValueError, match=r"model\.partitions"):
        build_generator({**smoke_model("stylenat"), "partitions": 9})


# -- parameter counts (Table 1, README); built on the meta device, no forward --------------------

@pytest.mark.parametrize(("variant", "count"), [
    ("stylenat", 48_921_000),   # FFHQ-256 StyleNAT; Table 1: 48.92M
    ("styleswin", 48_929_512),  # StyleSwin baseline at 256; Table 1: 48.93M
    ("ffhq1024", 49_452_934),   # FFHQ-1024 StyleNAT; 49.45M
])
def test_generator_parameter_count(variant, count):
    """Exact integers: any added, dropped or resized tensor changes the count."""
    assert n_params(meta_generator(model_settings(variant, "paper"))) == count


def test_styleswin_has_its_larger_window_tables():
    """The only size difference: (2*8-1)^2 window tables vs (2*7-1)^2 NA tables at 8x8 and up."""
    nat = n_params(meta_generator(model_settings("stylenat", "paper")))
    swin = n_params(meta_generator(model_settings("styleswin", "paper")))
    heads = sum(arch.heads(model_settings("stylenat", "paper"), r) for r in (8, 16, 32, 64, 128,
                                                                               256))
    assert swin - nat == 2 * heads * (15 ** 2 - 13 ** 2)


# -- generator at the smoke presets -----------------------------------------------------------

@pytest.mark.parametrize("variant", VARIANTS)
def test_generator_forward_shape(variant):
    m = smoke_model(variant)
    torch.manual_seed(0)
    g = build_generator(m).eval()
    with torch.no_grad():
        out = g(torch.randn(2, m["style_dim"]))
    r = m["resolution"]
    assert out.shape == (2, 3, r, r) and torch.isfinite(out).all()
    assert out.std() > 0
    kind = SwinSplitAttention if m["attention"] == "swin" else HydraNeighborhoodAttention
    layers = g.attention_layers()
    assert list(layers) == [f"{s}.{b}" for s in arch.levels(m) for b in (0, 1)]
    assert all(isinstance(a, kind) for a in layers.values())


def test_gradients_reach_every_generator_parameter():
    m = smoke_model("stylenat")
    torch.manual_seed(0)
    g = build_generator(m)
    g(torch.randn(2, m["style_dim"])).square().mean().backward()
    missing = [n for n, p in g.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert missing == []


def test_generator_init_follows_official():
    g = build_generator(smoke_model("stylenat"))
    fc1 = g.levels[1].blocks[0].mlp.fc1
    assert fc1.weight.std().item() == pytest.approx(0.02, rel=0.1)
    assert fc1.bias.abs().sum() == 0
    conv = g.to_rgbs[0].conv.weight  # xavier normal, gain 0.02: std = 0.02 * sqrt(2 / (C + 3))
    assert conv.std().item() == pytest.approx(0.02 * math.sqrt(2 / (32 + 3)), rel=0.4)
    assert all(lvl.upsample.alpha.item() == 0 for lvl in g.levels[:-1])
    mapping_weight = g.style[1].weight  # EqualLinear: N(0, 1) / lr_mul, untouched by the init
    assert mapping_weight.std().item() == pytest.approx(1 / 0.01, rel=0.2)


# -- layers ----------------------------------------------------------------------------------

def test_adain_sets_token_statistics_from_style():
    torch.manual_seed(0)
    norm = AdaIN(8, 16)
    x, w = torch.randn(3, 5, 6, 8) * 4 + 2, torch.randn(3, 16)
    gamma, beta = norm.style(w).chunk(2, dim=1)
    var, mean = torch.var_mean(norm(x, w), dim=(1, 2), correction=0)
    torch.testing.assert_close(mean, beta, atol=1e-5, rtol=0)
    torch.testing.assert_close(var.sqrt(), gamma.abs(), atol=1e-3, rtol=1e-3)


def test_sinusoidal_grid_positions_start_at_one_columns_first():
    grid = sinusoidal_grid(4, 6, 16)  # 8 channels per axis: 4 sin, 4 cos
    cols, rows = torch.arange(1, 7.0), torch.arange(1, 5.0)
    torch.testing.assert_close(grid[0, :, 0], cols.sin())          # frequency 1
    torch.testing.assert_close(grid[:, 0, 8], rows.sin())
    torch.testing.assert_close(grid[2, :, 4], cols.cos())
    torch.testing.assert_close(grid[0, :, 3], (cols * 1e-4).sin())  # 10000^(-3/3)


def test_blur_upsample_keeps_constants_away_from_the_border():
    up = BlurUpsample()(torch.full((1, 3, 6, 6), 2.0))
    assert up.shape == (1, 3, 12, 12)
    torch.testing.assert_close(up[..., 2:-2, 2:-2], torch.full((1, 3, 8, 8), 2.0))


def test_unit_range_round_trip():
    x = torch.rand(2, 3, 4, 4)
    torch.testing.assert_close(to_unit_range(from_unit_range(x)), x)
    assert from_unit_range(torch.tensor([0.485, 0.456, 0.406]).view(3, 1, 1)).abs().max() < 1e-6
    assert to_unit_range(torch.full((3, 1, 1), 10.0)).max() == 1


# -- discriminator ---------------------------------------------------------------------------

def test_haar_round_trip_is_exact():
    x = torch.randint(-50, 50, (2, 3, 8, 16)).float()
    torch.testing.assert_close(haar_iwt(haar_dwt(x)), x, atol=0, rtol=0)
    y = torch.randint(-50, 50, (2, 12, 4, 8)).float()
    torch.testing.assert_close(haar_dwt(haar_iwt(y)), y, atol=0, rtol=0)


def test_haar_matches_the_official_filter_bank():
    """Sub-bands = upfirdn2d(x, k, down=2) with StyleSwin's 2x2 Haar kernels (LL, LH, HL, HH)."""
    lo, hi = torch.tensor([1.0, 1.0]) / 2 ** 0.5, torch.tensor([-1.0, 1.0]) / 2 ** 0.5
    kernels = [torch.outer(a, b) for a, b in ((lo, lo), (hi, lo), (lo, hi), (hi, hi))]
    x = torch.randn(2, 3, 8, 8)
    ref = torch.cat([upfirdn2d(x, k, down=2) for k in kernels], dim=1)
    torch.testing.assert_close(haar_dwt(x), ref)
    y = torch.randn(2, 12, 4, 4)  # inverse: zero-insert x2 with the (LL, -LH, -HL, HH) kernels
    signs = (1, -1, -1, 1)
    ref = sum(s * upfirdn2d(band, k, up=2, pad=(1, 0))
              for s, band, k in zip(signs, y.chunk(4, dim=1), kernels, strict=True))
    torch.testing.assert_close(haar_iwt(y), ref)


def test_minibatch_stddev_groups():
    x = torch.randn(8, 5, 4, 4)
    out = minibatch_stddev(x)
    assert out.shape == (8, 6, 4, 4)
    groups = x.view(4, 2, 5, 4, 4)  # sample n belongs to group n mod 2
    expected = (groups.var(0, correction=0) + 1e-8).sqrt().mean(dim=(1, 2, 3))
    torch.testing.assert_close(out[:, 5, 0, 0], expected.repeat(4))
    with pytest.raises(ValueError, match="multiple"):
        minibatch_stddev(torch.randn(6, 5, 4, 4))


@pytest.mark.parametrize("variant", ["stylenat", "ffhq1024"])
def test_discriminator_shape_and_spectral_norm(variant):
    m = smoke_model(variant)
    torch.manual_seed(0)
    d = build_discriminator(m)
    r = m["resolution"]
    out = d(torch.randn(4, 3, r, r))
    assert out.shape == (4, 1) and torch.isfinite(out).all()
    layers = [mod for mod in d.modules() if isinstance(mod, nn.Conv2d | nn.Linear)]
    blocks = int(math.log2(r)) - 3  # ConvBlocks from side r/2 down to 4: 2 convs + 1 FromRGB
    assert len(layers) == 3 * blocks + 1 + 1 + 2  # + last FromRGB, final conv, 2 linears
    assert all(parametrize.is_parametrized(mod, "weight")
               and type(mod.parametrizations.weight[0]).__name__ == "_SpectralNorm"
               for mod in layers)


def test_paper_discriminator_widths():
    with torch.device("meta"):
        d = build_discriminator(model_settings("stylenat", "paper"))
    widths = [block.conv2[1].out_channels for block in d.convs]
    assert [d.from_rgbs[0].conv[0].out_channels, *widths] == [128, 512, 512, 512, 512, 512]
    assert d.final_linear[0].in_features == 512 * 16


def test_position_table_in_float32_as_the_official_code() -> None:
    """float64: an independent numpy computation (frequencies 10000^(-i/(half-1)), positions
    from 1, sin then cos). float32: the official embedding's recipe, every op in torch float32
    (fairseq-style SinusoidalPositionalEmbedding). The two differ by rounding only."""
    import math

    import numpy as np

    from sparsegen.models.stylenat.layers import sinusoidal_code

    half = 64
    freqs = np.exp(np.arange(half) * (-math.log(10000) / (half - 1)))
    angles = np.arange(1, 257)[:, None] * freqs[None, :]
    expected64 = np.concatenate([np.sin(angles), np.cos(angles)], 1).astype(np.float32)
    np.testing.assert_allclose(sinusoidal_code(256, 2 * half, "float64").numpy(), expected64,
                               rtol=0, atol=1e-7)
    emb = torch.exp(torch.arange(half, dtype=torch.float) * -(math.log(10000) / (half - 1)))
    emb = torch.arange(1, 257, dtype=torch.float).unsqueeze(1) * emb.unsqueeze(0)
    expected32 = torch.cat([torch.sin(emb), torch.cos(emb)], dim=1)
    assert torch.equal(sinusoidal_code(256, 2 * half, "float32"), expected32)
    gap = (sinusoidal_code(256, 128, "float32") - sinusoidal_code(256, 128, "float64")).abs()
    assert 1e-6 < gap.max() < 1e-4
