"""The attention rows of the StyleNAT efficiency benchmark (`bench.stylenat`), their copy-bandwidth
reference and summaries.

Bandwidth: a `bandwidth` row times a device-to-device `dst.copy_(src)` of a 1 GiB float32 tensor
(bytes = read + write; GB/s = bytes / median call / 1e9): the physical limit the attention calls
are held to.

Attention cost: one call at the FFHQ-256 generator's width at each level (all the level's heads,
head_dim from architecture.py; in the model each Hydra partition gets a share of them), kernel 7
at dilation 1 and at the level's largest, under the throughput's flags (`official_flags`: TF32,
cuDNN autotuning); q, k, v ~ N(0, 1)
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
again and its gradient written); rows that ran get `achieved_gb_per_s`, `bandwidth_fraction`
(of the copy) and `achieved_tflop_per_s` (4 * scores * head_dim flops forward, 3.5 times that
forward+backward). Summary rows: the
smallest side at which the fastest neighbourhood backend beats dense SDPA (training batch,
forward); `bandwidth_fraction[...]` of fused NA at 256², training batch, forward, dilation 1
(target >= 0.5); `na_over_window[batch, pass]`: at every side >= 64 the fused NA median over
the window call's (NA dilation 1 against window shift 0, NA at the largest dilation against
the shifted window: the model's two Hydra partitions against Swin's two halves), value = the
worst ratio, target <= 1."""

from __future__ import annotations

import importlib.util
import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from tqdm import tqdm

from sparsegen.attention.neighborhood import (
    natten_compiles_flex,
    natten_has_kernels,
    neighborhood_attention,
)
from sparsegen.attention.window import window_attention
from sparsegen.bench.stylenat_measure import (
    Deadline,
    join_notes,
    measure_calls,
    measure_sdpa,
    meets,
    skipped,
    target_fields,
)
from sparsegen.models.stylenat import architecture

if TYPE_CHECKING:
    from sparsegen.bench.stylenat import Plan

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
COST_ROW_S = 3.0  # timed calls of one attention row are cut to about this many seconds
COPY_BYTES = {"cuda": 2**30, "cpu": 2**24}  # the tensor the bandwidth row copies
NA_VS_WINDOW_MIN_SIDE = 64
BANDWIDTH_TARGET_SIDE = 256


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

    if natten_has_kernels():
        path = "its compiled kernels"
    else:
        probe = torch.zeros(1, 1, 1, 1, head_dim, device=device, dtype=dtype)
        path = "no compiled kernels (libnatten): NATTEN's Flex Attention path, " + (
            "compiled" if natten_compiles_flex(probe, probe, probe) else
            "eager (NATTEN compiles Flex only for float16/bfloat16 inputs; eager Flex forms "
            "every query-key score)")
    return f"natten {natten.__version__}, {path}"


def config_note(config: dict[str, Any], plan: Plan, head_dim: int, device: torch.device,
                dtype: torch.dtype) -> str:
    """What a row leaves out on purpose, and which NATTEN ran."""
    if not is_reference(config):
        return ""
    notes = [f"reference backend: timed at batch {plan.batches[-1]} only (batch 1 left out for "
             "the run's budget)"]
    if config["backend"] == "flex" and not config["rpb"]:
        notes.append("forward only (no model trains without the RPB)")
    if config["backend"] == "natten":
        notes.append(natten_note(head_dim, device, dtype))
    return join_notes(*notes)


def cost_row(level: Level, config: dict[str, Any], plan: Plan, device: torch.device,
             deadline: Deadline) -> dict[str, Any]:
    """One attention row: measured, or skipped (backend not timed here, no backward, budget)."""
    dtype = COST_DTYPES[plan.cost_dtype][0]
    row = {"kind": "attention_cost", **config, "side": level.side, "heads": level.heads,
           "head_dim": level.head_dim, "attention_scores": attention_scores(config, level),
           "min_bytes": min_bytes(config, level, dtype.itemsize)}
    note = config_note(config, plan, level.head_dim, device, dtype)
    if deadline.spent():
        outcome = deadline.skipped()
    elif config["attention"] == "neighborhood" and config["backend"] not in plan.backends:
        outcome = skipped(config["backend"], device, plan.backends)
    elif (config["backend"] == "natten" and config["pass"] == "forward_backward"
          and not natten_has_kernels()):
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
