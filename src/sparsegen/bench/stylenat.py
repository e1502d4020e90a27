"""StyleNAT efficiency (Table 1 "Usage Metrics", Fig. 3): generator throughput of StyleNAT and the
StyleSwin baseline at 256², the cost of one attention call against the feature-map side for
every neighbourhood-attention backend, window attention and dense attention, and the time of one
training iteration (the GPU-hours of a model).

Throughput follows the official `type=throughput` protocol (src/throughput.py, main.py): the
generator in eval mode (random weights: speed does not depend on them), batch 1, fixed z ~ N(0, I),
10 warm-up + 500 timed forwards, a CUDA event pair around each pass then synchronize,
torch.inference_mode, TF32 matmuls and convolutions (precision `tf32`), cuDNN benchmark on;
imgs/s = passes / sum(pass times). StyleNAT is timed once per neighbourhood backend that supports
the relative position bias (the model's `backend` key). The paper's values (Table 1: StyleNAT
32.56 img/s, 48.92 M params; StyleSwin 30.20 img/s, 48.93 M) are read from
pipeline/claims/stylenat.yaml.

Attention cost: one forward call at the FFHQ-256 generator's width at each level (all the level's
heads, head_dim from architecture.py; in the model each Hydra partition gets a share of them),
batch = the per-GPU training batch (8), kernel 7 at dilation 1 and at the level's largest
dilation, under the same `tf32` flags; time = median of CUDA-event times after warm-up; memory =
peak allocated during the timed calls above what was allocated before them (inputs, caches).
Summary rows: our throughput ratio and the smallest side at which the fastest neighbourhood
backend beats dense SDPA.

Training: one full iteration of the FFHQ-256 StyleNAT (variant `stylenat`, random weights, Flex
NA backend) at the per-GPU batch 8, `models.stylenat.task.build_task(...).train_step` with the
batch already in host memory (D step with bCR and clipping, lazy R1 on every 16th step, G step,
EMA), under the training job's switches (PyTorch's default precision `fp32+tf32conv`:
our training sets no TF32; deterministic algorithms as params.yaml `deterministic`). The first
iteration (step 0, with R1) compiles Flex: its seconds are `compile_s`; after the warm-up, 10
iterations without R1 and 2 with R1 are timed (wall clock, synchronised). On 1 GPU in this
process, and on 2 GPUs under DDP (`torchrun --standalone --nproc_per_node 2`, one process per GPU
running `sparsegen.bench.stylenat_ddp`, rank 0 reporting) when 2 GPUs are visible. A summary row
derives the GPU-hours of a model at the paper's recipe (1M iterations at global batch 64, i.e. 8
GPUs of batch 8): iterations x s/iteration x 8 / 3600, with s/iteration = (15 x median without R1
+ median with R1) / 16 from the DDP rows when measured, else from 1 GPU. FFHQ-1024 is not timed.

On the CPU the same code runs as a dry run for tests: the smoke preset's tiny model, 1 warm-up +
2 timed calls, only the "torch" neighbourhood backend timed (on the CPU "flex" and "natten" run
eager dense reference paths), the others recorded as skipped with the reason; one training
iteration of each kind with the torch backend, and the DDP row skipped."""

from __future__ import annotations

import importlib.util
import json
import logging
import math
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from tqdm import tqdm

from sparsegen.attention.neighborhood import BACKENDS, available_backends, neighborhood_attention
from sparsegen.attention.window import window_attention
from sparsegen.bench.common import (
    environment,
    failed_timing,
    paper_claim,
    paper_claims,
    paper_recipe,
    peak_gib,
    precision,
    precision_label,
    release,
    reset_peak,
    rows_kept_on_failure,
    summarise_ms,
    training_switches,
    write_csv,
)
from sparsegen.config import load_params, resolve
from sparsegen.layout import Layout
from sparsegen.models.stylenat import architecture, augment
from sparsegen.models.stylenat.generator import build_generator
from sparsegen.models.stylenat.layers import from_unit_range
from sparsegen.timing import event_times, synchronize
from sparsegen.train.seeding import resolve_device

log = logging.getLogger(__name__)

