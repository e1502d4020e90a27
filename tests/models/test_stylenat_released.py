"""StyleNAT released-weights converter (sparsegen.models.stylenat.released).

The official legacy layout is written out here from the official module structure
(official_repos.md §4.2, official_checkpoints.md "StyleNAT"), independently of the converter's
name table: a synthetic `g_ema` with random values is converted, and our generator's pieces and
images are compared with a plain-torch reading of the official tensors under the official
conventions (EqualLinear lr scaling, split-head neighbourhood attention with NATTEN <= 0.17's
window and bias-index rules, the 4x4 level's flipped index, channels-first constant, blur skip
upsampling, the float32 sinusoidal table)."""

from __future__ import annotations

import copy
import functools
import math
import re
from argparse import Namespace
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.nn.functional as F

from sparsegen import weights
from sparsegen.config import load_params, resolve
from sparsegen.models.stylenat import released
from sparsegen.models.stylenat.generator import build_generator
from sparsegen.models.stylenat.task import load_generator_checkpoint
from sparsegen.provenance import sha256_file
from sparsegen.released import ConversionError, convert_state

# conf/runs/ffhq_256.yaml of the official repository: one entry per level 4, 8, ..., 1024.
OFFICIAL_KERNELS = [[3], [7], [7], [7], [7], [7], [7], [7], [7]]
OFFICIAL_DILATIONS = [[1], [1], [1, 2], [1, 4], [1, 8], [1, 16], [1, 32], [1, 64], [1, 128]]
CPU = torch.device("cpu")


