"""What every benchmark shares: one CSV schema (`COLUMNS`), one precision vocabulary, the
environment columns (GPU, driver, library versions, full commit), paper values read from the
claims files, timing with out-of-memory recorded as a result, and the CSV writer that holds
every row to the schema.

A row is one measurement (or one summary of several). Units sit in the column names: times in
milliseconds (`*_ms`), whole-run times in seconds (`*_s`), memory in GiB."""

from __future__ import annotations

import csv
import dataclasses
import gc
import io
import math
import os
import platform
import re
import shutil
import statistics
import subprocess
import time
import traceback
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from functools import cache
from pathlib import Path
from typing import Any

import torch

from sparsegen.io import write_text
from sparsegen.provenance import REPO_ROOT, device_description, git_commit, library_versions
from sparsegen.timing import wall_times

COLUMNS = (
    # what the row is
    "paper",             # stya2k | stylenat | dynast | ilat
    "kind",              # inference | train_loader | train_step | train_loop | throughput |
                         # attention_cost | bandwidth (a device-to-device copy) | summary | run
    "model",             # the network (StyA2K: its transform; StyleNAT: stylenat | styleswin)
    "variant",           # the params.yaml variant its settings come from (and any override)
    "metric",            # summary rows: what `value` is; StyleNAT train_step rows:
                         # iteration | iteration_with_r1
    "part",              # DynaST: variants | attention | scaling | training;
                         # iLAT: paper_mask | sweep
    # settings of the measurement
    "attention",         # the attention computed (a2k, adaattn, hydra_na, neighborhood, dense, ...)
    "backend",           # its kernel (sdpa | explicit | torch | flex | natten | fused | none)
    "sdpa_choice",       # StyleNAT: the SDPA kernel asked for through
                         # torch.nn.attention.sdpa_kernel (default: PyTorch chooses | efficient |
                         # math | cudnn)
    "sdpa_backend",      # StyleNAT: the SDPA kernel that ran, from the profiler's aten op
                         # (efficient | flash | cudnn | math; "+"-joined if several)
    "rpb", "side", "batch", "heads", "head_dim", "kernel", "dilation", "max_dilation",
    "window", "shift",
    "pass",              # StyleNAT attention_cost: forward | forward_backward (the forward, then
                         # out.backward(grad) with q, k, v and the RPB table requiring grad)
    "cache",             # iLAT: uncached (the whole sequence per sampled token) | cached (KV cache)
    "masked_tokens", "tokens",  # iLAT: target tokens sampled, of all target tokens
    "gpus",              # GPUs (DDP ranks) the measurement ran on; 0 on the CPU
    "threads",           # data-loader threads (train_loader, train_loop rows)
    "precision",         # see PRECISIONS
    "deterministic",     # torch deterministic algorithms on, as the training job sets them
    "status",            # ok | out of memory | error | skipped | timeout | no result (a
                         # summary whose inputs did not run)
    "note",
    # timing
    "timer",             # how one call was timed
    "warmup", "repeats",  # calls (steps, batches) before timing, and timed
    "mean_ms", "median_ms", "std_ms",
    "compile_s",         # seconds of the first call(s): compilation, autotuning, lazy init
    "wall_s",            # seconds of the whole row, every call included
    "peak_mem_gib",
    "peak_mem_scope",    # process: all allocated memory | above_inputs: above what was allocated
    # derived
    "attention_scores",  # query-key scores one forward forms
    "min_bytes",         # bytes the call cannot avoid moving (StyleNAT: forward q, k, v read +
                         # out written + the RPB table; forward_backward adds q, k, v, out, dO
                         # read, dq, dk, dv written, fp32 log-sum-exp written and read, the table
                         # read again and its gradient written); bandwidth rows: read + write
    "achieved_gb_per_s",  # min_bytes / median time, GB = 1e9 bytes (bandwidth rows: the copy's)
    "bandwidth_fraction",  # achieved_gb_per_s / the same run's measured copy bandwidth
    "achieved_tflop_per_s",  # from attention_scores: 4 x scores x head_dim flops forward
                             # (q.k and p.v), 3.5 times that forward_backward
    "imgs_per_s", "params_m",
    "steps",             # iLAT: transformer forward passes of one edit
    "time_exponent_vs_half_side",  # log-log slope of time against pixels from side / 2
    "ratio_to_adaattn", "ratio_to_adaattn_dense",  # StyA2K: time / the peer's, same settings
    "target", "target_met",  # a summary's target (e.g. "<= 0.44") and met | not met
    "iterations",        # training iterations of one model (the gpu_hours_per_model basis)
    "gpu_hours_per_model",
    "derived_from",      # the measurement and formula behind gpu_hours_per_model
    "value", "unit",     # summary rows
    # the paper's number, read from pipeline/claims/<paper>.yaml
    "paper_value", "paper_unit", "paper_source", "paper_params_m",
    # environment
    "device", "gpu_count", "driver", "torch", "cuda", "cudnn", "triton", "natten", "python",
    "commit",            # full 40-hex commit (sparsegen.provenance.git_commit)
    "comparable", "non_comparable_reasons",
)

