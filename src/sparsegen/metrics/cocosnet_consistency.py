"""CoCosNet's semantic consistency and style relevance (colour, texture), DynaST Table 2.

CoCosNet (CVPR 2020, Sec. 4) defines both on VGG-19 features of its Caffe `vgg19_conv.pth`
(manifest `vgg19_cocosnet`); the scripts its team used (kept in AiArt-Gao/MATEBIT `evaluation/`)
fix the details implemented here:

- every feature map is nearest-upsampled to 256x256 (the label maps' grid);
- a region is the set of pixels carrying one label value; its descriptor is the mean feature
  vector over those pixels; two descriptors compare by cosine (zero vectors give 0);
- semantic consistency (output vs ground truth, relu3_2 / relu4_2 / relu5_2): the ground truth's
  label map defines the regions of both images, every label counts (background too), weighted by
  its area / 256^2; mean over images per layer, and the reported value is the mean of the three
  layers (the per-layer values go into the record's `extra`);
- style relevance (output vs exemplar; colour: relu1_2, texture: relu2_2): labels present in
  both maps and > 0 (background excluded), output regions from the output's label map, exemplar
  regions from the exemplar's, weighted by the label's area in the output / the total of those
  areas; an image sharing no label scores 0 (as the scripts do); mean over images.

Without label maps (DeepFashion: CoCosNet's human parsing was never published) the whole image
is one region, so each score is the cosine of globally averaged features; the record's protocol
says which regions were used. Inputs are RGB in [0, 1] at their own size (the scripts resize to
256x256 first; our samples are 256x256 already).
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from typing import Any

import torch
import torch.nn.functional as F

from sparsegen.metrics.inputs import aligned_pair
from sparsegen.metrics.records import Measurement
from sparsegen.metrics.registry import MetricContext, register
from sparsegen.nets.vgg import VGGEncoder

SEMANTIC_LAYERS = ("relu3_2", "relu4_2", "relu5_2")
COLOR_LAYER = "relu1_2"
TEXTURE_LAYER = "relu2_2"
REGION_SIZE = 256  # features are nearest-upsampled to this grid; label maps live on it
WHOLE_IMAGE = "whole image as one region (no label maps)"


def _nearest_index(n_in: int, n_out: int) -> torch.Tensor:
    """Source index of each output position under F.interpolate(mode='nearest')."""
    src = torch.arange(n_in, dtype=torch.float64).view(1, 1, n_in)
    return F.interpolate(src, size=n_out, mode="nearest").view(n_out).long()


def region_means(features: torch.Tensor, labels: torch.Tensor, regions: torch.Tensor
                 ) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean feature vector of each region after nearest-upsampling to the labels' grid.

    features (C, h, w); labels (S, S') integer; regions (K,) sorted label values. Returns the
    means (K, C) in float64 and the regions' pixel counts (K,). Computed without materialising
    the upsampled map: each feature cell is weighted by how many region pixels it covers."""
    c, h, w = features.shape
    rows, cols = _nearest_index(h, labels.shape[0]), _nearest_index(w, labels.shape[1])
    cell = (rows[:, None] * w + cols[None, :]).to(labels.device)
    inside = torch.isin(labels, regions)
    region = torch.searchsorted(regions, labels[inside])
    k = len(regions)
    counts = torch.bincount(region * (h * w) + cell[inside], minlength=k * h * w)
    counts = counts.view(k, h * w).double()
    areas = counts.sum(1)
    sums = counts @ features.reshape(c, h * w).double().T
    return sums / areas[:, None], areas


