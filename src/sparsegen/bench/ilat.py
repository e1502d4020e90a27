"""iLAT inference time (Table 2): Taming (causal mask, all target tokens generated) against iLAT
(LA mask, the masked tokens only) at each dataset's paper configuration, one CSV
(results/bench/ilat.csv), parts told apart by the `part` column.

Per dataset (Table 2's rows PA, SDF, FFHQ: the params.yaml variants taming_<d> and ilat_<d>,
their tokenizers and, for faces, the sketch condition tokenizer) one pipeline per method is
built with random weights (speed does not depend on them) and seeded inputs: a condition image
(pose tasks: the reference frame; faces: a 1-channel sketch), a target image, random visible
joints, batch 1. One edit is what the sampling job does (`sampling.Editor`): encode the
condition (plain) and the target under the hole, sample the masked tokens top-1 in raster order
(`generate.sample`; Taming: all of them), decode (`sampling.decode`: Eq. 4 for iLAT's
tokenizer); an empty hole is a reconstruction with no sampling. Each edit is timed per stage,
the device synchronised between stages: `total` rows time encode + sample + decode, `ar` rows
the sampling alone (both rows come from the same calls). Uncached edits rerun the whole sequence
per sampled token (as both official samplers), cached edits use the KV cache.

Holes are seeded blobs on the token grid: one random cell, then random 4-neighbours of the
cells taken so far (`blob_order`); a hole of k tokens is the first k cells, so every hole of a
dataset lies inside the larger ones, and it covers exactly k tokens (whole token cells).
- `paper_mask`: both methods, uncached and cached, at the paper's masked rate (Table 2,
  pipeline/claims/ilat.yaml: 31.97/28.09/6.64% -> 82/72/17 of 256 tokens, `paper_masked`).
  The uncached total rows carry the paper's seconds per image.
- `sweep`: iLAT, uncached and cached, at masked fractions 0, 0.1, ..., 1 (Taming's edit does
  not depend on the hole: its rows are the paper_mask part's).
Summary rows, per dataset and precision: iLAT / Taming seconds per image at the paper's hole,
uncached (target: the paper's ratio rounded to two decimals, 0.40/0.47/0.14, met when ours,
rounded alike, is at most that) and cached (target: <= 1.25 x masked fraction + 0.05); the R² of
the least-squares line of sweep AR seconds on masked tokens, cached (target >= 0.99) and
uncached (no target). Besides bench.common's columns the rows fill `cache` (uncached | cached),
`masked_tokens`, `tokens` (of the target grid) and `steps` (transformer forward passes).

Precisions: strict fp32 and TF32 (bench.common.PRECISIONS `fp32`, `tf32`); warm-up then timed
calls per measurement (`CALLS`). Before its measurements each pipeline is calibrated (one edit
with 1 and one with 9 masked tokens per cache) and the seconds its measurements will take are
printed; `--estimate-only` calibrates every pipeline of the plan and prints the plan's
estimated seconds without measuring, `--budget-s` skips (status `skipped`) the measurements
that the estimate puts past that many seconds, and the CSV is rewritten after every pipeline,
so a run cut short keeps what it measured. `--datasets`, `--methods`, `--parts`, `--caches`,
`--precisions`, `--calls`, `--sweep` restrict the plan (`python -m sparsegen.bench.ilat -h`).
On the CPU the same code is a dry run on the smoke preset's models (fp32, one timed call).
"""

from __future__ import annotations

import argparse
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from sparsegen.attention.local_autoregressive import token_mask
from sparsegen.bench.common import (
    PRECISIONS,
    environment,
    failed_timing,
    paper_claim,
    paper_claims,
    peak_gib,
    precision,
    precision_label,
    release,
    reset_peak,
    rows_kept_on_failure,
    summarise_ms,
    wall_timer,
    write_csv,
)
from sparsegen.config import load_params, resolve
from sparsegen.layout import Layout
from sparsegen.models.ilat.generate import sample as generate_tokens
from sparsegen.models.ilat.sampling import decode
from sparsegen.models.ilat.tokenizer import Tokenizer, build_tokenizer
from sparsegen.models.ilat.transformer import GPT
from sparsegen.timing import synchronize
from sparsegen.train.seeding import resolve_device

