"""Style-transfer losses as evaluation metrics: StyTr2's content and style losses (the protocol
StyA2K reports) and AdaIN's style loss (DynaST Eq. 11, Fig. 8).

StyA2K Sec. 4.2 ("Following [5]", i.e. StyTr2): content loss between stylised and input content
images, style loss between stylised and input style images, averaged over the outputs. The
evaluation style loss spans relu1_1..relu5_1 with squared errors, unlike the training loss of
StyA2K Eq. (14). DynaST's l_s (Eq. 11, AdaIN's style loss) is the same sum of squared errors of
channel means and stds over relu1_1..relu4_1 only (`style_loss_adain`). Features come from
AdaIN's normalised VGG-19 (`vgg19_normalised`); torchvision's VGG gives numbers on another scale
entirely. Each image's loss is computed alone (batch of one in the official test scripts) and
the metric is the mean over images.
"""

from __future__ import annotations

import math
from functools import partial
from typing import Any

import torch

from sparsegen.metrics.inputs import aligned_pair
from sparsegen.metrics.records import Measurement
from sparsegen.metrics.registry import MetricContext, register
from sparsegen.nets.feature_stats import EPS, mean_std, mean_variance_norm
from sparsegen.nets.vgg import LAYERS, VGGEncoder

CONTENT_LAYERS = ("relu4_1", "relu5_1")
ADAIN_STYLE_LAYERS = LAYERS[:4]  # relu1_1 ... relu4_1 (DynaST Eq. 11)


def content_loss_per_image(fa: dict[str, torch.Tensor], fb: dict[str, torch.Tensor]
                           ) -> torch.Tensor:
    """Sum over relu4_1, relu5_1 of MSE between mean/std-normalised features, (B,)."""
    return sum(((mean_variance_norm(fa[k]) - mean_variance_norm(fb[k])) ** 2).flatten(1).mean(1)
               for k in CONTENT_LAYERS)


def style_loss_per_image(fa: dict[str, torch.Tensor], fb: dict[str, torch.Tensor],
                         layers: tuple[str, ...] = LAYERS) -> torch.Tensor:
    """Sum over `layers` (default relu1_1..relu5_1) of MSE(means) + MSE(stds), (B,)."""
    total = 0
    for k in layers:
        (ma, sa), (mb, sb) = mean_std(fa[k]), mean_std(fb[k])
        total = total + ((ma - mb) ** 2).flatten(1).mean(1) + ((sa - sb) ** 2).flatten(1).mean(1)
    return total


def _run(a: torch.Tensor, b: torch.Tensor, ctx: MetricContext, loss: Any,
         layers: tuple[str, ...]) -> tuple[list[float], VGGEncoder]:
    scale = 2 ** (int(layers[-1][4]) - 1)  # relu<k>_1 lies at 1 / 2^(k-1) of the input
    for name, t in (("stylised", a), ("reference", b)):
        if min(t.shape[-2:]) <= scale:
            raise ValueError(f"{name} images are {tuple(t.shape[-2:])}; {layers[-1]} needs more "
                             f"than {scale} px per side for a variance")
    encoder = VGGEncoder(ctx.resolve("vgg19_normalised")).to(ctx.device)
    values: list[float] = []
    with torch.inference_mode():
        for i in range(0, a.shape[0], ctx.batch_size):
            fa = encoder(a[i:i + ctx.batch_size].to(ctx.device, torch.float32), upto=layers[-1])
            fb = encoder(b[i:i + ctx.batch_size].to(ctx.device, torch.float32), upto=layers[-1])
            values += loss(fa, fb).double().cpu().tolist()
    return values, encoder


def _protocol(encoder: VGGEncoder, layers: tuple[str, ...], sizes: dict[str, Any],
              compares: str) -> dict[str, Any]:
    return {"extractor": encoder.fingerprint, "layers": list(layers), "compares": compares,
            "statistics": f"per-channel mean, std = sqrt(unbiased var + {EPS})",
            "reduction": "MSE per image, mean over images", "input": "RGB in [0, 1]",
            "resize": "none", **sizes}


@register("content_loss_stytr2", higher_is_better=False,
          description="StyTr2 content loss: MSE of mean/std-normalised relu4_1 and relu5_1 "
          "features (AdaIN normalised VGG) between stylised and content images")
def content_loss_stytr2(a: Any, b: Any, ctx: MetricContext) -> Measurement:
    ta, tb = aligned_pair(a, b, ("stylised", "content"))
    values, encoder = _run(ta, tb, ctx, content_loss_per_image, CONTENT_LAYERS)
    return Measurement(
        value=math.fsum(values) / len(values), n_samples=len(values), per_sample=values,
        extractor=encoder.weights,
        protocol=_protocol(encoder, CONTENT_LAYERS, {"image_size": list(ta.shape[-2:])},
                           "stylised vs content"))


@register("style_loss_stytr2", higher_is_better=False,
          description="StyTr2 style loss: sum over relu1_1..relu5_1 of MSE of channel means "
          "and stds (AdaIN normalised VGG) between stylised and style images")
def style_loss_stytr2(a: Any, b: Any, ctx: MetricContext) -> Measurement:
    ta, tb = aligned_pair(a, b, ("stylised", "style"), same_size=False)
    values, encoder = _run(ta, tb, ctx, style_loss_per_image, LAYERS)
    return Measurement(
        value=math.fsum(values) / len(values), n_samples=len(values), per_sample=values,
        extractor=encoder.weights,
        protocol=_protocol(encoder, LAYERS, {"image_size": list(ta.shape[-2:]),
                                             "style_size": list(tb.shape[-2:])},
                           "stylised vs style"))


@register("style_loss_adain", higher_is_better=False,
          description="AdaIN style loss (DynaST Eq. 11 l_s): sum over relu1_1..relu4_1 of MSE of "
          "channel means and stds (AdaIN normalised VGG) between stylised and style images")
def style_loss_adain(a: Any, b: Any, ctx: MetricContext) -> Measurement:
    """As `style_loss_stytr2` without relu5_1: DynaST Eq. 11 sums relu1_1..relu4_1. Eq. 11
    writes squared L2 norms; AdaIN's code, whose loss it cites, averages over channels (MSE),
    as here."""
    ta, tb = aligned_pair(a, b, ("stylised", "style"), same_size=False)
    values, encoder = _run(ta, tb, ctx, partial(style_loss_per_image, layers=ADAIN_STYLE_LAYERS),
                           ADAIN_STYLE_LAYERS)
    return Measurement(
        value=math.fsum(values) / len(values), n_samples=len(values), per_sample=values,
        extractor=encoder.weights,
        protocol=_protocol(encoder, ADAIN_STYLE_LAYERS, {"image_size": list(ta.shape[-2:]),
                                                         "style_size": list(tb.shape[-2:])},
                           "stylised vs style"))
