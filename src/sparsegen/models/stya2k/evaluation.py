"""StyA2K evaluation (Sec. 4.2, Tables 1, 2, 4): content loss and style loss (StyTr2 protocol),
LPIPS-Alex between each stylised image and its content image, and inference time per image.

Records state facts only (`sparsegen.judge` decides comparability at table time): the data the
samples came from, the counts and image side, the checkpoint's training recipe; the timing
record states the image side (what it measured does not depend on training)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from sparsegen.data.images import load_rgb
from sparsegen.io import read_json
from sparsegen.metrics import registry
from sparsegen.metrics.records import ResultRecord, timing_record
from sparsegen.models.stya2k.sampling import SAMPLES_CSV, TIMING_JSON, UNTRAINED
from sparsegen.sampling import evaluation_facts, metric_context, read_index

METRIC_BATCH = 8
UNTRAINED_SUFFIX = "@untrained"  # records of the untrained network's outputs


def _rows(samples_dir: Path) -> list[dict[str, str]]:
    return read_index(samples_dir, SAMPLES_CSV, "samples")


def _stack(paths: list[str], size: int | None, base: Path) -> torch.Tensor:
    cache: dict[str, torch.Tensor] = {}
    for p in paths:
        if p not in cache:
            cache[p] = load_rgb(base / p, size=size)
    return torch.stack([cache[p] for p in paths])


def evaluate(settings: dict[str, Any], samples_dir: Path, device: torch.device
             ) -> list[ResultRecord]:
    """Records for content_loss_stytr2, style_loss_stytr2, lpips_alex (the paper's),
    ssim_gray_skimage (structure kept from the content image) and inference_time_s; with an
    untrained/ folder the first four again for it, named <metric>@untrained."""
    samples_dir = Path(samples_dir)
    rows = _rows(samples_dir)
    size = settings["eval"]["size"]
    outputs = _stack([r["output"] for r in rows], None, samples_dir)
    contents = _stack([r["content_path"] for r in rows], size, Path.cwd())
    styles = _stack([r["style_path"] for r in rows], size, Path.cwd())
    ctx = metric_context(settings, device, METRIC_BATCH)
    source = {"paper": settings["paper"], "variant": settings["variant"],
              "preset": settings["preset"], "samples": str(samples_dir)}

    def scored(images: torch.Tensor, suffix: str = "") -> list[ResultRecord]:
        records = [
            registry.get("content_loss_stytr2")(images, contents, ctx, source=source),
            registry.get("style_loss_stytr2")(images, styles, ctx, source=source),
            registry.get("lpips_alex")(images, contents, ctx, source=source),
            registry.get("ssim_gray_skimage")(images, contents, ctx, source=source),
        ]
        for record in records:
            record.metric += suffix
        return records

    n_content = len({r["content_id"] for r in rows})
    n_style = len({r["style_id"] for r in rows})
    facts = evaluation_facts(settings, samples_dir)
    facts["eval"] = {"n_content": n_content, "n_style": n_style, "n_outputs": len(rows),
                     "size": size}
    records = scored(outputs)
    for record in records:
        record.facts = facts
    if (samples_dir / UNTRAINED).is_dir():  # eval.untrained_reference: the same pairs, untrained
        untrained = scored(_stack([r["output"] for r in rows], None, samples_dir / UNTRAINED),
                           UNTRAINED_SUFFIX)
        for record in untrained:
            record.facts = {**{k: v for k, v in facts.items() if k != "training"},
                            "model": "untrained (initialised as training starts)"}
        records += untrained
    measured = read_json(samples_dir / TIMING_JSON)
    timing = timing_record(measured, device, "mean seconds per stylisation (encoder + "
                           "transform + decoder)")
    timing.device = measured["device"]  # where the sample step timed it (hardware-bound)
    timing.source = dict(source)
    timing.facts = {"preset": settings["preset"], "eval": {"size": size}}
    return [*records, timing]
