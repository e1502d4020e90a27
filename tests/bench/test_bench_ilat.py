"""iLAT benchmark on tiny CPU pipelines (2 layers, width 32, 4x4 token grid, 8-channel
tokenizers): seeded blob holes of exact size, the paper's hole sizes from the claims file, the
least-squares R², the targets and the estimate against hand values, and a dry run read back from
its CSV (schema, steps per method, the sweep). Speed is never asserted."""

from __future__ import annotations

import math
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from sparsegen.attention.local_autoregressive import token_mask
from sparsegen.bench import ilat as bench
from sparsegen.bench.common import COLUMNS
from sparsegen.config import load_params, resolve
from tests.bench.conftest import read_csv

CPU = torch.device("cpu")
POSE = {"architecture": "pose", "channels": 3, "widths": [8, 8, 8], "mid_width": 8,
        "mid_blocks": 1, "blocks": 1, "decoder_blocks": 1, "attn_resolutions": [4],
        "z_channels": 8, "n_codes": 32, "beta": 0.25, "two_stream": True,
        "norm_stats": "outside", "compose": "eq4", "size": 16}
FACE = {**POSE, "architecture": "face", "widths": [8, 8], "attn_resolutions": []}
SKETCH = {**FACE, "architecture": "sketch", "channels": 1, "stem_width": 8, "n_codes": 24,
          "two_stream": False, "compose": "none"}
GPT = {"layers": 2, "heads": 2, "width": 32, "dropout": 0.1, "pose_hidden": [8, 16],
       "la_form": "paper"}
JOINTS = {"pa": 13, "sdf": 18, "ffhq": 0}
TOKENS = 16                                  # 4 x 4
PAPER_HOLES = {"pa": 82, "sdf": 72, "ffhq": 17}  # of 256 tokens (Table 2: 31.97/28.09/6.64%)
PAPER_RATIOS = {"pa": 3.426 / 8.551, "sdf": 3.898 / 8.372, "ffhq": 1.180 / 8.183}


def _setup(dataset: str, method: str) -> bench.Setup:
    tok = FACE if dataset == "ffhq" else POSE
    if method == "taming":
        tok = {**tok, "two_stream": False, "compose": "none"}
    return bench.Setup(dataset=dataset, method=method, variant=f"{method}_{dataset}",
                       transformer={**GPT, "mask": "causal" if method == "taming" else "la"},
                       tokenizer=tok, condition=SKETCH if dataset == "ffhq" else None,
                       joints=JOINTS[dataset])


SETUPS = [_setup(d, m) for d in bench.DATASETS for m in bench.METHODS]
PLAN = replace(bench.plan_for(CPU), calls=(0, 1))


@pytest.fixture(scope="module")
def one_thread():
    saved = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny ops: threads only contend for the 2 cores
    yield
    torch.set_num_threads(saved)


@pytest.fixture(scope="module")
def dry_run(tmp_path_factory, one_thread) -> tuple[list[str], list[dict[str, str]], list[str]]:
    messages: list[str] = []
    out = bench.benchmark(PLAN, SETUPS, CPU, tmp_path_factory.mktemp("bench") / "ilat.csv",
                          log=messages.append)
    return (*read_csv(out), messages)


# --- holes --------------------------------------------------------------------------------------

def _connected(masked: np.ndarray, grid: int) -> bool:
    """4-connectivity by flood fill from one masked cell."""
    cells = {int(i) for i in np.flatnonzero(masked)}
    if not cells:
        return True
    seen, todo = set(), [next(iter(cells))]
    while todo:
        cell = todo.pop()
        if cell in seen:
            continue
        seen.add(cell)
        r, c = divmod(cell, grid)
        todo += [n for n in (cell - grid if r else -1, cell + grid if r < grid - 1 else -1,
                             cell - 1 if c else -1, cell + 1 if c < grid - 1 else -1)
                 if n in cells]
    return seen == cells


