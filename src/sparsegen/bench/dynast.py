"""DynaST efficiency (Table 1 "Time"; Sec. 3.2's claim that sparse matching keeps full-resolution
matching cheap): four parts, one CSV (results/bench/dynast.csv), told apart by the `part` column.

- `variants`: every DeepFashion variant of params.yaml (`dynast.variants` df_*: Ours, Ours-32/64/
  128, wo Inner, wo Dyna and the same-backbone CoCosNet and CoCosNet-v2 peers), random weights
  (speed does not depend on them), batch 1 at model.size (256²), the forward the sample job times
  (matching + synthesis, the exemplar warped): eval.timing_warmup (10) warm-up calls, then
  eval.timing_repeats (1000) timed calls, wall clock with the device synchronised after each
  (Table 1: mean of 1000 samples on one RTX 3090). Each row carries the paper's seconds per
  sample (pipeline/claims/dynast.yaml, Table 1, column time). Summary rows give Ours' time over
  each peer's; the target is the paper's ratio rounded to the printed two decimals (CoCosNet-v2:
  9.63 / 21.7 -> <= 0.44, CoCosNet: 9.63 / 11.5 -> <= 0.84), met when our ratio, rounded alike,
  is at most that.
- `attention`: the attention alone at one level, batch 1, q, k, v ~ N(0, 1) at the level's width
  (model.widths: 512, 256, 128, 64 at sides 32, 64, 128, 256 of the 256² model; a side beyond the
  pyramid takes the nearest level's width, 64 at 512), the pruning maps at width / prune_ratio,
  the 3-channel exemplar image and top_k from the model settings. Three forms: one Dense Attn
  Block's attention with its Nq x Nk scores materialised (pruning, warp, top-k: Eq. 2, 5-7,
  12-13), dense attention through SDPA (no pruning, warp or top-k: scores never materialised),
  and one inter-scale block (Eq. 3: 4k candidates from a random top-k of the half-side grid)
  followed by one inner-scale block (Eq. 4: 5k candidates from the first's top-k), candidate
  lists included. Time, peak memory, the scores formed (`count_scores`); out of memory is a
  result. Summary rows: the least-squares exponent of time against H·W per form over every side
  that ran (small sides are launch-bound on a GPU: each row's `time_exponent_vs_half_side` gives
  the growth from the side below), and the smallest side at which the sparse pair is faster than
  each dense form (a dense form that ran out of memory counts as slower).
- `scaling`: the df_full generator at 256², 512², 1024² (the `sizes` argument): model.size set to
  the side and max_match_res scaled with it, so every level is attended as in Ours at 256²
  (random weights, batch 1); an exponent of time against H·W over the sides.
- `training`: one DynaSTTask.train_step (G step with the supervised objective and D step; random
  weights, random-init loss VGG) on one device, on a synthetic batch already in host memory (its
  copy to the device included, no data loading), under the training job's determinism switches,
  at the paper's batch 32 and at its shares on 2, 4 and 8 devices (16, 8, 4: Sec. 4 trained on
  8 V100s; on one H200, batch 32 runs out of memory, which is recorded, and 16 peaks at about
  96 GiB). GPU-hours of the paper's schedule = (epochs + decay_epochs) x ceil(|train list| / 32)
  iterations x seconds per step x 32 / batch devices / 3600 (below 32: assuming that step time
  on each device under DDP).
  |train list| (CoCosNet's DeepFashion train.txt) is not known offline: ASSUMED_TRAIN_PAIRS
  (every DeepFashion In-shop image, an upper bound) unless given; each training row states the
  number used.

Every part runs under both precisions of bench.common (strict fp32, and PyTorch's defaults
fp32+tf32conv); every model call's first call counts the scores and is one of the warm-up calls
(its seconds are `compile_s`). On the CPU the same code is a dry run for the tests: the smoke
preset's tiny models, fp32 only, attention sides 8 and 16, scaling sides 32 and 64, one or two
calls per row. `run(..., parts=..., variant_calls=..., ...)` changes any field of `Plan`, as do
the options of `python -m sparsegen.bench.dynast` (e.g. `--parts variants --variant-calls 10
100`; `python -m sparsegen bench dynast` runs the defaults).
"""

from __future__ import annotations

