"""How a row of the StyleNAT efficiency benchmark (`bench.stylenat`) is measured: the run's time
budget, timed calls (CUDA events, median, peak memory above the inputs; out of memory and a
backend's refusal are results), the SDPA kernel a call may use and the one it ran (profiler),
the rows of backends a run does not time, and the targets its summary rows are held to."""

from __future__ import annotations

import logging
import math
import re
import statistics
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, nullcontext
from typing import Any

import torch
from torch.autograd import DeviceType
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.profiler import ProfilerActivity, profile

from sparsegen.attention.neighborhood import available_backends
from sparsegen.bench.common import failed_timing, peak_gib, precision, precision_label
from sparsegen.timing import event_times, synchronize

log = logging.getLogger(__name__)

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
MIN_REPEATS = 5  # a row's timed calls are cut for time (fewer_repeats) to no fewer than this
TARGETS = {"throughput_ratio": ">= 1.08", "throughput_ratio[stretch]": ">= 1.3",
           "bandwidth_fraction": ">= 0.5", "na_over_window": "<= 1"}


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


def skipped(backend: str, device: torch.device, timed: Sequence[str]) -> dict[str, Any]:
    """The row fields of a backend this run does not time (it times `timed`), and why."""
    if backend in available_backends(device):
        why = (f"dry run on {device.type}: only {', '.join(timed)} timed ({backend!r} "
               "falls back to an eager dense reference path off CUDA)")
    elif backend == "natten":
        why = ("natten is not installed (PyPI has only its source distribution, no wheel built "
               "for this torch)")
    else:
        why = f"backend {backend!r} is not available on {device.type}"
    return {"status": "skipped", "note": why}
