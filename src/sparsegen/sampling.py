"""What every paper's sample and evaluate steps share.

- `sample_folder`: the sample step's output folder, built beside its final place and renamed
  into place only when complete (a killed job never leaves a folder that looks done), with a
  sidecar `sampling.json` that records the checkpoint and its training recipe (the facts the
  comparability judge reads) plus whatever the paper adds;
- `SampleFolder.write_images`: PNGs encoded in worker threads with bounded memory, with
  progress (a bar on a terminal, plain lines in a job's log);
- `evaluation_facts`: the facts every metric record of a variant carries (preset, data real or
  synthetic, the training recipe from the sidecar); the paper's evaluation adds its counts;
- `metric_context`: the metric registry's context for a job's settings.
"""

from __future__ import annotations

import csv
from collections import deque
from collections.abc import Iterable, Iterator, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from sparsegen.io import atomic_dir, read_json, write_image, write_json
from sparsegen.metrics.registry import MetricContext
from sparsegen.progress import Progress
from sparsegen.train.checkpoint import training_facts

SIDECAR = "sampling.json"


@dataclass
class SampleFolder:
    """The folder being written (a temporary sibling of the output) and its sidecar."""

    path: Path
    sidecar: dict[str, Any] = field(default_factory=dict)

    def write_images(self, images: Iterable[tuple[str, np.ndarray]], total: int, desc: str,
                     workers: int = 1) -> int:
        """Write each (relative name, uint8 (H, W, 3)) as a PNG, encoding in `workers` threads;
        return how many were written. A writer's error is raised here."""
        workers = max(1, workers)
        pending: deque[Future[None]] = deque()
        count = 0
        with ThreadPoolExecutor(workers) as pool, Progress(total, desc, unit="img") as bar:
            for name, image in images:
                path = self.path / name
                path.parent.mkdir(parents=True, exist_ok=True)
                pending.append(pool.submit(write_image, path, image))
                while len(pending) > 4 * workers:  # bounded memory when encoding lags
                    pending.popleft().result()
                count += 1
                bar.update()
            while pending:
                pending.popleft().result()
        return count

    def write_json(self, name: str, obj: Any) -> None:
        write_json(self.path / name, obj)


@contextmanager
def sample_folder(out_dir: str | Path, settings: Mapping[str, Any], checkpoint: str | Path,
                  ckpt: Mapping[str, Any], selected: str = "final") -> Iterator[SampleFolder]:
    """The sample step's output folder; `ckpt` is the loaded checkpoint the samples come from
    (`selected`: final, or best when chosen among kept checkpoints)."""
    with atomic_dir(out_dir) as tmp:
        folder = SampleFolder(tmp, {
            "paper": settings["paper"], "variant": settings["variant"],
            "checkpoint": str(checkpoint), "training": training_facts(ckpt, selected),
        })
        yield folder
        folder.write_json(SIDECAR, folder.sidecar)


def read_sidecar(samples_dir: str | Path) -> dict[str, Any]:
    path = Path(samples_dir) / SIDECAR
    if not path.is_file():
        raise FileNotFoundError(f"{path}: the sample step's record not found (run the sample "
                                "step)")
    return read_json(path)


def read_index(samples_dir: str | Path, name: str, what: str) -> list[dict[str, str]]:
    """The rows of the sample step's CSV index `name` (e.g. the stylised pairs), non-empty."""
    path = Path(samples_dir) / name
    if not path.is_file():
        raise FileNotFoundError(f"{path}: {what} index not found (run the sample step)")
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    if not rows:
        raise ValueError(f"{path}: no {what} listed")
    return rows


def evaluation_facts(settings: Mapping[str, Any], samples_dir: str | Path) -> dict[str, Any]:
    """Facts every record of these samples carries (see `sparsegen.judge`)."""
    return {
        "preset": settings["preset"],
        "data": {role: {"name": d["name"], "real": bool(d.get("real", False))}
                 for role, d in settings.get("datasets", {}).items()},
        "training": read_sidecar(samples_dir)["training"],
    }


def metric_context(settings: Mapping[str, Any], device: torch.device, batch_size: int
                   ) -> MetricContext:
    """The metric registry's context: weights mode and folder from the settings."""
    return MetricContext(weights_mode=settings["weights"],
                         weights_dir=Path(settings["paths"]["weights"]), device=device,
                         batch_size=batch_size)
