"""StyleNAT efficiency (Table 1 "Usage Metrics", Fig. 3): generator throughput of StyleNAT and the
StyleSwin baseline at 256², the cost of one attention call against the feature-map side for
every neighbourhood-attention backend, window attention and dense attention, how far those calls
are from the GPU's memory bandwidth, and the time of one training iteration (the GPU-hours of a
model). Each efficiency target is a summary row with `target` and `target_met`. The attention
rows, the copy bandwidth and their summaries are `bench.stylenat_attention`'s; how a row is
timed, skipped or held to its target is `bench.stylenat_measure`'s.

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
import json
import logging
import math
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from sparsegen.attention.neighborhood import available_backends
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
from sparsegen.bench.stylenat_attention import (
    COPY_BYTES,
    COST_DTYPES,
    COST_REPEATS,
    DRY_RUN_SIZES,
    SIZES,
    attention_summaries,
    bandwidth_row,
    cost_rows,
    cost_tasks,
    run_order,
    with_achieved,
)
from sparsegen.bench.stylenat_measure import (
    SDPA_CHOICES,
    Deadline,
    measure_calls,
    measure_sdpa,
    meets,
    official_flags,
    skipped,
    target_fields,
)
from sparsegen.config import load_params, resolve
from sparsegen.layout import Layout
from sparsegen.models.stylenat import augment
from sparsegen.models.stylenat.generator import build_generator
from sparsegen.models.stylenat.layers import from_unit_range
from sparsegen.timing import synchronize
from sparsegen.train.seeding import resolve_device

log = logging.getLogger(__name__)

PAPER = "stylenat"
CLAIM_TABLE = "1"             # Table 1: rows stylenat, styleswin; columns throughput, params
RPB_BACKENDS = ("fused", "flex", "torch")  # neighbourhood backends that add the RPB
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
                         **skipped(backend, device, plan.backends)})
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
            rows.append({**base, **skipped(backend, device, plan.backends)})
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
