"""DynaST evaluation (Tables 1-2, Fig. 8 left).

Supervised tasks (DeepFashion, CelebA-HQ):
- Table 1 left: the last block's warp (bilinearly to eval.size) vs the ground truth, in [0, 1]:
  `l1`, `psnr` (data range 1), `ssim_gauss11`; `inference_time_s` (matching + synthesis).
- Table 1 right: `fid_legacy_pytorch`, `swd_pggan` (SWDx1e3_avg) on the outputs vs their ground
  truths, both JPEG q75 (CoCosNet#19); `fid_clean` beside them.
- Table 2: `semantic_consistency_cocosnet` (output vs ground truth) and
  `style_relevance_{color,texture}_cocosnet` (output vs exemplar). Neither DeepFashion's nor our
  stand-ins' parsing maps are used: one whole-image region (a recorded deviation).
Style: `ssim_gauss11` (content vs output), `style_loss_adain` (Eq. 11's l_s) and
`style_loss_stytr2` (output vs style), Fig. 8 left.
With an untrained/ folder the image metrics again for it, named <metric>@untrained.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from sparsegen.data.images import load_rgb
from sparsegen.io import read_json
from sparsegen.metrics import registry
from sparsegen.metrics.records import ResultRecord, timing_record
from sparsegen.models.dynast.sampling import JPEG, OUTPUTS, PAIRS_CSV, TIMING_JSON, UNTRAINED
from sparsegen.sampling import (
    evaluation_facts,
    metric_context,
    read_index,
    read_sidecar,
)

METRIC_BATCH = 8
UNTRAINED_SUFFIX = "@untrained"
WHOLE_IMAGE = "one whole-image region (no parsing maps: CoCosNet never published DeepFashion's)"


def _rows(samples_dir: Path) -> list[dict[str, str]]:
    return read_index(samples_dir, PAIRS_CSV, "pairs")


def _stack(paths: list[Path], size: int | None) -> torch.Tensor:
    return torch.stack([load_rgb(p, size=size) for p in paths])


def _scored(settings: dict[str, Any], task: str, rows: list[dict[str, str]], base: Path,
            jpeg_gt: Path, ctx: Any, source: dict[str, Any]) -> list[ResultRecord]:
    size = settings["eval"]["size"]
    outputs = _stack([base / r["output"] for r in rows], None)
    targets = _stack([Path(r["target"]) for r in rows], size)
    exemplars = _stack([Path(r["exemplar"]) for r in rows], size)
    get = registry.get
    if task == "style":
        return [get("ssim_gauss11")(outputs, targets, ctx, source=source, data_range=1.0),
                get("style_loss_adain")(outputs, exemplars, ctx, source=source),
                get("style_loss_stytr2")(outputs, exemplars, ctx, source=source)]
    records = []
    if all(r["warp"] for r in rows):
        warps = _stack([base / r["warp"] for r in rows], None)
        records += [get("l1")(warps, targets, ctx, source=source),
                    get("psnr")(warps, targets, ctx, source=source, data_range=1.0),
                    get("ssim_gauss11")(warps, targets, ctx, source=source, data_range=1.0)]
        for record in records:
            record.protocol["compared"] = "last block's warp vs ground truth"
    jpeg_out = base / JPEG / OUTPUTS
    if jpeg_out.is_dir():
        input_size = int(settings["eval"]["fid_input_size"])
        for name in ("fid_legacy_pytorch", "fid_clean"):
            records.append(get(name)(jpeg_out, jpeg_gt, ctx, source=source,
                                     input_size=input_size))
        records.append(get("swd_pggan")(jpeg_out, jpeg_gt, ctx, source=source))
    semantic = get("semantic_consistency_cocosnet")(outputs, targets, ctx, source=source)
    color = get("style_relevance_color_cocosnet")(outputs, exemplars, ctx, source=source)
    texture = get("style_relevance_texture_cocosnet")(outputs, exemplars, ctx, source=source)
    for record in (semantic, color, texture):
        record.protocol["regions"] = WHOLE_IMAGE
    return [*records, semantic, color, texture]


def evaluate(settings: dict[str, Any], samples_dir: Path, device: torch.device
             ) -> list[ResultRecord]:
    """The records above, plus inference_time_s from the sample step's timing."""
    samples_dir = Path(samples_dir)
    rows = _rows(samples_dir)
    ctx = metric_context(settings, device, METRIC_BATCH)
    source = {"paper": settings["paper"], "variant": settings["variant"],
              "preset": settings["preset"], "samples": str(samples_dir)}
    facts = evaluation_facts(settings, samples_dir)
    facts["eval"] = {"n_pairs": len(rows), "size": settings["eval"]["size"]}
    task = read_sidecar(samples_dir)["task"]
    jpeg_gt = samples_dir / JPEG / "targets"
    records = _scored(settings, task, rows, samples_dir, jpeg_gt, ctx, source)
    for record in records:
        record.facts = facts
    untrained = samples_dir / UNTRAINED
    if untrained.is_dir():
        extra = _scored(settings, task, rows, untrained, jpeg_gt, ctx, source)
        for record in extra:
            record.metric += UNTRAINED_SUFFIX
            record.facts = {**{k: v for k, v in facts.items() if k != "training"},
                            "model": "untrained (initialised as training starts)"}
        records += extra
    measured = read_json(samples_dir / TIMING_JSON)
    timing = timing_record(measured, device, measured["statistic"])
    timing.device = measured["device"]  # where the sample step timed it (hardware-bound)
    timing.source = dict(source)
    timing.facts = {"preset": settings["preset"], "eval": {"size": settings["eval"]["size"]}}
    return [*records, timing]
