"""StyA2K efficiency: inference time and memory of the A2K model against its peers, and what one
training iteration costs with the real data loader (the GPU-hours of a 400k-iteration model).

Inference (Table 1 "Inference Time"; paper: StyA2K 0.0121 s vs AdaAttN 0.0269 s per 512² image on
one RTX 3090, ratio 0.45, read from pipeline/claims/stya2k.yaml): the full A2K model, all-to-all,
`adaattn` (AdaAttN's design: one head, keys from relu1_1..l, keys sampled above max_sample),
`adaattn_dense` (the earlier dense 8-head peer: the `adaattn` variant with model.transform
adaattn_dense) and AdaIN, all on the same encoder and decoder with random weights, at 512²,
1024², 2048², batch 1. Both attention kernels: `sdpa` (fused, scores never materialised) and
`explicit` (einsum + softmax, as the papers' code). Both precisions: strict `fp32` and
`fp32+tf32conv` (PyTorch's defaults, what default code ran on the paper's GPU). Each row: the
first call (it also counts the attention scores) is a warm-up whose time is `compile_s`; then
more warm-up and the timed calls are sized from it (about 0.3 s of warm-up, at most 10 calls, and
1.5 s of timed calls, 3 to 50; `warmup` and `repeats` say how many), wall clock with a CUDA
synchronise after every call. Ratios to `adaattn` and to `adaattn_dense` pair rows of the same
side, kernel and precision; summary rows give A2K's ratios at 512² beside the paper's 0.45.

Training (batch 8 of 256² crops from 512² images, Sec. 4.1), with a prepared dataset written in
the real format (manifest.csv + PNGs of photo-like content, 64 content and 64 style images) and
the real task (`models.stya2k.task`), under the training job's switches (deterministic
algorithms as params.yaml `deterministic`, `--threads 4` intra-op threads on the GPU machine):
- `train_loader`: `task.batch` (PNG decoding, the resize to load_size, random crop, flip) on the
  CPU, per batch with one thread, and the effective time per batch with the loop's 4 prefetch
  threads (wall time of many batches / their number);
- `train_step`: `task.train_step` with the batch already in host memory (GPU time);
- `train_loop`: `sparsegen.train.loop.run` as a training job runs it (loader threads and GPU
  together), wall time per step after warm-up; `gpu_hours_per_model` = its mean x 400k / 3600.

On the CPU the same code is a dry run for the tests: side 64, strict fp32, the sdpa kernel only,
the first call timed, the smoke preset's training settings (batch 1, 64² crops of 96² images)
and only AdaIN trained (the cheapest model: the code path is the same); what is not run is
recorded as skipped with the reason."""

from __future__ import annotations

import copy
import math
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from functools import cache, partial
from itertools import pairwise
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from sparsegen.attention.all_to_all import attention_backend, count_scores
from sparsegen.bench.common import (
    environment,
    exponent,
    failed_timing,
    measure,
    paper_claim,
    paper_claims,
    precision,
    precision_label,
    ratio,
    release,
    rows_kept_on_failure,
    summarise_ms,
    training_switches,
    wall_timer,
    write_csv,
)
from sparsegen.config import load_params, resolve
from sparsegen.data.manifest import write_manifest
from sparsegen.io import write_image
from sparsegen.layout import Layout
from sparsegen.models.stya2k.network import build_network
from sparsegen.models.stya2k.task import build_task
from sparsegen.provenance import sha256_file
from sparsegen.timing import synchronize
from sparsegen.train import loop, schedules
from sparsegen.train.seeding import resolve_device, step_seed