@pytest.mark.parametrize(("grid", "counts"), [(4, range(17)), (16, (0, 1, 17, 72, 82, 128, 256))])
def test_blob_holes_have_exact_counts_are_connected_and_nested(grid: int, counts) -> None:
    order = bench.blob_order(grid, seed=3)
    assert sorted(order) == list(range(grid * grid))
    side = grid * 4
    previous = torch.zeros(1, grid * grid, dtype=torch.bool)
    for k in counts:
        masked = bench.blob_tokens(order, k)
        assert int(masked.sum()) == k and _connected(masked[0].numpy(), grid)
        assert not (previous & ~masked).any()  # every smaller hole lies inside
        hole = bench.pixel_hole(masked, side)
        assert hole.shape == (1, 1, side, side) and int(hole.sum()) == k * 16
        assert torch.equal(token_mask(hole, grid), masked)  # whole token cells, nothing else
        previous = masked


def test_blob_order_is_seeded() -> None:
    assert bench.blob_order(16, 0) == bench.blob_order(16, 0)
    assert bench.blob_order(16, 0) != bench.blob_order(16, 1)


@pytest.mark.parametrize("count", [-1, 17])
def test_holes_must_fit_the_grid(count: int) -> None:
    with pytest.raises(ValueError, match=f"{count} tokens does not fit 16"):
        bench.blob_tokens(bench.blob_order(4, 0), count)


def test_paper_holes_and_sweep_counts() -> None:
    assert {d: bench.paper_masked(d, 256) for d in bench.DATASETS} == PAPER_HOLES
    assert {d: bench.paper_masked(d, TOKENS) for d in bench.DATASETS} == {
        "pa": 5, "sdf": 4, "ffhq": 1}  # 0.3197 x 16 = 5.1, 0.2809 x 16 = 4.5, 0.0664 x 16 = 1.1
    sweep = bench.hole_counts(bench.plan_for(CPU), "sweep", "pa", 256)
    assert sweep == [0, 26, 51, 77, 102, 128, 154, 179, 205, 230, 256]


# --- arithmetic ---------------------------------------------------------------------------------

def test_linear_fit_against_hand_values() -> None:
    # y = (0, 1, 3) on x = (0, 1, 2): slope 3 / 2, intercept 4/3 - 3/2 = -1/6,
    # residuals (1/6, -1/3, 1/6): SS_res 1/6, SS_tot 14/3 -> R² = 1 - 1/28
    slope, intercept, r2 = bench.linear_fit([0, 1, 2], [0, 1, 3])
    assert slope == pytest.approx(1.5) and intercept == pytest.approx(-1 / 6)
    assert r2 == pytest.approx(27 / 28)
    assert bench.linear_fit([0, 10, 20, 30], [2, 5, 8, 11])[2] == pytest.approx(1.0)
    assert math.isnan(bench.linear_fit([5, 5, 5], [1, 2, 3])[2])
    rng = np.random.default_rng(0)
    x, y = rng.random(9), rng.random(9)
    b, a, r2 = bench.linear_fit(list(x), list(y))
    assert (b, a) == pytest.approx(tuple(np.polyfit(x, y, 1)))
    assert r2 == pytest.approx(np.corrcoef(x, y)[0, 1] ** 2)


def _total(dataset: str, method: str, cache: str, ms: float, masked: int = 82) -> dict:
    return {"part": "paper_mask", "kind": "inference", "metric": "total", "model": method,
            "variant": f"{method}_{dataset}", "precision": "tf32", "cache": cache,
            "masked_tokens": masked, "tokens": 256, "side": 256, "status": "ok", "mean_ms": ms}


@pytest.mark.parametrize(("dataset", "ilat_ms", "target", "met"), [
    ("pa", 40.0, "<= 0.40", "met"), ("pa", 41.0, "<= 0.40", "not met"),
    ("sdf", 47.0, "<= 0.47", "met"), ("ffhq", 15.0, "<= 0.14", "not met")])
