"""iLAT evaluation (Tables 1-2; tokenizer reconstructions).

Tokenizers: `psnr`, `ssim_gauss11` of the plain reconstruction vs the image, and the same with
`@masked` for the reconstruction under the test mask (the decoding the transformer uses).
Transformers, pose tasks (Table 1), outputs vs the true target frame, in [0, 1]:
  iLAT-compat: `psnr_ilat` (1 - 10 log10(MSE + 1e-7)), `ssim_ilat` (gray of the BGR image,
  7x7 uniform window, data range 2), `fid_inception_imagenet` (torchvision ImageNet
  Inception-v3); standard: `psnr`, `ssim_gauss11`, `fid_legacy_pytorch`, `fid_clean`;
  MAE = `l1`.
Every transformer (Table 2): `masked_rate_token` (on the tokenizer's grid), `masked_rate_pixel`,
`inference_time_s` (encode + sample + decode, batch 1, on the sample step's device) and
`ar_steps`; `l1_hole` (output vs truth inside the hole), `l1_outside` (output vs the
target stream outside it: how much of the input the edit keeps) and `token_accuracy_hole`
(sampled hole tokens equal to the truth's own tokens).
With an untrained/ folder the region and image metrics again for it, named <metric>@untrained.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import torch

from sparsegen.data.images import load_rgb
from sparsegen.metrics import registry
from sparsegen.metrics.records import Measurement, ResultRecord
from sparsegen.models.ilat.sampling import EXAMPLES_CSV, UNTRAINED
from sparsegen.sampling import evaluation_facts, metric_context, read_index, read_sidecar

METRIC_BATCH = 8
UNTRAINED_SUFFIX = "@untrained"
FIDS = ("fid_inception_imagenet", "fid_legacy_pytorch", "fid_clean")


def _stack(base: Path, rows: list[dict[str, str]], column: str) -> torch.Tensor:
    return torch.stack([load_rgb(base / r[column]) for r in rows])


def _mask(base: Path, rows: list[dict[str, str]]) -> torch.Tensor:
    return (_stack(base, rows, "mask")[:, :1] > 0.5).float()


def _record(metric: str, values: list[float], higher: bool, protocol: dict[str, Any],
            device: Any) -> ResultRecord:
    return ResultRecord.from_measurement(metric, higher, Measurement(
        value=math.fsum(values) / len(values), n_samples=len(values), per_sample=values,
        protocol=protocol), device)


def region_l1(a: torch.Tensor, b: torch.Tensor, region: torch.Tensor) -> list[float]:
    """Per example mean |a - b| over the pixels (and channels) where `region` is 1; examples
    with an empty region are left out."""
    out = []
    for x, y, r in zip(a, b, region, strict=True):
        n = float(r.sum()) * x.shape[0]
        if n:
            out.append(float(((x - y).abs() * r).sum()) / n)
    return out


def _regions(outputs: torch.Tensor, truths: torch.Tensor, inputs: torch.Tensor,
             mask: torch.Tensor, device: Any) -> list[ResultRecord]:
    records = []
    for name, ref, region, what in (
            ("l1_hole", truths, mask, "output vs truth inside the hole"),
            ("l1_outside", inputs, 1 - mask, "output vs the target stream outside the hole")):
        values = region_l1(outputs, ref, region)
        if values:
            records.append(_record(name, values, False, {
                "compared": what, "range": "[0, 1]", "reduction": "mean over region pixels, "
                "then over examples"}, device))
    return records


def _image_metrics(settings: dict[str, Any], base: Path, rows: list[dict[str, str]],
                   truth_dir: Path, ctx: Any, source: dict[str, Any], fid: bool
                   ) -> list[ResultRecord]:
    get = registry.get
    outputs, truths = _stack(base, rows, "output"), _stack(truth_dir, rows, "truth")
    records = [get("l1")(outputs, truths, ctx, source=source),
               get("psnr")(outputs, truths, ctx, source=source, data_range=1.0),
               get("ssim_gauss11")(outputs, truths, ctx, source=source, data_range=1.0),
               get("psnr_ilat")(outputs, truths, ctx, source=source),
               get("ssim_ilat")(outputs, truths, ctx, source=source)]
    if fid:
        size = int(settings["eval"]["fid_input_size"])
        for name in FIDS:
            records.append(get(name)(base / "outputs", truth_dir / "truths", ctx, source=source,
                                     input_size=size))
    return records


def _token_accuracy(rows: list[dict[str, str]], device: Any) -> list[ResultRecord]:
    """`token_accuracy_hole`: sampled hole tokens equal to the truth's own tokens (its plain
    encoding), pooled over examples (per example in per_sample); `@untrained` beside it."""
    out = []
    for column, suffix in (("hole_matches", ""), ("untrained_hole_matches", UNTRAINED_SUFFIX)):
        used = [r for r in rows if r.get(column, "") != "" and int(r["masked_tokens"])]
        if not used:
            continue
        record = _record("token_accuracy_hole" + suffix,
                         [int(r[column]) / int(r["masked_tokens"]) for r in used], True,
                         {"compared": "sampled hole tokens vs the truth's plain encoding"},
                         device)
        record.value = sum(int(r[column]) for r in used) / sum(int(r["masked_tokens"])
                                                                for r in used)
        out.append(record)
    return out


def _table2(rows: list[dict[str, str]], samples_dir: Path, sidecar: dict[str, Any],
            ctx: Any, source: dict[str, Any], device: Any) -> list[ResultRecord]:
    """Table 2: masked rates (tokens on the tokenizer's grid, pixels), seconds per image and
    AR steps (hardware-bound: measured on the sample step's device)."""
    get = registry.get
    masks = _mask(samples_dir, rows)
    grid = math.isqrt(int(rows[0]["tokens"]))
    records = [get("masked_rate_token")(masks, None, ctx, source=source, grid=grid),
               get("masked_rate_pixel")(masks, None, ctx, source=source)]
    protocol = {"statistic": "encode + sample + decode, batch 1, mean over examples",
                "cache": sidecar.get("cache"), "mask": sidecar.get("mask")}
    timed = [_record("inference_time_s", [float(r["seconds"]) for r in rows], False, protocol,
                     device),
             _record("ar_steps", [float(r["steps"]) for r in rows], False, protocol, device)]
    for r in timed:
        r.device = sidecar.get("device", r.device)
        r.source = dict(source)
    return [*records, *timed]


def evaluate(settings: dict[str, Any], samples_dir: Path, device: torch.device
             ) -> list[ResultRecord]:
    samples_dir = Path(samples_dir)
    rows = read_index(samples_dir, EXAMPLES_CSV, "examples")
    sidecar = read_sidecar(samples_dir)
    ctx = metric_context(settings, device, METRIC_BATCH)
    source = {"paper": settings["paper"], "variant": settings["variant"],
              "preset": settings["preset"], "samples": str(samples_dir)}
    facts = evaluation_facts(settings, samples_dir)
    facts["eval"] = {"n_examples": len(rows)}
    get = registry.get
    if sidecar["stage"] == "tokenizer":
        images = _stack(samples_dir, rows, "truth")
        records = []
        for column, suffix in (("recon", ""), ("output", "@masked")):
            recon = _stack(samples_dir, rows, column)
            for record in (get("psnr")(recon, images, ctx, source=source, data_range=1.0),
                           get("ssim_gauss11")(recon, images, ctx, source=source,
                                               data_range=1.0)):
                record.metric += suffix
                records.append(record)
        for record in records:
            record.facts = facts
        return records

    outputs = _stack(samples_dir, rows, "output")
    truths, inputs = _stack(samples_dir, rows, "truth"), _stack(samples_dir, rows, "input")
    mask = _mask(samples_dir, rows)
    pose = int(sidecar["joints"]) > 0  # faces have no ground truth of an edit
    records = _regions(outputs, truths, inputs, mask, device)
    if pose:
        records += _image_metrics(settings, samples_dir, rows, samples_dir, ctx, source, True)
    for record in records:
        record.facts = facts
    untrained = samples_dir / UNTRAINED
    if untrained.is_dir():
        extra = _regions(_stack(untrained, rows, "output"), truths, inputs, mask, device)
        if pose:
            extra += _image_metrics(settings, untrained, rows, samples_dir, ctx, source, False)
        for record in extra:
            record.metric += UNTRAINED_SUFFIX
            record.facts = {**{k: v for k, v in facts.items() if k != "training"},
                            "model": "untrained (initialised as training starts)"}
        records += extra
    records += _token_accuracy(rows, device)
    table2 = _table2(rows, samples_dir, sidecar, ctx, source, device)
    for record in table2:
        record.facts = facts
    return [*records, *table2]