PAPER = "stya2k"
SIZES = (512, 1024, 2048)
DRY_RUN_SIZES = (64,)
# model -> (params.yaml variant its settings come from, model.transform set on top or None)
MODELS = {
    "a2k": ("full", None),
    "all_to_all": ("all_to_all", None),
    "adaattn": ("adaattn", None),
    "adaattn_dense": ("adaattn", "adaattn_dense"),  # no variant of its own in params.yaml
    "adain": ("adain", None),
}
GPU_PRECISIONS = ("fp32", "fp32+tf32conv")
KERNELS = ("sdpa", "explicit")
PEERS = ("adaattn", "adaattn_dense")
# Table 1 of the claims file: our model -> its row, and the column timed.
CLAIM_TABLE, CLAIM_COLUMN = "1", "inference_time"
CLAIM_ROWS = {"a2k": "stya2k", "adaattn": "adaattn"}
# pipeline/rules/train.smk gives a paper-preset training job 4 threads; the job prefetches
# max(2, threads) batches in as many threads (cli.cmd_train).
TRAIN_THREADS = 4
WARMUP_BUDGET_S, TIMED_BUDGET_S = 0.3, 1.5
WARMUP_CALLS, TIMED_CALLS = (0, 10), (3, 50)  # (fewest, most) per inference row on a GPU
DATASETS = {"content": "bench_content", "style": "bench_style"}


@dataclass(frozen=True)
class Plan:
    """What one run measures."""

    preset: str                       # params preset of the training settings
    sizes: tuple[int, ...]            # inference sides
    precisions: tuple[str, ...]
    kernels: tuple[str, ...]          # attention kernels timed (the others: skipped rows)
    adaptive: bool                    # inference calls sized from the first call (GPU)
    train_models: tuple[str, ...]     # models whose training is timed (the others: skipped)
    images: int                       # content and style images of the loader's dataset
    loader_batches: tuple[int, int]   # batches timed with one thread, with `threads`
    threads: int                      # the loop's prefetch threads
    step_calls: tuple[int, int]       # (warm-up, timed) train_step calls
    loop_steps: tuple[int, int]       # (warm-up, timed) loop steps


def plan_for(device: torch.device, sizes: list[int] | tuple[int, ...] | None = None) -> Plan:
    if device.type == "cuda":
        return Plan(preset="paper", sizes=tuple(sizes or SIZES), precisions=GPU_PRECISIONS,
                    kernels=KERNELS, adaptive=True, train_models=tuple(MODELS), images=64,
                    loader_batches=(12, 32), threads=TRAIN_THREADS, step_calls=(3, 10),
                    loop_steps=(5, 30))
    return Plan(preset="smoke", sizes=tuple(sizes or DRY_RUN_SIZES), precisions=("fp32",),
                kernels=("sdpa",), adaptive=False, train_models=("adain",), images=8,
                loader_batches=(2, 4), threads=TRAIN_THREADS, step_calls=(0, 1),
                loop_steps=(1, 1))


@cache
def _params(preset: str) -> dict[str, Any]:
    return load_params(overrides={"preset": preset, "weights": "random"})


def model_settings(model: str, preset: str = "paper") -> dict[str, Any]:
    """Resolved settings of `model` (random weights): its variant, plus the transform override
    of a model without a variant of its own (adaattn_dense)."""
    variant, transform = MODELS[model]
    settings = copy.deepcopy(resolve(_params(preset), PAPER, variant))
    if transform is not None:
        settings["model"]["transform"] = transform
    return settings


def variant_label(model: str) -> str:
    variant, transform = MODELS[model]
    return variant if transform is None else f"{variant} + model.transform={transform}"


def skipped(why: str) -> dict[str, Any]:
    return {"status": "skipped", "note": why}


# --- inference --------------------------------------------------------------------------------

def inference_calls(first_s: float) -> tuple[int, int]:
    """(warm-up, timed) calls after the first: about WARMUP_BUDGET_S and TIMED_BUDGET_S of
    calls, within WARMUP_CALLS and TIMED_CALLS."""
    def within(budget: float, bounds: tuple[int, int]) -> int:
        return int(min(max(budget / max(first_s, 1e-6), bounds[0]), bounds[1]))

    return within(WARMUP_BUDGET_S, WARMUP_CALLS), within(TIMED_BUDGET_S, TIMED_CALLS)