def test_uncached_target_is_the_papers_ratio(dataset: str, ilat_ms: float, target: str,
                                             met: str) -> None:
    [row] = bench.ratio_rows([_total(dataset, "ilat", "uncached", ilat_ms),
                              _total(dataset, "taming", "uncached", 100.0)])
    assert row["value"] == pytest.approx(ilat_ms / 100)
    assert (row["target"], row["target_met"]) == (target, met)
    assert row["paper_value"] == pytest.approx(PAPER_RATIOS[dataset], abs=5e-5)
    assert row["variant"] == f"ilat_{dataset} / taming_{dataset}"


@pytest.mark.parametrize(("ilat_ms", "met"), [(45.0, "met"), (45.1, "not met")])
def test_cached_target_follows_the_masked_fraction(ilat_ms: float, met: str) -> None:
    assert bench.cached_target(82 / 256) == pytest.approx(1.25 * 82 / 256 + 0.05)
    assert bench.cached_target(82 / 256) == pytest.approx(0.450390625)
    [row] = bench.ratio_rows([_total("pa", "ilat", "cached", ilat_ms),
                              _total("pa", "taming", "cached", 100.0)])
    assert (row["target"], row["target_met"]) == ("<= 0.4504", met)


def test_ratio_of_a_failed_run_is_no_result() -> None:
    oom = {**_total("pa", "taming", "uncached", math.nan), "status": "out of memory"}
    [row] = bench.ratio_rows([_total("pa", "ilat", "uncached", 40.0), oom])
    assert row["status"] == "no result" and row["target_met"] == "" and math.isnan(row["value"])


def _ar(cache: str, k: int, ms: float) -> dict:
    return {"part": "sweep", "kind": "inference", "metric": "ar", "variant": "ilat_pa",
            "precision": "fp32", "cache": cache, "masked_tokens": k, "tokens": 256,
            "side": 256, "status": "ok", "mean_ms": ms}


def test_linearity_rows_target_the_cached_sweep() -> None:
    rows = [_ar("cached", k, 2 + 3 * k) for k in (0, 26, 51, 77)]
    rows += [_ar("uncached", k, ms) for k, ms in ((0, 0), (1, 1), (2, 3))]
    cached, uncached = bench.linearity_rows(rows)
    assert cached["value"] == pytest.approx(1.0) and cached["target_met"] == "met"
    assert cached["target"] == ">= 0.99" and "0.002 + 0.003 x" in cached["note"]
    assert uncached["value"] == pytest.approx(27 / 28, abs=1e-5) and "target" not in uncached
    bent = bench.linearity_rows([_ar("cached", k, ms) for k, ms in ((0, 0), (1, 1), (2, 3))])
    assert bent[0]["target_met"] == "not met"


def test_estimate_arithmetic() -> None:
    calib = bench.Calibration(build_s=1.0, codec_s=0.5,
                              first_s={"uncached": 0.1, "cached": 0.2},
                              step_s={"uncached": 0.1, "cached": 0.01})
    assert calib.edit_s(0, "cached") == 0.5                  # a reconstruction: no sampling
    assert calib.edit_s(1, "cached") == pytest.approx(0.7)
    assert calib.edit_s(82, "cached") == pytest.approx(0.5 + 0.2 + 81 * 0.01)
    assert calib.edit_s(82, "uncached") == pytest.approx(0.5 + 82 * 0.1)
    plan = replace(PLAN, calls=(1, 3), precisions=("fp32", "tf32"))
    todo = [bench.Measurement("paper_mask", 82, "uncached", 256),
            bench.Measurement("paper_mask", 82, "cached", 256)]
    expected = 2 * 4 * ((0.5 + 256 * 0.1) + (0.5 + 0.2 + 255 * 0.01))
    assert bench.pipeline_estimate_s(plan, calib, todo) == pytest.approx(expected)


