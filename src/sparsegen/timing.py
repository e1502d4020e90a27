"""Wall-clock timing of a callable with warm-up and device synchronisation; TF32 switch."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import torch


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def wall_times(fn: Callable[[], Any], device: torch.device, warmup: int, repeats: int,
               grad: bool = False) -> list[float]:
    """Wall-clock seconds of each of `repeats` calls of `fn` after `warmup` calls, under
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
    return times


def time_callable(fn: Callable[[], Any], device: torch.device, warmup: int, repeats: int,
                  grad: bool = False) -> dict[str, Any]:
    """Seconds per call of `fn` (mean, median, std; see `wall_times`)."""
    times = wall_times(fn, device, warmup, repeats, grad)
    return {
        "mean_s": statistics.fmean(times),
        "median_s": statistics.median(times),
        "std_s": statistics.pstdev(times),
        "repeats": repeats,
        "warmup": warmup,
        "synchronised": device.type == "cuda",
    }


def event_times(fn: Callable[[], Any], device: torch.device, warmup: int, repeats: int
                ) -> list[float]:
    """Seconds of each of `repeats` calls of `fn` after `warmup` calls, under
    `torch.inference_mode()`.

    On CUDA each call is bracketed by a pair of CUDA events and the device is synchronised
    before reading them (the GPU time of the call's kernels, as StyleNAT's throughput script
    measures); on CPU by `time.perf_counter`."""
    if repeats < 1:
        raise ValueError(f"repeats must be at least 1, got {repeats}")
    cuda = device.type == "cuda"
    with torch.inference_mode():
        for _ in range(warmup):
            fn()
        synchronize(device)
        times = []
        for _ in range(repeats):
            if cuda:
                start = torch.cuda.Event(enable_timing=True)
                end = torch.cuda.Event(enable_timing=True)
                start.record()
                fn()
                end.record()
                torch.cuda.synchronize(device)
                times.append(start.elapsed_time(end) / 1000.0)
            else:
                t0 = time.perf_counter()
                fn()
                times.append(time.perf_counter() - t0)
    return times


@contextmanager
def tf32(enabled: bool = True, cudnn_benchmark: bool | None = None) -> Iterator[None]:
    """TF32 for float32 matmuls and cuDNN convolutions (and optionally cuDNN autotuning) inside
    the block; the previous switches are restored on exit."""
    matmul, cudnn = torch.backends.cuda.matmul, torch.backends.cudnn
    saved = (matmul.allow_tf32, cudnn.allow_tf32, cudnn.benchmark)
    matmul.allow_tf32 = cudnn.allow_tf32 = enabled
    if cudnn_benchmark is not None:
        cudnn.benchmark = cudnn_benchmark
    try:
        yield
    finally:
        matmul.allow_tf32, cudnn.allow_tf32, cudnn.benchmark = saved
