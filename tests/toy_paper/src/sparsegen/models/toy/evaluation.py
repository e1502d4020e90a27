"""L1 between each reconstruction and its image."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from sparsegen.data.images import load_rgb
from sparsegen.metrics import registry
from sparsegen.metrics.records import ResultRecord
from sparsegen.sampling import evaluation_facts, metric_context, read_sidecar


def evaluate(settings: dict[str, Any], samples_dir: Path, device: torch.device
             ) -> list[ResultRecord]:
    originals = read_sidecar(samples_dir)["images"]
    outputs = torch.stack([load_rgb(samples_dir / f"{i}.png") for i in originals])
    targets = torch.stack([load_rgb(p) for p in originals.values()])
    record = registry.get("l1")(outputs, targets, metric_context(settings, device, 8),
                                source={"paper": "toy", "variant": settings["variant"],
                                        "preset": settings["preset"]})
    record.facts = evaluation_facts(settings, samples_dir)
    return [record]