PAPER = "stylenat"
CLAIM_TABLE = "1"             # Table 1: rows stylenat, styleswin; columns throughput, params
RPB_BACKENDS = ("torch", "flex")  # neighbourhood backends that add the relative position bias
SIZES = (32, 64, 128, 256)
DRY_RUN_SIZES = (8, 16)
COST_REPEATS = {"cuda": (3, 20), "cpu": (1, 2)}  # (warm-up, timed) calls per attention config
DRY_RUN_THROUGHPUT = (1, 2)
# (warm-up iterations incl. the compiling first, timed without R1, timed with R1)
TRAIN_CALLS = {"cuda": (3, 10, 2), "cpu": (1, 1, 1)}
TRAIN_PRECISION = "fp32+tf32conv"  # what `sparsegen train` runs: it sets no TF32
DDP_GPUS = 2
BUDGET_S = 450  # the DDP launch gets what is left of this (at least MIN_DDP_S): under 8 minutes
MIN_DDP_S = 120
# NVLink multicast stays off in every process we start (the GPU machines require it).
NCCL_SAFE_ENV = {"NCCL_NVLS_ENABLE": "0", "TORCH_SYMM_MEM_DISABLE_MULTICAST": "1",
                 "NVSHMEM_DISABLE_NVLS": "1"}


@dataclass(frozen=True)
class Plan:
    """What one benchmark run measures: the two generators' settings, the sides of the cost
    curves, the attention batch, the training settings and the number of calls."""

    stylenat: dict[str, Any]
    styleswin: dict[str, Any]
    sides: tuple[int, ...]
    batch: int
    throughput_calls: tuple[int, int]
    cost_calls: tuple[int, int]
    backends: tuple[str, ...]  # neighbourhood backends timed; the others get a "skipped" row
    train: dict[str, Any]
    train_calls: tuple[int, int, int]
    ddp_gpus: int              # 0: no DDP row is measured


def train_settings(device_type: str, preset: str | None = None, backend: str | None = None
                   ) -> dict[str, Any]:
    """The StyleNAT variant's resolved settings (random weights) with the NA backend set: by
    default the paper preset with Flex on CUDA, the smoke preset's tiny model with `torch`
    elsewhere."""
    dry = device_type != "cuda"
    preset = preset or ("smoke" if dry else "paper")
    params = load_params(overrides={"preset": preset, "weights": "random"})
    settings = resolve(params, PAPER, "stylenat", check=False)
    settings["model"]["backend"] = backend or ("torch" if dry else "flex")
    return settings


def plan_for(device: torch.device, sizes: Sequence[int] | None = None) -> Plan:
    """The paper model on a GPU; the smoke preset's tiny model as a CPU dry run, timing only the
    "torch" backend ("flex" and "natten" fall back to eager dense reference paths on the CPU)."""
    dry = device.type != "cuda"
    params = load_params(overrides={"preset": "smoke" if dry else "paper", "weights": "random"})
    stylenat, styleswin = (resolve(params, PAPER, v, check=False)
                           for v in ("stylenat", "styleswin"))
    ev = stylenat["eval"]
    return Plan(stylenat=stylenat, styleswin=styleswin,
                sides=tuple(sizes or (DRY_RUN_SIZES if dry else SIZES)),
                batch=stylenat["train"]["batch_size"],
                throughput_calls=(DRY_RUN_THROUGHPUT if dry else
                                  (ev["throughput_warmup"], ev["throughput_repeats"])),
                cost_calls=COST_REPEATS["cpu" if dry else "cuda"],
                backends=("torch",) if dry else tuple(available_backends(device)),
                train=train_settings(device.type),
                train_calls=TRAIN_CALLS["cpu" if dry else "cuda"],
                ddp_gpus=0 if dry or torch.cuda.device_count() < DDP_GPUS else DDP_GPUS)


@contextmanager
def official_flags(device: torch.device) -> Iterator[str]:
    """TF32 matmuls and cuDNN convolutions and cuDNN autotuning, as StyleNAT's main.py sets them
    globally; yields the precision label written into every row. Restored afterwards."""
    with precision("tf32", cudnn_benchmark=True):
        yield precision_label("tf32", device)


def pass_times_ms(fn: Callable[[], Any], device: torch.device, warmup: int, repeats: int
                  ) -> list[float]:
    """Milliseconds of each timed call (`sparsegen.timing.event_times`: CUDA events around
    every call followed by a synchronize, as the official throughput loop; wall clock on CPU)."""
    return [t * 1e3 for t in event_times(fn, device, warmup, repeats)]


def event_timer(device: torch.device) -> str:
    return ("CUDA events around each call, then synchronize" if device.type == "cuda"
            else "wall clock")