PAPER = "ilat"
CLAIM_TABLE = "2"
DATASETS = ("pa", "sdf", "ffhq")        # Table 2's rows (claims row ids)
METHODS = ("taming", "ilat")            # Table 2's columns; variants <method>_<dataset>
PARTS = ("paper_mask", "sweep")
CACHES = ("uncached", "cached")
GPU_PRECISIONS = ("fp32", "tf32")
SWEEP = tuple(i / 10 for i in range(11))   # masked fractions of the sweep
CALLS = {"cuda": (1, 3), "cpu": (0, 1)}    # (warm-up, timed) edits per measurement
CALIBRATION_TOKENS = 8                  # extra masked tokens of the second calibration edit
R2_TARGET = 0.99
CACHED_SLOPE, CACHED_OFFSET = 1.25, 0.05   # cached ratio <= slope x masked fraction + offset


# --- settings ---------------------------------------------------------------------------------

@dataclass(frozen=True)
class Setup:
    """One transformer variant's edit pipeline: its settings blocks (tokenizer blocks with the
    image `size`), `condition` None when the target tokenizer encodes the condition (pose)."""

    dataset: str
    method: str
    variant: str
    transformer: Mapping[str, Any]      # s["transformer"]: mask (la | causal), la_form, ...
    tokenizer: Mapping[str, Any]
    condition: Mapping[str, Any] | None
    joints: int


@dataclass(frozen=True)
class Plan:
    """What one run measures."""

    preset: str                         # params preset of the pipelines' settings
    datasets: tuple[str, ...]
    methods: tuple[str, ...]
    parts: tuple[str, ...]
    caches: tuple[str, ...]
    precisions: tuple[str, ...]
    calls: tuple[int, int]              # (warm-up, timed) edits per measurement
    sweep: tuple[float, ...]            # masked fractions of the sweep part
    seed: int = 0                       # holes, inputs and weights
    budget_s: float | None = None       # skip measurements estimated past this many seconds


def plan_for(device: torch.device) -> Plan:
    """Everything on a GPU; the smoke preset's tiny models, fp32, one call on the CPU."""
    cuda = device.type == "cuda"
    return Plan(preset="paper" if cuda else "smoke", datasets=DATASETS, methods=METHODS,
                parts=PARTS, caches=CACHES, precisions=GPU_PRECISIONS if cuda else ("fp32",),
                calls=CALLS["cuda" if cuda else "cpu"], sweep=SWEEP)


def check_plan(plan: Plan) -> None:
    """Refuse unknown names and impossible counts before any work."""
    for key, value, allowed in (("datasets", plan.datasets, DATASETS),
                                ("methods", plan.methods, METHODS),
                                ("parts", plan.parts, PARTS), ("caches", plan.caches, CACHES),
                                ("precisions", plan.precisions, tuple(PRECISIONS))):
        unknown = [v for v in value if v not in allowed]
        if unknown or not value:
            raise ValueError(f"bench ilat {key}: {list(value)} must be a non-empty selection "
                             f"of {allowed}")
    bad = [f for f in plan.sweep if not 0 <= f <= 1]
    if bad:
        raise ValueError(f"bench ilat sweep: fractions {bad} are not in [0, 1]")
    if plan.calls[0] < 0 or plan.calls[1] < 1:
        raise ValueError(f"bench ilat calls: {plan.calls} needs warm-up >= 0 and timed >= 1")


def _tokenizer_cfg(params: Mapping[str, Any], variant: str, size: int | None
                   ) -> dict[str, Any]:
    s = resolve(params, PAPER, variant, check=False)
    return dict(s["model"]["tokenizer"], size=size or s["model"]["size"])


def setups_from_params(plan: Plan, size: int | None = None) -> list[Setup]:
    """The Setup of every (dataset, method) of the plan from params.yaml (preset plan.preset,
    random weights); `size`: every tokenizer's image side instead of model.size."""
    params = load_params(overrides={"preset": plan.preset, "weights": "random"})
    out = []
    for dataset in plan.datasets:
        for method in plan.methods:
            variant = f"{method}_{dataset}"
            s = resolve(params, PAPER, variant, check=False)
            uses = s["uses"]
            condition = uses.get("condition_tokenizer")
            out.append(Setup(
                dataset=dataset, method=method, variant=variant,
                transformer=s["model"]["transformer"],
                tokenizer=_tokenizer_cfg(params, uses["tokenizer"]["variant"], size),
                condition=(_tokenizer_cfg(params, condition["variant"], size)
                           if condition else None),
                joints=int(s["model"]["joints"])))
    return out