import argparse
import copy
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from functools import cache, partial
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from sparsegen.attention.all_to_all import count_scores
from sparsegen.attention.dynamic_sparse import (
    dense_dynamic_attention,
    inner_scale_candidates,
    inter_scale_candidates,
    sparse_dynamic_attention,
)
from sparsegen.bench.common import (
    PRECISIONS,
    environment,
    exponent,
    failed_timing,
    measure,
    paper_claim,
    paper_claims,
    plan_changes,
    precision,
    precision_label,
    ratio,
    release,
    rows_kept_on_failure,
    training_switches,
    wall_timer,
    write_csv,
)
from sparsegen.config import load_params, resolve, variant_entries
from sparsegen.layout import Layout
from sparsegen.models.dynast.checks import LABEL_CHANNELS, levels
from sparsegen.models.dynast.network import build_generator
from sparsegen.models.dynast.task import build_task, epoch_steps
from sparsegen.timing import synchronize
from sparsegen.train.seeding import resolve_device

PAPER = "dynast"
PARTS = ("variants", "attention", "scaling", "training")
CLAIM_TABLE, CLAIM_COLUMN = "1", "time"
VARIANT_PREFIX = "df_"          # the DeepFashion variants of params.yaml
FULL = "df_full"                # Ours
PEERS = ("df_cocosnet_v2", "df_cocosnet")
MODELS = {"dynast": "dynast", "dense": "cocosnet_peer", "patchmatch": "cocosnet_v2_peer"}
GPU_PRECISIONS = ("fp32", "fp32+tf32conv")
SIZES = (256, 512, 1024)        # scaling sides
DRY_RUN_SIZES = (32, 64)
ATTENTION_SIDES = (32, 64, 128, 256, 512)
DRY_RUN_ATTENTION_SIDES = (8, 16)
# (warm-up, timed) calls per row of the attention, scaling and training parts
CALLS = {"cuda": {"attention": (3, 20), "scaling": (5, 50), "training": (3, 10)},
         "cpu": {"attention": (1, 2), "scaling": (0, 1), "training": (0, 1)}}
# |train list| of DeepFashion when none is given: the 52,712 images of DeepFashion In-shop
# (metrics_datasets_weights.md, count unverified). CoCosNet's train.txt lists a part of them, so
# the GPU-hours derived from it are an upper bound.
ASSUMED_TRAIN_PAIRS = 52_712
PAPER_GPUS = 8                  # Sec. 4: 8 Tesla V100s share the batch of 32
# attention form -> (backend column, what is timed)
FORMS = {
    "dense_materialised": ("explicit", "a Dense Attn Block's attention (Eq. 2, 5-7, 12-13): the "
                           "Nq x Nk scores and prune scores materialised, the exemplar warped, "
                           "top-k taken"),
    "dense_sdpa": ("sdpa", "dense attention without pruning, warp or top-k through "
                   "F.scaled_dot_product_attention (scores never materialised; PyTorch picks "
                   "the kernel)"),
    "sparse": ("torch", "one inter-scale block (Eq. 3, 4k candidates from a random top-k of the "
               "half-side grid) then one inner-scale block (Eq. 4, 5k candidates from its "
               "top-k): candidate lists, gathers, pruning, warp, top-k"),
}
DENSE_FORMS = ("dense_materialised", "dense_sdpa")
EXPONENT_UNIT = "slope of log time on log H·W"


@dataclass(frozen=True)
class Plan:
    """What one run measures."""

    preset: str                         # params preset of every model's settings
    parts: tuple[str, ...]
    precisions: tuple[str, ...]
    variant_calls: tuple[int, int]      # (warm-up, timed) forwards per variant
    attention_sides: tuple[int, ...]
    attention_calls: tuple[int, int]
    scaling_sides: tuple[int, ...]
    scaling_calls: tuple[int, int]
    train_batches: tuple[int, ...]      # per-device batches of the training step
    train_calls: tuple[int, int]
    train_pairs: int                    # |train list| the GPU-hours are derived from


@cache
def _params(preset: str) -> dict[str, Any]:
    return load_params(overrides={"preset": preset, "weights": "random"})


