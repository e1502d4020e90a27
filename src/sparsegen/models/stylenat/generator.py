"""StyleNAT generator (Sec. 3.3, Appendix A): a style-based transformer on StyleSwin's skeleton.

z -> mapping network -> w (one w for every block: no style mixing, no truncation, no noise).
A learned 4x4 constant is refined level by level (4, 8, ..., resolution); each level holds two
blocks x += Attn(AdaIN(x, w)); x += MLP(AdaIN(x, w)) and then upsamples to the next level's
width. The attention is Hydra neighbourhood attention (`attention: hydra_na`, Fig. 2) or
StyleSwin's window / shifted-window split heads (`attention: swin`, the Table 3 baseline).
Every level adds a 1x1 ToRGB output to the running image (StyleGAN2 skip generator); the image
lives in ImageNet-normalised space (`layers.to_unit_range` maps it to [0, 1]).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from sparsegen.attention.hydra import HydraNeighborhoodAttention
from sparsegen.attention.window import SwinSplitAttention
from sparsegen.models.stylenat import architecture as arch
from sparsegen.models.stylenat.layers import (
    AdaIN,
    BilinearUpsample,
    EqualLinear,
    PixelNorm,
    ToRGB,
)

BLOCKS_PER_LEVEL = 2
LINEAR_INIT_STD = 0.02   # official init: Linear trunc-normal 0.02, Conv2d xavier-normal gain 0.02
CONV_INIT_GAIN = 0.02


class MappingNetwork(nn.Sequential):
    """PixelNorm + n_mlp equalised-lr linear layers with the fused leaky ReLU (lr_mul = lr_mlp)."""

    def __init__(self, style_dim: int, n_mlp: int, lr_mlp: float) -> None:
        super().__init__(PixelNorm(), *(EqualLinear(style_dim, style_dim, lr_mul=lr_mlp,
                                                    activation=True) for _ in range(n_mlp)))


class MLP(nn.Module):
    """Linear -> GELU -> Linear, hidden width mlp_ratio * dim."""

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class StyleBlock(nn.Module):
    """x += Attn(AdaIN_1(x, w)); x += MLP(AdaIN_2(x, w)), x [B, H, W, C]."""

    def __init__(self, dim: int, style_dim: int, mlp_ratio: float, attn: nn.Module) -> None:
        super().__init__()
        self.norm1 = AdaIN(dim, style_dim)
        self.attn = attn
        self.norm2 = AdaIN(dim, style_dim)
        self.mlp = MLP(dim, int(dim * mlp_ratio))

    def forward(self, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x, w))
        return x + self.mlp(self.norm2(x, w))


def build_attention(model: Mapping[str, Any], res: int) -> nn.Module:
    """The attention of one block at side `res` (see architecture.py for the per-level layout)."""
    dim, heads = arch.channels(model, res), arch.heads(model, res)
    if model["attention"] == "swin":
        return SwinSplitAttention(dim, heads, arch.window_size(model, res), qkv_bias=True)
    return HydraNeighborhoodAttention(dim, heads, arch.kernel_sizes(model, res),
                                      arch.dilations(model, res), qkv_bias=True,
                                      backend=model["backend"])


class Level(nn.Module):
    """Two style blocks at one side, then (except at the last level) BilinearUpsample."""

    def __init__(self, model: Mapping[str, Any], res: int) -> None:
        super().__init__()
        dim = arch.channels(model, res)
        self.blocks = nn.ModuleList(
            StyleBlock(dim, model["style_dim"], model["mlp_ratio"], build_attention(model, res))
            for _ in range(BLOCKS_PER_LEVEL))
        last = res == model["resolution"]
        self.upsample = None if last else BilinearUpsample(
            res, dim, arch.channels(model, 2 * res), model.get("position_precision", "float64"))

    def forward(self, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        for block in self.blocks:
            x = block(x, w)
        return x if self.upsample is None else self.upsample(x)


class Generator(nn.Module):
    """z [B, style_dim] -> images [B, 3, R, R] in ImageNet-normalised space."""

    def __init__(self, model: Mapping[str, Any]) -> None:
        super().__init__()
        problems = arch.generator_problems(model)
        if problems:
            raise ValueError("stylenat model settings: " + "; ".join(problems))
        self.resolution = model["resolution"]
        self.style_dim = model["style_dim"]
        self.style = MappingNetwork(model["style_dim"], model["n_mlp"], model["lr_mlp"])
        sides = arch.levels(model)
        self.input = nn.Parameter(torch.randn(1, arch.MHSA_SIDE, arch.MHSA_SIDE,
                                              arch.channels(model, sides[0])))
        self.levels = nn.ModuleList(Level(model, res) for res in sides)
        # ToRGB reads each level's output, i.e. after its upsampling: the running image is
        # upsampled at every ToRGB except the last (whose input stays at the final side).
        self.to_rgbs = nn.ModuleList(
            ToRGB(arch.channels(model, min(2 * res, self.resolution)),
                  upsample_skip=res < self.resolution)
            for res in sides)
        self._sides = sides
        self.apply(_init_weights)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        w = self.style(z)
        x = self.input.expand(z.shape[0], -1, -1, -1)
        image = None
        for level, to_rgb in zip(self.levels, self.to_rgbs, strict=True):
            x = level(x, w)
            image = to_rgb(x, image)
        return image

    def attention_layers(self) -> dict[str, nn.Module]:
        """"<side>.<block>" -> attention module, for attention-map figures."""
        return {f"{res}.{i}": block.attn for res, level in zip(self._sides, self.levels,
                                                               strict=True)
                for i, block in enumerate(level.blocks)}


def _init_weights(m: nn.Module) -> None:
    """Official init; EqualLinear keeps its N(0, 1) / lr_mul weights and attention tables keep
    their own (trunc-normal 0.02) init."""
    if isinstance(m, nn.Linear):
        nn.init.trunc_normal_(m.weight, std=LINEAR_INIT_STD)
        if m.bias is not None:
            nn.init.zeros_(m.bias)
    elif isinstance(m, nn.LayerNorm):
        nn.init.ones_(m.weight)
        nn.init.zeros_(m.bias)
    elif isinstance(m, nn.Conv2d):
        nn.init.xavier_normal_(m.weight, gain=CONV_INIT_GAIN)
        if m.bias is not None:
            nn.init.zeros_(m.bias)


def build_generator(model: Mapping[str, Any]) -> Generator:
    """The generator of `stylenat.model` settings (raises ValueError on impossible settings)."""
    return Generator(model)
