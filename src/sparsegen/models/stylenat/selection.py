"""`eval.checkpoint: best`: score every kept checkpoint with the FID protocol, keep the best.

The paper reports each model's best checkpoint (FFHQ-256: 940k of 1M iterations; Church: "the
best evaluation"). The train step keeps a copy every `train.keep_every` steps (kept/ beside
final.pt, listed with sha256 in kept/index.json); here each kept checkpoint and final.pt
generate `eval.n_samples` images, scored by `fid_legacy_pytorch` (the paper's FID) against the
same seeded real subset the evaluation uses. The record lists every candidate's FID.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import torch

from sparsegen.io import read_json
from sparsegen.layout import KEPT
from sparsegen.metrics import registry
from sparsegen.metrics.inputs import ImageSet
from sparsegen.models.stylenat.evaluation import (
    METRIC_BATCH,
    SELECTION_METRIC,
    fid_cache_dir,
    real_subset,
)
from sparsegen.models.stylenat.sampling import latents, write_samples
from sparsegen.models.stylenat.task import load_generator_checkpoint
from sparsegen.provenance import sha256_file
from sparsegen.sampling import metric_context
from sparsegen.train.checkpoint import CheckpointError
from sparsegen.train.loop import KEPT_INDEX


def candidates(final: Path) -> list[tuple[int | None, Path]]:
    """(step, path) of each kept checkpoint beside `final` (checked against its sha256), then
    final.pt itself (step None: the last)."""
    kept = final.parent / KEPT
    index = kept / KEPT_INDEX
    found: list[tuple[int | None, Path]] = []
    if index.is_file():
        for entry in read_json(index)["checkpoints"]:
            path = kept / entry["file"]
            if not path.is_file() or sha256_file(path) != entry["sha256"]:
                raise CheckpointError(f"{path}: missing or not the file {index} lists; rerun "
                                      "the train step")
            found.append((entry["step"], path))
    return [*found, (None, final)]


def best_checkpoint(settings: dict[str, Any], final: Path, out_dir: Path,
                    device: torch.device) -> tuple[Path, dict[str, Any]]:
    """The candidate with the lowest FID under the evaluation's protocol, and the record of
    the selection (every candidate's step and FID)."""
    ev = settings["eval"]
    real, subset = real_subset(settings)
    reference = ImageSet(files=tuple(s.path for s in real), origin=subset["dataset"])
    ctx = metric_context(settings, device, METRIC_BATCH)
    scored = []
    for step, path in candidates(final):
        generator, ckpt = load_generator_checkpoint(path, device)
        z = latents(int(ev["n_samples"]), ckpt["settings"]["model"]["style_dim"],
                    int(ev["sample_seed"]))
        with tempfile.TemporaryDirectory(dir=out_dir.parent,
                                         prefix=f".{out_dir.name}.select-") as tmp:
            write_samples(generator, z, Path(tmp), device, workers=torch.get_num_threads())
            record = registry.get(SELECTION_METRIC)(
                ImageSet.of(Path(tmp), "samples"), reference, ctx,
                input_size=int(ev["fid_input_size"]), cache_dir=fid_cache_dir(settings),
                reference_digests=[s.sha256 for s in real])
        scored.append({"checkpoint": str(path), "step": int(ckpt["step"]) if step is None
                       else step, "fid": record.value})
        print(f"checkpoint selection: {path} (step {scored[-1]['step']}): "
              f"{SELECTION_METRIC} {record.value:.4g}", flush=True)
    best = min(scored, key=lambda c: c["fid"])
    return Path(best["checkpoint"]), {
        "metric": SELECTION_METRIC, "n_samples": int(ev["n_samples"]),
        "real_subset": subset, "input_size": int(ev["fid_input_size"]),
        "candidates": scored, "chosen_step": best["step"]}