def measure_calls(fn: Callable[[], Any], device: torch.device, warmup: int, repeats: int
                  ) -> dict[str, Any]:
    """Per-call times (ms) and the peak memory of the timed calls above the memory allocated
    before them, under inference mode. Out of memory is a result (as in bench.common.measure);
    so is a backend's refusal or failure (ValueError, RuntimeError, e.g. a compilation error),
    with its message in `note`."""
    cuda = device.type == "cuda"
    if cuda:
        torch.cuda.empty_cache()
    t0 = time.perf_counter()
    try:
        with torch.inference_mode():
            fn()  # first call outside the peak window: lazy caches, compilation
            synchronize(device)
            base = 0
            if cuda:
                base = torch.cuda.memory_allocated(device)
                torch.cuda.reset_peak_memory_stats(device)
            times = pass_times_ms(fn, device, max(warmup - 1, 0), repeats)
        result = {"status": "ok", "median_ms": statistics.median(times),
                  "mean_ms": statistics.fmean(times), "std_ms": statistics.pstdev(times),
                  "peak_mem_gib": peak_gib(device, above=base)}
    except torch.OutOfMemoryError:
        result = failed_timing("out of memory")
    except (RuntimeError, ValueError) as err:
        log.warning("benchmark call failed: %s", err)
        result = {**failed_timing("error"), "note": f"{type(err).__name__}: {err}"[:300]}
    if cuda and result["status"] != "ok":
        torch.cuda.empty_cache()
    return {"warmup": warmup, "repeats": repeats, **result, "timer": event_timer(device),
            "peak_mem_scope": "above_inputs", "wall_s": round(time.perf_counter() - t0, 2)}


# --- generator throughput ---------------------------------------------------------------------

def throughput_claims(model_name: str) -> dict[str, Any]:
    """The paper's img/s of `model_name` (its Table 1 row) and its parameter count."""
    claim = paper_claim(PAPER, CLAIM_TABLE, model_name, "throughput")
    params = paper_claim(PAPER, CLAIM_TABLE, model_name, "params")
    return {**claim, "paper_params_m": params["paper_value"],
            "paper_source": f"{claim['paper_source']} (and column params)"}


def throughput_row(model_name: str, settings: dict[str, Any], backend: str,
                   device: torch.device, calls: tuple[int, int]) -> dict[str, Any]:
    """One generator timed with the official protocol; params counted like main.py (g_ema)."""
    model = {**settings["model"], "backend": backend}
    g = build_generator(model).to(device).eval()
    params_m = sum(p.numel() for p in g.parameters()) / 1e6
    z = torch.randn(1, model["style_dim"], generator=torch.Generator().manual_seed(0)).to(device)
    result = measure_calls(lambda: g(z), device, *calls)
    return {"kind": "throughput", "model": model_name, "variant": settings["variant"],
            "attention": model["attention"],
            "backend": backend if model["attention"] == "hydra_na" else "torch",
            "rpb": True, "side": model["resolution"], "batch": 1, **result,
            "imgs_per_s": 1e3 / result["mean_ms"],  # = passes / sum(pass times), batch 1
            "params_m": round(params_m, 3), **throughput_claims(model_name)}


def throughput_rows(plan: Plan, device: torch.device) -> list[dict[str, Any]]:
    rows = []
    for backend in tqdm(RPB_BACKENDS, desc="throughput", disable=None):
        if backend in plan.backends:
            rows.append(throughput_row("stylenat", plan.stylenat, backend, device,
                                       plan.throughput_calls))
        else:
            rows.append({"kind": "throughput", "model": "stylenat", "variant": "stylenat",
                         "attention": "hydra_na", "backend": backend, "rpb": True,
                         "side": plan.stylenat["model"]["resolution"], "batch": 1,
                         **skipped(backend, device, plan), **throughput_claims("stylenat")})
    rows.append(throughput_row("styleswin", plan.styleswin, "torch", device,
                               plan.throughput_calls))
    return rows


def paper_throughput_ratio() -> dict[str, Any]:
    """The paper's StyleNAT / StyleSwin img/s (32.56 / 30.20), from the claims file."""
    nat, swin = (paper_claim(PAPER, CLAIM_TABLE, m, "throughput")
                 for m in ("stylenat", "styleswin"))
    return {"paper_value": round(nat["paper_value"] / swin["paper_value"], 4),
            "paper_unit": "ratio", "paper_source": f"{nat['paper_source']} / row styleswin"}