def variant_settings(variant: str, preset: str) -> dict[str, Any]:
    """Resolved settings of one DynaST variant with random weights (a copy)."""
    return copy.deepcopy(resolve(_params(preset), PAPER, variant, check=False))


def deepfashion_variants(preset: str) -> list[str]:
    """The trained df_* variants of params.yaml, in its order (the authors' released network,
    `df_released`, is the official architecture: not one of Table 1's timed rows)."""
    entries = variant_entries(_params(preset), PAPER)
    return [v for v, entry in entries.items()
            if v.startswith(VARIANT_PREFIX) and not entry.get("released")]


def plan_for(device: torch.device, sizes: Sequence[int] | None = None) -> Plan:
    """The paper preset on a GPU; the smoke preset's tiny models as a CPU dry run."""
    dry = device.type != "cuda"
    preset = "smoke" if dry else "paper"
    settings = variant_settings(FULL, preset)
    ev, calls = settings["eval"], CALLS["cpu" if dry else "cuda"]
    return Plan(preset=preset, parts=PARTS, precisions=("fp32",) if dry else GPU_PRECISIONS,
                variant_calls=(ev["timing_warmup"], ev["timing_repeats"]),
                attention_sides=DRY_RUN_ATTENTION_SIDES if dry else ATTENTION_SIDES,
                attention_calls=calls["attention"],
                scaling_sides=tuple(sizes or (DRY_RUN_SIZES if dry else SIZES)),
                scaling_calls=calls["scaling"],
                train_batches=device_shares(settings["train"]["batch_size"]),
                train_calls=calls["training"], train_pairs=ASSUMED_TRAIN_PAIRS)


