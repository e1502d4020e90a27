"""StyleNAT efficiency (Table 1 "Usage Metrics", Fig. 3): generator throughput of StyleNAT and the
StyleSwin baseline at 256², and the cost of one attention call against the feature-map side for
every neighbourhood-attention backend, window attention and dense attention.

Throughput follows the official `type=throughput` protocol (src/throughput.py, main.py): the
generator in eval mode (random weights: speed does not depend on them), batch 1, fixed z ~ N(0, I),
10 warm-up + 500 timed forwards, a CUDA event pair around each pass then synchronize,
torch.inference_mode, TF32 matmuls and convolutions, cuDNN benchmark on;
imgs/s = passes / sum(pass times). StyleNAT is timed once per neighbourhood backend that supports
the relative position bias (the model's `backend` key).
Paper (Table 1, GPU not stated; A100 and A6000 nodes): StyleNAT 32.56 img/s, 48.92 M params;
StyleSwin 30.20 img/s, 48.93 M params (ratio 1.08).

Attention cost: one forward call at the FFHQ-256 generator's width at each level (all the level's
heads, head_dim from architecture.py; in the model each Hydra partition gets a share of them),
batch = the per-GPU training batch (8), kernel 7 at dilation 1 and at the level's largest
dilation; time = median of CUDA-event times after warm-up; memory = peak allocated during the
timed calls above what was allocated before them (inputs, caches). Summary rows: our throughput
ratio and the smallest side at which the fastest neighbourhood backend beats dense SDPA.

On the CPU the same code runs as a dry run for tests: the smoke preset's tiny model, 1 warm-up +
2 timed calls, only the "torch" neighbourhood backend timed (on the CPU "flex" and "natten" run
eager dense reference paths), the others recorded as skipped with the reason."""

from __future__ import annotations

import importlib.util
import logging
import math
import statistics
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
from sparsegen.bench.common import environment, write_csv
from sparsegen.config import load_params, resolve
from sparsegen.layout import Layout
from sparsegen.models.stylenat import architecture
from sparsegen.models.stylenat.generator import build_generator
from sparsegen.provenance import library_versions
from sparsegen.timing import event_times, synchronize, tf32
from sparsegen.train.seeding import resolve_device

log = logging.getLogger(__name__)

PAPER_IMGS_PER_S = {"stylenat": 32.56, "styleswin": 30.20}  # Table 1
PAPER_PARAMS_M = {"stylenat": 48.92, "styleswin": 48.93}
PAPER_RATIO = round(PAPER_IMGS_PER_S["stylenat"] / PAPER_IMGS_PER_S["styleswin"], 3)
RPB_BACKENDS = ("torch", "flex")  # neighbourhood backends that add the relative position bias
SIZES = (32, 64, 128, 256)
DRY_RUN_SIZES = (8, 16)
COST_REPEATS = {"cuda": (3, 20), "cpu": (1, 2)}  # (warm-up, timed) calls per attention config
DRY_RUN_THROUGHPUT = (1, 2)
PAPER_GPU = "the paper's GPU is not stated (A100 and A6000 nodes)"

COLUMNS = (
    "kind",              # throughput | attention_cost | summary
    "model",             # throughput: stylenat | styleswin
    "metric",            # summary: throughput_ratio | crossover_side[...]
    "attention",         # throughput: hydra_na | swin; cost: neighborhood | window | dense
    "backend",           # torch | flex | natten (neighbourhood), torch (window), sdpa (dense)
    "rpb",               # relative position bias added
    "side", "batch", "heads", "head_dim", "kernel", "dilation", "max_dilation", "window", "shift",
    "precision", "status", "note",
    "warmup", "repeats", "median_ms", "mean_ms", "std_ms", "peak_mem_mib",
    "wall_s",            # seconds for all calls of the row, compilation and warm-up included
    "imgs_per_s", "params_m", "paper_params_m",
    "value", "paper_value",
    "device", "torch", "cuda", "natten", "commit", "comparable", "non_comparable_reasons",
)


@dataclass(frozen=True)
class Plan:
    """What one benchmark run measures: the two generators' settings, the sides of the cost
    curves, the attention batch and the number of calls."""

    stylenat: dict[str, Any]
    styleswin: dict[str, Any]
    sides: tuple[int, ...]
    batch: int
    throughput_calls: tuple[int, int]
    cost_calls: tuple[int, int]
    backends: tuple[str, ...]  # neighbourhood backends timed; the others get a "skipped" row