def throughput_ratio(rows: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Best StyleNAT backend's imgs/s over StyleSwin's (paper: 32.56 / 30.20 = 1.08)."""
    ok = [r for r in rows if r["kind"] == "throughput" and r["status"] == "ok"]
    nat = max((r for r in ok if r["model"] == "stylenat"), key=lambda r: r["imgs_per_s"],
              default=None)
    swin = next((r for r in ok if r["model"] == "styleswin"), None)
    if nat is None or swin is None:
        value, note = math.nan, "StyleNAT or StyleSwin has no successful throughput row"
    else:
        value = round(nat["imgs_per_s"] / swin["imgs_per_s"], 4)
        note = f"best StyleNAT backend ({nat['backend']}) imgs/s / StyleSwin imgs/s"
    return {"kind": "summary", "metric": "throughput_ratio",
            "backend": nat["backend"] if nat else "",
            "status": "ok" if nat and swin else "no result", "note": note, "value": value,
            "unit": "ratio", **paper_throughput_ratio()}


# --- attention cost against the feature-map side ----------------------------------------------

@dataclass(frozen=True)
class Level:
    """The generator's attention width at one feature-map side."""

    side: int
    heads: int
    head_dim: int
    kernel: int
    dilations: tuple[int, ...]  # 1 and the level's largest dilation (one entry when that is 1)
    window: int                 # StyleSwin's window at this side


def level_of(model: dict[str, Any], side: int) -> Level:
    """Heads, head_dim and dilations of `side` from architecture.py; clear error otherwise."""
    levels = architecture.levels(model)
    kernel = model["kernel_size"]
    usable = [s for s in levels if s >= kernel]
    if side not in usable:
        raise ValueError(f"bench stylenat --sizes: {side} is not a neighbourhood-attention level "
                         f"of the model (resolution {model['resolution']}, kernel_size {kernel}); "
                         f"use some of {usable}")
    heads = architecture.heads(model, side)
    largest = max(architecture.dilations(model, side))
    return Level(side=side, heads=heads, head_dim=architecture.channels(model, side) // heads,
                 kernel=kernel, dilations=tuple(sorted({1, largest})),
                 window=architecture.window_size(model, side))


def attention_configs(level: Level) -> list[dict[str, Any]]:
    """Every attention call timed at one level (row fields besides the measurements)."""
    configs = []
    for backend in (b for b in BACKENDS if b != "auto"):
        for rpb in (True, False) if backend == "flex" else (backend in RPB_BACKENDS,):
            configs += [{"attention": "neighborhood", "backend": backend, "rpb": rpb,
                         "kernel": level.kernel, "dilation": d,
                         "max_dilation": level.dilations[-1]} for d in level.dilations]
    for shift in sorted({0, level.window // 2 if level.side > level.window else 0}):
        configs.append({"attention": "window", "backend": "torch", "rpb": True,
                        "window": level.window, "shift": shift})
    configs.append({"attention": "dense", "backend": "sdpa", "rpb": False})
    return configs


def attention_call(config: dict[str, Any], level: Level, batch: int, device: torch.device
                   ) -> Callable[[], torch.Tensor]:
    """The call to time, with its inputs built once: q, k, v ~ N(0, 1) in the layout each
    attention takes natively (heads-last [B, H, W, heads, D]; SDPA: [B, heads, H*W, D])."""
    gen = torch.Generator().manual_seed(0)
    shape = (batch, level.side, level.side, level.heads, level.head_dim)
    q, k, v = (torch.randn(shape, generator=gen).to(device) for _ in range(3))
    if config["attention"] == "dense":
        q, k, v = (t.flatten(1, 2).transpose(1, 2).contiguous() for t in (q, k, v))
        return lambda: F.scaled_dot_product_attention(q, k, v)
    if config["attention"] == "window":
        table = 2 * config["window"] - 1
        rpb = (0.02 * torch.randn(level.heads, table, table, generator=gen)).to(device)
        return lambda: window_attention(q, k, v, config["window"], config["shift"], rpb)
    table = 2 * level.kernel - 1
    rpb = ((0.02 * torch.randn(level.heads, table, table, generator=gen)).to(device)
           if config["rpb"] else None)
    return lambda: neighborhood_attention(q, k, v, level.kernel, config["dilation"], rpb,
                                          backend=config["backend"])


def cost_rows(plan: Plan, device: torch.device) -> list[dict[str, Any]]:
    model = plan.stylenat["model"]
    levels = [level_of(model, side) for side in plan.sides]  # validate every size up front
    notes = {("neighborhood", "natten"): natten_note(),
             ("dense", "sdpa"): "PyTorch picks the SDPA kernel (fp32: no flash kernel)"}
    rows = []
    for level in tqdm(levels, desc="attention cost", disable=None):
        for config in attention_configs(level):
            row = {"kind": "attention_cost", **config, "side": level.side, "batch": plan.batch,
                   "heads": level.heads, "head_dim": level.head_dim,
                   "note": notes.get((config["attention"], config["backend"]), "")}
            if config["attention"] == "neighborhood" and config["backend"] not in plan.backends:
                rows.append({**row, **skipped(config["backend"], device, plan)})
                continue
            fn = attention_call(config, level, plan.batch, device)
            rows.append({**row, **measure_calls(fn, device, *plan.cost_calls)})
            del fn  # free this config's inputs before the next one allocates its own
    return rows


CROSSOVERS = {  # metric -> (dilation: "1" or the level's largest, backends considered)
    "crossover_side[d=1, rpb]": ("1", "rpb"),
    "crossover_side[d=max, rpb]": ("max", "rpb"),
    "crossover_side[d=1, any]": ("1", "any"),
    "crossover_side[d=max, any]": ("max", "any"),
}


def crossover(rows: Sequence[dict[str, Any]], metric: str) -> dict[str, Any]:
    """Smallest measured side at which the fastest neighbourhood backend (with the relative
    position bias StyleNAT needs, or any) beats dense SDPA, at dilation 1 or the level's largest.
    Dense attention that ran out of memory counts as beaten by any neighbourhood call that ran."""
    dilation, which = CROSSOVERS[metric]
    cost = [r for r in rows if r["kind"] == "attention_cost"]
    sides = sorted({r["side"] for r in cost})
    fastest, dense = {}, {}
    for r in cost:
        if r["attention"] == "dense":
            dense[r["side"]] = r
        elif (r["attention"] == "neighborhood" and r["status"] == "ok"
              and (which == "any" or r["rpb"])
              and r["dilation"] == (1 if dilation == "1" else r["max_dilation"])):
            best = fastest.get(r["side"])
            if best is None or r["median_ms"] < best["median_ms"]:
                fastest[r["side"]] = r

    def beats(side: int) -> bool:
        na, sdpa = fastest.get(side), dense.get(side)
        if na is None or sdpa is None or sdpa["status"] not in ("ok", "out of memory"):
            return False
        return sdpa["status"] == "out of memory" or na["median_ms"] < sdpa["median_ms"]

    wins = [s for s in sides if beats(s)]
    row = {"kind": "summary", "metric": metric, "unit": "px (feature-map side)"}
    if not wins:
        return {**row, "status": "no result", "value": math.nan,
                "note": f"no neighbourhood backend beat dense SDPA at sides {sides}"}
    side = wins[0]
    na, sdpa = fastest[side], dense[side]
    versus = ("dense ran out of memory" if sdpa["status"] == "out of memory"
              else f"dense {sdpa['median_ms']:.3g} ms")
    holds = all(beats(s) for s in sides if s >= side)
    return {**row, "status": "ok", "value": side, "side": side, "backend": na["backend"],
            "note": (f"fastest {na['backend']} {na['median_ms']:.3g} ms vs {versus}; "
                     + ("faster at every larger side" if holds
                        else "not faster at every larger side"))}


# --- one training iteration -------------------------------------------------------------------

@contextmanager
def training_flags(settings: dict[str, Any], device: torch.device) -> Iterator[str]:
    """The precision and determinism a training job runs under; yields the precision label."""
    with precision(TRAIN_PRECISION), training_switches(settings["deterministic"]):
        yield precision_label(TRAIN_PRECISION, device)


def host_batch(settings: dict[str, Any], step: int) -> dict[str, Any]:
    """A batch shaped as `StyleNATTask.batch` returns it, in host memory, with random reals
    (the images' content does not change the cost)."""
    gen = torch.Generator().manual_seed(step)
    n, side = settings["train"]["batch_size"], settings["model"]["resolution"]
    style_dim = settings["model"]["style_dim"]
    return {"reals": from_unit_range(torch.rand(n, 3, side, side, generator=gen)),
            "z_d": torch.randn(n, style_dim, generator=gen),
            "z_g": torch.randn(n, style_dim, generator=gen),
            "aug_real": augment.draw(n, side, side, gen),
            "aug_fake": augment.draw(n, side, side, gen)}


def timed_steps(warmup: int, repeats: int, r1_repeats: int, r1_every: int
                ) -> tuple[list[int], list[int]]:
    """Step numbers timed without R1 (after the warm-up steps 0 .. warmup-1, skipping R1 steps)
    and with R1 (multiples of r1_every after 0)."""
    plain, step = [], max(warmup, 1)
    while len(plain) < repeats:
        if step % r1_every:
            plain.append(step)
        step += 1
    return plain, [r1_every * k for k in range(1, r1_repeats + 1)]


def train_step_timing(settings: dict[str, Any], device: torch.device,
                      calls: tuple[int, int, int]) -> dict[str, Any]:
    """Build the training task (DDP-wrapped when a process group is up) and time its
    train_step: the first iteration (step 0: R1, compilation), the rest of the warm-up, then
    iterations without and with R1; seconds per iteration, wall clock synchronised. Failures
    (out of memory, a compilation error) are results."""
    from sparsegen.models.stylenat.task import build_task

    warmup, repeats, r1_repeats = calls
    plain_steps, r1_steps = timed_steps(warmup, repeats, r1_repeats,
                                        settings["loss"]["r1_every"])
    start = time.perf_counter()
    out: dict[str, Any] = {"warmup": max(warmup, 1), "plain_steps": plain_steps,
                           "r1_steps": r1_steps}
    try:
        torch.manual_seed(settings["seed"])  # every rank builds the same networks
        task = build_task(settings, device)

        def step(s: int) -> float:
            batch = host_batch(settings, s)
            synchronize(device)
            t0 = time.perf_counter()
            task.train_step(s, batch)
            synchronize(device)
            return time.perf_counter() - t0

        out["compile_s"] = step(0)
        out["warmup_s"] = sum(step(s) for s in range(1, warmup))
        reset_peak(device)
        out["plain_s"] = [step(s) for s in plain_steps]
        out["r1_s"] = [step(s) for s in r1_steps]
        out.update(status="ok", peak_mem_gib=peak_gib(device))
    except torch.OutOfMemoryError:
        out.update(status="out of memory")
    except (RuntimeError, ValueError) as err:
        log.warning("training iteration failed: %s", err)
        out.update(status="error", note=f"{type(err).__name__}: {err}"[:300])
    out["wall_s"] = round(time.perf_counter() - start, 2)
    return out


def train_rows(timing: dict[str, Any], settings: dict[str, Any], gpus: int, label: str,
               device: torch.device) -> list[dict[str, Any]]:
    """Rows of one timing: iterations without R1 and with R1 (or one failed row)."""
    m, t = settings["model"], settings["train"]
    where = f"{gpus} GPU(s) under DDP (torchrun)" if gpus > 1 else f"1 {device.type} process"
    base = {"kind": "train_step", "model": PAPER, "variant": settings["variant"],
            "attention": m["attention"], "backend": m["backend"], "rpb": True,
            "side": m["resolution"], "batch": t["batch_size"], "gpus": gpus,
            "precision": label, "deterministic": settings["deterministic"],
            "timer": "wall clock, synchronised around each iteration",
            "peak_mem_scope": "process", "iterations": t["iterations"]}
    if timing["status"] != "ok":
        return [{**base, **failed_timing(timing["status"]), "metric": "iteration",
                 "note": f"{where}: {timing.get('note', timing['status'])}",
                 "wall_s": timing.get("wall_s", math.nan)}]
    return [{**base, "metric": "iteration", "status": "ok", **summarise_ms(timing["plain_s"]),
             "warmup": timing["warmup"], "repeats": len(timing["plain_s"]),
             "compile_s": round(timing["compile_s"], 2), "wall_s": timing["wall_s"],
             "peak_mem_gib": timing["peak_mem_gib"],
             "note": f"{where}, per-GPU batch {t['batch_size']}: D step (logistic + bCR, "
                     "clipped) + G step + EMA, no R1; compile_s = the first iteration (step 0, "
                     f"with R1: Flex compilation); then {timing['warmup'] - 1} more warm-up "
                     f"iteration(s) ({timing['warmup_s']:.2f} s); steps {timing['plain_steps']}"},
            {**base, "metric": "iteration_with_r1", "status": "ok",
             **summarise_ms(timing["r1_s"]), "warmup": "", "repeats": len(timing["r1_s"]),
             "peak_mem_gib": timing["peak_mem_gib"],
             "note": f"{where}: an iteration with lazy R1 (step % r1_every == 0), steps "
                     f"{timing['r1_steps']}"}]


def gpu_hours(rows: Sequence[dict[str, Any]], settings: dict[str, Any]) -> dict[str, Any]:
    """GPU-hours of one model at the paper's recipe from the most GPUs measured:
    iterations x s/iteration x GPUs / 3600, GPUs = the recipe's global batch / per-GPU batch
    and s/iteration = ((r1_every - 1) x median without R1 + median with R1) / r1_every."""
    recipe, t = paper_recipe(PAPER, CLAIM_TABLE), settings["train"]
    r1_every = settings["loss"]["r1_every"]
    gpus_paper = recipe["global_batch"] // t["batch_size"]
    ok = [r for r in rows if r["kind"] == "train_step" and r["status"] == "ok"
          and r["variant"] == settings["variant"]]
    row = {"kind": "summary", "metric": "gpu_hours_per_model", "model": PAPER,
           "variant": settings["variant"], "unit": "GPU-hours",
           "iterations": recipe["iterations"], "batch": t["batch_size"]}
    if not ok:
        return {**row, "status": "no result", "value": math.nan,
                "note": "no training iteration was timed"}
    gpus = max(r["gpus"] for r in ok)
    plain, r1 = (next(r for r in ok if r["gpus"] == gpus and r["metric"] == metric)
                 for metric in ("iteration", "iteration_with_r1"))
    s_it = ((r1_every - 1) * plain["median_ms"] + r1["median_ms"]) / r1_every / 1e3
    hours = recipe["iterations"] * s_it * gpus_paper / 3600
    source = f"{gpus} GPUs (DDP)" if gpus > 1 else "1 GPU (no DDP measured)"
    return {**row, "status": "ok", "gpus": gpus, "value": round(hours), "unit": "GPU-hours",
            "gpu_hours_per_model": round(hours), "precision": plain["precision"],
            "derived_from": f"train_step on {source}: ({r1_every - 1} x median "
                            f"{plain['median_ms'] / 1e3:.4g} s + median with R1 "
                            f"{r1['median_ms'] / 1e3:.4g} s) / {r1_every} = {s_it:.4g} "
                            f"s/iteration; {recipe['iterations']} iterations x {s_it:.4g} s x "
                            f"{gpus_paper} GPUs (global batch {recipe['global_batch']} / "
                            f"{t['batch_size']} per GPU) / 3600",
            "note": "per FFHQ-256 or Church-256 model at the paper's recipe; assumes the "
                    "per-GPU iteration time holds on 8 GPUs"}


class LaunchFailed(RuntimeError):
    """The DDP benchmark processes gave no result; `status` goes into the row."""

    def __init__(self, status: str, note: str) -> None:
        super().__init__(note)
        self.status = status


def launch_ddp(nproc: int, device_type: str, calls: tuple[int, int, int], timeout: float,
               preset: str | None = None, backend: str | None = None) -> dict[str, Any]:
    """Run `sparsegen.bench.stylenat_ddp` under `torchrun --standalone --nproc_per_node nproc`
    (NCCL on CUDA, gloo on the CPU) with `train_settings(device_type, preset, backend)` and
    return rank 0's timing. The processes run in their own session, which a timeout ends
    whole."""
    src = str(Path(__file__).resolve().parents[2])
    env = {**os.environ, **NCCL_SAFE_ENV,
           "PYTHONPATH": os.pathsep.join(p for p in (src, os.environ.get("PYTHONPATH")) if p)}
    with tempfile.TemporaryDirectory(prefix="bench-stylenat-ddp-") as tmp:
        result, log_path = Path(tmp) / "rank0.json", Path(tmp) / "torchrun.log"
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone",
               f"--nproc_per_node={nproc}", "-m", "sparsegen.bench.stylenat_ddp",
               "--device", device_type, "--out", str(result), "--calls", *map(str, calls),
               *(["--preset", preset] if preset else []),
               *(["--backend", backend] if backend else [])]
        with log_path.open("w") as log_file:
            proc = subprocess.Popen(cmd, stdout=log_file, stderr=subprocess.STDOUT, env=env,
                                    start_new_session=True)
            try:
                code = proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
                raise LaunchFailed("timeout", f"no result within {timeout:.0f} s: "
                                   + _tail(log_path)) from None
        if code != 0 or not result.exists():
            raise LaunchFailed("error", f"torchrun exited with {code}: " + _tail(log_path))
        return json.loads(result.read_text())


def _tail(path: Path, chars: int = 400) -> str:
    return " ".join(path.read_text(errors="replace")[-chars:].split())


def training_rows(plan: Plan, device: torch.device, started: float) -> list[dict[str, Any]]:
    """One iteration on 1 GPU here, then on `plan.ddp_gpus` GPUs under torchrun, FFHQ-1024's
    skipped row, and the GPU-hours summary."""
    settings = plan.train
    with training_flags(settings, device) as label:
        timing = train_step_timing(settings, device, plan.train_calls)
    rows = train_rows(timing, settings, 1 if device.type == "cuda" else 0, label, device)
    release(device)  # the ranks need the memory of GPU 0
    base = {"kind": "train_step", "model": PAPER, "variant": settings["variant"],
            "backend": settings["model"]["backend"], "side": settings["model"]["resolution"],
            "batch": settings["train"]["batch_size"], "precision": label, "metric": "iteration"}
    if plan.ddp_gpus:
        timeout = max(MIN_DDP_S, BUDGET_S - (time.perf_counter() - started))
        try:
            ddp = launch_ddp(plan.ddp_gpus, device.type, plan.train_calls, timeout)
            rows += train_rows(ddp, settings, plan.ddp_gpus, label, device)
        except LaunchFailed as err:
            rows.append({**base, "gpus": plan.ddp_gpus, **failed_timing(err.status),
                         "note": str(err)[:400]})
    else:
        why = (f"dry run on {device.type}" if device.type != "cuda" else
               f"{torch.cuda.device_count()} CUDA GPU(s) visible")
        rows.append({**base, "gpus": DDP_GPUS, "status": "skipped",
                     "note": f"{why}: the {DDP_GPUS}-GPU DDP iteration needs {DDP_GPUS} GPUs"})
    rows.append({**base, "variant": "ffhq1024", "side": 1024, "batch": 4, "status": "skipped",
                 "note": "FFHQ-1024 (batch 4 per GPU) is not timed: too large to time within "
                         "the benchmark's few minutes"})
    rows.append(gpu_hours(rows, settings))
    return rows


# --- the run ----------------------------------------------------------------------------------

def skipped(backend: str, device: torch.device, plan: Plan) -> dict[str, Any]:
    """The row fields of a backend this run does not time, and why."""
    if backend in available_backends(device):
        why = (f"dry run on {device.type}: only {', '.join(plan.backends)} timed ({backend!r} "
               "falls back to an eager dense reference path off CUDA)")
    elif backend == "natten":
        why = ("natten is not installed (PyPI has only its source distribution, no wheel built "
               "for this torch)")
    else:
        why = f"backend {backend!r} is not available on {device.type}"
    return {"status": "skipped", "note": why}


def natten_note() -> str:
    """Which NATTEN ran: its compiled kernels, or (without libnatten) its Flex Attention path."""
    if importlib.util.find_spec("natten") is None:
        return ""
    import natten

    kernels = ("its compiled kernels" if natten.HAS_LIBNATTEN
               else "no compiled kernels (libnatten): NATTEN's Flex Attention path")
    return f"natten {natten.__version__}, {kernels}"


def comparability(row: dict[str, Any], device_name: str) -> dict[str, Any]:
    columns = paper_claims(PAPER).tables[CLAIM_TABLE].columns
    if row["kind"] == "throughput":
        note = (f"measured on {device_name}; {columns['throughput'].hardware_bound}; "
                "neighbourhood attention re-implemented (the paper ran NATTEN's kernels, "
                "natten >= 0.14)")
    elif row.get("metric") == "throughput_ratio":
        note = (f"ratio of two generators on {device_name}; the paper's is on its GPU with "
                "NATTEN's kernels")
    else:
        note = "no paper counterpart"
    return {"comparable": False, "non_comparable_reasons": note}


def benchmark(plan: Plan, device: torch.device, out: Path | None = None,
              sections: Sequence[str] = ("throughput", "cost", "train")) -> list[dict[str, Any]]:
    """Every row of one run: throughput, attention cost, their summaries, then training; with
    `out`, a run that breaks off still writes the rows measured before it."""
    started = time.perf_counter()
    env = environment(device, natten=True)  # a GPU run without a full commit stops here
    gpus = 1 if device.type == "cuda" else 0

    def finish(r: dict[str, Any]) -> dict[str, Any]:
        return {"paper": PAPER, "gpus": gpus, **r, **env, **comparability(r, env["device"])}

    rows: list[dict[str, Any]] = []
    with rows_kept_on_failure(PAPER, out, rows, finish) if out else _nothing():
        with official_flags(device) as label:
            if "throughput" in sections:
                rows += [{**r, "precision": label} for r in throughput_rows(plan, device)]
            if "cost" in sections:
                rows += [{**r, "precision": label} for r in cost_rows(plan, device)]
        if "throughput" in sections:
            rows.append({**throughput_ratio(rows), "precision": label})
        if "cost" in sections:
            rows += [{**crossover(rows, m), "precision": label} for m in CROSSOVERS]
        if "train" in sections:
            rows += training_rows(plan, device, started)
    return [finish(r) for r in rows]


@contextmanager
def _nothing() -> Iterator[None]:
    yield


def run(out: Path | None = None, sizes: list[int] | None = None, device_name: str = "cuda"
        ) -> Path:
    """Benchmark on `device_name` and write the CSV (default results/bench/stylenat.csv)."""
    device = resolve_device(device_name)
    out = out or Path(Layout(load_params()).bench(PAPER))
    return write_csv(out, benchmark(plan_for(device, sizes), device, out))