# fp32 tensors throughout; what differs is whether Ampere+ tensor cores may round to TF32.
# name -> (TF32 matmuls, TF32 cuDNN convolutions)
PRECISIONS = {
    "fp32": (False, False),           # strict: no TF32 anywhere
    "fp32+tf32conv": (False, True),   # PyTorch's defaults (what the training jobs run)
    "tf32": (True, True),             # TF32 matmuls and convolutions (StyleNAT's official flags)
    "bf16": (True, True),             # bfloat16 tensors; any float32 op as under "tf32"
}
# Environment variable that lets a GPU run record a commit that is not a full hash.
ALLOW_UNKNOWN_COMMIT = "SPARSEGEN_BENCH_ALLOW_UNKNOWN_COMMIT"
FULL_COMMIT = re.compile(r"[0-9a-f]{40}(-dirty)?")


class BenchError(RuntimeError):
    """The benchmark cannot record a trustworthy result (e.g. no commit on a GPU run)."""


@contextmanager
def precision(name: str, cudnn_benchmark: bool | None = None) -> Iterator[str]:
    """TF32 switches of PRECISIONS[name] (and cuDNN autotuning when given) inside the block,
    restored afterwards; yields `name`."""
    matmul, cudnn = torch.backends.cuda.matmul, torch.backends.cudnn
    saved = (matmul.allow_tf32, cudnn.allow_tf32, cudnn.benchmark)
    matmul.allow_tf32, cudnn.allow_tf32 = PRECISIONS[name]
    if cudnn_benchmark is not None:
        cudnn.benchmark = cudnn_benchmark
    try:
        yield name
    finally:
        matmul.allow_tf32, cudnn.allow_tf32, cudnn.benchmark = saved


def precision_label(name: str, device: torch.device) -> str:
    """The row's precision: TF32 exists only on CUDA, so a CPU row of a float32 precision is
    `fp32`; `bf16` stays."""
    return name if device.type == "cuda" or name == "bf16" else "fp32"


@contextmanager
def training_switches(deterministic: bool) -> Iterator[None]:
    """The determinism switches a training job runs under (`seeding.seed_everything`):
    deterministic algorithms (warn only) and cuDNN without autotuning; restored afterwards."""
    cudnn = torch.backends.cudnn
    saved = (torch.are_deterministic_algorithms_enabled(),
             torch.is_deterministic_algorithms_warn_only_enabled(), cudnn.deterministic,
             cudnn.benchmark)
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True, warn_only=True)
        cudnn.deterministic, cudnn.benchmark = True, False
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(saved[0], warn_only=saved[1])
        cudnn.deterministic, cudnn.benchmark = saved[2], saved[3]


# --- timing -----------------------------------------------------------------------------------

def summarise_ms(seconds: Sequence[float]) -> dict[str, float]:
    """mean, median and population std of per-call seconds, in milliseconds."""
    ms = [s * 1e3 for s in seconds]
    return {"mean_ms": statistics.fmean(ms), "median_ms": statistics.median(ms),
            "std_ms": statistics.pstdev(ms)}