def plan_for(device: torch.device, sizes: Sequence[int] | None = None) -> Plan:
    """The paper model on a GPU; the smoke preset's tiny model as a CPU dry run, timing only the
    "torch" backend ("flex" and "natten" fall back to eager dense reference paths on the CPU)."""
    dry = device.type != "cuda"
    params = load_params(overrides={"preset": "smoke" if dry else "paper", "weights": "random"})
    stylenat, styleswin = (resolve(params, "stylenat", v, check=False)
                           for v in ("stylenat", "styleswin"))
    ev = stylenat["eval"]
    return Plan(stylenat=stylenat, styleswin=styleswin,
                sides=tuple(sizes or (DRY_RUN_SIZES if dry else SIZES)),
                batch=stylenat["train"]["batch_size"],
                throughput_calls=(DRY_RUN_THROUGHPUT if dry else
                                  (ev["throughput_warmup"], ev["throughput_repeats"])),
                cost_calls=COST_REPEATS["cpu" if dry else "cuda"],
                backends=("torch",) if dry else tuple(available_backends(device)))


@contextmanager
def official_flags(device: torch.device) -> Iterator[str]:
    """TF32 matmuls and cuDNN convolutions and cuDNN autotuning, as StyleNAT's main.py sets them
    globally; yields the precision label written into every row. Restored afterwards."""
    with tf32(True, cudnn_benchmark=True):
        yield "fp32 tensors, tf32 matmul+conv" if device.type == "cuda" else "fp32"


def pass_times_ms(fn: Callable[[], Any], device: torch.device, warmup: int, repeats: int
                  ) -> list[float]:
    """Milliseconds of each timed call (`sparsegen.timing.event_times`: CUDA events around
    every call followed by a synchronize, as the official throughput loop; wall clock on CPU)."""
    return [t * 1e3 for t in event_times(fn, device, warmup, repeats)]


def measure_calls(fn: Callable[[], Any], device: torch.device, warmup: int, repeats: int
                  ) -> dict[str, Any]:
    """Per-call times (ms) and the peak memory of the timed calls above the memory allocated
    before them, under inference mode. Out of memory is a result (as in bench.common.measure);
    so is a backend's refusal or failure (ValueError, RuntimeError, e.g. a compilation error),
    with its message in `note`."""
    failed = {"median_ms": math.nan, "mean_ms": math.nan, "std_ms": math.nan,
              "peak_mem_mib": math.nan}
    cuda = device.type == "cuda"
    if cuda:
        torch.cuda.empty_cache()
    t0 = time.perf_counter()
    try:
        with torch.inference_mode():
            fn()  # first call outside the peak window: lazy caches, compilation
            synchronize(device)
            if cuda:
                base = torch.cuda.memory_allocated(device)
                torch.cuda.reset_peak_memory_stats(device)
            times = pass_times_ms(fn, device, max(warmup - 1, 0), repeats)
        peak = (torch.cuda.max_memory_allocated(device) - base) / 2**20 if cuda else math.nan
        result = {"status": "ok", "median_ms": statistics.median(times),
                  "mean_ms": statistics.fmean(times), "std_ms": statistics.pstdev(times),
                  "peak_mem_mib": round(peak, 2)}
    except torch.OutOfMemoryError:
        result = {"status": "out of memory", **failed}
    except (RuntimeError, ValueError) as err:
        log.warning("benchmark call failed: %s", err)
        result = {"status": "error", "note": f"{type(err).__name__}: {err}"[:300], **failed}
    if cuda and result["status"] != "ok":
        torch.cuda.empty_cache()
    return {"warmup": warmup, "repeats": repeats, **result,
            "wall_s": round(time.perf_counter() - t0, 2)}


# --- generator throughput ---------------------------------------------------------------------

