"""StyleNAT efficiency (Table 1 "Usage Metrics", Fig. 3): generator throughput of StyleNAT and the
StyleSwin baseline at 256², the cost of one attention call against the feature-map side for
every neighbourhood-attention backend, window attention and dense attention, how far those calls
are from the GPU's memory bandwidth, and the time of one training iteration (the GPU-hours of a
model). Each efficiency target is a summary row with `target` and `target_met`.

Bandwidth: a `bandwidth` row times a device-to-device `dst.copy_(src)` of a 1 GiB float32 tensor
(bytes = read + write; GB/s = bytes / median call / 1e9): the physical limit the attention calls
are held to.

Throughput follows the official `type=throughput` protocol (src/throughput.py, main.py): the
generator in eval mode (random weights: speed does not depend on them), batch 1, fixed z ~ N(0, I),
10 warm-up + 500 timed forwards, a CUDA event pair around each pass then synchronize,
torch.inference_mode, TF32 matmuls and convolutions (precision `tf32`), cuDNN benchmark on;
imgs/s = passes / sum(pass times). StyleNAT is timed once per neighbourhood backend that adds
the relative position bias (RPB_BACKENDS, the model's `backend` key). StyleSwin, whose window
attention calls `F.scaled_dot_product_attention` with an additive bias, is timed once per SDPA
kernel that accepts one (`sdpa_choice`: efficient, math, cudnn through
`torch.nn.attention.sdpa_kernel`; a kernel that refuses fp32 or the bias is an `error` row
whose note keeps PyTorch's reasons) and under PyTorch's own choice (`default`); `sdpa_backend`
says which SDPA kernel ran, read from the profiler (the aten SDPA op; on CUDA the note names
the attention kernels launched). The paper's values (Table 1: StyleNAT 32.56 img/s, 48.92 M
params; StyleSwin 30.20 img/s, 48.93 M) are read from pipeline/claims/stylenat.yaml. Summary
`throughput_ratio`: the best StyleNAT row's imgs/s over the FASTEST StyleSwin row's, target
>= 1.08 (the paper); `throughput_ratio[stretch]`: the same value, target >= 1.3.

Attention cost: one call at the FFHQ-256 generator's width at each level (all the level's heads,
head_dim from architecture.py; in the model each Hydra partition gets a share of them), kernel 7
at dilation 1 and at the level's largest, under the same `tf32` flags; q, k, v ~ N(0, 1)
float32 (precision `tf32`), or bfloat16 with `--cost-dtype bfloat16` (precision `bf16`: q, k,
v, the RPB table and the output in bfloat16, the input NATTEN compiles its Flex path for).
`pass`: `forward` (inference mode) or `forward_backward` (out.backward(grad) after the
forward, q, k, v and the RPB table requiring grad, timed together). Fused NA (backend "fused",
with RPB), window attention with RPB (shift 0 and window // 2, on PyTorch's SDPA choice, which
`sdpa_backend` names) and dense SDPA (forward) run at batch 1 and at the per-GPU training batch
(8), both passes. The reference NA backends run at the training batch only (batch 1 is left
out for the budget): flex with RPB (both passes) and without (forward only), natten without
RPB (NATTEN >= 0.20 has none; the library's best path on this install, which the note names;
forward+backward only with its compiled kernels), torch with RPB (both passes; out of memory
is a result). time = median of CUDA-event times after warm-up (3 + 20 calls, fewer timed calls
where one call takes long: at least MIN_REPEATS within COST_ROW_S seconds); memory = peak
allocated during the timed calls above what was allocated before them (inputs, caches).
Every row carries `attention_scores` (B * H * W * heads * keys per query: k², window² or H*W)
and `min_bytes`, the traffic no implementation can avoid in the rows' element type
(`min_bytes`: forward q, k, v read once, the output written once, the RPB table read;
forward+backward adds the backward's reads of q, k, v, out and dO, its writes of dq, dk, dv,
the log-sum-exp rows (fp32) written in the forward and read in the backward, the table read
again and its gradient written); rows
that ran get `achieved_gb_per_s`, `bandwidth_fraction` (of the copy) and `achieved_tflop_per_s`
(4 * scores * head_dim flops forward, 3.5 times that forward+backward). Summary rows: the
smallest side at which the fastest neighbourhood backend beats dense SDPA (training batch,
forward); `bandwidth_fraction[...]` of fused NA at 256², training batch, forward, dilation 1
(target >= 0.5); `na_over_window[batch, pass]`: at every side >= 64 the fused NA median over
the window call's (NA dilation 1 against window shift 0, NA at the largest dilation against
the shifted window: the model's two Hydra partitions against Swin's two halves), value = the
worst ratio, target <= 1.

Training: one full iteration of the FFHQ-256 StyleNAT (variant `stylenat`, random weights) with
each of TRAIN_BACKENDS ("fused", "flex") at the per-GPU batch 8,
`models.stylenat.task.build_task(...).train_step` with the batch already in host memory (D step
with bCR and clipping, lazy R1 on every 16th step, G step, EMA), under the training job's
switches (PyTorch's default precision `fp32+tf32conv`: our training sets no TF32; deterministic
algorithms as params.yaml `deterministic`). The first iteration (step 0, with R1) compiles the
kernels: its seconds are `compile_s`; after the warm-up, 10 iterations without R1 and 2 with R1
are timed (wall clock, synchronised). On 1 GPU in this process, and with the first backend on
2 GPUs under DDP (`torchrun --standalone --nproc_per_node 2`, one process per GPU running
`sparsegen.bench.stylenat_ddp`, rank 0 reporting) when 2 GPUs are visible. A summary row per
backend derives the GPU-hours of a model at the paper's recipe (1M iterations at global batch
64, i.e. 8 GPUs of batch 8): iterations x s/iteration x 8 / 3600, with s/iteration = (15 x
median without R1 + median with R1) / 16 from the DDP rows when measured, else from 1 GPU.
FFHQ-1024 is not timed.

Budget: one run must finish within about 8 minutes, so no row starts once `budget_s` seconds
(BUDGET_S by default; `python -m sparsegen.bench.stylenat --budget-s S`) have passed since the
run began: it is written as `skipped` with a note starting "skipped (budget)". The work runs in
order of need: the bandwidth, throughput, the fused NA / window / dense rows, the training
iterations, then the reference backends (flex, natten, torch: forward before
forward+backward, dilation 1 first, largest side first); the CSV lists the rows in their
natural order whatever the order they ran in.

On the CPU the same code runs as a dry run for tests: the smoke preset's tiny model, 1 warm-up +
2 timed calls, a 16 MiB copy, attention batches 1 and the smoke training batch, only the "torch"
neighbourhood backend timed ("fused" is CUDA only; on the CPU "flex" and "natten" run eager
dense reference paths), the others recorded as skipped with the reason; SDPA choices the CPU
refuses are `error` rows; one training iteration with the torch backend ("fused" and "flex"
skipped), and the DDP row skipped."""

from __future__ import annotations