# --- holes ------------------------------------------------------------------------------------

def blob_order(grid: int, seed: int) -> list[int]:
    """Every cell (raster index) of a grid x grid token map in the order a seeded blob grows:
    a random first cell, then each time a random cell 4-adjacent to those taken."""
    rng = np.random.default_rng(seed)
    first = int(rng.integers(grid * grid))
    order, taken, frontier = [first], {first}, []

    def reach(cell: int) -> None:
        r, c = divmod(cell, grid)
        for rr, cc in ((r - 1, c), (r + 1, c), (r, c - 1), (r, c + 1)):
            nxt = rr * grid + cc
            if 0 <= rr < grid and 0 <= cc < grid and nxt not in taken and nxt not in frontier:
                frontier.append(nxt)

    reach(first)
    while frontier:
        cell = frontier.pop(int(rng.integers(len(frontier))))
        order.append(cell)
        taken.add(cell)
        reach(cell)
    return order


def blob_tokens(order: Sequence[int], count: int) -> torch.Tensor:
    """Bool (1, N) token mask of the first `count` cells of a blob order."""
    if not 0 <= count <= len(order):
        raise ValueError(f"a hole of {count} tokens does not fit {len(order)} tokens")
    masked = torch.zeros(1, len(order), dtype=torch.bool)
    masked[0, list(order[:count])] = True
    return masked