def test_measurements_per_method() -> None:
    taming = bench.measurements(PLAN, _setup("pa", "taming"), 256)
    assert [(m.part, m.masked_tokens, m.cache, m.steps) for m in taming] == [
        ("paper_mask", 82, "uncached", 256), ("paper_mask", 82, "cached", 256)]
    ilat = bench.measurements(PLAN, _setup("ffhq", "ilat"), 256)
    assert all(m.steps == m.masked_tokens for m in ilat)
    assert [m.masked_tokens for m in ilat if m.part == "paper_mask"] == [17, 17]
    assert len([m for m in ilat if m.part == "sweep"]) == 2 * 11


# --- the run ------------------------------------------------------------------------------------

def _inference(rows: list[dict[str, str]]) -> list[dict[str, str]]:
    return [r for r in rows if r["kind"] == "inference"]


def test_dry_run_rows_follow_the_schema(dry_run) -> None:
    columns, rows, messages = dry_run
    assert columns == list(COLUMNS)
    assert all(r["paper"] == "ilat" and r["status"] == "ok" for r in rows)
    assert all(r["commit"] and r["device"].startswith("cpu") for r in rows)
    runs = _inference(rows)
    # every measurement: a total and an AR row from the same calls
    keys = {(r["variant"], r["part"], r["cache"], r["masked_tokens"]) for r in runs}
    assert len(runs) == 2 * len(keys)
    for r in runs:
        assert r["metric"] in ("total", "ar") and r["precision"] == "fp32"
        assert int(r["tokens"]) == TOKENS and int(r["side"]) == 16 and r["batch"] == "1"
        assert (r["warmup"], r["repeats"]) == ("0", "1") and float(r["mean_ms"]) >= 0
        assert r["attention"] == ("causal" if r["model"] == "taming" else "la")
    for s in SETUPS:
        assert any(s.variant in m for m in messages)  # each pipeline's estimate was printed


def test_dry_run_steps(dry_run) -> None:
    _, rows, _ = dry_run
    for r in _inference(rows):
        expected = TOKENS if r["model"] == "taming" else int(r["masked_tokens"])
        assert int(r["steps"]) == expected
    for d, k in {"pa": 5, "sdf": 4, "ffhq": 1}.items():
        paper = [r for r in rows if r["part"] == "paper_mask" and r["variant"].endswith(d)
                 and r["kind"] == "inference"]
        assert {int(r["masked_tokens"]) for r in paper} == {k} and len(paper) == 8
        claimed = {r["model"]: float(r["paper_value"]) for r in paper if r["paper_value"]}
        assert all(r["cache"] == "uncached" and r["metric"] == "total"
                   for r in paper if r["paper_value"])
        assert claimed == {"taming": {"pa": 8.551, "sdf": 8.372, "ffhq": 8.183}[d],
                           "ilat": {"pa": 3.426, "sdf": 3.898, "ffhq": 1.180}[d]}


def test_dry_run_sweep_is_monotone_in_steps(dry_run) -> None:
    _, rows, _ = dry_run
    sweep = [r for r in _inference(rows) if r["part"] == "sweep"]
    assert {r["model"] for r in sweep} == {"ilat"}  # Taming's edit does not see the hole
    for variant in ("ilat_pa", "ilat_sdf", "ilat_ffhq"):
        for cache in bench.CACHES:
            ar = sorted((int(r["masked_tokens"]), int(r["steps"])) for r in sweep
                         if r["variant"] == variant and r["cache"] == cache
                         and r["metric"] == "ar")
            assert [k for k, _ in ar] == [0, 2, 3, 5, 6, 8, 10, 11, 13, 14, 16]
            assert [s for _, s in ar] == [k for k, _ in ar]  # strictly increasing steps


def test_dry_run_summaries(dry_run) -> None:
    _, rows, _ = dry_run
    summary = [r for r in rows if r["kind"] == "summary"]
    ratios = {(r["variant"], r["cache"]): r for r in summary if r["metric"].startswith("time")}
    assert len(ratios) == 6
    assert ratios[("ilat_pa / taming_pa", "uncached")]["target"] == "<= 0.40"
    assert ratios[("ilat_pa / taming_pa", "cached")]["target"] == (
        f"<= {round(1.25 * 5 / 16 + 0.05, 4)}")
    for r in ratios.values():
        assert r["target_met"] in ("met", "not met") and r["unit"] == "ratio"
    fits = [r for r in summary if r["metric"].startswith("ar_linearity")]
    assert len(fits) == 6 and all(0 <= float(r["value"]) <= 1 for r in fits)
    assert {r["target"] for r in fits} == {">= 0.99", ""}


