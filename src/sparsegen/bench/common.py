"""Shared benchmark mechanics: precision, peak memory, out-of-memory as a result, CSV rows."""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Callable, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch

from sparsegen.io import write_text
from sparsegen.provenance import device_description, git_commit, library_versions
from sparsegen.timing import time_callable

# fp32 tensors either way; what differs is whether Ampere+ tensor cores may round to TF32.
PRECISIONS = {
    "fp32": (False, False),              # strict: no TF32 anywhere
    "fp32-tf32conv": (False, True),      # PyTorch's defaults: TF32 convolutions, fp32 matmuls
}


@contextmanager
def precision(name: str) -> Any:
    """Set TF32 use for matmuls and cuDNN convolutions per PRECISIONS, restored afterwards."""
    saved = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = PRECISIONS[name]
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


def measure(fn: Callable[[], Any], device: torch.device, warmup: int, repeats: int,
            grad: bool = False) -> dict[str, Any]:
    """Seconds per call and peak memory; an out-of-memory error is a result, not a crash."""
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
    try:
        timing = time_callable(fn, device, warmup, repeats, grad=grad)
    except torch.OutOfMemoryError:
        if device.type == "cuda":
            torch.cuda.empty_cache()
        return {"status": "out of memory", "mean_s": math.nan, "median_s": math.nan,
                "std_s": math.nan, "repeats": repeats, "warmup": warmup, "peak_mem_gib": math.nan}
    peak = (torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda"
            else math.nan)
    return {"status": "ok", **timing, "peak_mem_gib": round(peak, 3)}


def environment(device: torch.device) -> dict[str, str]:
    versions = library_versions()
    return {"device": device_description(device), "torch": versions.get("torch", ""),
            "cuda": torch.version.cuda or "", "commit": git_commit()}


def exponent(t_small: float, t_large: float, n_small: float, n_large: float) -> float:
    """Log-log slope of cost against size: 1 linear, 2 quadratic."""
    if not (t_small > 0 and t_large > 0) or math.isnan(t_small) or math.isnan(t_large):
        return math.nan
    return math.log(t_large / t_small) / math.log(n_large / n_small)


def write_csv(path: Path, rows: Sequence[dict[str, Any]]) -> Path:
    fields: list[str] = []
    for r in rows:
        fields += [k for k in r if k not in fields]
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=fields, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    write_text(path, buf.getvalue())
    return path