def pixel_hole(masked: torch.Tensor, side: int) -> torch.Tensor:
    """Pixel mask (1, 1, side, side) float, 1 = hole, covering exactly the masked token cells
    of `masked` Bool (1, grid²)."""
    grid = math.isqrt(masked.shape[1])
    cells = masked.view(1, 1, grid, grid).float()
    return torch.nn.functional.interpolate(cells, scale_factor=side // grid, mode="nearest")


def paper_masked(dataset: str, tokens: int) -> int:
    """Masked tokens of the paper's hole: Table 2's masked rate of `dataset` x `tokens`
    (82/72/17 of 256)."""
    rate = paper_claims(PAPER).tables[CLAIM_TABLE].cells[dataset]["masked_rate"]
    return round(rate * tokens)


def hole_counts(plan: Plan, part: str, dataset: str, tokens: int) -> list[int]:
    """Masked tokens of each hole of `part`, ascending, without repeats."""
    if part == "paper_mask":
        return [paper_masked(dataset, tokens)]
    return sorted({round(f * tokens) for f in plan.sweep})


# --- one edit ---------------------------------------------------------------------------------

@dataclass(frozen=True)
class EditTimes:
    """Seconds of one edit's stages and its transformer forward passes."""

    encode: float
    ar: float
    decode: float
    steps: int

    @property
    def total(self) -> float:
        return self.encode + self.ar + self.decode


class Pipeline:
    """A Setup on a device: random-weight tokenizers and transformer (eval mode), seeded
    inputs. `edit(hole, cache)` runs and times one edit as the sampling job does."""

    def __init__(self, setup: Setup, device: torch.device, seed: int = 0) -> None:
        torch.manual_seed(seed)
        self.setup, self.device = setup, device
        self.tokenizer = self._tokenizer(setup.tokenizer)
        self.condition = (self._tokenizer(setup.condition) if setup.condition is not None
                          else self.tokenizer)
        cond_cfg = setup.condition or setup.tokenizer
        self.gpt = GPT(setup.transformer, cond_vocab=cond_cfg["n_codes"],
                       target_vocab=setup.tokenizer["n_codes"],
                       n_cond=self.condition.grid ** 2, n_target=self.tokens,
                       n_joints=setup.joints).to(device).eval()
        gen = torch.Generator().manual_seed(seed)

        def image(cfg: Mapping[str, Any]) -> torch.Tensor:
            side = cfg["size"]
            x = torch.rand(1, cfg["channels"], side, side, generator=gen) * 2 - 1
            return x.to(device)

        self.target, self.cond_image = image(setup.tokenizer), image(cond_cfg)
        self.pose = None
        if setup.joints:  # visible joints (x, y in [0, 1], 1)
            xy = torch.rand(1, setup.joints, 2, generator=gen)
            self.pose = torch.cat([xy, torch.ones(1, setup.joints, 1)], 2).to(device)

    def _tokenizer(self, cfg: Mapping[str, Any]) -> Tokenizer:
        return build_tokenizer(cfg).to(self.device).eval().requires_grad_(False)

    @property
    def tokens(self) -> int:
        return self.tokenizer.grid ** 2

    @property
    def side(self) -> int:
        return int(self.setup.tokenizer["size"])

    @property
    def params_m(self) -> float:
        nets = {id(m): m for m in (self.tokenizer, self.condition, self.gpt)}.values()
        return round(sum(p.numel() for m in nets for p in m.parameters()) / 1e6, 3)

    @torch.inference_mode()
    def edit(self, hole: torch.Tensor, cache: bool, mask: str | None = None) -> EditTimes:
        """Encode, sample (mask: the variant's own unless given), decode under `hole`
        (1, 1, side, side) float; the device synchronised between the stages."""
        mask = mask or self.setup.transformer["mask"]
        synchronize(self.device)
        t0 = time.perf_counter()
        cond_ids = self.condition.encode(self.cond_image).ids.flatten(1)
        enc = self.tokenizer.encode(self.target, hole)
        masked = token_mask(hole, self.tokenizer.grid)
        if mask == "causal":
            masked = torch.ones_like(masked)  # Taming: every token from condition + pose
        synchronize(self.device)
        t1 = time.perf_counter()
        ids, steps = enc.ids.flatten(1), 0
        if bool(masked.any()):  # an empty hole is a reconstruction
            out = generate_tokens(self.gpt, cond_ids, self.pose, ids, masked, mask,
                                  cache=cache, form=self.setup.transformer["la_form"])
            ids, steps = out.ids, out.steps
        synchronize(self.device)
        t2 = time.perf_counter()
        decode(self.tokenizer, ids, enc)
        synchronize(self.device)
        t3 = time.perf_counter()
        return EditTimes(encode=t1 - t0, ar=t2 - t1, decode=t3 - t2, steps=steps)


def measure_edits(pipe: Pipeline, hole: torch.Tensor, cache: bool, calls: tuple[int, int]
                  ) -> dict[str, Any]:
    """`calls` = (warm-up, timed) edits: per-stage times of the timed ones, the first edit's
    seconds (`compile_s`), the steps, the process's peak memory; out of memory is a result."""
    device = pipe.device
    warmup, repeats = calls
    reset_peak(device)
    t0 = time.perf_counter()
    try:
        runs = [pipe.edit(hole, cache) for _ in range(warmup + repeats)]
    except torch.OutOfMemoryError:
        release(device)
        return {**failed_timing("out of memory"), "warmup": warmup, "repeats": repeats,
                "wall_s": round(time.perf_counter() - t0, 3)}
    timed = runs[warmup:]
    return {"status": "ok", "warmup": warmup, "repeats": repeats, "runs": timed,
            "steps": timed[-1].steps, "compile_s": round(runs[0].total, 3) if warmup else "",
            "peak_mem_gib": peak_gib(device), "wall_s": round(time.perf_counter() - t0, 3)}


# --- estimate ---------------------------------------------------------------------------------

@dataclass(frozen=True)
class Calibration:
    """One pipeline's seconds: building it, encode + decode of an edit, and per cache the AR
    seconds of a first masked token (prefill or one whole-sequence forward) and of each further
    one (from edits with 1 and 1 + CALIBRATION_TOKENS masked tokens)."""

    build_s: float
    codec_s: float
    first_s: Mapping[str, float]
    step_s: Mapping[str, float]

    def edit_s(self, steps: int, cache: str) -> float:
        """Estimated seconds of one edit taking `steps` forward passes."""
        ar = self.first_s[cache] + (steps - 1) * self.step_s[cache] if steps else 0.0
        return self.codec_s + ar


def calibrate(pipe: Pipeline, order: Sequence[int], build_s: float) -> Calibration:
    """Time edits with the LA mask (any method: the GPT is the same) at 1 and 1 + n tokens
    of the blob (after one warm-up edit)."""
    n = min(CALIBRATION_TOKENS, pipe.tokens - 1)
    small = pixel_hole(blob_tokens(order, 1), pipe.side).to(pipe.device)
    large = pixel_hole(blob_tokens(order, 1 + n), pipe.side).to(pipe.device)
    pipe.edit(small, False, "la")
    first, step, codec = {}, {}, []
    for cache in CACHES:
        one = pipe.edit(small, cache == "cached", "la")
        more = pipe.edit(large, cache == "cached", "la")
        first[cache], step[cache] = one.ar, max(more.ar - one.ar, 0.0) / max(n, 1)
        codec += [one.encode + one.decode, more.encode + more.decode]
    return Calibration(build_s=build_s, codec_s=min(codec), first_s=first, step_s=step)


@dataclass(frozen=True)
class Measurement:
    """One measurement of a pipeline (at each precision of the plan)."""

    part: str
    masked_tokens: int
    cache: str
    steps: int          # forward passes it will take


def measurements(plan: Plan, setup: Setup, tokens: int) -> list[Measurement]:
    """The measurements of one pipeline: Taming at the paper's hole only; iLAT at the paper's
    hole and over the sweep."""
    out = []
    for part in plan.parts:
        if part == "sweep" and setup.transformer["mask"] == "causal":
            continue  # Taming's edit does not depend on the hole
        for k in hole_counts(plan, part, setup.dataset, tokens):
            for cache in plan.caches:
                steps = tokens if setup.transformer["mask"] == "causal" else k
                out.append(Measurement(part, k, cache, steps))
    return out


def pipeline_estimate_s(plan: Plan, calib: Calibration, todo: Sequence[Measurement]) -> float:
    """Seconds the pipeline's measurements take at every precision (TF32 counted as fp32)."""
    calls = sum(plan.calls)
    return len(plan.precisions) * sum(calls * calib.edit_s(m.steps, m.cache) for m in todo)


# --- rows -------------------------------------------------------------------------------------

def measurement_rows(pipe: Pipeline, m: Measurement, label: str, result: dict[str, Any]
                     ) -> list[dict[str, Any]]:
    """The `total` and `ar` rows of one measurement (same calls, same memory)."""
    s = pipe.setup
    base = {"part": m.part, "kind": "inference", "model": s.method, "variant": s.variant,
            "attention": s.transformer["mask"], "backend": "sdpa", "side": pipe.side,
            "batch": 1, "heads": s.transformer["heads"], "precision": label,
            "cache": m.cache, "masked_tokens": m.masked_tokens, "tokens": pipe.tokens,
            "timer": wall_timer(pipe.device), "peak_mem_scope": "process",
            "params_m": pipe.params_m,
            **{k: v for k, v in result.items() if k != "runs"}}
    if result["status"] != "ok":
        return [{**base, "metric": metric} for metric in ("total", "ar")]
    runs = result["runs"]
    paper = (paper_claim(PAPER, CLAIM_TABLE, s.dataset, s.method)
             if m.part == "paper_mask" and m.cache == "uncached" else {})
    return [{**base, "metric": "total", **summarise_ms([r.total for r in runs]), **paper,
             "note": "encode + sample + decode, seconds per image"},
            {**base, "metric": "ar", **summarise_ms([r.ar for r in runs]),
             "note": "sampling alone (the transformer's forward passes)"}]


def linear_fit(x: Sequence[float], y: Sequence[float]) -> tuple[float, float, float]:
    """Least-squares line y = a + b x: (b, a, R²); NaN R² without spread in x or y."""
    n = len(x)
    if n < 2 or len(set(x)) < 2:
        return math.nan, math.nan, math.nan
    mx, my = sum(x) / n, sum(y) / n
    sxx = sum((v - mx) ** 2 for v in x)
    b = sum((u - mx) * (v - my) for u, v in zip(x, y, strict=True)) / sxx
    a = my - b * mx
    ss_res = sum((v - a - b * u) ** 2 for u, v in zip(x, y, strict=True))
    ss_tot = sum((v - my) ** 2 for v in y)
    return b, a, (1 - ss_res / ss_tot) if ss_tot > 0 else math.nan


def cached_target(fraction: float) -> float:
    """Largest cached iLAT / Taming seconds per image accepted at a masked fraction."""
    return CACHED_SLOPE * fraction + CACHED_OFFSET


def paper_ratio(dataset: str) -> dict[str, Any]:
    """The paper's iLAT / Taming seconds per image (Table 2)."""
    ilat = paper_claim(PAPER, CLAIM_TABLE, dataset, "ilat")
    taming = paper_claim(PAPER, CLAIM_TABLE, dataset, "taming")
    return {"paper_value": round(ilat["paper_value"] / taming["paper_value"], 4),
            "paper_unit": "ratio",
            "paper_source": f"{ilat['paper_source']} / {taming['paper_source']}"}


def _ok(row: dict[str, Any] | None) -> bool:
    return row is not None and row.get("status") == "ok"


def ratio_rows(rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """iLAT / Taming seconds per image at the paper's hole, per dataset, precision and cache,
    against its target (module docstring)."""
    by_key = {(r["variant"].split("_")[-1], r["model"], r["precision"], r["cache"]): r
              for r in rows if r["part"] == "paper_mask" and r.get("metric") == "total"}
    out = []
    for dataset, label, cache in dict.fromkeys((d, p, c) for d, _, p, c in by_key):
        ilat, taming = (by_key.get((dataset, m, label, cache)) for m in ("ilat", "taming"))
        if ilat is None or taming is None:
            continue
        ran = _ok(ilat) and _ok(taming)
        value = round(ilat["mean_ms"] / taming["mean_ms"], 4) if ran else math.nan
        paper = paper_ratio(dataset)
        fraction = ilat["masked_tokens"] / ilat["tokens"]
        if cache == "uncached":
            limit = round(paper["paper_value"], 2)
            target, met = f"<= {limit:.2f}", ran and round(value, 2) <= limit
            why = "the paper's ratio rounded to two decimals, ours rounded alike"
        else:
            limit = round(cached_target(fraction), 4)
            target, met = f"<= {limit}", ran and round(value, 4) <= limit
            why = (f"{CACHED_SLOPE} x masked fraction {fraction:.4f} + {CACHED_OFFSET} (the KV "
                   "cache makes iLAT's sampling cost follow its masked tokens)")
        out.append({
            "part": "paper_mask", "kind": "summary", "metric": f"time_ratio[ilat/taming, {cache}]",
            "model": "ilat", "variant": f"{ilat['variant']} / {taming['variant']}",
            "precision": label, "cache": cache, "batch": 1, "side": ilat["side"],
            "masked_tokens": ilat["masked_tokens"], "tokens": ilat["tokens"],
            "value": value, "unit": "ratio", "status": "ok" if ran else "no result",
            "target": target, "target_met": ("met" if met else "not met") if ran else "",
            **paper,
            "note": (f"seconds per image {ilat['mean_ms']:.4g} ms / {taming['mean_ms']:.4g} ms; "
                     f"target: {why}") if ran else "iLAT or Taming did not run"})
    return out


def linearity_rows(rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """R² of the least-squares line of iLAT's sweep AR seconds on masked tokens, per dataset,
    precision and cache (target on the cached ones)."""
    groups: dict[tuple[str, str, str], list[dict[str, Any]]] = {}
    for r in rows:
        if r["part"] == "sweep" and r.get("metric") == "ar":
            groups.setdefault((r["variant"], r["precision"], r["cache"]), []).append(r)
    out = []
    for (variant, label, cache), group in groups.items():
        ok = [r for r in group if _ok(r)]
        slope, intercept, r2 = linear_fit([r["masked_tokens"] for r in ok],
                                          [r["mean_ms"] / 1e3 for r in ok])
        ran = not math.isnan(r2)
        row = {"part": "sweep", "kind": "summary", "metric": f"ar_linearity_r2[{cache}]",
               "model": "ilat", "variant": variant, "precision": label, "cache": cache,
               "batch": 1, "side": group[0]["side"], "tokens": group[0]["tokens"],
               "value": round(r2, 5) if ran else math.nan, "unit": "R²",
               "status": "ok" if ran else "no result",
               "note": (f"least-squares AR seconds = {intercept:.4g} + {slope:.4g} x masked "
                        f"tokens over {len(ok)} holes "
                        f"({', '.join(str(r['masked_tokens']) for r in ok)} tokens)"
                        if ran else f"fewer than two distinct holes ran ({len(ok)})")}
        if cache == "cached":
            row.update(target=f">= {R2_TARGET}",
                       target_met=("met" if r2 >= R2_TARGET else "not met") if ran else "")
        out.append(row)
    return out


def comparability(row: dict[str, Any], device_name: str) -> dict[str, Any]:
    hardware = paper_claims(PAPER).tables[CLAIM_TABLE].columns["ilat"].hardware_bound
    if row.get("paper_value", "") == "":
        note = "no paper counterpart"
    else:
        note = (f"measured on {device_name} with random weights; {hardware}; the paper's "
                "seconds come from the official samplers (whole sequence rerun per token) "
                "over its test masks, ours from one seeded blob hole of the mean masked rate")
    return {"comparable": False, "non_comparable_reasons": note}


# --- the run ----------------------------------------------------------------------------------

def _order(plan: Plan, dataset: str, grid: int) -> list[int]:
    """The blob order of a dataset's holes (both methods share it)."""
    return blob_order(grid, plan.seed + DATASETS.index(dataset))


def _build(setup: Setup, device: torch.device, plan: Plan
           ) -> tuple[Pipeline, Calibration, list[int]]:
    t0 = time.perf_counter()
    pipe = Pipeline(setup, device, plan.seed)
    build_s = time.perf_counter() - t0
    order = _order(plan, setup.dataset, pipe.tokenizer.grid)
    with precision(plan.precisions[0]):
        calib = calibrate(pipe, order, build_s)
    return pipe, calib, order


def estimate(plan: Plan, setups: Sequence[Setup], device: torch.device,
             log: Callable[[str], None] = print) -> float:
    """Build and calibrate every pipeline (freed after) and print the seconds of the plan's
    measurements; returns the plan's total (builds included)."""
    check_plan(plan)
    total = 0.0
    for setup in setups:
        pipe, calib, _ = _build(setup, device, plan)
        seconds = pipeline_estimate_s(plan, calib, measurements(plan, setup, pipe.tokens))
        total += calib.build_s + seconds
        log(f"{setup.variant}: build {calib.build_s:.1f} s, measurements ~{seconds:.0f} s")
        del pipe
        release(device)
    log(f"bench ilat estimate: ~{total:.0f} s ({total / 60:.1f} min) for {len(setups)} "
        f"pipeline(s) x {len(plan.precisions)} precision(s), calls {plan.calls}")
    return total


def benchmark(plan: Plan, setups: Sequence[Setup], device: torch.device, out: Path,
              log: Callable[[str], None] = print) -> Path:
    """Every measurement of `plan` for each Setup, written to `out` (rewritten after each
    pipeline; a run that breaks off still writes the rows measured before it)."""
    check_plan(plan)
    env = environment(device)  # a GPU run without a full commit stops here, before any work
    gpus = 1 if device.type == "cuda" else 0

    def finish(row: dict[str, Any]) -> dict[str, Any]:
        return {"paper": PAPER, "gpus": gpus, **row, **env, **comparability(row, env["device"])}

    rows: list[dict[str, Any]] = []
    start = time.perf_counter()
    with rows_kept_on_failure(PAPER, out, rows, finish):
        for setup in setups:
            pipe, calib, order = _build(setup, device, plan)
            todo = measurements(plan, setup, pipe.tokens)
            log(f"{setup.variant}: {len(todo) * len(plan.precisions)} measurements, "
                f"~{pipeline_estimate_s(plan, calib, todo):.0f} s (at "
                f"{time.perf_counter() - start:.0f} s of the run)")
            for name in plan.precisions:
                label = precision_label(name, device)
                with precision(name):
                    for m in todo:
                        rows += _measured(plan, pipe, calib, order, m, label, start)
            del pipe
            release(device)
            write_csv(out, [finish(r) for r in rows])
        rows += ratio_rows(rows) + linearity_rows(rows)
    log(f"bench ilat: {time.perf_counter() - start:.0f} s")
    return write_csv(out, [finish(r) for r in rows])


def _measured(plan: Plan, pipe: Pipeline, calib: Calibration, order: Sequence[int],
              m: Measurement, label: str, start: float) -> list[dict[str, Any]]:
    expected = sum(plan.calls) * calib.edit_s(m.steps, m.cache)
    if plan.budget_s is not None and time.perf_counter() - start + expected > plan.budget_s:
        why = f"skipped: its ~{expected:.1f} s would pass the budget of {plan.budget_s} s"
        return measurement_rows(pipe, m, label, {"status": "skipped", "note": why})
    hole = pixel_hole(blob_tokens(order, m.masked_tokens), pipe.side).to(pipe.device)
    return measurement_rows(pipe, m, label,
                            measure_edits(pipe, hole, m.cache == "cached", plan.calls))


def run(out: Path | None = None, sizes: Sequence[int] | None = None, device_name: str = "cuda",
        estimate_only: bool = False, **changes: Any) -> Path | None:
    """Benchmark on `device_name` and write the CSV (default results/bench/ilat.csv);
    `sizes`: one image side for every tokenizer instead of model.size; `changes`: fields of
    `Plan`. `estimate_only`: print the estimate, measure nothing, return None."""
    if sizes is not None and len(sizes) != 1:
        raise ValueError(f"bench ilat sizes: {list(sizes)}; give one image side (the token "
                         "grid and the paper's holes scale with it)")
    device = resolve_device(device_name)
    plan = replace(plan_for(device), **changes)
    check_plan(plan)
    setups = setups_from_params(plan, sizes[0] if sizes else None)
    if estimate_only:
        estimate(plan, setups, device)
        return None
    out = out or Path(Layout(load_params()).bench(PAPER))
    return benchmark(plan, setups, device, out)


def parse(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """The options of `python -m sparsegen.bench.ilat` as keyword arguments of `run`."""
    p = argparse.ArgumentParser(prog="python -m sparsegen.bench.ilat",
                                description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, default=None,
                   help="CSV to write (default results/bench/ilat.csv)")
    p.add_argument("--device", dest="device_name", default="cuda",
                   help="cuda (default) or cpu (a dry run on the smoke preset)")
    p.add_argument("--size", type=int, default=None,
                   help="image side of every tokenizer (default model.size, 256)")
    p.add_argument("--datasets", nargs="+", choices=DATASETS, default=None)
    p.add_argument("--methods", nargs="+", choices=METHODS, default=None)
    p.add_argument("--parts", nargs="+", choices=PARTS, default=None)
    p.add_argument("--caches", nargs="+", choices=CACHES, default=None)
    p.add_argument("--precisions", nargs="+", choices=list(PRECISIONS), default=None,
                   help=f"default: {' '.join(GPU_PRECISIONS)} (fp32 on the CPU)")
    p.add_argument("--calls", type=int, nargs=2, metavar=("WARMUP", "TIMED"), default=None,
                   help=f"edits per measurement (default on a GPU: {CALLS['cuda']})")
    p.add_argument("--sweep", type=float, nargs="+", default=None,
                   help="masked fractions of the sweep (default 0, 0.1, ..., 1)")
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--budget-s", type=float, default=None,
                   help="skip measurements the estimate puts past this many seconds")
    p.add_argument("--estimate-only", action="store_true",
                   help="calibrate every pipeline, print the plan's estimated seconds, exit")
    args = vars(p.parse_args(argv))
    size = args.pop("size")
    kwargs = {"out": args.pop("out"), "sizes": [size] if size else None,
              "device_name": args.pop("device_name"),
              "estimate_only": args.pop("estimate_only")}
    names = {f.name for f in fields(Plan)}
    return {**kwargs, **{k: tuple(v) if isinstance(v, list) else v
                         for k, v in args.items() if k in names and v is not None}}


def main(argv: Sequence[str] | None = None) -> None:
    """`python -m sparsegen.bench.ilat`: `run` with the options."""
    out = run(**parse(argv))
    if out is not None:
        print(out)


if __name__ == "__main__":
    main()
