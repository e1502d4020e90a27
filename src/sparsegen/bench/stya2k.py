"""StyA2K efficiency: seconds per image and peak memory of the A2K model against the
all-to-all and AdaAttN-style peers at 512², 1024², 2048² (batch 1, warm-up, CUDA sync, fp32
tensors), the attention scores each forms, and the time of one training step (GPU-hours budget).

Paper (Table 1, one RTX 3090, 512²): StyA2K 0.0121 s vs AdaAttN 0.0269 s per image (ratio 0.45).
Both attention backends are timed: `explicit` materialises the score matrix as the papers' code
does; `sdpa` is PyTorch's fused attention (same maths). Both precisions are timed: strict fp32,
and PyTorch's defaults (TF32 convolutions), which is what default code ran on the paper's GPU."""

from __future__ import annotations

import math
from functools import partial
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from sparsegen.attention.all_to_all import attention_backend, count_scores
from sparsegen.bench.common import PRECISIONS, environment, exponent, measure, precision, write_csv
from sparsegen.config import load_params, resolve
from sparsegen.layout import Layout
from sparsegen.models.stya2k.network import build_network
from sparsegen.models.stya2k.task import build_task
from sparsegen.train.seeding import resolve_device

SIZES = (512, 1024, 2048)
MODELS = {"a2k": "full", "all_to_all": "all_to_all", "adaattn": "adaattn", "adain": "adain"}
PAPER_SECONDS = {("a2k", 512): 0.0121, ("adaattn", 512): 0.0269}
BACKENDS = ("sdpa", "explicit")
TRAIN_BATCH, TRAIN_CROP = 8, 256  # Sec. 4.1


def _repeats(size: int) -> tuple[int, int]:
    """(warm-up, timed) passes: fewer at sizes where one pass takes seconds."""
    return {512: (10, 50), 1024: (5, 20)}.get(size, (2, 5))


def _settings(variant: str) -> dict[str, Any]:
    params = load_params(overrides={"preset": "paper", "weights": "random"})
    return resolve(params, "stya2k", variant)


def inference_rows(device: torch.device, sizes: tuple[int, ...], dtype: str
                   ) -> list[dict[str, Any]]:
    rows = []
    jobs = [(m, b) for m in MODELS for b in BACKENDS if not (m == "adain" and b == "explicit")]
    for model, backend in tqdm(jobs, desc=f"inference {dtype}", disable=None):
        net = build_network(_settings(MODELS[model])).to(device).eval()
        for size in sizes:
            content = torch.rand(1, 3, size, size, device=device)
            style = torch.rand(1, 3, size, size, device=device)
            warmup, repeats = _repeats(size)
            with attention_backend(backend), count_scores() as counted:
                try:
                    with torch.inference_mode():
                        net.stylize(content, style)
                    scores = counted.total_scores
                except torch.OutOfMemoryError:
                    scores = counted.total_scores
                    torch.cuda.empty_cache()
            with attention_backend(backend):
                result = measure(partial(net.stylize, content, style), device, warmup, repeats)
            rows.append({"task": "inference", "model": model, "variant": MODELS[model],
                         "attention": backend if model != "adain" else "none", "size": size,
                         "batch": 1, "precision": dtype, **result,
                         "attention_scores": scores,
                         "paper_s": PAPER_SECONDS.get((model, size), math.nan)})
    _add_ratios(rows)
    return rows


def _add_ratios(rows: list[dict[str, Any]]) -> None:
    """Time relative to the AdaAttN peer (paper: 0.45 at 512²) and growth with HW."""
    by_key = {(r["model"], r["attention"], r["size"], r["precision"]): r for r in rows}
    for r in rows:
        peer = by_key.get(("adaattn", r["attention"], r["size"], r["precision"]))
        r["ratio_to_adaattn"] = (round(r["mean_s"] / peer["mean_s"], 4)
                                 if peer and peer["status"] == r["status"] == "ok" else math.nan)
        prev = by_key.get((r["model"], r["attention"], r["size"] // 2, r["precision"]))
        r["time_exponent_vs_half_side"] = (
            round(exponent(prev["mean_s"], r["mean_s"], prev["size"] ** 2, r["size"] ** 2), 3)
            if prev else math.nan)


def train_rows(device: torch.device, dtype: str) -> list[dict[str, Any]]:
    """Seconds per training iteration (batch 8, 256² crops) and the GPU-hours it implies."""
    rows = []
    for model, variant in tqdm(MODELS.items(), desc=f"train step {dtype}", disable=None):
        settings = _settings(variant)
        task = build_task(settings, device)
        batch = {"content": torch.rand(TRAIN_BATCH, 3, TRAIN_CROP, TRAIN_CROP),
                 "style": torch.rand(TRAIN_BATCH, 3, TRAIN_CROP, TRAIN_CROP)}

        result = measure(partial(task.train_step, 0, batch), device, warmup=3, repeats=10,
                         grad=True)
        iterations = settings["train"]["iterations"]
        rows.append({"task": "train_step", "model": model, "variant": variant,
                     "attention": "sdpa" if model != "adain" else "none", "size": TRAIN_CROP,
                     "batch": TRAIN_BATCH, "precision": dtype, **result,
                     "iterations": iterations,
                     "gpu_hours_per_model": round(result["mean_s"] * iterations / 3600, 2)})
    return rows


def run(out: Path | None = None, sizes: list[int] | None = None, device_name: str = "cuda"
        ) -> Path:
    """Benchmark on `device_name` and write the CSV (default results/bench/stya2k.csv)."""
    device = resolve_device(device_name)
    out = out or Path(Layout(load_params()).bench("stya2k"))
    env = environment(device)
    rows: list[dict[str, Any]] = []
    for dtype in PRECISIONS:
        with precision(dtype):
            rows += inference_rows(device, tuple(sizes or SIZES), dtype) + train_rows(device,
                                                                                     dtype)
    hardware = f"measured on {env['device']}; the paper used one RTX 3090"
    return write_csv(out, [{**r, **env, "comparable": False, "non_comparable_reasons": hardware}
                           for r in rows])