def time_stylize(net: torch.nn.Module, side: int, kernel: str, device: torch.device,
                 plan: Plan) -> dict[str, Any]:
    """The first call (scores counted, its time `compile_s`), then warm-up and timed calls."""
    gen = torch.Generator().manual_seed(side)
    content, style = (torch.rand(1, 3, side, side, generator=gen).to(device) for _ in range(2))
    t0 = time.perf_counter()
    with attention_backend(kernel), count_scores() as counted:
        try:
            with torch.inference_mode():
                net.stylize(content, style)
            synchronize(device)
        except torch.OutOfMemoryError:
            if device.type == "cuda":
                torch.cuda.empty_cache()
            return {**failed_timing("out of memory"), "attention_scores": counted.total_scores,
                    "note": "out of memory in the first call (scores: those formed before it)",
                    "warmup": 1, "repeats": 0}
    first = time.perf_counter() - t0
    if not plan.adaptive:  # dry run: the first call is the one timed
        return {"status": "ok", **summarise_ms([first]), "warmup": 0, "repeats": 1,
                "timer": wall_timer(device), "peak_mem_scope": "process",
                "wall_s": round(first, 3), "attention_scores": counted.total_scores}
    warmup, repeats = inference_calls(first)
    with attention_backend(kernel):
        result = measure(partial(net.stylize, content, style), device, warmup, repeats)
    return {**result, "warmup": warmup + 1, "compile_s": round(first, 3),
            "wall_s": round(result["wall_s"] + first, 3), "attention_scores": counted.total_scores}


def inference_rows(plan: Plan, device: torch.device, name: str) -> list[dict[str, Any]]:
    """Every model x kernel x side at one precision."""
    rows = []
    label = precision_label(name, device)
    with precision(name):
        for model in tqdm(MODELS, desc=f"inference {label}", disable=None):
            settings = model_settings(model, plan.preset)
            net = build_network(settings).to(device).eval()
            for kernel in ("none",) if model == "adain" else KERNELS:
                for side in plan.sizes:
                    row = {"kind": "inference", "model": model, "variant": variant_label(model),
                           "attention": settings["model"]["transform"], "backend": kernel,
                           "side": side, "batch": 1, "precision": label}
                    if kernel != "none" and kernel not in plan.kernels:
                        row.update(skipped(f"dry run on {device.type}: only the "
                                           f"{', '.join(plan.kernels)} kernel timed"))
                    else:
                        row.update(time_stylize(net, side, "sdpa" if kernel == "none"
                                                else kernel, device, plan))
                    rows.append({**row, **inference_claim(model, side)})
            del net
            release(device)
    return rows


def inference_claim(model: str, side: int) -> dict[str, Any]:
    """The paper's seconds per image of `model` at `side` (Table 1: 512², A2K and AdaAttN)."""
    protocol_side = paper_claims(PAPER).tables[CLAIM_TABLE].protocol["size"]
    if model not in CLAIM_ROWS or side != protocol_side:
        return {}
    return paper_claim(PAPER, CLAIM_TABLE, CLAIM_ROWS[model], CLAIM_COLUMN)