def failed_timing(status: str) -> dict[str, Any]:
    return {"status": status, "mean_ms": math.nan, "median_ms": math.nan, "std_ms": math.nan,
            "peak_mem_gib": math.nan}


def peak_gib(device: torch.device, above: int = 0) -> float:
    """Peak allocated memory since the last reset, above `above` bytes (NaN off CUDA)."""
    if device.type != "cuda":
        return math.nan
    return round((torch.cuda.max_memory_allocated(device) - above) / 2**30, 4)


def release(device: torch.device) -> None:
    """Give the memory of deleted networks back (reference cycles collected first)."""
    if device.type == "cuda":
        gc.collect()
        torch.cuda.empty_cache()


def reset_peak(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


def measure(fn: Callable[[], Any], device: torch.device, warmup: int, repeats: int,
            grad: bool = False) -> dict[str, Any]:
    """Wall-clock time of each of `repeats` calls after `warmup` (the device synchronised
    after every call), under inference mode unless `grad`, and the process's peak memory.
    Out of memory is a result, not a crash."""
    reset_peak(device)
    t0 = time.perf_counter()
    try:
        times = wall_times(fn, device, warmup, repeats, grad)
    except torch.OutOfMemoryError:
        if device.type == "cuda":
            torch.cuda.empty_cache()
        result = failed_timing("out of memory")
    else:
        result = {"status": "ok", **summarise_ms(times), "peak_mem_gib": peak_gib(device)}
    return {**result, "warmup": warmup, "repeats": repeats, "timer": wall_timer(device),
            "peak_mem_scope": "process", "wall_s": round(time.perf_counter() - t0, 3)}


def wall_timer(device: torch.device) -> str:
    return ("wall clock, CUDA synchronised after each call" if device.type == "cuda"
            else "wall clock")


def exponent(t_small: float, t_large: float, n_small: float, n_large: float) -> float:
    """Log-log slope of cost against size: 1 linear, 2 quadratic."""
    if not (t_small > 0 and t_large > 0) or math.isnan(t_small) or math.isnan(t_large):
        return math.nan
    return math.log(t_large / t_small) / math.log(n_large / n_small)


def ratio(a: dict[str, Any] | None, b: dict[str, Any] | None, key: str = "mean_ms") -> float:
    """a[key] / b[key] when both rows ran (NaN otherwise)."""
    if a is None or b is None or a.get("status") != "ok" or b.get("status") != "ok":
        return math.nan
    return round(a[key] / b[key], 4)


# --- paper values -----------------------------------------------------------------------------

def plan_changes(options: dict[str, Any], plan_type: type) -> dict[str, Any]:
    """The command-line options (argparse's `vars`) that name a field of the dataclass
    `plan_type` and were given, lists as tuples: the `changes` a benchmark's `run` applies to
    its default plan."""
    return {f.name: tuple(options[f.name]) if isinstance(options[f.name], list)
            else options[f.name]
            for f in dataclasses.fields(plan_type) if options.get(f.name) is not None}

def claims_path(paper: str) -> str:
    """The claims file of `paper`, relative to the repository root."""
    return f"pipeline/claims/{paper}.yaml"


@cache
def paper_claims(paper: str) -> Any:
    """The validated claims file of `paper` (sparsegen.claims.Claims)."""
    from sparsegen.claims import load_claims

    return load_claims(REPO_ROOT / claims_path(paper))


def paper_claim(paper: str, table: str, row: str, column: str) -> dict[str, Any]:
    """`paper_value`, `paper_unit` (from the column label's parentheses) and `paper_source` of
    one printed cell of the claims file."""
    t = paper_claims(paper).tables[table]
    label = t.columns[column].label
    unit = re.search(r"\(([^)]*)\)", label)
    return {"paper_value": t.cells[row][column], "paper_unit": unit.group(1) if unit else "",
            "paper_source": f"{claims_path(paper)}: table {table}, row {row}, column {column}"}


def paper_recipe(paper: str, table: str) -> dict[str, Any]:
    """How the paper trained the models of `table` (global batch, iterations)."""
    return paper_claims(paper).tables[table].recipe


# --- environment ------------------------------------------------------------------------------

def checked_commit(commit: str, device: torch.device) -> str:
    """`commit` as recorded; a GPU run refuses anything but a full 40-hex hash unless
    SPARSEGEN_BENCH_ALLOW_UNKNOWN_COMMIT=1 (a copy without .git needs SPARSEGEN_GIT_COMMIT)."""
    if device.type == "cuda" and not FULL_COMMIT.fullmatch(commit) \
            and os.environ.get(ALLOW_UNKNOWN_COMMIT) != "1":
        raise BenchError(
            f"the commit of this GPU run is {commit!r}, not a full 40-hex hash: every CSV row "
            "records the commit that produced it. In a copy without .git set "
            "SPARSEGEN_GIT_COMMIT=$(git rev-parse HEAD) (taken where the copy came from), or "
            f"set {ALLOW_UNKNOWN_COMMIT}=1 to record it anyway")
    return commit


def nvidia_driver() -> str:
    """The NVIDIA driver version from nvidia-smi ('' when it is not there)."""
    exe = shutil.which("nvidia-smi")
    if exe is None:
        return ""
    try:
        out = subprocess.run([exe, "--query-gpu=driver_version", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=20, check=True).stdout
    except (OSError, subprocess.SubprocessError):
        return ""
    return out.strip().splitlines()[0] if out.strip() else ""


def environment(device: torch.device, natten: bool = False) -> dict[str, Any]:
    """The environment columns: device, driver, library versions, Python and the checked
    commit. `natten`: record natten's version (or 'absent') rather than leaving it blank."""
    versions = library_versions()
    cuda = device.type == "cuda"
    triton = ""
    if cuda:
        import importlib.metadata

        try:
            triton = importlib.metadata.version("triton")
        except importlib.metadata.PackageNotFoundError:
            triton = "absent"
    cudnn = torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None
    return {"device": device_description(device),
            "gpu_count": torch.cuda.device_count() if cuda else 0,
            "driver": nvidia_driver() if cuda else "",
            "torch": torch.__version__, "cuda": torch.version.cuda or "",
            "cudnn": str(cudnn or ""), "triton": triton,
            "natten": versions.get("natten", "absent") if natten else "",
            "python": platform.python_version(),
            "commit": checked_commit(git_commit(), device)}


# --- the CSV ----------------------------------------------------------------------------------

def complete(row: dict[str, Any]) -> dict[str, Any]:
    """`row` with every column of the schema (blank where it does not apply); an unknown key
    is a bug in the benchmark and raises."""
    unknown = [k for k in row if k not in COLUMNS]
    if unknown:
        raise KeyError(f"benchmark row has columns outside bench.common.COLUMNS: {unknown}")
    return {c: row.get(c, "") for c in COLUMNS}


def write_csv(path: Path, rows: Sequence[dict[str, Any]]) -> Path:
    """Every row on the common schema, in COLUMNS order."""
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(complete(r) for r in rows)
    write_text(path, buf.getvalue())
    return path


def run_failed_row(paper: str, error: BaseException) -> dict[str, Any]:
    """The row written beside the finished ones when a benchmark run breaks off."""
    tail = "".join(traceback.format_exception(error))[-600:]
    return {"paper": paper, "kind": "run", "status": "error",
            "note": f"the run broke off here; rows above were measured: {tail}"}


@contextmanager
def rows_kept_on_failure(paper: str, path: Path, rows: list[dict[str, Any]],
                         finish: Callable[[dict[str, Any]], dict[str, Any]]) -> Iterator[None]:
    """If the block raises, write the rows measured so far (each passed through `finish`)
    and a `run` error row to `path`, then re-raise: minutes of GPU time are not lost."""
    try:
        yield
    except Exception as err:
        write_csv(path, [finish(r) for r in rows] + [finish(run_failed_row(paper, err))])
        raise
