"""Fake StyA2K run folders (metric records, sample PNGs, training logs) for the report tests.

Tests reach the helpers through the `fakes` fixture (the suite imports test files in importlib
mode, so they cannot import this module)."""

from __future__ import annotations

import copy
import csv
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from sparsegen.config import load_params
from sparsegen.io import write_image, write_text
from sparsegen.metrics.records import Measurement, ResultRecord, write_records
from sparsegen.provenance import REPO_ROOT

CLAIMS = REPO_ROOT / "pipeline" / "claims" / "stya2k.yaml"
METRICS = ("content_loss_stytr2", "style_loss_stytr2", "lpips_alex", "inference_time_s")
VARIANTS = tuple(load_params()["stya2k"]["variants"])


def metric_value(variant: str, metric: str) -> float:
    """A distinct value per (variant, metric), so a mixed-up cell shows."""
    return round(0.1 + VARIANTS.index(variant) + METRICS.index(metric) / 10, 6)


# Facts of a record made the way the paper made its numbers, and of a smoke-preset record.
PAPER_FACTS = {
    "preset": "paper",
    "data": {"content": {"name": "coco2014_train", "real": True},
             "style": {"name": "wikiart", "real": True}},
    "eval": {"n_content": 15, "n_style": 20, "n_outputs": 300, "size": 512},
    "training": {"processes": 1, "batch_per_process": 8, "global_batch": 8,
                 "iterations": 400000, "checkpoint": "final", "checkpoint_step": 400000,
                 "networks": {"vgg19_normalised": "ab" * 32}, "code": ["c0de"]},
}
SMOKE_FACTS = {
    "preset": "smoke",
    "data": {"content": {"name": "smoke_content", "real": False},
             "style": {"name": "smoke_style", "real": False}},
    "eval": {"n_content": 3, "n_style": 4, "n_outputs": 12, "size": 64},
    "training": {**PAPER_FACTS["training"], "global_batch": 1, "batch_per_process": 1,
                 "iterations": 6, "checkpoint_step": 6},
}


def make_record(variant: str, metric: str, *, preset: str = "smoke", comparable: bool = True,
                protocol_extra: dict | None = None) -> ResultRecord:
    protocol = {"size": 128, "n_pairs": 12, **(protocol_extra or {})}
    rec = ResultRecord.from_measurement(
        metric, False, Measurement(value=metric_value(variant, metric), n_samples=12,
                                   protocol=protocol))
    rec.source = {"paper": "stya2k", "variant": variant, "preset": preset}
    rec.facts = copy.deepcopy(PAPER_FACTS if comparable else SMOKE_FACTS)
    return rec


@pytest.fixture
def write_metrics() -> Callable[..., Path]:
    """write_metrics(runs_dir, comparable=True, odd=None) writes metrics.json for every variant;
    `odd` = (variant, metric) gets a different protocol (so a different fingerprint)."""

    def write(runs_dir: Path, comparable: bool = True, odd: tuple[str, str] | None = None,
              variants: tuple[str, ...] = VARIANTS) -> Path:
        for v in variants:
            records = [make_record(v, m, comparable=comparable,
                                   protocol_extra={"resize": "other"} if odd == (v, m) else None)
                       for m in METRICS]
            write_records(runs_dir / v / "metrics.json", records)
        return runs_dir

    return write


def random_image(rng: np.random.Generator, size: int) -> np.ndarray:
    return rng.integers(0, 256, (size, size, 3), dtype=np.uint8)


@pytest.fixture
def sample_runs(tmp_path: Path) -> Path:
    """A run folder: every variant has 3x3 sample PNGs (32x32), samples.csv and train_log.csv."""
    rng = np.random.default_rng(0)
    images = tmp_path / "images"
    for kind in ("content", "style"):
        for i in range(3):
            write_image(images / f"{kind}{i}.png", random_image(rng, 40))
    runs = tmp_path / "runs"
    for k, v in enumerate(VARIANTS):
        rows = []
        for c in range(3):
            for s in range(3):
                name = f"c-c{c}__s-s{s}"
                write_image(runs / v / "samples" / f"{name}.png", random_image(rng, 32))
                rows.append({"id": name, "content_id": f"c{c}", "style_id": f"s{s}",
                             "output": f"{name}.png",
                             "content_path": str(images / f"content{c}.png"),
                             "style_path": str(images / f"style{s}.png")})
        with (runs / v / "samples" / "samples.csv").open("w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
        log = ["step,lr,wall_s,loss,global,a2k,adaa2k"]
        log += [f"{st},0.0002,{st / 10},{(k + 10) / st},{k / st},{2 / st},{3 / st}"
                for st in range(1, 5)]
        write_text(runs / v / "train_log.csv", "\n".join(log) + "\n")
    return runs


@pytest.fixture
def fakes() -> SimpleNamespace:
    """The helpers and constants above, for the tests."""
    return SimpleNamespace(claims=CLAIMS, metrics=METRICS, variants=VARIANTS,
                           metric_value=metric_value, make_record=make_record,
                           random_image=random_image)
