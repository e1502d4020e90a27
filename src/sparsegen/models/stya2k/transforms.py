"""Per-layer feature transforms F_cs^l = M^l(F_c^l, F_s^l) (Eq. 2): the A2K module and the
Table 1/2 peers on the same encoder and decoder (all-to-all, AdaIN, AdaAttN).

Most transforms read only their own layer. AdaAttN also reads the shallower layers: its keys
are built from relu1_1 ... relu_l. `apply_transform` calls each kind with what it reads.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from sparsegen.attention.all_to_all import AllToAllAttention, attend_stats, dense_stats
from sparsegen.attention.all_to_key import A2KSpec, AllToKeyAttention
from sparsegen.nets.feature_stats import mean_std, mean_variance_norm
from sparsegen.nets.vgg import LAYERS

TRANSFORMS = ("a2k", "all_to_all", "adain", "adaattn", "adaattn_dense")
# Official AdaAttN (Huage001/AdaAttN, models/adaattn_model.py): AdaAttNModel.__init__ sets
# self.seed = 6666 and passes it to every AdaAttN.forward, which calls torch.manual_seed(seed)
# before torch.randperm. At test time the seed stays 6666, so every forward keeps the same
# positions; in training optimize_parameters draws a fresh seed per iteration from the global
# RNG. Here the seed is fixed in both modes and drawn from a private CPU torch.Generator, which
# leaves the global RNG alone (a resumed run draws what an uninterrupted one would). On the
# same torch build this gives the official test-time positions: a fresh CPU generator seeded
# with 6666 is the default generator after torch.manual_seed(6666). In the paper setting
# (256² training crops) no transfer layer exceeds its max_sample, so training never samples.
ADAATTN_SEED = 6666


def shallow_stack(feats: Mapping[str, torch.Tensor], layer: str) -> torch.Tensor:
    """N(F^{1:l}): channel concatenation over j = relu1_1 ... `layer` of N(F^j) after a
    nearest resize of F^j to the size of F^l (normalised after the resize, as the official
    get_key in AdaAttN and StyA2K does). Widths 64, 192, 448, 960, 1472 for l = 1 ... 5."""
    size = feats[layer].shape[-2:]
    return torch.cat([mean_variance_norm(F.interpolate(feats[j], size=size, mode="nearest"))
                      for j in LAYERS[: LAYERS.index(layer) + 1]], dim=1)


class AdaIN(nn.Module):
    """AdaIN: sigma(F_s) * N(F_c) + mu(F_s); no parameters."""

    def forward(self, content: torch.Tensor, style: torch.Tensor) -> torch.Tensor:
        mean, std = mean_std(style)
        return std * mean_variance_norm(content) + mean


class MultiLayerTransform(nn.Module):
    """A transform of layer `self.layer` that reads the feature dicts of every encoder layer."""

    layer: str


class AdaAttN(MultiLayerTransform):
    """AdaAttN (Liu et al., ICCV 2021) at one layer l, as the official AdaAttN module
    (networks.py: AdaAttN.forward; keys from adaattn_model.py: get_key with shallow_layer):

    Q = f(N(F_c^{1:l})), K = g(N(F_s^{1:l})), V = h(F_s^l), f, g, h learnable 1x1 convs;
    one head, softmax(Q K^T) without scaling; M, S the attention-weighted mean and std of V
    (S with 1e-5 under the root, see `moments_to_stats`; the official code has none);
    out = S * N(F_c^l) + M (Eq. 18). When the style has more than `max_sample` positions, keys
    and values keep the same `max_sample` positions, drawn once per forward for the whole
    batch as the first `max_sample` entries of a random permutation (see ADAATTN_SEED)."""

    def __init__(self, layer: str, channels: int, key_channels: int, max_sample: int,
                 seed: int = ADAATTN_SEED) -> None:
        super().__init__()
        self.layer, self.max_sample, self.seed = layer, max_sample, seed
        self.f = nn.Conv2d(key_channels, key_channels, 1)  # queries
        self.g = nn.Conv2d(key_channels, key_channels, 1)  # keys
        self.h = nn.Conv2d(channels, channels, 1)          # values

    def sample_positions(self, n: int) -> torch.Tensor | None:
        """Indices of the style positions kept (CPU), or None when all `n` are kept."""
        if n <= self.max_sample:
            return None
        generator = torch.Generator().manual_seed(self.seed)
        return torch.randperm(n, generator=generator)[: self.max_sample]

    def forward(self, content: Mapping[str, torch.Tensor], style: Mapping[str, torch.Tensor]
                ) -> torch.Tensor:
        fc = content[self.layer]
        b, _, h, w = fc.shape
        q = self.f(shallow_stack(content, self.layer)).flatten(2).transpose(1, 2)  # (B, HW, Ck)
        k = self.g(shallow_stack(style, self.layer)).flatten(2)                   # (B, Ck, N)
        v = self.h(style[self.layer]).flatten(2)                                   # (B, C, N)
        keep = self.sample_positions(k.shape[-1])
        if keep is not None:  # the same positions for keys and values
            keep = keep.to(k.device)
            k, v = k[..., keep], v[..., keep]
        mean, std = attend_stats(q, k.transpose(1, 2), v.transpose(1, 2), "adaattn")  # Eq. 18
        mean, std = (t.transpose(1, 2).reshape(b, -1, h, w) for t in (mean, std))
        return std * mean_variance_norm(fc) + mean


class AdaAttNDense(nn.Module):
    """The earlier AdaAttN-style peer (`adaattn_dense`): learnable 1x1 query/key convs on the
    same layer's normalised features, multi-head dense attention over every style position, no
    value conv, F = S * N(F_c) + M with M, S the attention-weighted mean and std of the raw
    style features (Eq. 18)."""

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


def apply_transform(module: nn.Module, layer: str, content: Mapping[str, torch.Tensor],
                    style: Mapping[str, torch.Tensor]) -> torch.Tensor:
    """F_cs^l of one transform: multi-layer transforms get the feature dicts, the others
    (F_c^l, F_s^l)."""
    if isinstance(module, MultiLayerTransform):
        return module(content, style)
    return module(content[layer], style[layer])


def a2k_spec(model: dict[str, Any], layer: str) -> A2KSpec:
    """The A2K configuration of `layer` from the `model` settings."""
    try:
        block = model["block_sizes"][layer]
    except KeyError:
        raise ValueError(f"model.block_sizes has no entry for {layer}") from None
    return A2KSpec(block=block, block_mode=model["block_mode"], heads=model["heads"],
                   distributed=model["distributed"], progressive=model["progressive"],
                   pa_step1=model["pa_step1"], da_form=model["da_form"], layer=layer)


def build_transform(model: dict[str, Any], layer: str, widths: Mapping[str, int]
                    ) -> nn.Module:
    """The transform named by `model.transform` for one layer; `widths` are the encoder's
    channels per layer (AdaAttN's keys span relu1_1 ... `layer`)."""
    kind, channels = model["transform"], widths[layer]
    if kind == "a2k":
        return AllToKeyAttention(channels, a2k_spec(model, layer))
    if kind == "all_to_all":
        return AllToAllAttention(channels, model["heads"])
    if kind == "adain":
        return AdaIN()
    if kind == "adaattn":
        try:
            max_sample = model["adaattn_max_sample"][layer]
        except KeyError:
            raise ValueError(f"model.adaattn_max_sample has no entry for {layer}") from None
        key_channels = sum(widths[j] for j in LAYERS[: LAYERS.index(layer) + 1])
        return AdaAttN(layer, channels, key_channels, max_sample)
    if kind == "adaattn_dense":
        return AdaAttNDense(channels, model["heads"])
    raise ValueError(f"model.transform: {kind!r} is not one of {TRANSFORMS}")