import argparse
import copy
import importlib.util
import json
import logging
import math
import os
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch.autograd import DeviceType
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.profiler import ProfilerActivity, profile
from tqdm import tqdm

from sparsegen.attention.neighborhood import (
    available_backends,
    natten_compiles_flex,
    neighborhood_attention,
)
from sparsegen.attention.window import window_attention
from sparsegen.bench.common import (
    environment,
    failed_timing,
    paper_claim,
    paper_claims,
    paper_recipe,
    peak_gib,
    plan_changes,
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
RPB_BACKENDS = ("fused", "flex", "torch")  # neighbourhood backends that add the RPB
# PyTorch's own SDPA choice, and each SDPA kernel that takes an additive bias (flash does not)
SDPA_CHOICES = {"default": None, "efficient": SDPBackend.EFFICIENT_ATTENTION,
                "math": SDPBackend.MATH, "cudnn": SDPBackend.CUDNN_ATTENTION}
# the aten op of each SDPA kernel, as the profiler names it
SDPA_OPS = {"aten::_scaled_dot_product_efficient_attention": "efficient",
            "aten::_scaled_dot_product_flash_attention": "flash",
            "aten::_scaled_dot_product_flash_attention_for_cpu": "flash",
            "aten::_scaled_dot_product_cudnn_attention": "cudnn",
            "aten::_scaled_dot_product_attention_math": "math",
            "aten::_scaled_dot_product_fused_attention_overrideable": "overrideable"}
ATTENTION_KERNEL = re.compile(r"fmha|flash|attn|attention|sdpa", re.IGNORECASE)
PASSES = ("forward", "forward_backward")
# reference NA backends (timed at the training batch only): (backend, rpb, passes), in the
# order they get what is left of the budget
REFERENCE_NA = (("flex", True, PASSES), ("natten", False, PASSES),
                ("flex", False, ("forward",)), ("torch", True, PASSES))
FP32_BYTES = 4
# element type of the attention rows' q, k, v, bias and output (`--cost-dtype`) -> precision label
COST_DTYPES = {"float32": (torch.float32, "tf32"), "bfloat16": (torch.bfloat16, "bf16")}
FLOPS_PER_SCORE = {"forward": 4, "forward_backward": 14}  # x head_dim: q.k and p.v, 2 flops
#   per multiply-add; the backward 2.5 times the forward (FlashAttention's convention)
SIZES = (32, 64, 128, 256)
DRY_RUN_SIZES = (8, 16)
COST_REPEATS = {"cuda": (3, 20), "cpu": (1, 2)}  # (warm-up, timed) calls per attention config
COST_ROW_S = 3.0   # timed calls of one attention row are cut to about this many seconds ...
MIN_REPEATS = 5    # ... but not below this many
COPY_BYTES = {"cuda": 2**30, "cpu": 2**24}  # the tensor the bandwidth row copies
DRY_RUN_THROUGHPUT = (1, 2)
TRAIN_BACKENDS = ("fused", "flex")  # NA backends of the timed training iteration (CUDA)
# (warm-up iterations incl. the compiling first, timed without R1, timed with R1)
TRAIN_CALLS = {"cuda": (3, 10, 2), "cpu": (1, 1, 1)}
TRAIN_PRECISION = "fp32+tf32conv"  # what `sparsegen train` runs: it sets no TF32
DDP_GPUS = 2
BUDGET_S = 390  # no row starts after this many seconds: with the last row and start-up, the
#                 run stays under 8 minutes
MIN_DDP_S = 120  # the DDP launch gets what is left of the budget, at least this
SECTIONS = ("throughput", "cost", "train")
NA_VS_WINDOW_MIN_SIDE = 64
TARGETS = {"throughput_ratio": ">= 1.08", "throughput_ratio[stretch]": ">= 1.3",
           "bandwidth_fraction": ">= 0.5", "na_over_window": "<= 1"}
BANDWIDTH_TARGET_SIDE = 256
# NVLink multicast stays off in every process we start (the GPU machines require it).
NCCL_SAFE_ENV = {"NCCL_NVLS_ENABLE": "0", "TORCH_SYMM_MEM_DISABLE_MULTICAST": "1",
                 "NVSHMEM_DISABLE_NVLS": "1"}


@dataclass(frozen=True)
class Plan:
    """What one benchmark run measures: the two generators' settings, the sides and batches of
    the cost curves, the training settings, the number of calls and the time budget."""

    stylenat: dict[str, Any]
    styleswin: dict[str, Any]
    sides: tuple[int, ...]
    batches: tuple[int, ...]   # attention batches; the reference backends run at the last only
    throughput_calls: tuple[int, int]
    cost_calls: tuple[int, int]
    copy_bytes: int            # bytes of the tensor the bandwidth row copies
    backends: tuple[str, ...]  # neighbourhood backends timed; the others get a "skipped" row
    train: dict[str, Any]
    train_backends: tuple[str, ...]  # NA backends a training iteration is timed with
    train_calls: tuple[int, int, int]
    ddp_gpus: int              # 0: no DDP row is measured
    budget_s: float = BUDGET_S
    sections: tuple[str, ...] = SECTIONS
    cost_dtype: str = "float32"  # a key of COST_DTYPES


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


def with_backend(settings: dict[str, Any], backend: str) -> dict[str, Any]:
    """A copy of training settings with the NA backend `backend`."""
    settings = copy.deepcopy(settings)
    settings["model"]["backend"] = backend
    return settings


def plan_for(device: torch.device, sizes: Sequence[int] | None = None) -> Plan:
    """The paper model on a GPU; the smoke preset's tiny model as a CPU dry run, timing only the
    "torch" backend ("flex" and "natten" fall back to eager dense reference paths on the CPU)."""
    dry = device.type != "cuda"
    where = "cpu" if dry else "cuda"
    params = load_params(overrides={"preset": "smoke" if dry else "paper", "weights": "random"})
    stylenat, styleswin = (resolve(params, PAPER, v, check=False)
                           for v in ("stylenat", "styleswin"))
    ev = stylenat["eval"]
    return Plan(stylenat=stylenat, styleswin=styleswin,
                sides=tuple(sizes or (DRY_RUN_SIZES if dry else SIZES)),
                batches=tuple(sorted({1, stylenat["train"]["batch_size"]})),
                throughput_calls=(DRY_RUN_THROUGHPUT if dry else
                                  (ev["throughput_warmup"], ev["throughput_repeats"])),
                cost_calls=COST_REPEATS[where], copy_bytes=COPY_BYTES[where],
                backends=("torch",) if dry else tuple(available_backends(device)),
                train=train_settings(device.type),
                train_backends=("torch",) if dry else TRAIN_BACKENDS,
                train_calls=TRAIN_CALLS[where],
                ddp_gpus=0 if dry or torch.cuda.device_count() < DDP_GPUS else DDP_GPUS)


class Deadline:
    """The run's time budget: a row is not started once it is spent."""

    def __init__(self, budget_s: float) -> None:
        self.budget_s, self.started = budget_s, time.perf_counter()

    def left(self) -> float:
        return self.budget_s - (time.perf_counter() - self.started)

    def spent(self) -> bool:
        return self.left() <= 0

    def skipped(self) -> dict[str, Any]:
        """The fields of a row that was not started."""
        return {"status": "skipped", "note": f"skipped (budget): the run's {self.budget_s:g} s "
                                             "were spent before this row started"}


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


def fewer_repeats(repeats: int, call_s: float, max_s: float) -> int:
    """Timed calls when one call takes `call_s` seconds: as many as fit in `max_s`, at least
    MIN_REPEATS, at most `repeats`."""
    fit = int(max_s / call_s) if call_s > 0 else repeats
    return min(repeats, max(MIN_REPEATS, fit))


def measure_calls(fn: Callable[[], Any], device: torch.device, warmup: int, repeats: int,
                  max_s: float | None = None) -> dict[str, Any]:
    """Per-call times (ms) and the peak memory of the timed calls above the memory allocated
    before them, under inference mode (`fn` may switch it off itself, as a forward+backward
    does). With `max_s`, the second warm-up call is timed too and fewer calls are timed when
    they would take longer than `max_s` (`fewer_repeats`). Out of memory is a result (as in
    bench.common.measure); so is a backend's refusal or failure (ValueError, RuntimeError,
    e.g. a compilation error), with its message in `note`."""
    cuda = device.type == "cuda"
    if cuda:
        torch.cuda.empty_cache()
    t0 = time.perf_counter()
    warmed = 1
    try:
        with torch.inference_mode():
            fn()  # first call outside the peak window: lazy caches, compilation
            synchronize(device)
            if max_s is not None:
                start = time.perf_counter()
                fn()
                synchronize(device)
                repeats, warmed = fewer_repeats(repeats, time.perf_counter() - start, max_s), 2
            base = 0
            if cuda:
                base = torch.cuda.memory_allocated(device)
                torch.cuda.reset_peak_memory_stats(device)
            times = pass_times_ms(fn, device, max(warmup - warmed, 0), repeats)
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
    return {"warmup": max(warmup, warmed), "repeats": repeats, **result,
            "timer": event_timer(device), "peak_mem_scope": "above_inputs",
            "wall_s": round(time.perf_counter() - t0, 2)}


def join_notes(*notes: str | None) -> str:
    return "; ".join(n for n in notes if n)


# --- which SDPA kernel ran --------------------------------------------------------------------

@contextmanager
def sdpa_choice(name: str) -> Iterator[None]:
    """SDPA restricted to the kernel SDPA_CHOICES[name] inside the block ("default": PyTorch
    chooses)."""
    backend = SDPA_CHOICES[name]
    with nullcontext() if backend is None else sdpa_kernel(backend):
        yield


def sdpa_ran(fn: Callable[[], Any], device: torch.device) -> dict[str, str]:
    """`sdpa_backend`: the SDPA kernel(s) one call of `fn` ran, from the aten SDPA ops the
    profiler saw ("+"-joined if several; "" if none), and a note naming them and, on CUDA, the
    attention kernels launched."""
    activities = [ProfilerActivity.CPU]
    if device.type == "cuda":
        activities.append(ProfilerActivity.CUDA)
    with torch.inference_mode(), profile(activities=activities) as prof:
        fn()
        synchronize(device)
    events = prof.events()
    label = "+".join(sorted({SDPA_OPS[e.name] for e in events if e.name in SDPA_OPS}))
    kernels = sorted({e.name for e in events
                      if e.device_type == DeviceType.CUDA and ATTENTION_KERNEL.search(e.name)})
    note = f"SDPA ran: {label or 'no SDPA op'} (profiler)"
    if kernels:
        note += f"; CUDA kernels: {', '.join(k[:100] for k in kernels[:3])}"
    return {"sdpa_backend": label, "note": note}


def measure_sdpa(fn: Callable[[], Any], device: torch.device, calls: tuple[int, int],
                 choice: str, max_s: float | None = None) -> dict[str, Any]:
    """`measure_calls` under the SDPA choice `choice`; a row that ran says which kernel did
    (`sdpa_ran`), a refused choice is an error row whose note keeps PyTorch's warnings (its
    reasons for refusing each kernel)."""
    with sdpa_choice(choice), warnings.catch_warnings(record=True) as caught:
        result = measure_calls(fn, device, *calls, max_s=max_s)
        if result["status"] == "ok":
            return {**result, **sdpa_ran(fn, device)}
    reasons = " | ".join(dict.fromkeys(str(w.message).strip() for w in caught))
    return {**result, "note": join_notes(result.get("note"), reasons)[:600]}


# --- generator throughput ---------------------------------------------------------------------

def throughput_claims(model_name: str) -> dict[str, Any]:
    """The paper's img/s of `model_name` (its Table 1 row) and its parameter count."""
    claim = paper_claim(PAPER, CLAIM_TABLE, model_name, "throughput")
    params = paper_claim(PAPER, CLAIM_TABLE, model_name, "params")
    return {**claim, "paper_params_m": params["paper_value"],
            "paper_source": f"{claim['paper_source']} (and column params)"}


def throughput_fields(model_name: str, settings: dict[str, Any], backend: str,
                      choice: str) -> dict[str, Any]:
    """The row fields of one generator's throughput besides the measurement."""
    model = settings["model"]
    return {"kind": "throughput", "model": model_name, "variant": settings["variant"],
            "attention": model["attention"],
            "backend": backend if model["attention"] == "hydra_na" else "torch",
            "sdpa_choice": choice, "rpb": True, "side": model["resolution"], "batch": 1,
            **throughput_claims(model_name)}


def throughput_row(model_name: str, settings: dict[str, Any], backend: str,
                   device: torch.device, calls: tuple[int, int], choice: str = ""
                   ) -> dict[str, Any]:
    """One generator timed with the official protocol (under the SDPA choice `choice`, if
    given); params counted like main.py (g_ema)."""
    model = {**settings["model"], "backend": backend}
    g = build_generator(model).to(device).eval()
    params_m = sum(p.numel() for p in g.parameters()) / 1e6
    z = torch.randn(1, model["style_dim"], generator=torch.Generator().manual_seed(0)).to(device)
    result = (measure_sdpa(lambda: g(z), device, calls, choice) if choice
              else measure_calls(lambda: g(z), device, *calls))
    return {**throughput_fields(model_name, settings, backend, choice), **result,
            "imgs_per_s": 1e3 / result["mean_ms"],  # = passes / sum(pass times), batch 1
            "params_m": round(params_m, 3)}


def throughput_rows(plan: Plan, device: torch.device, deadline: Deadline
                    ) -> list[dict[str, Any]]:
    """StyleNAT with each RPB backend, then StyleSwin under each SDPA choice."""
    runs = [("stylenat", plan.stylenat, b, "") for b in RPB_BACKENDS]
    runs += [("styleswin", plan.styleswin, "torch", c) for c in SDPA_CHOICES]
    rows = []
    for name, settings, backend, choice in tqdm(runs, desc="throughput", disable=None):
        if deadline.spent():
            rows.append({**throughput_fields(name, settings, backend, choice),
                         **deadline.skipped()})
        elif name == "stylenat" and backend not in plan.backends:
            rows.append({**throughput_fields(name, settings, backend, choice),
                         **skipped(backend, device, plan)})
        else:
            rows.append(throughput_row(name, settings, backend, device, plan.throughput_calls,
                                       choice))
            release(device)
    return rows


def paper_throughput_ratio() -> dict[str, Any]:
    """The paper's StyleNAT / StyleSwin img/s (32.56 / 30.20), from the claims file."""
    nat, swin = (paper_claim(PAPER, CLAIM_TABLE, m, "throughput")
                 for m in ("stylenat", "styleswin"))
    return {"paper_value": round(nat["paper_value"] / swin["paper_value"], 4),
            "paper_unit": "ratio", "paper_source": f"{nat['paper_source']} / row styleswin"}


def target_of(metric: str) -> str:
    """The target of a summary metric (TARGETS, by its name before any "[")."""
    return TARGETS[metric if metric in TARGETS else metric.split("[")[0]]


def meets(metric: str, value: float) -> bool | None:
    """Whether `value` meets the metric's target; None without a value."""
    if math.isnan(value):
        return None
    op, bound = target_of(metric).split()
    return value >= float(bound) if op == ">=" else value <= float(bound)


def target_fields(metric: str, met: bool | None) -> dict[str, Any]:
    """`target` and `target_met` (met | not met; "" when unknown)."""
    return {"target": target_of(metric),
            "target_met": "" if met is None else ("met" if met else "not met")}


def throughput_ratio(rows: Sequence[dict[str, Any]], metric: str = "throughput_ratio"
                     ) -> dict[str, Any]:
    """Best StyleNAT row's imgs/s over the fastest StyleSwin row's (whichever SDPA kernel; paper:
    32.56 / 30.20 = 1.08), with the target of `metric` (throughput_ratio or its stretch)."""
    ok = [r for r in rows if r["kind"] == "throughput" and r["status"] == "ok"]
    nat, swin = (max((r for r in ok if r["model"] == m), key=lambda r: r["imgs_per_s"],
                     default=None) for m in ("stylenat", "styleswin"))
    if nat is None or swin is None:
        value, note = math.nan, "StyleNAT or StyleSwin has no successful throughput row"
    else:
        value = round(nat["imgs_per_s"] / swin["imgs_per_s"], 4)
        note = (f"best StyleNAT backend ({nat['backend']}, {nat['imgs_per_s']:.1f} img/s) / "
                f"fastest StyleSwin (SDPA choice {swin.get('sdpa_choice') or '?'}, ran "
                f"{swin.get('sdpa_backend') or '?'}, {swin['imgs_per_s']:.1f} img/s)")
    return {"kind": "summary", "metric": metric, "backend": nat["backend"] if nat else "",
            "sdpa_choice": swin.get("sdpa_choice", "") if swin else "",
            "status": "ok" if nat and swin else "no result", "note": note, "value": value,
            "unit": "ratio", **target_fields(metric, meets(metric, value)),
            **paper_throughput_ratio()}


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


def is_reference(config: dict[str, Any]) -> bool:
    """A reference NA backend's call (timed last, at the training batch only)."""
    return config["attention"] == "neighborhood" and config["backend"] != "fused"


def attention_configs(level: Level, batches: Sequence[int]) -> list[dict[str, Any]]:
    """Every attention call timed at one level (row fields besides the measurements), in CSV
    order: per batch and pass, fused NA with RPB at each dilation, the reference NA backends
    (REFERENCE_NA, at the last batch only), window attention with RPB (shift 0 and window // 2)
    and, forward only, dense SDPA."""
    shifts = sorted({0, level.window // 2 if level.side > level.window else 0})
    configs = []
    for batch in batches:
        for pass_ in PASSES:
            na = [("fused", True)] + [(b, rpb) for b, rpb, passes in REFERENCE_NA
                                      if batch == batches[-1] and pass_ in passes]
            configs += [{"attention": "neighborhood", "backend": backend, "rpb": rpb,
                         "kernel": level.kernel, "dilation": d,
                         "max_dilation": level.dilations[-1], "batch": batch, "pass": pass_}
                        for backend, rpb in na for d in level.dilations]
            configs += [{"attention": "window", "backend": "torch", "rpb": True,
                         "window": level.window, "shift": s, "sdpa_choice": "default",
                         "batch": batch, "pass": pass_} for s in shifts]
            if pass_ == "forward":
                configs.append({"attention": "dense", "backend": "sdpa", "rpb": False,
                                "sdpa_choice": "default", "batch": batch, "pass": pass_})
    return configs


def reference_priority(level: Level, config: dict[str, Any]) -> tuple:
    """Order of the reference rows within what is left of the budget: forward first, dilation 1
    first, the largest side first, then REFERENCE_NA's order."""
    order = [(b, rpb) for b, rpb, _ in REFERENCE_NA]
    return (PASSES.index(config["pass"]), config["dilation"] != 1, -level.side,
            order.index((config["backend"], config["rpb"])))


def cost_tasks(plan: Plan) -> list[tuple[Level, dict[str, Any]]]:
    """(level, config) of every attention row, in CSV order; every size validated up front."""
    levels = [level_of(plan.stylenat["model"], side) for side in plan.sides]
    return [(level, config) for level in levels for config in attention_configs(level,
                                                                                plan.batches)]


def run_order(tasks: Sequence[tuple[Level, dict[str, Any]]]) -> tuple[list[int], list[int]]:
    """Indices of `tasks`: the fused NA, window and dense rows (in CSV order), then the
    reference rows (by `reference_priority`)."""
    main = [i for i, (_, c) in enumerate(tasks) if not is_reference(c)]
    references = sorted((i for i, (_, c) in enumerate(tasks) if is_reference(c)),
                        key=lambda i: reference_priority(*tasks[i]))
    return main, references


def keys_per_query(config: dict[str, Any], level: Level) -> int:
    if config["attention"] == "neighborhood":
        return level.kernel ** 2
    if config["attention"] == "window":
        return config["window"] ** 2
    return level.side ** 2


def attention_scores(config: dict[str, Any], level: Level) -> int:
    """Query-key scores one forward forms: B * H * W * heads * keys per query."""
    return config["batch"] * level.side ** 2 * level.heads * keys_per_query(config, level)


def min_bytes(config: dict[str, Any], level: Level, element_bytes: int = FP32_BYTES) -> int:
    """Bytes no implementation of the call can avoid moving (see the module docstring): forward
    q, k, v read + out written (4 tensors of B * H * W * heads * head_dim) + the RPB table;
    forward+backward 12 such tensors, the fp32 log-sum-exp rows written and read, the table
    read twice and its gradient written."""
    rows = config["batch"] * level.side ** 2 * level.heads
    tensor = rows * level.head_dim * element_bytes
    table = 0
    if config["rpb"]:
        span = 2 * (config["window"] if config["attention"] == "window" else level.kernel) - 1
        table = level.heads * span * span * element_bytes
    if config["pass"] == "forward":
        return 4 * tensor + table
    return 12 * tensor + 2 * rows * FP32_BYTES + 3 * table


def achieved(row: dict[str, Any], copy_gb_per_s: float) -> dict[str, Any]:
    """GB/s of the row's `min_bytes`, their fraction of the measured copy bandwidth, and TFLOP/s
    of its `attention_scores` (FLOPS_PER_SCORE x head_dim per score); {} unless the row ran."""
    if row.get("status") != "ok" or not row.get("min_bytes"):
        return {}
    seconds = row["median_ms"] / 1e3
    gb_per_s = row["min_bytes"] / seconds / 1e9
    flops = FLOPS_PER_SCORE[row["pass"]] * row["attention_scores"] * row["head_dim"]
    return {"achieved_gb_per_s": round(gb_per_s, 2),
            "bandwidth_fraction": round(gb_per_s / copy_gb_per_s, 4),
            "achieved_tflop_per_s": round(flops / seconds / 1e12, 3)}


def attention_call(config: dict[str, Any], level: Level, batch: int, device: torch.device,
                   dtype: torch.dtype = torch.float32) -> Callable[[], Any]:
    """The call to time, with its inputs (of `dtype`) built once: q, k, v ~ N(0, 1) in the layout
    each attention takes natively (heads-last [B, H, W, heads, D]; SDPA: [B, heads, H*W, D]). Pass
    forward_backward: q, k, v and the table require grad, and the call is the forward then
    out.backward(grad) with inference mode off (gradients are dropped after each call)."""
    gen = torch.Generator().manual_seed(0)
    shape = (batch, level.side, level.side, level.heads, level.head_dim)
    q, k, v = (torch.randn(shape, generator=gen).to(device, dtype) for _ in range(3))
    table = None
    if config["attention"] == "dense":
        q, k, v = (t.flatten(1, 2).transpose(1, 2).contiguous() for t in (q, k, v))
        call = partial(F.scaled_dot_product_attention, q, k, v)
    elif config["attention"] == "window":
        span = 2 * config["window"] - 1
        table = (0.02 * torch.randn(level.heads, span, span, generator=gen)).to(device, dtype)
        call = partial(window_attention, q, k, v, config["window"], config["shift"], table)
    else:
        span = 2 * level.kernel - 1
        if config["rpb"]:
            table = (0.02 * torch.randn(level.heads, span, span, generator=gen)).to(device,
                                                                                     dtype)
        call = partial(neighborhood_attention, q, k, v, level.kernel, config["dilation"], table,
                       backend=config["backend"])
    if config.get("pass", "forward") == "forward":
        return call
    leaves = [t.requires_grad_() for t in (q, k, v, table) if t is not None]
    grad = torch.randn(q.shape, generator=gen).to(device, dtype)

    def forward_backward() -> None:
        with torch.inference_mode(False), torch.enable_grad():
            call().backward(grad)
        for t in leaves:
            t.grad = None

    return forward_backward


def natten_note(head_dim: int, device: torch.device, dtype: torch.dtype) -> str:
    """Which NATTEN ran: its compiled kernels, or (without libnatten) its Flex Attention path,
    compiled or eager for inputs of `head_dim` and `dtype` on `device`."""
    if importlib.util.find_spec("natten") is None:
        return ""
    import natten

    if natten.HAS_LIBNATTEN:
        path = "its compiled kernels"
    else:
        probe = torch.zeros(1, 1, 1, 1, head_dim, device=device, dtype=dtype)
        path = "no compiled kernels (libnatten): NATTEN's Flex Attention path, " + (
            "compiled" if natten_compiles_flex(probe, probe, probe) else
            "eager (NATTEN compiles Flex only for float16/bfloat16 inputs; eager Flex forms "
            "every query-key score)")
    return f"natten {natten.__version__}, {path}"


def natten_has_backward() -> bool:
    """NATTEN's compiled kernels have a backward; its Flex path, as we call it, does not."""
    if importlib.util.find_spec("natten") is None:
        return False
    import natten

    return bool(natten.HAS_LIBNATTEN)


def config_note(config: dict[str, Any], plan: Plan, head_dim: int, device: torch.device
                ) -> str:
    """What a row leaves out on purpose, and which NATTEN ran."""
    if not is_reference(config):
        return ""
    notes = [f"reference backend: timed at batch {plan.batches[-1]} only (batch 1 left out for "
             "the run's budget)"]
    if config["backend"] == "flex" and not config["rpb"]:
        notes.append("forward only (no model trains without the RPB)")
    if config["backend"] == "natten":
        notes.append(natten_note(head_dim, device, COST_DTYPES[plan.cost_dtype][0]))
    return join_notes(*notes)


def cost_row(level: Level, config: dict[str, Any], plan: Plan, device: torch.device,
             deadline: Deadline) -> dict[str, Any]:
    """One attention row: measured, or skipped (backend not timed here, no backward, budget)."""
    dtype = COST_DTYPES[plan.cost_dtype][0]
    row = {"kind": "attention_cost", **config, "side": level.side, "heads": level.heads,
           "head_dim": level.head_dim, "attention_scores": attention_scores(config, level),
           "min_bytes": min_bytes(config, level, dtype.itemsize)}
    note = config_note(config, plan, level.head_dim, device)
    if deadline.spent():
        outcome = deadline.skipped()
    elif config["attention"] == "neighborhood" and config["backend"] not in plan.backends:
        outcome = skipped(config["backend"], device, plan)
    elif (config["backend"] == "natten" and config["pass"] == "forward_backward"
          and not natten_has_backward()):
        outcome = {"status": "skipped", "note": "NATTEN without its compiled kernels: its "
                                                "Flex path has no backward here"}
    else:
        fn = attention_call(config, level, config["batch"], device, dtype)
        outcome = (measure_sdpa(fn, device, plan.cost_calls, config["sdpa_choice"], COST_ROW_S)
                   if config.get("sdpa_choice") else
                   measure_calls(fn, device, *plan.cost_calls, max_s=COST_ROW_S))
        del fn  # free this config's inputs before the next one allocates its own
    return {**row, **outcome, "note": join_notes(note, outcome.get("note"))}


def cost_rows(tasks: Sequence[tuple[Level, dict[str, Any]]], indices: Sequence[int], plan: Plan,
              device: torch.device, deadline: Deadline, desc: str
              ) -> Iterator[tuple[int, dict[str, Any]]]:
    """(index, row) of the tasks at `indices`, measured in that order."""
    for i in tqdm(indices, desc=desc, disable=None):
        yield i, cost_row(*tasks[i], plan, device, deadline)


# --- the physical limit: device-to-device copy bandwidth --------------------------------------

def bandwidth_row(plan: Plan, device: torch.device) -> dict[str, Any]:
    """GB/s of `dst.copy_(src)` over a float32 tensor of `plan.copy_bytes` (bytes = read +
    write, from the median call)."""
    n = plan.copy_bytes // FP32_BYTES
    src = torch.full((n,), 1.0, device=device)  # the values do not change the time
    dst = torch.empty_like(src)
    result = measure_calls(lambda: dst.copy_(src), device, *plan.cost_calls)
    moved = 2 * n * FP32_BYTES
    row = {"kind": "bandwidth", "metric": "copy_bandwidth", "backend": "copy_",
           "min_bytes": moved, **result,
           "note": f"dst.copy_(src) of a {plan.copy_bytes / 2**30:g} GiB float32 tensor on "
                   f"{device.type}; bytes = read + write; GB = 1e9 bytes; from the median call"}
    if result["status"] == "ok":
        row["achieved_gb_per_s"] = round(moved / (result["median_ms"] / 1e3) / 1e9, 2)
    return row


def with_achieved(rows: Sequence[dict[str, Any]], copy: dict[str, Any] | None
                  ) -> list[dict[str, Any]]:
    """The attention rows with their `achieved` columns (none without a measured copy)."""
    if copy is None or copy.get("status") != "ok":
        return list(rows)
    return [{**r, **achieved(r, copy["achieved_gb_per_s"])} for r in rows]


# --- summaries of the attention rows ----------------------------------------------------------

CROSSOVERS = {  # metric -> (dilation: "1" or the level's largest, backends considered)
    "crossover_side[d=1, rpb]": ("1", "rpb"),
    "crossover_side[d=max, rpb]": ("max", "rpb"),
    "crossover_side[d=1, any]": ("1", "any"),
    "crossover_side[d=max, any]": ("max", "any"),
}


def at_dilation(row: dict[str, Any], which: str) -> bool:
    """The row's dilation is 1 ("1") or the level's largest ("max")."""
    return row["dilation"] == (1 if which == "1" else row["max_dilation"])


def crossover(rows: Sequence[dict[str, Any]], metric: str, batch: int) -> dict[str, Any]:
    """Smallest measured side at which the fastest neighbourhood backend (with the relative
    position bias StyleNAT needs, or any) beats dense SDPA, forward at `batch`, at dilation 1
    or the level's largest. Dense attention that ran out of memory counts as beaten by any
    neighbourhood call that ran."""
    dilation, which = CROSSOVERS[metric]
    cost = [r for r in rows if r["kind"] == "attention_cost" and r["batch"] == batch
            and r["pass"] == "forward"]
    sides = sorted({r["side"] for r in cost})
    fastest, dense = {}, {}
    for r in cost:
        if r["attention"] == "dense":
            dense[r["side"]] = r
        elif (r["attention"] == "neighborhood" and r["status"] == "ok"
              and (which == "any" or r["rpb"]) and at_dilation(r, dilation)):
            best = fastest.get(r["side"])
            if best is None or r["median_ms"] < best["median_ms"]:
                fastest[r["side"]] = r

    def beats(side: int) -> bool:
        na, sdpa = fastest.get(side), dense.get(side)
        if na is None or sdpa is None or sdpa["status"] not in ("ok", "out of memory"):
            return False
        return sdpa["status"] == "out of memory" or na["median_ms"] < sdpa["median_ms"]

    wins = [s for s in sides if beats(s)]
    row = {"kind": "summary", "metric": metric, "unit": "px (feature-map side)", "batch": batch,
           "pass": "forward"}
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


def fused_row(rows: Sequence[dict[str, Any]], side: int, batch: int, pass_: str, which: str
              ) -> dict[str, Any] | None:
    """The fused NA (RPB) attention row at side, batch, pass and dilation "1" or "max"."""
    return next((r for r in rows if r["kind"] == "attention_cost"
                 and r["attention"] == "neighborhood" and r["backend"] == "fused"
                 and r["rpb"] and r["side"] == side and r["batch"] == batch
                 and r["pass"] == pass_ and at_dilation(r, which)), None)


def bandwidth_target(rows: Sequence[dict[str, Any]], batch: int,
                     side: int = BANDWIDTH_TARGET_SIDE) -> dict[str, Any]:
    """Fraction of the measured copy bandwidth that fused NA reaches at `side`, `batch`,
    forward, dilation 1 (target >= 0.5)."""
    metric = f"bandwidth_fraction[fused, side {side}, batch {batch}, forward, d=1]"
    row = {"kind": "summary", "metric": metric, "backend": "fused", "side": side,
           "batch": batch, "pass": "forward", "dilation": 1, "unit": "fraction"}
    na = fused_row(rows, side, batch, "forward", "1")
    if na is None or na["status"] != "ok" or "bandwidth_fraction" not in na:
        why = ("not measured" if na is None else
               f"fused NA {na['status']}" if na["status"] != "ok" else "no copy bandwidth")
        return {**row, "status": "no result", "value": math.nan, "note": why,
                **target_fields(metric, None)}
    value = na["bandwidth_fraction"]
    return {**row, "status": "ok", "value": value, "min_bytes": na["min_bytes"],
            "achieved_gb_per_s": na["achieved_gb_per_s"], "bandwidth_fraction": value,
            "note": f"min_bytes {na['min_bytes']} in {na['median_ms']:.4g} ms = "
                    f"{na['achieved_gb_per_s']:.4g} GB/s of the copy's measured bandwidth",
            **target_fields(metric, meets(metric, value))}


def na_over_window(rows: Sequence[dict[str, Any]], batch: int, pass_: str,
                   min_side: int = NA_VS_WINDOW_MIN_SIDE) -> dict[str, Any]:
    """Worst fused-NA / window-attention median ratio at every side >= min_side, both with
    RPB, at `batch` and `pass_`: NA at dilation 1 against window shift 0, NA at the level's
    largest dilation against the shifted window (target <= 1). Met only when every pair ran
    and none is above 1; not met when one is, or when fused NA failed where window ran."""
    metric = f"na_over_window[batch={batch}, {pass_}]"
    cost = [r for r in rows if r["kind"] == "attention_cost" and r["batch"] == batch
            and r["pass"] == pass_]
    sides = sorted({r["side"] for r in cost if r["side"] >= min_side})
    ratios, parts, complete, failed = [], [], True, False
    for side in sides:
        for which, shifted in (("1", False), ("max", True)):
            na = fused_row(cost, side, batch, pass_, which)
            win = next((r for r in cost if r["attention"] == "window" and r["side"] == side
                        and (r["shift"] > 0) == shifted), None)
            label = f"{side} d={which} vs shift {win['shift'] if win else '?'}"
            if na and win and na["status"] == win["status"] == "ok":
                ratios.append(na["median_ms"] / win["median_ms"])
                parts.append(f"{label}: {ratios[-1]:.3g}")
                continue
            complete = False
            failed |= bool(na and win and win["status"] == "ok"
                           and na["status"] in ("error", "out of memory"))
            parts.append(f"{label}: fused {na['status'] if na else 'absent'}, window "
                         f"{win['status'] if win else 'absent'}")
    value = round(max(ratios), 4) if ratios else math.nan
    met = None
    if (ratios and value > 1) or failed:
        met = False
    elif complete and ratios:
        met = True
    return {"kind": "summary", "metric": metric, "backend": "fused", "batch": batch,
            "pass": pass_, "status": "ok" if ratios else "no result", "value": value,
            "unit": "ratio",
            "note": (f"fused NA median / window attention median (both with RPB, window on "
                     f"PyTorch's SDPA choice) at sides >= {min_side}: "
                     + ("; ".join(parts) if parts else "no side measured")),
            **target_fields(metric, met)}


def attention_summaries(rows: Sequence[dict[str, Any]], plan: Plan) -> list[dict[str, Any]]:
    """The bandwidth target, NA against window per batch and pass, and the crossovers."""
    batch = plan.batches[-1]
    return [bandwidth_target(rows, batch),
            *(na_over_window(rows, b, p) for b in plan.batches for p in PASSES),
            *(crossover(rows, m, batch) for m in CROSSOVERS)]


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


def train_fields(settings: dict[str, Any], gpus: int, label: str) -> dict[str, Any]:
    """The fields of a training-iteration row besides the measurement."""
    m, t = settings["model"], settings["train"]
    return {"kind": "train_step", "model": PAPER, "variant": settings["variant"],
            "attention": m["attention"], "backend": m["backend"], "rpb": True,
            "side": m["resolution"], "batch": t["batch_size"], "gpus": gpus,
            "precision": label, "deterministic": settings["deterministic"],
            "timer": "wall clock, synchronised around each iteration",
            "peak_mem_scope": "process", "iterations": t["iterations"]}


def train_rows(timing: dict[str, Any], settings: dict[str, Any], gpus: int, label: str,
               device: torch.device) -> list[dict[str, Any]]:
    """Rows of one timing: iterations without R1 and with R1 (or one failed row)."""
    where = f"{gpus} GPU(s) under DDP (torchrun)" if gpus > 1 else f"1 {device.type} process"
    base, batch = train_fields(settings, gpus, label), settings["train"]["batch_size"]
    if timing["status"] != "ok":
        return [{**base, **failed_timing(timing["status"]), "metric": "iteration",
                 "note": f"{where}: {timing.get('note', timing['status'])}",
                 "wall_s": timing.get("wall_s", math.nan)}]
    return [{**base, "metric": "iteration", "status": "ok", **summarise_ms(timing["plain_s"]),
             "warmup": timing["warmup"], "repeats": len(timing["plain_s"]),
             "compile_s": round(timing["compile_s"], 2), "wall_s": timing["wall_s"],
             "peak_mem_gib": timing["peak_mem_gib"],
             "note": f"{where}, per-GPU batch {batch}: D step (logistic + bCR, clipped) + G "
                     "step + EMA, no R1; compile_s = the first iteration (step 0, with R1: "
                     f"the NA backend's compilation); then {timing['warmup'] - 1} more warm-up "
                     f"iteration(s) ({timing['warmup_s']:.2f} s); steps {timing['plain_steps']}"},
            {**base, "metric": "iteration_with_r1", "status": "ok",
             **summarise_ms(timing["r1_s"]), "warmup": "", "repeats": len(timing["r1_s"]),
             "peak_mem_gib": timing["peak_mem_gib"],
             "note": f"{where}: an iteration with lazy R1 (step % r1_every == 0), steps "
                     f"{timing['r1_steps']}"}]


def gpu_hours(rows: Sequence[dict[str, Any]], settings: dict[str, Any]) -> dict[str, Any]:
    """GPU-hours of one model with the settings' NA backend at the paper's recipe from the
    most GPUs measured: iterations x s/iteration x GPUs / 3600, GPUs = the recipe's global
    batch / per-GPU batch and s/iteration = ((r1_every - 1) x median without R1 + median with
    R1) / r1_every."""
    recipe, t = paper_recipe(PAPER, CLAIM_TABLE), settings["train"]
    r1_every, backend = settings["loss"]["r1_every"], settings["model"]["backend"]
    gpus_paper = recipe["global_batch"] // t["batch_size"]
    ok = [r for r in rows if r["kind"] == "train_step" and r["status"] == "ok"
          and r["variant"] == settings["variant"] and r["backend"] == backend]
    row = {"kind": "summary", "metric": "gpu_hours_per_model", "model": PAPER,
           "variant": settings["variant"], "backend": backend, "unit": "GPU-hours",
           "iterations": recipe["iterations"], "batch": t["batch_size"]}
    if not ok:
        return {**row, "status": "no result", "value": math.nan,
                "note": f"no training iteration with NA backend {backend!r} was timed"}
    gpus = max(r["gpus"] for r in ok)
    plain, r1 = (next(r for r in ok if r["gpus"] == gpus and r["metric"] == metric)
                 for metric in ("iteration", "iteration_with_r1"))
    s_it = ((r1_every - 1) * plain["median_ms"] + r1["median_ms"]) / r1_every / 1e3
    hours = recipe["iterations"] * s_it * gpus_paper / 3600
    source = f"{gpus} GPUs (DDP)" if gpus > 1 else "1 GPU (no DDP measured)"
    return {**row, "status": "ok", "gpus": gpus, "value": round(hours), "unit": "GPU-hours",
            "gpu_hours_per_model": round(hours), "precision": plain["precision"],
            "derived_from": f"train_step ({backend}) on {source}: ({r1_every - 1} x median "
                            f"{plain['median_ms'] / 1e3:.4g} s + median with R1 "
                            f"{r1['median_ms'] / 1e3:.4g} s) / {r1_every} = {s_it:.4g} "
                            f"s/iteration; {recipe['iterations']} iterations x {s_it:.4g} s x "
                            f"{gpus_paper} GPUs (global batch {recipe['global_batch']} / "
                            f"{t['batch_size']} per GPU) / 3600",
            "note": f"per FFHQ-256 or Church-256 model at the paper's recipe with NA backend "
                    f"{backend!r}; assumes the per-GPU iteration time holds on 8 GPUs"}


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


def training_rows(plan: Plan, device: torch.device, deadline: Deadline) -> list[dict[str, Any]]:
    """One iteration on 1 GPU here with each of `plan.train_backends` (TRAIN_BACKENDS not among
    them are skipped rows), then with the first available one on `plan.ddp_gpus` GPUs under
    torchrun, FFHQ-1024's skipped row, and the GPU-hours summary of each backend."""
    label = precision_label(TRAIN_PRECISION, device)
    gpus = 1 if device.type == "cuda" else 0
    rows = []
    for backend in dict.fromkeys((*plan.train_backends, *TRAIN_BACKENDS)):
        settings = with_backend(plan.train, backend)
        base = {**train_fields(settings, gpus, label), "metric": "iteration"}
        if backend not in plan.train_backends or backend not in plan.backends:
            rows.append({**base, **skipped(backend, device, plan)})
        elif deadline.spent():
            rows.append({**base, **deadline.skipped()})
        else:
            with training_flags(settings, device):
                timing = train_step_timing(settings, device, plan.train_calls)
            rows += train_rows(timing, settings, gpus, label, device)
            release(device)  # the next backend (and the DDP ranks) need the memory of GPU 0
    timed = [b for b in plan.train_backends if b in plan.backends] or list(plan.train_backends)
    settings = with_backend(plan.train, timed[0])
    base = {"kind": "train_step", "model": PAPER, "variant": settings["variant"],
            "backend": settings["model"]["backend"], "side": settings["model"]["resolution"],
            "batch": settings["train"]["batch_size"], "precision": label, "metric": "iteration"}
    if not plan.ddp_gpus:
        why = (f"dry run on {device.type}" if device.type != "cuda" else
               f"{torch.cuda.device_count()} CUDA GPU(s) visible")
        rows.append({**base, "gpus": DDP_GPUS, "status": "skipped",
                     "note": f"{why}: the {DDP_GPUS}-GPU DDP iteration needs {DDP_GPUS} GPUs"})
    elif deadline.spent():
        rows.append({**base, "gpus": plan.ddp_gpus, **deadline.skipped()})
    else:
        try:
            ddp = launch_ddp(plan.ddp_gpus, device.type, plan.train_calls,
                             max(MIN_DDP_S, deadline.left()), backend=base["backend"])
            rows += train_rows(ddp, settings, plan.ddp_gpus, label, device)
        except LaunchFailed as err:
            rows.append({**base, "gpus": plan.ddp_gpus, **failed_timing(err.status),
                         "note": str(err)[:400]})
    rows.append({**base, "variant": "ffhq1024", "side": 1024, "batch": 4, "status": "skipped",
                 "note": "FFHQ-1024 (batch 4 per GPU) is not timed: too large to time within "
                         "the benchmark's few minutes"})
    rows += [gpu_hours(rows, with_backend(plan.train, b)) for b in plan.train_backends]
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


def comparability(row: dict[str, Any], device_name: str) -> dict[str, Any]:
    columns = paper_claims(PAPER).tables[CLAIM_TABLE].columns
    if row["kind"] == "throughput":
        note = (f"measured on {device_name}; {columns['throughput'].hardware_bound}; "
                "neighbourhood attention re-implemented (the paper ran NATTEN's kernels, "
                "natten >= 0.14)")
    elif row.get("metric", "").startswith("throughput_ratio"):
        note = (f"ratio of two generators on {device_name}; the paper's is on its GPU with "
                "NATTEN's kernels")
    else:
        note = "no paper counterpart"
    return {"comparable": False, "non_comparable_reasons": note}


def benchmark(plan: Plan, device: torch.device, out: Path | None = None
              ) -> list[dict[str, Any]]:
    """Every row of `plan.sections`, in the order of work the module docstring gives, returned
    in CSV order: the copy bandwidth, throughput, attention cost, the summaries, training. With
    `out`, a run that breaks off still writes the rows measured before it."""
    deadline = Deadline(plan.budget_s)
    env = environment(device, natten=True)  # a GPU run without a full commit stops here
    gpus = 1 if device.type == "cuda" else 0
    tasks = cost_tasks(plan) if "cost" in plan.sections else []  # bad --sizes stop here too
    main, references = run_order(tasks)
    cost_label = precision_label(COST_DTYPES[plan.cost_dtype][1], device)

    def finish(r: dict[str, Any]) -> dict[str, Any]:
        return {"paper": PAPER, "gpus": gpus, **r, **env, **comparability(r, env["device"])}

    measured: list[dict[str, Any]] = []  # in the order measured
    copy, throughput, cost, training = None, [], {}, []
    with rows_kept_on_failure(PAPER, out, measured, finish) if out else nullcontext():
        with official_flags(device) as label:
            if tasks:
                copy = {**bandwidth_row(plan, device), "precision": label}
                measured.append(copy)
            if "throughput" in plan.sections:
                throughput = [{**r, "precision": label}
                              for r in throughput_rows(plan, device, deadline)]
                measured += throughput
            for i, row in cost_rows(tasks, main, plan, device, deadline, "attention cost"):
                cost[i] = {**row, "precision": cost_label}
                measured.append(cost[i])
        if "train" in plan.sections:
            training = training_rows(plan, device, deadline)
            measured += training
        with official_flags(device):
            for i, row in cost_rows(tasks, references, plan, device, deadline,
                                    "reference backends"):
                cost[i] = {**row, "precision": cost_label}
                measured.append(cost[i])
    attention = with_achieved([cost[i] for i in sorted(cost)], copy)
    summaries = []
    if "throughput" in plan.sections:
        summaries += [{**throughput_ratio(throughput, m), "precision": label} for m in
                      ("throughput_ratio", "throughput_ratio[stretch]")]
    if tasks:
        summaries += [{**s, "precision": cost_label}
                      for s in attention_summaries(attention, plan)]
    rows = ([copy] if copy else []) + throughput + attention + summaries + training
    return [finish(r) for r in rows]


def run(out: Path | None = None, sizes: Sequence[int] | None = None, device_name: str = "cuda",
        **changes: Any) -> Path:
    """Benchmark on `device_name` and write the CSV (default results/bench/stylenat.csv);
    `changes`: fields of `Plan` (budget_s, sections, throughput_calls, ...)."""
    device = resolve_device(device_name)
    out = out or Path(Layout(load_params()).bench(PAPER))
    return write_csv(out, benchmark(replace(plan_for(device, sizes), **changes), device, out))


def main(argv: Sequence[str] | None = None) -> None:
    """`python -m sparsegen.bench.stylenat`: `run` with fields of `Plan` set from the options
    (`python -m sparsegen bench stylenat` runs the defaults)."""
    p = argparse.ArgumentParser(prog="python -m sparsegen.bench.stylenat",
                                description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, default=None,
                   help="CSV to write (default results/bench/stylenat.csv)")
    p.add_argument("--device", default="cuda", help="cuda (default) or cpu (a dry run)")
    p.add_argument("--sizes", type=int, nargs="+", default=None,
                   help=f"feature-map sides of the attention rows (default "
                        f"{' '.join(map(str, SIZES))})")
    p.add_argument("--budget-s", dest="budget_s", type=float, default=None,
                   help=f"seconds after which no row starts; later rows are written as "
                        f"'skipped (budget)' (default {BUDGET_S})")
    p.add_argument("--sections", nargs="+", choices=SECTIONS, default=None,
                   help="default: all")
    p.add_argument("--throughput-calls", dest="throughput_calls", type=int, nargs=2,
                   metavar=("WARMUP", "TIMED"), help="generator passes (default 10 500)")
    p.add_argument("--cost-calls", dest="cost_calls", type=int, nargs=2,
                   metavar=("WARMUP", "TIMED"), help="calls per attention row (default "
                   f"{' '.join(map(str, COST_REPEATS['cuda']))})")
    p.add_argument("--cost-dtype", dest="cost_dtype", choices=COST_DTYPES, default=None,
                   help="element type of the attention rows' tensors (default float32; "
                        "bfloat16: precision bf16, NATTEN's Flex path compiled)")
    p.add_argument("--train-backends", dest="train_backends", nargs="+", default=None,
                   choices=RPB_BACKENDS,
                   help=f"NA backends of the training iteration (default "
                        f"{' '.join(TRAIN_BACKENDS)})")
    args = vars(p.parse_args(argv))
    print(run(args["out"], args["sizes"], args["device"], **plan_changes(args, Plan)))


if __name__ == "__main__":
    main()
