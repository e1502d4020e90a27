"""Wall-clock timing of a callable with warm-up and device synchronisation."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from typing import Any

import torch


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_callable(fn: Callable[[], Any], device: torch.device, warmup: int, repeats: int,
                  grad: bool = False) -> dict[str, Any]:
    """Seconds per call of `fn` (mean, median, std over `repeats` after `warmup` calls), under
    `torch.inference_mode()` unless `grad` (training steps).

    On CUDA each call is bracketed by synchronisation so queued kernels are counted."""
    with torch.inference_mode(not grad):
        for _ in range(warmup):
            fn()
        synchronize(device)
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            fn()
            synchronize(device)
            times.append(time.perf_counter() - t0)
    return {
        "mean_s": statistics.fmean(times),
        "median_s": statistics.median(times),
        "std_s": statistics.pstdev(times),
        "repeats": repeats,
        "warmup": warmup,
        "synchronised": device.type == "cuda",
    }