def test_budget_skips_and_keeps_the_schema(tmp_path: Path, one_thread) -> None:
    plan = replace(PLAN, datasets=("ffhq",), budget_s=0.0)
    out = bench.benchmark(plan, SETUPS[-2:], CPU, tmp_path / "ilat.csv", log=lambda m: None)
    _, rows = read_csv(out)
    assert all(r["status"] == "skipped" for r in _inference(rows))
    assert {r["status"] for r in rows if r["kind"] == "summary"} == {"no result"}


def test_out_of_memory_is_a_result(monkeypatch, one_thread) -> None:
    pipe = bench.Pipeline(_setup("pa", "ilat"), CPU)

    def oom(*args, **kwargs):
        raise torch.OutOfMemoryError("CUDA out of memory")

    monkeypatch.setattr(pipe, "edit", oom)
    m = bench.Measurement("paper_mask", 5, "cached", 5)
    rows = bench.measurement_rows(pipe, m, "fp32", bench.measure_edits(
        pipe, bench.pixel_hole(bench.blob_tokens(bench.blob_order(4, 0), 5), 16), True, (0, 1)))
    assert [r["metric"] for r in rows] == ["total", "ar"]
    assert all(r["status"] == "out of memory" and math.isnan(r["mean_ms"]) for r in rows)


def test_options_restrict_the_plan() -> None:
    kwargs = bench.parse(["--datasets", "pa", "sdf", "--precisions", "tf32", "--calls", "1", "2",
                          "--caches", "cached", "--budget-s", "540", "--estimate-only",
                          "--size", "128", "--sweep", "0", "0.5", "1"])
    assert kwargs == {"out": None, "sizes": [128], "device_name": "cuda", "estimate_only": True,
                      "datasets": ("pa", "sdf"), "precisions": ("tf32",), "calls": (1, 2),
                      "caches": ("cached",), "budget_s": 540.0, "sweep": (0.0, 0.5, 1.0)}
    assert bench.parse([])["estimate_only"] is False


@pytest.mark.parametrize(("change", "match"), [
    ({"datasets": ("celeba",)}, "datasets"), ({"sweep": (0.5, 1.5)}, "sweep"),
    ({"calls": (1, 0)}, "calls"), ({"precisions": ()}, "precisions")])
def test_bad_plans_are_refused(change: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        bench.check_plan(replace(PLAN, **change))


def test_paper_setups_from_params() -> None:
    plan = bench.plan_for(torch.device("cuda"))  # builds no tensor: only the device type is read
    assert plan.precisions == ("fp32", "tf32") and plan.calls == (1, 3)
    setups = {(s.dataset, s.method): s for s in bench.setups_from_params(plan)}
    assert len(setups) == 6
    params = load_params(overrides={"preset": "paper", "weights": "random"})
    for (dataset, method), s in setups.items():
        model = resolve(params, "ilat", s.variant, check=False)["model"]
        assert s.transformer["mask"] == ("causal" if method == "taming" else "la")
        assert (s.transformer["layers"], s.transformer["heads"], s.transformer["width"]) == (
            12, 12, 768)
        assert s.joints == JOINTS[dataset] == model["joints"]
        assert s.tokenizer["size"] == 256 and s.tokenizer["two_stream"] == (method == "ilat")
        assert s.tokenizer["n_codes"] == (2048 if dataset == "ffhq" else 16384)
        assert s.tokenizer["architecture"] == ("face" if dataset == "ffhq" else "pose")
        assert (s.condition or {}).get("architecture") == (
            "sketch" if dataset == "ffhq" else None)
