"""Per-layer feature transforms F_cs^l = M^l(F_c^l, F_s^l) (Eq. 2): the A2K module and the
Table 1/2 peers on the same encoder and decoder (all-to-all, AdaIN, AdaAttN)."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from sparsegen.attention.all_to_all import AllToAllAttention, dense_stats
from sparsegen.attention.all_to_key import A2KSpec, AllToKeyAttention
from sparsegen.nets.feature_stats import mean_std, mean_variance_norm

TRANSFORMS = ("a2k", "all_to_all", "adain", "adaattn")


class AdaIN(nn.Module):
    """AdaIN: sigma(F_s) * N(F_c) + mu(F_s); no parameters."""

    def forward(self, content: torch.Tensor, style: torch.Tensor) -> torch.Tensor:
        mean, std = mean_std(style)
        return std * mean_variance_norm(content) + mean


class AdaAttN(nn.Module):
    """AdaAttN-style attentive normalisation (Eq. 18): learnable 1x1 query/key convs on
    normalised features, dense attention, F = S * N(F_c) + M with M, S the attention-weighted
    mean and std of the raw style features."""

    def __init__(self, channels: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.q = nn.Conv2d(channels, channels, 1)
        self.k = nn.Conv2d(channels, channels, 1)

    def forward(self, content: torch.Tensor, style: torch.Tensor) -> torch.Tensor:
        content_n = mean_variance_norm(content)
        mean, std = dense_stats(self.q(content_n), self.k(mean_variance_norm(style)), style,
                                self.heads)
        return std * content_n + mean


def a2k_spec(model: dict[str, Any], layer: str) -> A2KSpec:
    """The A2K configuration of `layer` from the `model` settings."""
    try:
        block = model["block_sizes"][layer]
    except KeyError:
        raise ValueError(f"model.block_sizes has no entry for {layer}") from None
    return A2KSpec(block=block, block_mode=model["block_mode"], heads=model["heads"],
                   distributed=model["distributed"], progressive=model["progressive"],
                   pa_step1=model["pa_step1"], da_form=model["da_form"], layer=layer)


def build_transform(model: dict[str, Any], layer: str, channels: int) -> nn.Module:
    """The transform named by `model.transform` for one layer."""
    kind = model["transform"]
    if kind == "a2k":
        return AllToKeyAttention(channels, a2k_spec(model, layer))
    if kind == "all_to_all":
        return AllToAllAttention(channels, model["heads"])
    if kind == "adain":
        return AdaIN()
    if kind == "adaattn":
        return AdaAttN(channels, model["heads"])
    raise ValueError(f"model.transform: {kind!r} is not one of {TRANSFORMS}")