def device_shares(batch: int) -> tuple[int, ...]:
    """Per-device batches of `batch` on 1, 2, 4, ... PAPER_GPUS devices (those that divide it)."""
    shares, devices = [], 1
    while devices <= PAPER_GPUS and batch % devices == 0:
        shares.append(batch // devices)
        devices *= 2
    return tuple(shares)


def check_plan(plan: Plan) -> None:
    """Refuse unknown parts and sides the models cannot take, before any timing."""
    unknown = [p for p in plan.parts if p not in PARTS]
    if unknown:
        raise ValueError(f"bench dynast parts: {unknown} unknown; choose from {PARTS}")
    settings = variant_settings(FULL, plan.preset)
    for side in plan.attention_sides:
        level_width(settings["model"], side)
    for side in plan.scaling_sides:
        scaled_model(settings["model"], side)
    batch = settings["train"]["batch_size"]
    uneven = [b for b in plan.train_batches if b < 1 or batch % b]
    if uneven:
        raise ValueError(f"bench dynast train_batches: {uneven} do not divide train.batch_size "
                         f"{batch} (each is the batch of one of batch_size / b devices)")


# --- timing -----------------------------------------------------------------------------------

def timed(fn: Callable[[], Any], device: torch.device, warmup: int, repeats: int,
          grad: bool = False) -> dict[str, Any]:
    """The first call counts the attention scores (it is one of the `warmup` calls; its seconds
    are `compile_s`), then `bench.common.measure` for the rest of the warm-up and the timed
    calls. Out of memory, in the first call or later, is a result."""
    t0 = time.perf_counter()
    with count_scores() as counted:
        try:
            with torch.inference_mode(not grad):
                fn()
            synchronize(device)
        except torch.OutOfMemoryError:
            release(device)
            return {**failed_timing("out of memory"), "warmup": 1, "repeats": 0,
                    "timer": wall_timer(device), "peak_mem_scope": "process",
                    "wall_s": round(time.perf_counter() - t0, 3),
                    "attention_scores": counted.total_scores,
                    "note": "out of memory in the first call (attention_scores: the scores "
                            "formed before it)"}
    first = time.perf_counter() - t0
    rest = max(warmup - 1, 0)
    result = measure(fn, device, rest, repeats, grad)
    return {**result, "warmup": rest + 1, "compile_s": round(first, 3),
            "wall_s": round(result["wall_s"] + first, 3),
            "attention_scores": counted.total_scores}


def with_timing(row: dict[str, Any], result: dict[str, Any]) -> dict[str, Any]:
    """`row` with a timing result; the notes of both kept."""
    notes = [n for n in (row.get("note", ""), result.get("note", "")) if n]
    return {**row, **result, "note": "; ".join(notes)}


def fit_exponent(pixels: Sequence[float], times: Sequence[float]) -> float:
    """Least-squares slope of log time on log pixels (1: linear, 2: quadratic); NaN with fewer
    than two distinct sizes."""
    if len(set(pixels)) < 2:
        return math.nan
    x, y = [math.log(p) for p in pixels], [math.log(t) for t in times]
    mx, my = sum(x) / len(x), sum(y) / len(y)
    return sum((a - mx) * (b - my) for a, b in zip(x, y, strict=True)) / sum(
        (a - mx) ** 2 for a in x)


def exponent_row(rows: Sequence[dict[str, Any]], part: str, metric: str, label: str,
                 note: str) -> dict[str, Any]:
    """The fitted exponent of `rows` (those that ran) against H·W."""
    ok = sorted((r for r in rows if r["status"] == "ok"), key=lambda r: r["side"])
    value = fit_exponent([r["side"] ** 2 for r in ok], [r["mean_ms"] for r in ok])
    sides = [r["side"] for r in ok]
    return {"part": part, "kind": "summary", "metric": metric, "precision": label, "batch": 1,
            "value": round(value, 3), "unit": EXPONENT_UNIT,
            "status": "no result" if math.isnan(value) else "ok",
            "note": (f"least-squares fit of log mean time on log H·W over sides {sides}; "
                     f"{note}") if len(sides) > 1 else f"fewer than two sides ran: {sides}"}


def add_half_side_exponents(rows: list[dict[str, Any]], key: Callable[[dict[str, Any]], Any]
                            ) -> None:
    """Each row's growth of time with H·W from the row of half its side (same `key`)."""
    by_side = {(key(r), r["side"]): r for r in rows}
    for r in rows:
        prev = by_side.get((key(r), r["side"] // 2))
        r["time_exponent_vs_half_side"] = (
            round(exponent(prev["mean_ms"], r["mean_ms"], prev["side"] ** 2, r["side"] ** 2), 3)
            if prev and prev["status"] == r["status"] == "ok" else math.nan)


# --- generators -------------------------------------------------------------------------------

def generator_inputs(model: dict[str, Any], device: torch.device, batch: int = 1,
                     seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(S_tgt, I_ref, S_ref) at model.size: label maps in [0, 1], the exemplar in [-1, 1]."""
    gen = torch.Generator().manual_seed(seed)
    side, label = model["size"], LABEL_CHANNELS[model["task"]]
    s_tgt = torch.rand(batch, label, side, side, generator=gen)
    i_ref = torch.rand(batch, 3, side, side, generator=gen) * 2 - 1
    s_ref = torch.rand(batch, label, side, side, generator=gen)
    return s_tgt.to(device), i_ref.to(device), s_ref.to(device)


def generator_row(model: dict[str, Any], device: torch.device, calls: tuple[int, int]
                  ) -> dict[str, Any]:
    """One generator (random weights, eval mode) timed at batch 1: matching + synthesis."""
    net = build_generator(model).to(device).eval()
    params_m = sum(p.numel() for p in net.parameters()) / 1e6
    inputs = generator_inputs(model, device)
    row = with_timing({"model": MODELS[model["matching"]], "attention": model["matching"],
                       "backend": "torch", "side": model["size"], "batch": 1,
                       "params_m": round(params_m, 3)},
                      timed(partial(net, *inputs), device, *calls))
    del net, inputs
    release(device)
    return row


def variant_claim(variant: str) -> dict[str, Any]:
    """The paper's seconds per sample of the Table 1 row that `variant` reproduces."""
    table = paper_claims(PAPER).tables[CLAIM_TABLE]
    row = next((r for r in table.rows.values() if r.variant == variant), None)
    if row is None or table.cells[row.id].get(CLAIM_COLUMN) is None:
        return {}
    return paper_claim(PAPER, CLAIM_TABLE, row.id, CLAIM_COLUMN)


def variant_rows(plan: Plan, device: torch.device, name: str) -> list[dict[str, Any]]:
    """Every DeepFashion variant at one precision."""
    label = precision_label(name, device)
    rows = []
    with precision(name):
        for variant in tqdm(deepfashion_variants(plan.preset), desc=f"variants {label}",
                            disable=None):
            model = variant_settings(variant, plan.preset)["model"]
            row = generator_row(model, device, plan.variant_calls)
            rows.append({"part": "variants", "kind": "inference", "variant": variant,
                         "precision": label, **row, **variant_claim(variant)})
    return rows


def paper_ratio(peer: str) -> dict[str, Any]:
    """The paper's Ours / peer seconds per sample, from the claims file."""
    full, other = variant_claim(FULL), variant_claim(peer)
    return {"paper_value": round(full["paper_value"] / other["paper_value"], 4),
            "paper_unit": "ratio",
            "paper_source": f"{full['paper_source']} / {other['paper_source']}"}


def ratio_rows(rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Ours' time over each peer's per precision, against the target of the paper's ratio
    rounded to two decimals (met: our ratio, rounded alike, at most the target)."""
    by_key = {(r["variant"], r["precision"]): r for r in rows
              if r["part"] == "variants" and r["kind"] == "inference"}
    out = []
    for label in dict.fromkeys(r["precision"] for r in by_key.values()):
        full = by_key.get((FULL, label))
        for peer in PEERS:
            other = by_key.get((peer, label))
            value = ratio(full, other)
            paper = paper_ratio(peer)
            target = round(paper["paper_value"], 2)
            ran = not math.isnan(value)
            out.append({
                "part": "variants", "kind": "summary", "metric": f"time_ratio[{FULL}/{peer}]",
                "precision": label, "batch": 1, "value": value, "unit": "ratio",
                "status": "ok" if ran else "no result", "target": f"<= {target:.2f}",
                "target_met": ("met" if round(value, 2) <= target else "not met") if ran else "",
                "side": full["side"] if full else "", **paper,
                "note": (f"mean {full['mean_ms']:.4g} ms / {other['mean_ms']:.4g} ms; target: "
                         f"the paper's ratio {paper['paper_value']} rounded to two decimals"
                         if ran else f"{FULL} or {peer} did not run")})
    return out


# --- attention alone --------------------------------------------------------------------------

def level_width(model: dict[str, Any], side: int) -> int:
    """Channels of the level at feature side `side`: widths[i] at model.size / 2^i; a side
    beyond the pyramid takes the nearest level's width (512 at a 256² model: widths[0])."""
    size, widths = model["size"], model["widths"]
    steps = math.log2(size / side) if side > 0 else math.nan
    if side < 2 or side % 2 or not steps.is_integer():
        raise ValueError(f"bench dynast attention_sides: {side} is not an even side that is "
                         f"model.size {size} times a power of two")
    return widths[min(max(int(steps), 0), len(widths) - 1)]


def attention_inputs(model: dict[str, Any], side: int, device: torch.device
                     ) -> dict[str, Callable[[], Any]]:
    """The three forms' calls at one side, their inputs built once (seeded)."""
    width, top_k = level_width(model, side), model["top_k"]
    gen = torch.Generator().manual_seed(side)

    def randn(channels: int) -> torch.Tensor:
        return torch.randn(1, channels, side, side, generator=gen).to(device)

    q, k, v = randn(width), randn(width), randn(width)
    qp, kp = randn(width // model["prune_ratio"]), randn(width // model["prune_ratio"])
    image = (torch.rand(1, 3, side, side, generator=gen) * 2 - 1).to(device)
    half = (side // 2, side // 2)
    coarse = torch.randint(half[0] * half[1], (1, half[0] * half[1], top_k),
                           generator=gen).to(device)
    grid = (side, side)
    scale = model["tau"] / width  # Eq. 2's tau with the blocks' 1 / C_v
    sparse = partial(sparse_dynamic_attention, q, k, v, qp, kp, scale=scale, image=image,
                     topk=top_k, warp_mask=model["warp_mask"])

    def sparse_pair() -> Any:
        inter = sparse(inter_scale_candidates(coarse, half, half), kind="inter")  # Eq. 3
        return sparse(inner_scale_candidates(inter.topk, grid, grid), kind="inner")  # Eq. 4

    return {"dense_materialised": partial(dense_dynamic_attention, q, k, v, qp, kp, scale=scale,
                                          image=image, topk=top_k,
                                          warp_mask=model["warp_mask"]),
            "dense_sdpa": partial(dense_dynamic_attention, q, k, v, scale=scale, topk=None),
            "sparse": sparse_pair}


def attention_rows(plan: Plan, device: torch.device, name: str) -> list[dict[str, Any]]:
    """Every form at every side at one precision, then the exponents and crossovers."""
    label = precision_label(name, device)
    model = variant_settings(FULL, plan.preset)["model"]
    rows = []
    with precision(name):
        for side in tqdm(plan.attention_sides, desc=f"attention {label}", disable=None):
            calls = attention_inputs(model, side, device)
            for form, fn in calls.items():
                backend, what = FORMS[form]
                rows.append(with_timing(
                    {"part": "attention", "kind": "attention_cost", "attention": form,
                     "backend": backend, "side": side, "batch": 1, "heads": 1,
                     "head_dim": level_width(model, side), "precision": label,
                     "note": f"{what}; k = {model['top_k']}"},
                    timed(fn, device, *plan.attention_calls)))
            del calls
            release(device)
    add_half_side_exponents(rows, lambda r: r["attention"])
    summaries = [exponent_row([r for r in rows if r["attention"] == form], "attention",
                              f"time_exponent[{form}]", label, FORMS[form][1])
                 for form in FORMS]
    return rows + summaries + [crossover(rows, dense, label) for dense in DENSE_FORMS]


def crossover(rows: Sequence[dict[str, Any]], dense: str, label: str) -> dict[str, Any]:
    """Smallest side at which the sparse pair's mean time is below the dense form's (a dense
    form that ran out of memory where the sparse pair ran counts as slower)."""
    cost = {(r["attention"], r["side"]): r for r in rows
            if r["kind"] == "attention_cost" and r["precision"] == label}
    sides = sorted({side for _, side in cost})

    def faster(side: int) -> bool:
        s, d = cost.get(("sparse", side)), cost.get((dense, side))
        if s is None or d is None or s["status"] != "ok":
            return False
        return d["status"] == "out of memory" or (d["status"] == "ok"
                                                  and s["mean_ms"] < d["mean_ms"])

    wins = [s for s in sides if faster(s)]
    row = {"part": "attention", "kind": "summary", "metric": f"crossover_side[sparse/{dense}]",
           "precision": label, "batch": 1, "unit": "px (feature-map side)"}
    if not wins:
        return {**row, "status": "no result", "value": math.nan,
                "note": f"the sparse pair was not faster than {dense} at sides {sides}"}
    side = wins[0]
    d = cost[(dense, side)]
    versus = ("ran out of memory" if d["status"] == "out of memory"
              else f"{d['mean_ms']:.4g} ms")
    holds = all(faster(s) for s in sides if s >= side)
    return {**row, "status": "ok", "value": side, "side": side,
            "note": (f"sparse {cost[('sparse', side)]['mean_ms']:.4g} ms, {dense} {versus}; "
                     + ("faster at every larger side measured" if holds
                        else "not faster at every larger side measured"))}


# --- generators against the image side --------------------------------------------------------

def scaled_model(model: dict[str, Any], side: int) -> dict[str, Any]:
    """`model` at image side `side`, max_match_res scaled with it (the same levels attended)."""
    step = 1 << (levels(model) - 1)
    if side % step:
        raise ValueError(f"bench dynast sizes: {side} is not divisible by 2^(M-1) = {step} "
                         f"(M = {levels(model)} scales from model.widths)")
    return {**model, "size": side, "max_match_res": model["max_match_res"] * side
            // model["size"]}


def scaling_rows(plan: Plan, device: torch.device, name: str) -> list[dict[str, Any]]:
    label = precision_label(name, device)
    base = variant_settings(FULL, plan.preset)["model"]
    rows = []
    with precision(name):
        for side in tqdm(plan.scaling_sides, desc=f"scaling {label}", disable=None):
            model = scaled_model(base, side)
            rows.append({"part": "scaling", "kind": "inference", "precision": label,
                         "variant": f"{FULL} + model.size={side}, model.max_match_res="
                                    f"{model['max_match_res']}",
                         **generator_row(model, device, plan.scaling_calls)})
    add_half_side_exponents(rows, lambda r: r["precision"])
    return [*rows, exponent_row(rows, "scaling", "time_exponent[generator]", label,
                                f"{FULL} generator, every level attended")]


# --- one training step ------------------------------------------------------------------------

def synthetic_batch(settings: dict[str, Any], seed: int = 0) -> dict[str, torch.Tensor]:
    """A batch shaped as DynaSTTask.batch returns it (host memory): label maps in [0, 1],
    images in [-1, 1], sample weights 1 (the content does not change the cost)."""
    gen = torch.Generator().manual_seed(seed)
    n, side = settings["train"]["batch_size"], settings["model"]["size"]
    label = LABEL_CHANNELS[settings["model"]["task"]]
    return {"s_tgt": torch.rand(n, label, side, side, generator=gen),
            "i_tgt": torch.rand(n, 3, side, side, generator=gen) * 2 - 1,
            "s_ref": torch.rand(n, label, side, side, generator=gen),
            "i_ref": torch.rand(n, 3, side, side, generator=gen) * 2 - 1,
            "weight": torch.ones(n)}


def schedule_iterations(settings: dict[str, Any], train_pairs: int) -> int:
    """Iterations of the paper's schedule: (epochs + decay_epochs) x ceil(pairs / batch)."""
    t = settings["train"]
    return (t["epochs"] + t["decay_epochs"]) * epoch_steps(settings, train_pairs)


def training_rows(plan: Plan, device: torch.device, name: str) -> list[dict[str, Any]]:
    """One train_step row per batch of `plan.train_batches`, each with the GPU-hours of the
    paper's schedule on train.batch_size / batch devices."""
    settings = variant_settings(FULL, plan.preset)
    pairs = (f"|train list| = {plan.train_pairs}"
             + (" (ASSUMED_TRAIN_PAIRS: every DeepFashion In-shop image, an upper bound; "
                "CoCosNet's train.txt size is not known offline)"
                if plan.train_pairs == ASSUMED_TRAIN_PAIRS else " (given)"))
    return [train_step_row(settings, batch, plan, device, name, pairs)
            for batch in plan.train_batches]


def train_step_row(settings: dict[str, Any], batch: int, plan: Plan, device: torch.device,
                   name: str, pairs: str) -> dict[str, Any]:
    t = settings["train"]
    global_batch, iterations = t["batch_size"], schedule_iterations(settings, plan.train_pairs)
    devices = global_batch // batch
    step_settings = copy.deepcopy(settings)
    step_settings["train"]["batch_size"] = batch
    task = build_task(step_settings, device)
    inputs = synthetic_batch(step_settings)
    with precision(name), training_switches(settings["deterministic"]):
        result = timed(partial(task.train_step, 0, inputs), device, *plan.train_calls, grad=True)
    row = with_timing({"part": "training", "kind": "train_step", "model": "dynast",
                       "variant": FULL, "attention": settings["model"]["matching"],
                       "backend": "torch", "side": settings["model"]["size"], "batch": batch,
                       "precision": precision_label(name, device),
                       "deterministic": settings["deterministic"], "iterations": iterations,
                       "note": "DynaSTTask.train_step (G step, D step) on a synthetic batch in "
                               f"host memory (its copy to the device included); {pairs}"},
                      result)
    if row["status"] == "ok":
        s_step = row["mean_ms"] / 1e3
        row.update(gpu_hours_per_model=round(s_step * iterations * devices / 3600, 2),
                   derived_from=(
                       f"mean of {row['repeats']} steps ({s_step:.4g} s at batch {batch} on one "
                       f"{device.type}) x {iterations} iterations (({t['epochs']} + "
                       f"{t['decay_epochs']}) epochs x ceil({plan.train_pairs} / {global_batch}))"
                       f" x {devices} device(s) (global batch {global_batch} / {batch}) / 3600"
                       + (f", assuming this step time on each of {devices} devices under DDP"
                          if devices > 1 else "") + f"; {pairs}"))
    del task, inputs
    release(device)
    return row


# --- the run ----------------------------------------------------------------------------------

PART_ROWS = {"variants": variant_rows, "attention": attention_rows, "scaling": scaling_rows,
             "training": training_rows}


def comparability(row: dict[str, Any], device_name: str) -> dict[str, Any]:
    hardware = paper_claims(PAPER).tables[CLAIM_TABLE].columns[CLAIM_COLUMN].hardware_bound
    peer = row.get("model", "").startswith("cocosnet")
    if row.get("metric", "").startswith("time_ratio"):
        note = (f"ratio of our networks on {device_name}; the paper's is of its networks "
                "(the authors' CoCosNet and CoCosNet-v2, not same-backbone peers) on one RTX 3090")
    elif row.get("paper_value", "") != "":
        note = f"measured on {device_name}; {hardware}" + (
            "; our same-backbone peer, not the authors' network" if peer else "")
    else:
        note = "no paper counterpart"
    return {"comparable": False, "non_comparable_reasons": note}


def benchmark(plan: Plan, device: torch.device, out: Path) -> Path:
    """Every part of `plan` at every precision, written to `out` (a run that breaks off still
    writes the rows measured before it)."""
    check_plan(plan)
    env = environment(device)  # a GPU run without a full commit stops here, before any work
    gpus = 1 if device.type == "cuda" else 0

    def finish(row: dict[str, Any]) -> dict[str, Any]:
        return {"paper": PAPER, "gpus": gpus, **row, **env, **comparability(row, env["device"])}

    rows: list[dict[str, Any]] = []
    with rows_kept_on_failure(PAPER, out, rows, finish):
        for part in plan.parts:
            for name in plan.precisions:
                rows += PART_ROWS[part](plan, device, name)
            if part == "variants":
                rows += ratio_rows(rows)
    return write_csv(out, [finish(r) for r in rows])


def run(out: Path | None = None, sizes: Sequence[int] | None = None, device_name: str = "cuda",
        **changes: Any) -> Path:
    """Benchmark on `device_name` and write the CSV (default results/bench/dynast.csv).
    `sizes`: the scaling part's image sides; `changes`: fields of `Plan` (parts, precisions,
    variant_calls, attention_sides, ..., train_pairs)."""
    device = resolve_device(device_name)
    out = out or Path(Layout(load_params()).bench(PAPER))
    return benchmark(replace(plan_for(device, sizes), **changes), device, out)


def main(argv: Sequence[str] | None = None) -> None:
    """`python -m sparsegen.bench.dynast`: `run` with any field of `Plan` set from the options."""
    p = argparse.ArgumentParser(prog="python -m sparsegen.bench.dynast",
                                description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, default=None,
                   help="CSV to write (default results/bench/dynast.csv)")
    p.add_argument("--device", default="cuda", help="cuda (default) or cpu (a dry run)")
    p.add_argument("--sizes", type=int, nargs="+", default=None,
                   help=f"image sides of the scaling part (default {' '.join(map(str, SIZES))})")
    p.add_argument("--parts", nargs="+", choices=PARTS, default=None, help="default: all")
    p.add_argument("--precisions", nargs="+", choices=list(PRECISIONS), default=None,
                   help=f"default: {' '.join(GPU_PRECISIONS)} (fp32 on the CPU)")
    p.add_argument("--variant-calls", type=int, nargs=2, metavar=("WARMUP", "TIMED"),
                   help="forwards per variant (default eval.timing_warmup, eval.timing_repeats)")
    for flag, part in (("attention", "attention"), ("scaling", "scaling"), ("train", "training")):
        p.add_argument(f"--{flag}-calls", type=int, nargs=2, metavar=("WARMUP", "TIMED"),
                       help=f"calls per {part} row (default on a GPU: "
                            f"{' '.join(map(str, CALLS['cuda'][part]))})")
    p.add_argument("--attention-sides", type=int, nargs="+", default=None,
                   help=f"default {' '.join(map(str, ATTENTION_SIDES))}")
    p.add_argument("--train-batches", type=int, nargs="+", default=None,
                   help="per-device batches of the training step (default: train.batch_size "
                        "on 1, 2, 4, 8 devices)")
    p.add_argument("--train-pairs", type=int, default=None,
                   help=f"|train list| of the GPU-hours (default ASSUMED_TRAIN_PAIRS = "
                        f"{ASSUMED_TRAIN_PAIRS}, an upper bound)")
    args = vars(p.parse_args(argv))
    print(run(args["out"], args["sizes"], args["device"], **plan_changes(args, Plan)))


if __name__ == "__main__":
    main()