def add_ratios(rows: list[dict[str, Any]]) -> None:
    """Each inference row's time relative to the two AdaAttN peers (same side, kernel and
    precision; AdaIN, which has no attention, against their sdpa rows) and the growth of its
    time with the pixel count from the half side."""
    inference = [r for r in rows if r["kind"] == "inference"]
    by_key = {(r["model"], r["backend"], r["side"], r["precision"]): r for r in inference}
    for r in inference:
        kernel = "sdpa" if r["backend"] == "none" else r["backend"]
        for peer in PEERS:
            r[f"ratio_to_{peer}"] = ratio(r, by_key.get((peer, kernel, r["side"],
                                                         r["precision"])))
        prev = by_key.get((r["model"], r["backend"], r["side"] // 2, r["precision"]))
        r["time_exponent_vs_half_side"] = (
            round(exponent(prev["mean_ms"], r["mean_ms"], prev["side"] ** 2, r["side"] ** 2), 3)
            if prev and prev["status"] == r["status"] == "ok" else math.nan)


def paper_ratio() -> dict[str, Any]:
    """The paper's StyA2K / AdaAttN time (0.0121 / 0.0269), from the claims file."""
    a2k, peer = (paper_claim(PAPER, CLAIM_TABLE, CLAIM_ROWS[m], CLAIM_COLUMN)
                 for m in ("a2k", "adaattn"))
    return {"paper_value": round(a2k["paper_value"] / peer["paper_value"], 4),
            "paper_unit": "ratio",
            "paper_source": f"{a2k['paper_source']} / row {CLAIM_ROWS['adaattn']}"}


def ratio_summaries(rows: list[dict[str, Any]], plan: Plan) -> list[dict[str, Any]]:
    """A2K's time over each peer's at the paper's side (512; the smallest measured side when
    512 is not), per kernel and precision."""
    side = paper_claims(PAPER).tables[CLAIM_TABLE].protocol["size"]
    note = ""
    if side not in plan.sizes:
        side, note = min(plan.sizes), f"the paper's side {side} was not measured; "
    by_key = {(r["model"], r["backend"], r["side"], r["precision"]): r for r in rows
              if r["kind"] == "inference"}
    out = []
    for label in dict.fromkeys(r["precision"] for r in by_key.values()):
        for kernel in plan.kernels:
            a2k = by_key.get(("a2k", kernel, side, label))
            for peer in PEERS:
                other = by_key.get((peer, kernel, side, label))
                value = ratio(a2k, other)
                row = {"kind": "summary", "metric": f"time_ratio[a2k/{peer}]", "backend": kernel,
                       "side": side, "batch": 1, "precision": label, "value": value,
                       "unit": "ratio", "status": "no result" if math.isnan(value) else "ok",
                       "note": note + ("A2K or the peer did not run" if math.isnan(value) else
                                       f"mean {a2k['mean_ms']:.4g} ms / {other['mean_ms']:.4g}"
                                       " ms")}
                if peer == "adaattn":
                    row.update(paper_ratio())
                out.append(row)
    return out


# --- training ---------------------------------------------------------------------------------

def photo_like(rng: np.random.Generator, side: int) -> np.ndarray:
    """A uint8 (side, side, 3) image of smooth colour regions, texture and a little sensor
    noise: it compresses and decodes like a photograph (random pixels would not)."""
    def field(cells: int, scale: float) -> torch.Tensor:
        coarse = torch.from_numpy(rng.normal(0.0, scale, (1, 3, cells, cells)))
        return F.interpolate(coarse, size=(side, side), mode="bicubic", align_corners=False)[0]

    image = (128 + field(4, 60) + field(16, 25) + field(side // 8, 8)
             + torch.from_numpy(rng.normal(0.0, 3.0, (3, side, side))))
    return image.clamp(0, 255).round().byte().permute(1, 2, 0).numpy()


def write_dataset(directory: Path, prefix: str, n: int, side: int, seed: int) -> int:
    """A prepared dataset (manifest.csv + n side x side PNGs, all train); returns its bytes."""
    rng = np.random.default_rng(seed)
    rows, size = [], 0
    for i in range(n):
        rel = f"images/{prefix}{i:04d}.png"
        write_image(directory / rel, photo_like(rng, side))
        size += (directory / rel).stat().st_size
        rows.append({"id": f"{prefix}{i:04d}", "split": "train", "path": rel,
                     "sha256": sha256_file(directory / rel)})
    write_manifest(directory, rows)
    return size


def with_data(settings: dict[str, Any], root: Path) -> dict[str, Any]:
    """`settings` reading the benchmark's prepared datasets under `root`."""
    s = copy.deepcopy(settings)
    s["paths"]["prepared"] = str(root)
    s["data"] = dict(DATASETS)
    for role, name in DATASETS.items():
        s["datasets"][role] = {**s["datasets"][role], "name": name, "real": False}
    return s


def batch_generator(settings: dict[str, Any], step: int) -> torch.Generator:
    """The generator the loop draws step `step`'s batch from (rank 0)."""
    return torch.Generator().manual_seed(step_seed(settings["seed"], step, stream=0))


@contextmanager
def intra_op_threads(n: int | None) -> Any:
    """torch's intra-op threads set to `n` inside the block (None: unchanged)."""
    saved = torch.get_num_threads()
    if n is not None:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(saved)


def loader_rows(task: Any, settings: dict[str, Any], plan: Plan, note: str
                ) -> list[dict[str, Any]]:
    """Seconds per `task.batch` with one thread, and the effective time per batch with the
    loop's prefetch threads (all of them busy: the loop keeps that many batches in flight)."""
    t = settings["train"]
    single, threaded = plan.loader_batches
    base = {"kind": "train_loader", "model": "", "variant": "all models (one loader)",
            "side": t["crop_size"], "batch": t["batch_size"], "precision": "",
            "timer": "wall clock", "peak_mem_scope": ""}
    task.batch(0, batch_generator(settings, 0))  # manifest read, allocator warm
    times = []
    start = time.perf_counter()
    for step in range(1, single + 1):
        t0 = time.perf_counter()
        task.batch(step, batch_generator(settings, step))
        times.append(time.perf_counter() - t0)
    rows = [{**base, "threads": 1, "status": "ok", "warmup": 1, "repeats": single,
             **summarise_ms(times), "wall_s": round(time.perf_counter() - start, 3),
             "note": f"one thread, batch after batch (each batch: {t['batch_size']} content + "
                     f"{t['batch_size']} style images); {note}"}]
    start = time.perf_counter()
    with ThreadPoolExecutor(max_workers=plan.threads) as pool:
        list(pool.map(lambda s: task.batch(s, batch_generator(settings, s)),
                      range(single + 1, single + 1 + threaded)))
    wall = time.perf_counter() - start
    rows.append({**base, "threads": plan.threads, "status": "ok", "warmup": 0,
                 "repeats": threaded, "mean_ms": wall / threaded * 1e3,
                 "wall_s": round(wall, 3),
                 "note": f"effective time per batch: wall time of {threaded} batches loaded by "
                         f"{plan.threads} threads / {threaded} (the loop prefetches in "
                         f"max(2, --threads) = {plan.threads} threads); {note}"})
    return rows


class _StepClock:
    """A task whose every train_step records when it ended (device synchronised)."""

    def __init__(self, task: Any, device: torch.device) -> None:
        self.task, self.device, self.ends = task, device, []
        self.modules, self.optimizers = task.modules, task.optimizers
        self.checkpoint_extra = task.checkpoint_extra

    def batch(self, step: int, generator: torch.Generator) -> Any:
        return self.task.batch(step, generator)

    def train_step(self, step: int, batch: Any) -> dict[str, float]:
        out = self.task.train_step(step, batch)
        synchronize(self.device)
        self.ends.append(time.perf_counter())
        return out


def loop_timing(task: Any, settings: dict[str, Any], plan: Plan, device: torch.device,
                run_dir: Path) -> dict[str, Any]:
    """`loop.run` for warm-up + timed steps; wall time between consecutive step ends of the
    timed steps (waiting for the batch included; the final checkpoint write is not)."""
    warm, timed = plan.loop_steps
    clock = _StepClock(task, device)
    cfg = loop.LoopConfig(iterations=warm + timed, checkpoint_every=10**9, log_every=10**9,
                          seed=settings["seed"], lr_factor=schedules.from_settings(
                              settings["train"]), prefetch=plan.threads)
    start = time.perf_counter()
    loop.run(clock, cfg, settings, run_dir, run_dir / "final.pt", run_dir / "train_log.csv")
    ends = clock.ends[warm - 1:] if warm else [start, *clock.ends]
    steps = [b - a for a, b in pairwise(ends)]
    return {"status": "ok", **summarise_ms(steps), "warmup": warm, "repeats": len(steps),
            "wall_s": round(time.perf_counter() - start, 3),
            "timer": "wall clock between step ends (each step synchronised)"}


def training_rows(plan: Plan, device: torch.device, workdir: Path) -> list[dict[str, Any]]:
    """The loader alone, the GPU step alone, and the two as the training loop runs them."""
    cuda = device.type == "cuda"
    root = workdir / "prepared"
    base_settings = with_data(model_settings("a2k", plan.preset), root)
    t = base_settings["train"]
    written = sum(write_dataset(root / DATASETS[role], role, plan.images, t["load_size"],
                                seed=i) for i, role in enumerate(DATASETS))
    data_note = (f"{plan.images} content + {plan.images} style photo-like {t['load_size']}² "
                 f"PNGs (mean {written / (2 * plan.images) / 1024:.0f} KiB; the resize to "
                 f"load_size {t['load_size']} is a no-op on them, as on prepared data), "
                 f"random {t['crop_size']}² crop + flip")
    rows: list[dict[str, Any]] = []
    with intra_op_threads(plan.threads if cuda else None):
        rows += loader_rows(build_task(base_settings, torch.device("cpu")), base_settings, plan,
                            data_note)
        for name in plan.precisions:
            label = precision_label(name, device)
            for model in tqdm(MODELS, desc=f"training {label}", disable=None):
                rows += train_model_rows(model, plan, device, name, root, workdir)
    return rows


def train_model_rows(model: str, plan: Plan, device: torch.device, name: str, root: Path,
                     workdir: Path) -> list[dict[str, Any]]:
    settings = with_data(model_settings(model, plan.preset), root)
    t, label = settings["train"], precision_label(name, device)
    base = {"model": model, "variant": variant_label(model),
            "attention": settings["model"]["transform"], "backend": "sdpa" if model != "adain"
            else "none", "side": t["crop_size"], "batch": t["batch_size"], "precision": label,
            "deterministic": settings["deterministic"]}
    if model not in plan.train_models:
        why = skipped(f"dry run on {device.type}: only {', '.join(plan.train_models)} trained")
        return [{**base, "kind": kind, **why} for kind in ("train_step", "train_loop")]
    torch.manual_seed(settings["seed"])
    task = build_task(settings, device)
    batch = task.batch(0, batch_generator(settings, 0))
    with precision(name), training_switches(settings["deterministic"]):
        step = measure(partial(task.train_step, 0, batch), device, *plan.step_calls, grad=True)
        run_dir = Path(tempfile.mkdtemp(prefix=f"loop-{model}-", dir=workdir))
        looped = (loop_timing(task, settings, plan, device, run_dir) if step["status"] == "ok"
                  else failed_timing(step["status"]))
    iterations = t["iterations"]
    rows = [{**base, "kind": "train_step", **step,
             "note": "task.train_step with the batch already in host memory (its copy to the "
                     "device included), no data loading"},
            {**base, "kind": "train_loop", **looped, "threads": plan.threads,
             "iterations": iterations,
             "note": "sparsegen.train.loop.run: loader threads and device steps together"}]
    if looped["status"] == "ok":
        rows[1].update(gpu_hours_per_model=round(looped["mean_ms"] / 1e3 * iterations / 3600, 4),
                       derived_from=f"this row: mean of {looped['repeats']} loop steps "
                                    f"({looped['mean_ms'] / 1e3:.4g} s, {plan.threads} prefetch "
                                    f"threads, 1 {device.type.upper()}) x {iterations} "
                                    "iterations / 3600")
    del task
    release(device)
    return rows


# --- the run ----------------------------------------------------------------------------------

def comparability(row: dict[str, Any], device_name: str) -> dict[str, Any]:
    hardware = paper_claims(PAPER).tables[CLAIM_TABLE].columns[CLAIM_COLUMN].hardware_bound
    if row.get("paper_value", "") != "":
        note = f"measured on {device_name}; {hardware}"
    elif row["kind"] == "inference":
        note = f"no paper value for this row; measured on {device_name}"
    else:
        note = "no paper counterpart (the paper reports no training time)"
    return {"comparable": False, "non_comparable_reasons": note}


def run(out: Path | None = None, sizes: list[int] | None = None, device_name: str = "cuda"
        ) -> Path:
    """Benchmark on `device_name` and write the CSV (default results/bench/stya2k.csv)."""
    device = resolve_device(device_name)
    out = out or Path(Layout(load_params()).bench(PAPER))
    env = environment(device)  # a GPU run without a full commit stops here, before any work
    plan = plan_for(device, sizes)
    gpus = 1 if device.type == "cuda" else 0

    def finish(row: dict[str, Any]) -> dict[str, Any]:
        return {"paper": PAPER, "gpus": gpus, **row, **env,
                **comparability(row, env["device"])}

    rows: list[dict[str, Any]] = []
    with rows_kept_on_failure(PAPER, out, rows, finish), \
            tempfile.TemporaryDirectory(prefix="bench-stya2k-") as workdir:
        for name in plan.precisions:
            rows += inference_rows(plan, device, name)
        add_ratios(rows)
        rows += ratio_summaries(rows, plan)
        rows += training_rows(plan, device, Path(workdir))
    return write_csv(out, [finish(r) for r in rows])