@dataclass(frozen=True)
class Official:
    """The official generator's arguments its state-dict layout depends on. `base_width` and
    `head_dim` are constants of the official code (512 and 32); the small test model shrinks
    them."""

    size: int
    style_dim: int = 512
    n_mlp: int = 8
    lr_mlp: float = 0.01
    channel_multiplier: int = 2
    min_heads: int = 4
    mlp_ratio: int = 4
    base_width: int = 512
    head_dim: int = 32
    kernels: list[list[int]] = field(default_factory=lambda: OFFICIAL_KERNELS)
    dilations: list[list[int]] = field(default_factory=lambda: OFFICIAL_DILATIONS)

    @property
    def sides(self) -> list[int]:
        return [2 ** i for i in range(2, int(math.log2(self.size)) + 1)]

    def width(self, level: int) -> int:
        cm = self.channel_multiplier
        return ([self.base_width] * 4 + [256 * cm, 128 * cm, 64 * cm, 32 * cm, 16 * cm])[level]

    def heads(self, level: int) -> int:
        return max(self.width(level) // self.head_dim, self.min_heads)

    def halves(self, level: int) -> list[int]:
        """Dilations of the two legacy halves (one listed dilation serves both)."""
        d = self.dilations[level]
        return d * 2 if len(d) == 1 else d

    def args(self) -> Namespace:
        """The training `args` as the checkpoint pickles them (argparse form)."""
        return Namespace(size=self.size, style_dim=self.style_dim, n_mlp=self.n_mlp,
                         lr_mlp=self.lr_mlp, channel_multiplier=self.channel_multiplier,
                         min_heads=self.min_heads, mlp_ratio=self.mlp_ratio, block_type="nat",
                         qkv_bias=True, qk_scale=None, kernels=self.kernels,
                         dilations=self.dilations, batch=8, iter=1_000_000)


SMALL = Official(size=32, style_dim=32, n_mlp=2, base_width=32, head_dim=4)


def official_layout(cfg: Official) -> dict[str, tuple[tuple[int, ...], str]]:
    """name -> (shape, kind) of the official legacy g_ema state dict; kind is `param` or the
    buffer's kind (`index`, `kernel`, `placeholder`)."""
    sd, out = cfg.style_dim, {}
    for i in range(1, cfg.n_mlp + 1):              # style.0 is PixelNorm
        out[f"style.{i}.weight"] = ((sd, sd), "param")
        out[f"style.{i}.bias"] = ((sd,), "param")
    out["input.input"] = ((1, cfg.width(0), 4, 4), "param")   # ConstantInput
    last = len(cfg.sides) - 1
    for lv, side in enumerate(cfg.sides):
        c, h = cfg.width(lv), cfg.heads(lv)
        for b in range(2):                          # depth 2 per level
            p = f"layers.{lv}.blocks.{b}."
            for norm in ("norm1", "norm2"):         # AdaptiveInstanceNorm: EqualLinear w -> 2C
                out[p + f"{norm}.style.weight"] = ((2 * c, sd), "param")
                out[p + f"{norm}.style.bias"] = ((2 * c,), "param")
            out[p + "attn.qkv.weight"] = ((3 * c, c), "param")
            out[p + "attn.qkv.bias"] = ((3 * c,), "param")
            out[p + "attn.proj.weight"] = ((c, c), "param")
            out[p + "attn.proj.bias"] = ((c,), "param")
            if side == 4:                           # MHSARPBLayer: kernel = the 4x4 map
                out[p + "attn.rpb"] = ((h, 7, 7), "param")
                out[p + "attn.relative_position_index"] = ((16, 16), "index")
            else:                                   # NeighborhoodAttentionSplitHead
                k = cfg.kernels[lv][0]
                out[p + "attn.rpb0"] = ((h // 2, 2 * k - 1, 2 * k - 1), "param")
                out[p + "attn.rpb1"] = ((h // 2, 2 * k - 1, 2 * k - 1), "param")
            hidden = int(c * cfg.mlp_ratio)
            out[p + "mlp.fc1.weight"] = ((hidden, c), "param")
            out[p + "mlp.fc1.bias"] = ((hidden,), "param")
            out[p + "mlp.fc2.weight"] = ((c, hidden), "param")
            out[p + "mlp.fc2.bias"] = ((c,), "param")
        c_out = c if lv == last else cfg.width(lv + 1)
        if lv < last:                               # BilinearUpsample
            u = f"layers.{lv}.upsample."
            out[u + "norm.weight"] = ((c,), "param")
            out[u + "norm.bias"] = ((c,), "param")
            out[u + "reduction.weight"] = ((c_out, c), "param")
            out[u + "alpha"] = ((1,), "param")
            out[u + "sin_pos_embed._float_tensor"] = ((1,), "placeholder")
        out[f"to_rgbs.{lv}.conv.weight"] = ((3, c_out, 1, 1), "param")
        out[f"to_rgbs.{lv}.conv.bias"] = ((3,), "param")
        out[f"to_rgbs.{lv}.bias"] = ((1, 3, 1, 1), "param")
        if lv < last:                               # ToRGB's skip Upsample([1, 3, 3, 1])
            out[f"to_rgbs.{lv}.upsample.kernel"] = ((4, 4), "kernel")
    return out


def official_index(side: int) -> torch.Tensor:
    """MHSARPB's relative_position_index: Swin's (query - key) index, then flipped up-down and
    left-right (to NATTEN's convention)."""
    grid = torch.meshgrid(torch.arange(side), torch.arange(side), indexing="ij")
    yx = torch.stack(grid).flatten(1)                         # [2, N]
    rel = yx[:, :, None] - yx[:, None, :] + side - 1          # [2, query, key]
    return torch.fliplr(torch.flipud(rel[0] * (2 * side - 1) + rel[1]))


def skip_kernel() -> torch.Tensor:
    taps = torch.tensor([1.0, 3.0, 3.0, 1.0])
    k = taps[:, None] * taps[None, :]
    return k / k.sum() * 4                                    # x2 upsampling gain


def synthetic(cfg: Official, seed: int = 0) -> dict[str, torch.Tensor]:
    """Random values in the official layout, scaled so that every piece matters."""
    g = torch.Generator().manual_seed(seed)
    out = {}
    for name, (shape, kind) in official_layout(cfg).items():
        if kind == "index":
            out[name] = official_index(4)
        elif kind == "kernel":
            out[name] = skip_kernel()
        elif kind == "placeholder":
            out[name] = torch.randn(1, generator=g) * 1e3     # uninitialised memory officially
        elif name.startswith("style.") and name.endswith("weight"):
            out[name] = torch.randn(shape, generator=g) / cfg.lr_mlp   # stored / lr_mul
        elif name.endswith(".style.weight") or name == "input.input":
            out[name] = torch.randn(shape, generator=g)
        elif "rpb" in name:
            out[name] = torch.randn(shape, generator=g) * 0.5
        elif name.endswith("norm.weight"):
            out[name] = 1 + 0.2 * torch.randn(shape, generator=g)
        elif name.endswith("alpha"):
            out[name] = torch.full(shape, 0.7)
        else:
            out[name] = torch.randn(shape, generator=g) * 0.15
    return out


# --- the official computation, in plain torch -----------------------------------------------


def equal_linear(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor, lr_mul: float = 1.0,
                 act: bool = False) -> torch.Tensor:
    """rosinality EqualLinear: weight * lr_mul / sqrt(fan_in), bias * lr_mul; fused leaky ReLU
    (slope 0.2, gain sqrt(2)) after adding the bias when `act`."""
    y = F.linear(x, w * (lr_mul / math.sqrt(w.shape[1]))) + b * lr_mul
    return F.leaky_relu(y, 0.2) * math.sqrt(2) if act else y


def official_mapping(sd: dict[str, torch.Tensor], cfg: Official, z: torch.Tensor
                     ) -> torch.Tensor:
    x = z * torch.rsqrt(z.pow(2).mean(1, keepdim=True) + 1e-8)   # PixelNorm
    for i in range(1, cfg.n_mlp + 1):
        x = equal_linear(x, sd[f"style.{i}.weight"], sd[f"style.{i}.bias"], cfg.lr_mlp, True)
    return x


def natten_axis(length: int, k: int, d: int) -> tuple[torch.Tensor, torch.Tensor]:
    """NATTEN <= 0.17 on one axis (natten2dqkrpb / natten2dav): each position's k key
    positions (window start + t * d) and bias-table rows (bias start + t)."""
    n = k // 2
    keys, rows = [], []
    for i in range(length):
        if d <= 1:
            start = max(i - n, 0) + (i + n >= length) * (length - i - n - 1)
            pb = n + (i < n) * (n - i) + (i + n >= length) * (length - i - 1 - n)
        elif i - n * d < 0:
            start, pb = i % d, k - 1 - i // d
        elif i + n * d >= length:
            r, a = i % d, (length // d) * d
            start = length - (length - a) + r - 2 * n * d if r < length - a else a + r - k * d
            pb = (length - i - 1) // d
        else:
            start, pb = i - n * d, n
        keys.append([start + t * d for t in range(k)])
        rows.append([pb + t for t in range(k)])
    return torch.tensor(keys), torch.tensor(rows)


def legacy_half(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, rpb: torch.Tensor,
                kernel: int, dilation: int) -> torch.Tensor:
    """One half of NeighborhoodAttentionSplitHead: q (pre-scaled), k, v [B, h, H, W, D]."""
    b, h, height, width, dim = q.shape
    r_keys, r_bias = natten_axis(height, kernel, dilation)
    c_keys, c_bias = natten_axis(width, kernel, dilation)
    keys = (r_keys[:, None, :, None] * width + c_keys[None, :, None, :]).reshape(
        height * width, -1)
    bias = (r_bias[:, None, :, None] * (2 * kernel - 1) + c_bias[None, :, None, :]).reshape(
        height * width, -1)
    kf, vf = (t.reshape(b, h, height * width, dim)[:, :, keys] for t in (k, v))
    logits = torch.einsum("bhnd,bhnkd->bhnk", q.reshape(b, h, -1, dim), kf)
    attn = (logits + rpb.flatten(1)[:, bias].to(logits)).softmax(-1)
    return torch.einsum("bhnk,bhnkd->bhnd", attn, vf).reshape(b, h, height, width, dim)


def official_attention(sd: dict[str, torch.Tensor], cfg: Official, lv: int, b: int,
                       x: torch.Tensor) -> torch.Tensor:
    """The attention of block b at level lv on x [B, H, W, C] (MHSARPB at 4x4, else the two
    legacy halves)."""
    p = f"layers.{lv}.blocks.{b}.attn."
    bsz, height, width, c = x.shape
    heads = cfg.heads(lv)
    hd = c // heads
    qkv = F.linear(x, sd[p + "qkv.weight"], sd[p + "qkv.bias"])
    q, k, v = qkv.reshape(bsz, height, width, 3, heads, hd).permute(3, 0, 4, 1, 2, 5)
    q = q * hd ** -0.5
    if height == 4:
        n = height * width
        index = sd[p + "relative_position_index"]
        bias = sd[p + "rpb"].permute(1, 2, 0).reshape(-1, heads)[index.reshape(-1)]
        bias = bias.reshape(n, n, heads).permute(2, 0, 1).to(x)
        attn = (q.reshape(bsz, heads, n, hd) @ k.reshape(bsz, heads, n, hd).transpose(-1, -2)
                + bias).softmax(-1)
        out = (attn @ v.reshape(bsz, heads, n, hd)).reshape(bsz, heads, height, width, hd)
    else:
        kernel, halves = cfg.kernels[lv][0], cfg.halves(lv)
        out = torch.cat([legacy_half(qh, kh, vh, sd[p + f"rpb{i}"], kernel, halves[i])
                         for i, (qh, kh, vh) in enumerate(zip(q.chunk(2, 1), k.chunk(2, 1),
                                                              v.chunk(2, 1), strict=True))], 1)
    out = out.permute(0, 2, 3, 1, 4).reshape(bsz, height, width, c)
    return F.linear(out, sd[p + "proj.weight"], sd[p + "proj.bias"])


def official_adain(sd: dict[str, torch.Tensor], prefix: str, x: torch.Tensor, w: torch.Tensor
                   ) -> torch.Tensor:
    """InstanceNorm1d over the tokens of each channel, then gamma * x + beta from w."""
    gamma, beta = equal_linear(w, sd[prefix + ".style.weight"], sd[prefix + ".style.bias"]
                               ).chunk(2, 1)
    tokens = x.flatten(1, 2)                                   # [B, N, C]
    mean = tokens.mean(1, keepdim=True)
    var = tokens.var(1, keepdim=True, unbiased=False)
    normed = (tokens - mean) / torch.sqrt(var + 1e-5)
    return (gamma[:, None] * normed + beta[:, None]).reshape(x.shape)


def spe_grid(side: int, channels: int) -> torch.Tensor:
    """SPE2d [channels, side, side], float32: fairseq table of embedding_dim = channels / 2
    (positions from 1), x code in the first half of the channels, y in the second."""
    half = channels // 4
    freq = torch.exp(torch.arange(half, dtype=torch.float32) * -(math.log(10000) / (half - 1)))
    ang = torch.arange(1, side + 1, dtype=torch.float32)[:, None] * freq[None]
    code = torch.cat([ang.sin(), ang.cos()], 1).T             # [channels / 2, side]
    x = code[:, None, :].expand(-1, side, side)
    y = code[:, :, None].expand(-1, side, side)
    return torch.cat([x, y], 0)


def official_upsample(sd: dict[str, torch.Tensor], lv: int, x: torch.Tensor) -> torch.Tensor:
    u = f"layers.{lv}.upsample."
    x = F.interpolate(x.permute(0, 3, 1, 2), scale_factor=2, mode="bilinear").permute(0, 2, 3, 1)
    x = F.layer_norm(x, x.shape[-1:], sd[u + "norm.weight"], sd[u + "norm.bias"], 1e-5)
    x = F.linear(x, sd[u + "reduction.weight"])
    grid = spe_grid(x.shape[1], x.shape[-1]).permute(1, 2, 0).to(x)
    return x + grid * sd[u + "alpha"]


def blur_up(img: torch.Tensor) -> torch.Tensor:
    """upfirdn2d(up=2, pad=(2, 1)) with the [1, 3, 3, 1] kernel x 4: zero insertion, padding,
    per-channel convolution (the kernel is symmetric)."""
    b, c, h, w = img.shape
    up = img.new_zeros(b, c, 2 * h, 2 * w)
    up[:, :, ::2, ::2] = img
    up = F.pad(up, (2, 1, 2, 1))
    return F.conv2d(up, skip_kernel().to(img).expand(c, 1, 4, 4), groups=c)


def official_to_rgb(sd: dict[str, torch.Tensor], lv: int, x: torch.Tensor,
                    skip: torch.Tensor | None, upsample: bool) -> torch.Tensor:
    out = F.conv2d(x.permute(0, 3, 1, 2), sd[f"to_rgbs.{lv}.conv.weight"],
                   sd[f"to_rgbs.{lv}.conv.bias"]) + sd[f"to_rgbs.{lv}.bias"]
    if skip is None:
        return out
    return out + (blur_up(skip) if upsample else skip)


def official_generator(sd: dict[str, torch.Tensor], cfg: Official, z: torch.Tensor
                       ) -> torch.Tensor:
    w = official_mapping(sd, cfg, z)
    x = sd["input.input"].expand(z.shape[0], -1, -1, -1).permute(0, 2, 3, 1)  # [B, 4, 4, C]
    image, last = None, len(cfg.sides) - 1
    for lv in range(len(cfg.sides)):
        for b in range(2):
            p = f"layers.{lv}.blocks.{b}"
            x = x + official_attention(sd, cfg, lv, b, official_adain(sd, p + ".norm1", x, w))
            h = official_adain(sd, p + ".norm2", x, w)
            h = F.linear(F.gelu(F.linear(h, sd[p + ".mlp.fc1.weight"], sd[p + ".mlp.fc1.bias"])),
                         sd[p + ".mlp.fc2.weight"], sd[p + ".mlp.fc2.bias"])
            x = x + h
        if lv < last:
            x = official_upsample(sd, lv, x)
        image = official_to_rgb(sd, lv, x, image, upsample=lv < last)
    return image


# --- fixtures -------------------------------------------------------------------------------


@functools.cache
def _params(preset: str) -> dict[str, Any]:
    return load_params(overrides={"preset": preset})


def paper_model(variant: str = "stylenat") -> dict[str, Any]:
    return copy.deepcopy(resolve(_params("paper"), "stylenat", variant, check=False)["model"])


def small_model() -> dict[str, Any]:
    """Our settings matching SMALL (the FFHQ-256 block at a small size, official options)."""
    return {**paper_model(), "resolution": SMALL.size, "style_dim": SMALL.style_dim,
            "n_mlp": SMALL.n_mlp, "max_channels": SMALL.base_width, "head_dim": SMALL.head_dim,
            "backend": "torch", "position_precision": "float32"}


def convert_into(official: dict[str, torch.Tensor], model: dict[str, Any]) -> torch.nn.Module:
    params, _ = released.drop_buffers(official, model, "synthetic")
    generator = build_generator(model)
    state = convert_state(params, released.name_table(model), generator.state_dict(),
                          "synthetic")
    generator.load_state_dict(state, strict=True)
    return generator.eval()


@pytest.fixture(scope="module")
def converted() -> tuple[dict[str, torch.Tensor], torch.nn.Module]:
    """The synthetic official state dict (float64) and our generator loaded from it (float64)."""
    official = synthetic(SMALL)
    generator = convert_into(official, small_model()).double()
    return {k: (v.double() if v.is_floating_point() else v) for k, v in official.items()}, generator


# --- the layout -----------------------------------------------------------------------------


def test_ffhq256_layout_converts_shape_for_shape_with_the_official_parameter_count() -> None:
    """At the real FFHQ-256 size (meta tensors, nothing allocated): the official layout's
    parameters number 48,921,000 = mapping 2,101,248 + synthesis 46,819,752 and convert
    one-to-one onto our generator; the buffers are the ones the converter expects."""
    cfg, model = Official(size=256), paper_model()
    layout = official_layout(cfg)
    params = {n: s for n, (s, kind) in layout.items() if kind == "param"}
    count = {n: math.prod(s) for n, s in params.items()}
    assert sum(count.values()) == 48_921_000
    assert sum(v for n, v in count.items() if n.startswith("style.")) == 2_101_248
    assert sum(v for n, v in count.items() if not n.startswith("style.")) == 46_819_752
    assert check_args_clean(cfg, model)
    with torch.device("meta"):
        ours = build_generator(model).state_dict()
        official = {n: torch.empty(s) for n, s in params.items()}
    state = convert_state(official, released.name_table(model), ours, "layout")
    assert set(state) == set(ours) and len(state) == len(params) == 256
    buffers = {n: s for n, (s, kind) in layout.items() if kind != "param"}
    expected = released.official_buffers(model)
    assert {n: tuple(t.shape) for n, t in expected.items()} == buffers


def check_args_clean(cfg: Official, model: dict[str, Any]) -> bool:
    problems = released.check_args(vars(cfg.args()), model)
    assert problems == []
    return True


def test_ffhq1024_layout_converts_and_counts_the_reported_size() -> None:
    """FFHQ-1024 (our ffhq1024 variant; args as in the official config's 1024 rows): converts
    shape for shape; 49,452,934 parameters (the reported 49.45 M)."""
    cfg, model = Official(size=1024), paper_model("ffhq1024")
    layout = official_layout(cfg)
    params = {n: s for n, (s, kind) in layout.items() if kind == "param"}
    assert sum(math.prod(s) for s in params.values()) == 49_452_934
    assert check_args_clean(cfg, model)
    with torch.device("meta"):
        ours = build_generator(model).state_dict()
        official = {n: torch.empty(s) for n, s in params.items()}
    assert set(convert_state(official, released.name_table(model), ours, "layout")) == set(ours)


def test_stand_in_is_the_exact_official_layout() -> None:
    model = small_model()
    stand_in = released.stand_in(model, seed=3)
    layout = official_layout(SMALL)
    assert {n: tuple(t.shape) for n, t in stand_in.items()} == {n: s for n, (s, _) in
                                                                 layout.items()}
    assert torch.equal(stand_in["layers.0.blocks.1.attn.relative_position_index"],
                       official_index(4))


# --- the forward pass against the official computation ---------------------------------------


def test_mapping_network_matches_official(converted: tuple[dict, torch.nn.Module]) -> None:
    sd, g = converted
    z = torch.randn(3, SMALL.style_dim, dtype=torch.float64)
    torch.testing.assert_close(g.style(z), official_mapping(sd, SMALL, z), rtol=1e-12,
                               atol=1e-12)


@pytest.mark.parametrize("lv", range(4))  # 4x4 MHSA, 8x8 [1, 1], 16x16 [1, 2], 32x32 [1, 4]
def test_attention_block_matches_official(converted: tuple[dict, torch.nn.Module],
                                          lv: int) -> None:
    sd, g = converted
    side = SMALL.sides[lv]
    x = torch.randn(2, side, side, SMALL.width(lv), dtype=torch.float64)
    for b in range(2):
        ours = g.levels[lv].blocks[b].attn(x)
        torch.testing.assert_close(ours, official_attention(sd, SMALL, lv, b, x), rtol=1e-10,
                                   atol=1e-12)
    # the bias tables matter: without them the official output is another
    tables = [n for n in sd if n.startswith(f"layers.{lv}.blocks.0.attn.rpb")]
    unbiased = {**sd, **{n: torch.zeros_like(sd[n]) for n in tables}}
    assert (official_attention(unbiased, SMALL, lv, 0, x) - g.levels[lv].blocks[0].attn(x)
            ).abs().max() > 1e-3


def test_adain_upsample_and_to_rgb_match_official(converted: tuple[dict, torch.nn.Module]
                                                  ) -> None:
    sd, g = converted
    w = torch.randn(2, SMALL.style_dim, dtype=torch.float64)
    x = torch.randn(2, 8, 8, SMALL.width(1), dtype=torch.float64)
    torch.testing.assert_close(g.levels[1].blocks[0].norm2(x, w),
                               official_adain(sd, "layers.1.blocks.0.norm2", x, w))
    torch.testing.assert_close(g.levels[1].upsample(x), official_upsample(sd, 1, x),
                               rtol=1e-10, atol=1e-10)
    y = torch.randn(2, 16, 16, SMALL.width(2), dtype=torch.float64)
    skip = torch.randn(2, 3, 8, 8, dtype=torch.float64)
    torch.testing.assert_close(g.to_rgbs[1](y, skip), official_to_rgb(sd, 1, y, skip, True))
    torch.testing.assert_close(g.to_rgbs[0](y, None), official_to_rgb(sd, 0, y, None, True))
    torch.testing.assert_close(g.input.permute(0, 3, 1, 2), sd["input.input"], rtol=0, atol=0)


def test_images_match_the_official_computation(converted: tuple[dict, torch.nn.Module]
                                               ) -> None:
    sd, g = converted
    z = torch.randn(2, SMALL.style_dim, dtype=torch.float64)
    with torch.no_grad():
        ours, theirs = g(z), official_generator(sd, SMALL, z)
    assert ours.shape == (2, 3, SMALL.size, SMALL.size)
    assert theirs.std() > 0.1
    torch.testing.assert_close(ours, theirs, rtol=1e-9, atol=1e-9)


def test_stand_in_round_trip_is_bitwise() -> None:
    model = {**small_model(), "resolution": 16}
    torch.manual_seed(5)
    original = build_generator(model).eval()
    back = convert_into(released.stand_in(model, seed=5), model)
    for name, value in original.state_dict().items():
        assert torch.equal(value, back.state_dict()[name]), name
    z = torch.randn(2, model["style_dim"])
    with torch.no_grad():
        assert torch.equal(original(z), back(z))


# --- one-to-one checks ----------------------------------------------------------------------


@pytest.mark.parametrize("change, named", [
    ("extra", "layers.1.blocks.0.attn.rpb2"),
    ("missing", "to_rgbs.2.bias"),
    ("shape", "layers.2.blocks.1.attn.rpb1"),
    ("shape", "input.input"),
    ("value", "layers.0.blocks.1.attn.relative_position_index"),
    ("value", "to_rgbs.0.upsample.kernel"),
])
def test_every_official_tensor_is_used_once(change: str, named: str) -> None:
    official = synthetic(SMALL)
    if change == "extra":
        official[named] = torch.zeros(4, 13, 13)
    elif change == "missing":
        del official[named]
    elif change == "shape":
        official[named] = official[named][..., :-1]
    else:
        official[named] = official[named] + 1
    with pytest.raises(ConversionError, match=re.escape(named)):
        convert_into(official, small_model())


def test_name_table_refuses_settings_without_the_legacy_halves() -> None:
    with pytest.raises(ConversionError, match=r"model\.partitions"):
        released.name_table({**small_model(), "partitions": 4})
    with pytest.raises(ConversionError, match=r"model\.attention"):
        released.name_table({**small_model(), "attention": "swin"})


# --- training args and the file ---------------------------------------------------------------


def test_check_args_names_our_keys() -> None:
    model = paper_model()
    args = vars(Official(size=1024).args())
    problems = released.check_args(args, model)
    assert any(p.startswith("model.resolution: 256 in the settings") and "1024" in p
               for p in problems), problems
    other = {**vars(Official(size=256).args()), "style_dim": 256, "unknown_key": 1,
             "dilations": [[1], [1], [1, 2], [1, 8], [1, 8], [1, 16], [1, 32]]}
    problems = released.check_args(other, model)
    assert any(p.startswith("model.style_dim") for p in problems)
    assert any(p.startswith("model.dilations") and "level 32" in p for p in problems)
    assert len(problems) == 2, problems
    hydra = {"runs": {"size": 256, "generator": {"style_dim": 512, "n_mlp": 8,
                                                 "kernels": OFFICIAL_KERNELS,
                                                 "dilations": OFFICIAL_DILATIONS}}}
    assert released.check_args(hydra, model) == []
    assert released.check_args({}, model) == []


def test_read_official(tmp_path: Path) -> None:
    path = tmp_path / "ckpt.pt"
    official = synthetic(SMALL)
    torch.save({"g": official, "g_ema": official, "args": SMALL.args()}, path)
    state, args = released.read_official(path)
    assert set(state) == set(official) and args["size"] == SMALL.size
    torch.save({"g": official, "d": {}}, path)
    with pytest.raises(ConversionError, match=r"no g_ema state dict \(keys found: g, d\)"):
        released.read_official(path)
    path.write_bytes(b"not a checkpoint")
    with pytest.raises(ConversionError, match=r"ckpt\.pt: cannot read"):
        released.read_official(path)
    assert released.training_step("FFHQ256_940k_flip.pt") == 940_000
    assert released.training_step("FFHQ1024_700k.pt") == 700_000
    assert released.training_step("weights.pt") is None


TEST_WEIGHTS = "stylenat_released_test"


@pytest.fixture
def manifest(monkeypatch: pytest.MonkeyPatch) -> weights.WeightSpec:
    spec = weights.WeightSpec(name=TEST_WEIGHTS, filename="FFHQ256_940k_flip.pt",
                              url="https://example.invalid/FFHQ256_940k_flip.pt",
                              description="test stand-in for the released FFHQ-256 file",
                              licence="test", used_by=("test",))
    monkeypatch.setitem(weights.MANIFEST, TEST_WEIGHTS, spec)
    return spec


def released_settings(preset: str, tmp_path: Path) -> dict[str, Any]:
    s = copy.deepcopy(resolve(_params(preset), "stylenat", "stylenat"))
    s.update(released=[TEST_WEIGHTS], weights="auto", device="cpu", variant="released_test")
    s["paths"] = {**s["paths"], "weights": str(tmp_path / "weights")}
    s["model"]["backend"] = "torch"
    return s


def test_convert_stand_in_end_to_end(tmp_path: Path, manifest: weights.WeightSpec) -> None:
    settings = released_settings("smoke", tmp_path)
    out = tmp_path / "converted.pt"
    released.convert(settings, out, CPU)
    generator, ckpt = load_generator_checkpoint(out, CPU)
    facts = ckpt["extra"]["released"]
    assert facts["stand_in"] and facts["step"] is None
    assert facts["sources"][TEST_WEIGHTS] == {"kind": "stand-in", "sha256": "stand-in",
                                              "url": manifest.url}
    torch.manual_seed(settings["seed"])
    reference = build_generator(settings["model"]).eval()
    z = torch.randn(2, settings["model"]["style_dim"])
    with torch.no_grad():
        assert torch.equal(generator(z), reference(z))


def test_convert_reads_the_official_file(tmp_path: Path, manifest: weights.WeightSpec) -> None:
    settings = released_settings("paper", tmp_path)
    settings["model"] = small_model()
    official = synthetic(SMALL, seed=7)
    path = Path(settings["paths"]["weights"]) / manifest.filename
    path.parent.mkdir(parents=True)
    torch.save({"g": synthetic(SMALL, seed=8), "g_ema": official, "args": SMALL.args()}, path)
    out = tmp_path / "converted.pt"
    released.convert(settings, out, CPU)
    generator, ckpt = load_generator_checkpoint(out, CPU)
    facts = ckpt["extra"]["released"]
    assert not facts["stand_in"] and facts["step"] == 940_000
    assert facts["sources"][TEST_WEIGHTS] == {"kind": "file", "sha256": sha256_file(path),
                                              "url": manifest.url}
    z = torch.randn(2, SMALL.style_dim)
    with torch.no_grad():
        torch.testing.assert_close(generator(z), official_generator(official, SMALL, z),
                                   rtol=1e-4, atol=1e-5)
    # the checkpoint's args disagree with the settings: refused, naming our key
    torch.save({"g_ema": official, "args": Official(size=64).args()}, path)
    with pytest.raises(ConversionError, match=r"model\.resolution: 32 in the settings"):
        released.convert(settings, tmp_path / "other.pt", CPU)
