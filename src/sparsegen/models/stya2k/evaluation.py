"""StyA2K evaluation (Sec. 4.2, Tables 1, 2, 4): content loss and style loss (StyTr2 protocol),
LPIPS-Alex between each stylised image and its content image, and inference time per image.

Every record says whether it is comparable with the paper: the metric marks a random-init
extractor itself; here we add what the samples differ in (data, counts, size, the model's own
encoder) against the protocol printed in pipeline/claims/stya2k.yaml."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

import torch

from sparsegen.data.images import load_rgb
from sparsegen.data.sources import is_real
from sparsegen.io import read_json
from sparsegen.metrics import registry
from sparsegen.metrics.records import Measurement, ResultRecord
from sparsegen.models.stya2k.sampling import SAMPLES_CSV, TIMING_JSON
from sparsegen.provenance import REPO_ROOT
from sparsegen.weights import RANDOM_INIT

CLAIMS = REPO_ROOT / "pipeline" / "claims" / "stya2k.yaml"
PROTOCOL_TABLE = "1"  # Tables 1, 2 and 4 share the protocol of Sec. 4.2
METRIC_BATCH = 8


def _rows(samples_dir: Path) -> list[dict[str, str]]:
    path = samples_dir / SAMPLES_CSV
    if not path.is_file():
        raise FileNotFoundError(f"{path}: samples index not found (run the sample step)")
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    if not rows:
        raise ValueError(f"{path}: no samples listed")
    return rows


def _stack(paths: list[str], size: int | None, base: Path) -> torch.Tensor:
    cache: dict[str, torch.Tensor] = {}
    for p in paths:
        if p not in cache:
            cache[p] = load_rgb(base / p, size=size)
    return torch.stack([cache[p] for p in paths])


def data_reasons(settings: dict[str, Any], n_content: int, n_style: int, size: int,
                 encoder: str) -> list[str]:
    """Why these samples cannot be compared with the paper's numbers (empty when they can)."""
    from sparsegen.tables import load_claims

    paper = load_claims(CLAIMS).tables[PROTOCOL_TABLE].protocol
    reasons = []
    synthetic = [f"{role} {d['name']}" for role, d in settings["datasets"].items()
                 if not is_real(d["source"])]
    if synthetic:
        reasons.append(f"synthetic data ({', '.join(synthetic)}; paper: MS-COCO and WikiArt)")
    if (n_content, n_style) != (paper["n_content"], paper["n_style"]):
        reasons.append(f"{n_content * n_style} outputs from {n_content} content x {n_style} "
                       f"style images (paper: {paper['n_outputs']} = {paper['n_content']} x "
                       f"{paper['n_style']})")
    if size != paper["size"]:
        reasons.append(f"{size}x{size} images (paper: {paper['size']}x{paper['size']})")
    if RANDOM_INIT in encoder:
        reasons.append("the model was trained with a randomly initialised VGG-19 encoder")
    if settings["preset"] != "paper":
        reasons.append(f"preset {settings['preset']}: shortened training")
    return reasons


def _timing_record(timing: dict[str, Any], device: torch.device) -> ResultRecord:
    protocol = {k: timing[k] for k in ("size", "batch", "dtype", "warmup", "repeats",
                                       "synchronised", "device")}
    protocol["statistic"] = "mean seconds per stylisation (encoder + transform + decoder)"
    record = ResultRecord.from_measurement(
        "inference_time_s", False,
        Measurement(value=timing["mean_s"], n_samples=timing["repeats"], protocol=protocol,
                    extra={"median_s": timing["median_s"], "std_s": timing["std_s"]}),
        device)
    record.mark_non_comparable(f"inference time depends on the hardware (paper: one RTX 3090; "
                               f"measured on {timing['device']})")
    return record


def evaluate(settings: dict[str, Any], samples_dir: Path, device: torch.device
             ) -> list[ResultRecord]:
    """Records for content_loss_stytr2, style_loss_stytr2, lpips_alex and inference_time_s."""
    samples_dir = Path(samples_dir)
    rows = _rows(samples_dir)
    size = settings["eval"]["size"]
    outputs = _stack([r["output"] for r in rows], None, samples_dir)
    contents = _stack([r["content_path"] for r in rows], size, Path.cwd())
    styles = _stack([r["style_path"] for r in rows], size, Path.cwd())
    ctx = registry.MetricContext(weights_mode=settings["weights"],
                                 weights_dir=Path(settings["paths"]["weights"]), device=device,
                                 batch_size=METRIC_BATCH)
    source = {"paper": settings["paper"], "variant": settings["variant"],
              "preset": settings["preset"], "samples": str(samples_dir)}
    records = [
        registry.get("content_loss_stytr2")(outputs, contents, ctx, source=source),
        registry.get("style_loss_stytr2")(outputs, styles, ctx, source=source),
        registry.get("lpips_alex")(outputs, contents, ctx, source=source),
    ]
    timing = read_json(samples_dir / TIMING_JSON)
    records.append(_timing_record(timing, device))
    records[-1].source = dict(source)
    n_content = len({r["content_id"] for r in rows})
    n_style = len({r["style_id"] for r in rows})
    for reason in data_reasons(settings, n_content, n_style, size, timing["encoder"]):
        for record in records:
            record.mark_non_comparable(reason)
    return records
