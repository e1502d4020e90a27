"""StyA2K training losses (Eq. 14-17) and their parameter-free feature targets (Eq. 15-16, 19).

The targets use the attention of the model being trained: all-to-key (A2K* and AdaA2K*) for
`a2k`, dense attention with `model.heads` heads over every style position for the `all_to_all`,
`adaattn` and `adaattn_dense` peers, uniform attention for `adain` (whose Ada-form is then AdaIN
itself). The ablation flags of the model apply to the targets. The keys are `loss.target_keys`
for every transform (AdaAttN's own multi-layer keys and key sampling are not used here).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from sparsegen.attention.all_to_all import dense_attention, dense_stats, moments_to_stats
from sparsegen.attention.all_to_key import a2k_star, adaa2k_star
from sparsegen.models.stya2k.transforms import a2k_spec, shallow_stack
from sparsegen.nets.feature_stats import mean_std, mean_variance_norm
from sparsegen.nets.vgg import LAYERS

DISTANCES = ("mse", "l2")
TARGET_KEYS = ("same_layer", "multi_layer")


def distance(a: torch.Tensor, b: torch.Tensor, kind: str) -> torch.Tensor:
    """||a - b||_2 read as 'mse' (mean squared error, AdaIN/official code) or 'l2' (Euclidean
    norm per sample, averaged over the batch)."""
    if kind == "mse":
        return F.mse_loss(a, b)
    if kind == "l2":
        return (a - b).flatten(1).norm(dim=1).mean()
    raise ValueError(f"loss.distance: {kind!r} is not one of {DISTANCES}")


def global_style_loss(out_feats: dict[str, torch.Tensor], style_feats: dict[str, torch.Tensor],
                      layers: list[str], kind: str) -> torch.Tensor:
    """Eq. 14: distances of channel means and stds, summed over `layers`."""
    total = out_feats[layers[0]].new_zeros(())
    for layer in layers:
        mean_o, std_o = mean_std(out_feats[layer])
        mean_s, std_s = mean_std(style_feats[layer])
        total = total + distance(mean_o, mean_s, kind) + distance(std_o, std_s, kind)
    return total


def target_queries_keys(content: dict[str, torch.Tensor], style: dict[str, torch.Tensor],
                        layer: str, mode: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Queries and keys of the parameter-free targets at `layer`.

    same_layer: N(F_c^l), N(F_s^l) (Eq. 6). multi_layer (official code): the channel
    concatenation of N(nearest-resized F^j) over every layer j up to l."""
    if mode == "same_layer":
        return mean_variance_norm(content[layer]), mean_variance_norm(style[layer])
    if mode != "multi_layer":
        raise ValueError(f"loss.target_keys: {mode!r} is not one of {TARGET_KEYS}")
    return shallow_stack(content, layer), shallow_stack(style, layer)


def feature_targets(model: dict[str, Any], layer: str, queries: torch.Tensor,
                    keys: torch.Tensor, values: torch.Tensor, content: torch.Tensor,
                    want: tuple[bool, bool]) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """(M*, AdaM*) targets of Eq. 15 and 16 for `model.transform`; None where not wanted."""
    kind = model["transform"]
    want_a2k, want_ada = want
    if kind == "a2k":
        spec = a2k_spec(model, layer)
        return (a2k_star(queries, keys, values, content, spec) if want_a2k else None,
                adaa2k_star(queries, keys, values, content, spec) if want_ada else None)
    if kind in ("all_to_all", "adaattn", "adaattn_dense"):
        heads = model["heads"]
        plain = dense_attention(queries, keys, values, heads) + content if want_a2k else None
        ada = None
        if want_ada:
            mean, std = dense_stats(queries, keys, values, heads)  # Eq. 18
            ada = std * mean_variance_norm(content) + mean
        return plain, ada
    if kind == "adain":  # uniform attention over all style positions
        flat = values.flatten(2)
        mean, std = moments_to_stats(torch.cat([flat.mean(-1), (flat * flat).mean(-1)], -1))
        mean, std = mean[..., None, None], std[..., None, None]
        return (content + mean if want_a2k else None,
                std * mean_variance_norm(content) + mean if want_ada else None)
    raise ValueError(f"model.transform: unknown transform {kind!r}")


class StyA2KLoss:
    """Eq. 17: lambda_1 L_gs + lambda_2 L_A2K* + lambda_3 L_AdaA2K*; terms with lambda 0 are
    skipped (reported as 0)."""

    def __init__(self, model: dict[str, Any], loss: dict[str, Any]) -> None:
        self.model = model
        self.loss = loss
        self.lambdas = (loss["lambda_global"], loss["lambda_a2k"], loss["lambda_adaa2k"])
        if loss["distance"] not in DISTANCES:
            raise ValueError(f"loss.distance: {loss['distance']!r} is not one of {DISTANCES}")

    @torch.no_grad()
    def targets(self, content: dict[str, torch.Tensor], style: dict[str, torch.Tensor]
                ) -> dict[str, tuple[torch.Tensor | None, torch.Tensor | None]]:
        """Per feature layer, the (A2K*, AdaA2K*) targets; they carry no gradient."""
        want = (self.lambdas[1] > 0, self.lambdas[2] > 0)
        if not any(want):
            return {}
        out = {}
        for layer in self.loss["feature_layers"]:
            q, k = target_queries_keys(content, style, layer, self.loss["target_keys"])
            out[layer] = feature_targets(self.model, layer, q, k, style[layer], content[layer],
                                         want)
        return out

    def __call__(self, out_feats: dict[str, torch.Tensor], content: dict[str, torch.Tensor],
                 style: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Loss terms for encoder features of the stylised image, content and style."""
        kind = self.loss["distance"]
        zero = out_feats[LAYERS[0]].new_zeros(())
        terms = {"global": zero, "a2k": zero, "adaa2k": zero}
        if self.lambdas[0] > 0:
            terms["global"] = global_style_loss(out_feats, style, self.loss["global_layers"], kind)
        for layer, (a2k, ada) in self.targets(content, style).items():
            if a2k is not None:  # Eq. 15
                terms["a2k"] = terms["a2k"] + distance(out_feats[layer], a2k, kind)
            if ada is not None:  # Eq. 16
                terms["adaa2k"] = terms["adaa2k"] + distance(out_feats[layer], ada, kind)
        terms["loss"] = sum(lam * terms[name] for lam, name in
                            zip(self.lambdas, ("global", "a2k", "adaa2k"), strict=True))
        return terms