def throughput_row(model_name: str, settings: dict[str, Any], backend: str,
                   device: torch.device, calls: tuple[int, int]) -> dict[str, Any]:
    """One generator timed with the official protocol; params counted like main.py (g_ema)."""
    model = {**settings["model"], "backend": backend}
    g = build_generator(model).to(device).eval()
    params_m = sum(p.numel() for p in g.parameters()) / 1e6
    z = torch.randn(1, model["style_dim"], generator=torch.Generator().manual_seed(0)).to(device)
    result = measure_calls(lambda: g(z), device, *calls)
    return {"kind": "throughput", "model": model_name, "attention": model["attention"],
            "backend": backend if model["attention"] == "hydra_na" else "torch",
            "rpb": True, "side": model["resolution"], "batch": 1, **result,
            "imgs_per_s": 1e3 / result["mean_ms"],  # = passes / sum(pass times), batch 1
            "params_m": round(params_m, 3), "paper_params_m": PAPER_PARAMS_M[model_name],
            "paper_value": PAPER_IMGS_PER_S[model_name]}


def throughput_rows(plan: Plan, device: torch.device) -> list[dict[str, Any]]:
    rows = []
    for backend in tqdm(RPB_BACKENDS, desc="throughput", disable=None):
        if backend in plan.backends:
            rows.append(throughput_row("stylenat", plan.stylenat, backend, device,
                                       plan.throughput_calls))
        else:
            rows.append({"kind": "throughput", "model": "stylenat", "attention": "hydra_na",
                         "backend": backend, "rpb": True,
                         "side": plan.stylenat["model"]["resolution"], "batch": 1,
                         **skipped(backend, device, plan)})
    rows.append(throughput_row("styleswin", plan.styleswin, "torch", device,
                               plan.throughput_calls))
    return rows


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
            "backend": nat["backend"] if nat else "", "status": "ok" if nat and swin else "n/a",
            "note": note, "value": value, "paper_value": PAPER_RATIO}


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


def skipped(backend: str, device: torch.device, plan: Plan) -> dict[str, Any]:
    """The row fields of a backend this run does not time, and why."""
    if backend in available_backends(device):
        why = (f"dry run on {device.type}: only {', '.join(plan.backends)} timed ({backend!r} "
               "falls back to an eager dense reference path off CUDA)")
    else:
        why = f"backend {backend!r} is not available on {device.type} (e.g. natten not installed)"
    return {"status": "skipped", "note": why}


def natten_note() -> str:
    """Which NATTEN ran: its compiled kernels, or (without libnatten) its Flex Attention path."""
    if importlib.util.find_spec("natten") is None:
        return ""
    import natten

    kernels = ("its compiled kernels" if natten.HAS_LIBNATTEN
               else "no compiled kernels (libnatten): NATTEN's Flex Attention path")
    return f"natten {natten.__version__}, {kernels}"


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
    row = {"kind": "summary", "metric": metric}
    if not wins:
        return {**row, "status": "n/a", "value": math.nan,
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


# --- the run ----------------------------------------------------------------------------------

def comparability(row: dict[str, Any], device_name: str) -> dict[str, Any]:
    notes = {
        "throughput": f"measured on {device_name}; {PAPER_GPU}; neighbourhood attention "
                      "re-implemented (the paper ran NATTEN's kernels, natten >= 0.14)",
        "attention_cost": "no paper counterpart",
    }
    note = notes.get(row["kind"]) or (
        f"ratio of two generators on {device_name}; the paper's is on its GPU with NATTEN's "
        "kernels" if row["metric"] == "throughput_ratio" else "no paper counterpart")
    return {"comparable": False, "non_comparable_reasons": note}


def benchmark(plan: Plan, device: torch.device) -> list[dict[str, Any]]:
    """Every row of one run: throughput, attention cost, then the summaries."""
    env = {**environment(device), "natten": library_versions().get("natten", "")}
    with official_flags(device) as label:
        rows = throughput_rows(plan, device) + cost_rows(plan, device)
    rows += [throughput_ratio(rows), *(crossover(rows, m) for m in CROSSOVERS)]
    return [{c: "" for c in COLUMNS} | r | {"precision": label} | env
            | comparability(r, env["device"]) for r in rows]


def run(out: Path | None = None, sizes: list[int] | None = None, device_name: str = "cuda"
        ) -> Path:
    """Benchmark on `device_name` and write the CSV (default results/bench/stylenat.csv)."""
    device = resolve_device(device_name)
    out = out or Path(Layout(load_params()).bench("stylenat"))
    return write_csv(out, benchmark(plan_for(device, sizes), device))