def cosine(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Row-wise cosine of (K, C) matrices; a zero row gives 0 (sklearn's `normalize` keeps
    zero vectors as they are)."""
    def unit(x: torch.Tensor) -> torch.Tensor:
        n = x.norm(dim=1, keepdim=True)
        return x / torch.where(n == 0, torch.ones_like(n), n)
    return (unit(a) * unit(b)).sum(1)


def _one_region(features: torch.Tensor) -> torch.Tensor:
    return torch.zeros(REGION_SIZE, REGION_SIZE, dtype=torch.long, device=features.device)


def semantic_consistency(f_out: torch.Tensor, f_gt: torch.Tensor,
                         labels: torch.Tensor | None) -> float:
    """One image, one layer: sum over the label values k of cos(mean_k(out), mean_k(gt)) times
    |k| / (number of pixels); features (C, h, w), labels (256, 256) or None (one region)."""
    labels = _one_region(f_out) if labels is None else labels
    regions = torch.unique(labels)
    m_out, areas = region_means(f_out, labels, regions)
    m_gt, _ = region_means(f_gt, labels, regions)
    return float((cosine(m_out, m_gt) * areas).sum() / labels.numel())


def shared_labels(labels_out: torch.Tensor, labels_ref: torch.Tensor) -> torch.Tensor:
    """Label values > 0 present in both maps, sorted."""
    present = torch.unique(labels_out)
    return present[torch.isin(present, torch.unique(labels_ref)) & (present > 0)]


def style_relevance(f_out: torch.Tensor, f_ref: torch.Tensor, labels_out: torch.Tensor | None,
                    labels_ref: torch.Tensor | None) -> float:
    """One image: sum over labels k > 0 present in both maps of cos(mean_k(out), mean_k(ref))
    times |k in out| / sum of those areas; 0 without a shared label. Without label maps (both
    None) the whole images are the one region."""
    if labels_out is None or labels_ref is None:
        labels_out, labels_ref = _one_region(f_out), _one_region(f_ref)
        regions = torch.zeros(1, dtype=torch.long, device=f_out.device)
    else:
        regions = shared_labels(labels_out, labels_ref)
        if len(regions) == 0:
            return 0.0
    m_out, areas = region_means(f_out, labels_out, regions)
    m_ref, _ = region_means(f_ref, labels_ref, regions)
    return float((cosine(m_out, m_ref) * areas).sum() / areas.sum())


def _label_maps(labels: Any, n: int, name: str) -> torch.Tensor | None:
    if labels is None:
        return None
    t = torch.as_tensor(labels)
    if t.dim() != 3 or t.shape[0] != n or tuple(t.shape[1:]) != (REGION_SIZE, REGION_SIZE):
        raise ValueError(f"{name}: expected label maps ({n}, {REGION_SIZE}, {REGION_SIZE}), got "
                         f"shape {tuple(t.shape)}; resize them with nearest neighbour to "
                         f"{REGION_SIZE}x{REGION_SIZE} as the CoCosNet scripts do")
    if t.is_floating_point() or t.is_complex() or t.dtype == torch.bool:
        raise ValueError(f"{name}: label maps must hold integers, got {t.dtype}")
    return t.long()


def _check_size(images: torch.Tensor, name: str, layer: str) -> None:
    need = 2 ** (int(layer[4]) - 1)  # relu<b>_* lies at 1 / 2^(b-1) of the input
    if min(images.shape[-2:]) < need:
        raise ValueError(f"{name} images are {tuple(images.shape[-2:])}; {layer} needs at least "
                         f"{need} px per side")


def _features(encoder: VGGEncoder, images: torch.Tensor, layers: Sequence[str],
              ctx: MetricContext) -> Iterator[dict[str, torch.Tensor]]:
    """Per-image feature maps, computed `ctx.batch_size` images at a time."""
    for i in range(0, images.shape[0], ctx.batch_size):
        batch = images[i:i + ctx.batch_size].to(ctx.device, torch.float32)
        feats = encoder.extract(batch, layers)
        for j in range(batch.shape[0]):
            yield {k: v[j] for k, v in feats.items()}


def _encoder(ctx: MetricContext, deepest: str) -> VGGEncoder:
    return VGGEncoder(ctx.resolve("vgg19_cocosnet"), deepest=deepest).to(ctx.device)


def _protocol(encoder: VGGEncoder, layers: Sequence[str], compares: str, regions: str,
              reduction: str, sizes: dict[str, Any]) -> dict[str, Any]:
    return {"extractor": encoder.fingerprint, "layers": list(layers), "compares": compares,
            "regions": regions, "feature_upsampling": f"nearest to {REGION_SIZE}x{REGION_SIZE}",
            "similarity": "cosine of region mean feature vectors", "reduction": reduction,
            "input": "RGB in [0, 1]", "resize": "none", **sizes}


@register("semantic_consistency_cocosnet", higher_is_better=True,
          description="CoCosNet semantic consistency: area-weighted cosine of region-mean "
          "relu3_2/relu4_2/relu5_2 features (CoCosNet Caffe VGG-19) between outputs and ground "
          "truths, mean of the three layers")
def semantic_consistency_cocosnet(outputs: Any, ground_truths: Any, ctx: MetricContext,
                                  labels: Any = None) -> Measurement:
    """`labels`: the ground truths' label maps (N, 256, 256), or None for one whole-image
    region per image."""
    out, gt = aligned_pair(outputs, ground_truths, ("outputs", "ground truths"))
    label_maps = _label_maps(labels, out.shape[0], "labels")
    _check_size(out, "outputs", SEMANTIC_LAYERS[-1])
    encoder = _encoder(ctx, SEMANTIC_LAYERS[-1])
    scores: dict[str, list[float]] = {k: [] for k in SEMANTIC_LAYERS}
    with torch.inference_mode():
        pairs = zip(_features(encoder, out, SEMANTIC_LAYERS, ctx),
                    _features(encoder, gt, SEMANTIC_LAYERS, ctx), strict=True)
        for i, (fo, fg) in enumerate(pairs):
            lab = None if label_maps is None else label_maps[i].to(ctx.device)
            for k in SEMANTIC_LAYERS:
                scores[k].append(semantic_consistency(fo[k], fg[k], lab))
    n = out.shape[0]
    per_layer = {k: math.fsum(v) / n for k, v in scores.items()}
    per_image = [math.fsum(scores[k][i] for k in SEMANTIC_LAYERS) / len(SEMANTIC_LAYERS)
                 for i in range(n)]
    regions = WHOLE_IMAGE if label_maps is None else \
        "ground-truth label map, every label (background included), weight area / 256^2"
    return Measurement(
        value=math.fsum(per_layer.values()) / len(per_layer), n_samples=n, per_sample=per_image,
        extractor=encoder.weights, extra={"per_layer": per_layer},
        protocol=_protocol(encoder, SEMANTIC_LAYERS, "output vs ground truth", regions,
                           "per layer mean over images; value = mean of the layers",
                           {"image_size": list(out.shape[-2:])}))


def _style_relevance(layer: str, outputs: Any, exemplars: Any, ctx: MetricContext,
                     labels: Any, exemplar_labels: Any) -> Measurement:
    out, ref = aligned_pair(outputs, exemplars, ("outputs", "exemplars"), same_size=False)
    if (labels is None) != (exemplar_labels is None):
        raise ValueError("style relevance needs label maps for both the outputs (labels) and "
                         "the exemplars (exemplar_labels), or for neither")
    lab_out = _label_maps(labels, out.shape[0], "labels")
    lab_ref = _label_maps(exemplar_labels, out.shape[0], "exemplar_labels")
    _check_size(out, "outputs", layer)
    _check_size(ref, "exemplars", layer)
    encoder = _encoder(ctx, layer)
    per_image: list[float] = []
    no_shared = 0
    with torch.inference_mode():
        pairs = zip(_features(encoder, out, [layer], ctx), _features(encoder, ref, [layer], ctx),
                    strict=True)
        for i, (fo, fr) in enumerate(pairs):
            lo = lr = None
            if lab_out is not None and lab_ref is not None:
                lo, lr = lab_out[i].to(ctx.device), lab_ref[i].to(ctx.device)
                no_shared += len(shared_labels(lo, lr)) == 0
            per_image.append(style_relevance(fo[layer], fr[layer], lo, lr))
    regions = WHOLE_IMAGE if lab_out is None else \
        "labels > 0 present in both maps, weight = area in the output's map / total"
    return Measurement(
        value=math.fsum(per_image) / len(per_image), n_samples=len(per_image),
        per_sample=per_image, extractor=encoder.weights,
        extra={} if lab_out is None else {"images_without_shared_labels": no_shared},
        protocol=_protocol(encoder, [layer], "output vs exemplar", regions,
                           "mean over images", {"image_size": list(out.shape[-2:]),
                                                "exemplar_size": list(ref.shape[-2:])}))


@register("style_relevance_color_cocosnet", higher_is_better=True,
          description="CoCosNet style relevance (colour): area-weighted cosine of region-mean "
          "relu1_2 features (CoCosNet Caffe VGG-19) between outputs and exemplars")
def style_relevance_color_cocosnet(outputs: Any, exemplars: Any, ctx: MetricContext,
                                   labels: Any = None, exemplar_labels: Any = None
                                   ) -> Measurement:
    """`labels`: the outputs' (input) label maps, `exemplar_labels`: the exemplars' label
    maps, both (N, 256, 256); both None for one whole-image region."""
    return _style_relevance(COLOR_LAYER, outputs, exemplars, ctx, labels, exemplar_labels)


@register("style_relevance_texture_cocosnet", higher_is_better=True,
          description="CoCosNet style relevance (texture): area-weighted cosine of region-mean "
          "relu2_2 features (CoCosNet Caffe VGG-19) between outputs and exemplars")
def style_relevance_texture_cocosnet(outputs: Any, exemplars: Any, ctx: MetricContext,
                                     labels: Any = None, exemplar_labels: Any = None
                                     ) -> Measurement:
    """As `style_relevance_color_cocosnet`, on relu2_2."""
    return _style_relevance(TEXTURE_LAYER, outputs, exemplars, ctx, labels, exemplar_labels)
