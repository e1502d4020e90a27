"""DynaST benchmark: level widths and sizes, scores formed by each attention form (against counts
derived here from the pyramid), the exponent fit and crossover on synthetic timings, the
Ours/peer targets, the GPU-hours arithmetic, out of memory recorded as a result, and a CPU dry
run of every part read back from its CSV. Speed is never asserted."""

from __future__ import annotations

import ast
import csv
import math
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from sparsegen.bench import dynast as bench
from sparsegen.bench.common import COLUMNS
from sparsegen.claims import load_claims
from sparsegen.config import load_params, resolve
from sparsegen.models.dynast.checks import attended_levels, levels
from sparsegen.provenance import REPO_ROOT

CPU, CUDA = torch.device("cpu"), torch.device("cuda")
TABLE = load_claims(REPO_ROOT / "pipeline" / "claims" / "dynast.yaml").tables["1"]
DF_VARIANTS = ["df_full", "df_ours32", "df_ours64", "df_ours128", "df_wo_inner", "df_wo_dyna",
               "df_cocosnet", "df_cocosnet_v2"]


def _settings(preset: str, variant: str = "df_full") -> dict:
    params = load_params(overrides={"preset": preset, "weights": "random"})
    return resolve(params, "dynast", variant, check=False)


def _read(path: Path) -> tuple[list[str], list[dict[str, str]]]:
    with path.open(newline="") as f:
        reader = csv.DictReader(f)
        return list(reader.fieldnames or []), list(reader)


def _paper_time(variant: str) -> float:
    row = next(r for r in TABLE.rows.values() if r.variant == variant)
    return TABLE.cells[row.id]["time"]


@pytest.fixture(scope="module")
def dry_run(tmp_path_factory) -> tuple[list[str], list[dict[str, str]]]:
    out = bench.run(tmp_path_factory.mktemp("bench") / "dynast.csv", [16, 32], "cpu",
                    parts=("variants", "attention", "scaling"), variant_calls=(1, 1),
                    attention_calls=(1, 2), scaling_calls=(1, 1))
    return _read(out)


# --- sizes --------------------------------------------------------------------------------------

def test_plan_follows_params() -> None:
    gpu = bench.plan_for(CUDA)  # builds no tensor: only the device type is read
    ev = _settings("paper")["eval"]
    assert gpu.variant_calls == (ev["timing_warmup"], ev["timing_repeats"]) == (10, 1000)
    # the paper's batch and its shares on 2, 4, 8 devices (Sec. 4: 32 over 8 V100s)
    assert gpu.precisions == ("fp32", "fp32+tf32conv") and gpu.train_batches == (32, 16, 8, 4)
    assert gpu.attention_sides == (32, 64, 128, 256, 512)
    assert gpu.scaling_sides == (256, 512, 1024) and gpu.parts == bench.PARTS
    assert bench.plan_for(CPU, [32, 64, 128]).scaling_sides == (32, 64, 128)
    smoke = _settings("smoke")["train"]["batch_size"]
    assert bench.plan_for(CPU).train_batches == bench.device_shares(smoke)


@pytest.mark.parametrize(("batch", "shares"), [
    (32, (32, 16, 8, 4)), (64, (64, 32, 16, 8)), (12, (12, 6, 3)), (2, (2, 1)), (7, (7,))])
def test_device_shares_stop_at_the_papers_gpus(batch: int, shares: tuple[int, ...]) -> None:
    assert bench.device_shares(batch) == shares


@pytest.mark.parametrize(("preset", "widths"), [
    ("paper", {32: 512, 64: 256, 128: 128, 256: 64, 512: 64}),
    ("smoke", {4: 64, 8: 32, 16: 16, 32: 8, 64: 8})])
def test_attention_runs_at_the_level_widths(preset: str, widths: dict[int, int]) -> None:
    model = _settings(preset)["model"]
    assert {side: bench.level_width(model, side) for side in widths} == widths


@pytest.mark.parametrize("side", [48, 1, 0, 100])
def test_sides_off_the_pyramid_are_refused(side: int) -> None:
    with pytest.raises(ValueError, match=f"attention_sides: {side} is not"):
        bench.level_width(_settings("paper")["model"], side)


def test_scaled_generators_attend_every_level() -> None:
    model = _settings("paper")["model"]
    assert attended_levels(model, 256) == [3, 2, 1, 0]  # Ours at 256²: every level
    for side in (512, 1024):
        scaled = bench.scaled_model(model, side)
        assert scaled["size"] == scaled["max_match_res"] == side
        assert attended_levels(scaled, side) == [3, 2, 1, 0]
    with pytest.raises(ValueError, match="sizes: 100 is not divisible by 2\\^\\(M-1\\) = 8"):
        bench.scaled_model(model, 100)


def test_unknown_parts_and_uneven_batches_are_refused() -> None:
    plan = replace(bench.plan_for(CPU), parts=("variants", "latency"))
    with pytest.raises(ValueError, match="'latency'"):
        bench.check_plan(plan)
    batch = _settings("smoke")["train"]["batch_size"]
    plan = replace(bench.plan_for(CPU), train_batches=(batch, batch + 1))
    with pytest.raises(ValueError, match=f"train_batches: \\[{batch + 1}\\] do not divide"):
        bench.check_plan(plan)


# --- the dry run --------------------------------------------------------------------------------

def test_dry_run_writes_every_part(dry_run) -> None:
    columns, rows = dry_run
    assert columns == list(COLUMNS) and {"part", "target", "target_met"} <= set(columns)
    assert [r["part"] for r in rows] == sorted((r["part"] for r in rows),
                                               key=["variants", "attention", "scaling"].index)
    assert {r["paper"] for r in rows} == {"dynast"} and {r["precision"] for r in rows} == {"fp32"}
    # a crossover the tiny sides do not reach is "no result", not a failure of the run
    failed = [r for r in rows if r["status"] != "ok"
              and not (r["metric"].startswith("crossover") and r["status"] == "no result")]
    assert not failed
    assert all(r["comparable"] == "False" and r["non_comparable_reasons"] for r in rows)

    variants = [r for r in rows if r["part"] == "variants" and r["kind"] == "inference"]
    assert [r["variant"] for r in variants] == DF_VARIANTS
    for r in variants:  # Table 1's seconds per sample, read from the claims file
        assert float(r["paper_value"]) == _paper_time(r["variant"]) and r["paper_unit"] == "s"
        assert (r["side"], r["batch"], r["warmup"], r["repeats"]) == ("32", "1", "1", "1")
        assert float(r["mean_ms"]) > 0 and math.isnan(float(r["peak_mem_gib"]))
    models = {r["variant"]: (r["model"], r["attention"]) for r in variants}
    assert models["df_cocosnet"] == ("cocosnet_peer", "dense")
    assert models["df_cocosnet_v2"] == ("cocosnet_v2_peer", "patchmatch")
    assert models["df_full"] == ("dynast", "dynast")
    peers = {r["variant"]: r["non_comparable_reasons"] for r in variants}
    assert "same-backbone peer" in peers["df_cocosnet"] and "peer" not in peers["df_full"]

    attention = [r for r in rows if r["kind"] == "attention_cost"]
    assert {(r["attention"], int(r["side"])) for r in attention} == {
        (f, s) for f in bench.FORMS for s in (8, 16)}
    assert all(r["repeats"] == "2" for r in attention)
    metrics = [r["metric"] for r in rows if r["kind"] == "summary"]
    assert metrics == ["time_ratio[df_full/df_cocosnet_v2]", "time_ratio[df_full/df_cocosnet]",
                       "time_exponent[dense_materialised]", "time_exponent[dense_sdpa]",
                       "time_exponent[sparse]", "crossover_side[sparse/dense_materialised]",
                       "crossover_side[sparse/dense_sdpa]", "time_exponent[generator]"]

    scaling = [r for r in rows if r["part"] == "scaling" and r["kind"] == "inference"]
    assert [(r["side"], r["variant"]) for r in scaling] == [
        ("16", "df_full + model.size=16, model.max_match_res=16"),
        ("32", "df_full + model.size=32, model.max_match_res=32")]
    small, large = (float(r["mean_ms"]) for r in scaling)
    assert float(scaling[1]["time_exponent_vs_half_side"]) == pytest.approx(
        math.log(large / small) / math.log(4), abs=1e-3)
    assert scaling[0]["time_exponent_vs_half_side"] == "nan"


def test_scores_formed_by_each_form(dry_run) -> None:
    k = _settings("smoke")["model"]["top_k"]
    for r in (r for r in dry_run[1] if r["kind"] == "attention_cost"):
        n = int(r["side"]) ** 2
        # dense: Nq x Nk; the inter + inner pair: 4k + 5k candidates per query
        expected = n * n if r["attention"].startswith("dense") else 9 * k * n
        assert int(r["attention_scores"]) == expected, r


def test_generator_scores_follow_the_pyramid(dry_run) -> None:
    # smoke pyramid: sides 32, 16, 8, 4 (M = 4, 2 blocks per level). Ours: two Dense Attn
    # Blocks at 4² (Nq = Nk = 16), then an inter + inner pair at 8², 16², 32²; Ours-64 attends
    # 4² and 8² only; CoCosNet's peer two dense blocks at a quarter of the side (8²).
    model = _settings("smoke")["model"]
    assert levels(model) == 4 and model["blocks_per_level"] == 2
    k = model["top_k"]
    expected = {"df_full": 2 * 16 * 16 + 9 * k * (8 * 8 + 16 * 16 + 32 * 32),
                "df_ours64": 2 * 16 * 16 + 9 * k * 8 * 8,
                "df_wo_inner": 2 * 16 * 16 + 2 * 4 * k * (8 * 8 + 16 * 16 + 32 * 32),
                "df_cocosnet": 2 * 64 * 64}
    got = {r["variant"]: int(r["attention_scores"]) for r in dry_run[1]
           if r["part"] == "variants" and r["kind"] == "inference"}
    assert {v: got[v] for v in expected} == expected


def test_ratio_rows_in_the_dry_run(dry_run) -> None:
    rows = {r["metric"]: r for r in dry_run[1] if r["metric"].startswith("time_ratio")}
    times = {r["variant"]: float(r["mean_ms"]) for r in dry_run[1]
             if r["part"] == "variants" and r["kind"] == "inference"}
    for peer in bench.PEERS:
        r = rows[f"time_ratio[df_full/{peer}]"]
        assert float(r["value"]) == pytest.approx(times["df_full"] / times[peer], abs=1e-4)
        assert r["target_met"] in ("met", "not met")


# --- summaries on synthetic timings ---------------------------------------------------------------

def test_exponent_fit_recovers_power_laws() -> None:
    pixels = [32.0 ** 2, 64.0 ** 2, 128.0 ** 2, 256.0 ** 2]
    assert bench.fit_exponent(pixels, [3e-3 * n for n in pixels]) == pytest.approx(1.0)
    assert bench.fit_exponent(pixels, [5e-7 * n * n for n in pixels]) == pytest.approx(2.0)
    noisy = [2e-5 * n ** 1.5 * f for n, f in zip(pixels, (1.1, 0.9, 1.05, 0.97), strict=True)]
    assert bench.fit_exponent(pixels, noisy) == pytest.approx(1.5, abs=0.05)
    assert math.isnan(bench.fit_exponent(pixels[:1], [1.0]))
    assert math.isnan(bench.fit_exponent([4.0, 4.0], [1.0, 2.0]))


def _cost(form: str, side: int, ms: float, status: str = "ok") -> dict:
    return {"part": "attention", "kind": "attention_cost", "attention": form, "side": side,
            "mean_ms": ms if status == "ok" else math.nan, "status": status, "precision": "fp32"}


def _synthetic() -> list[dict]:
    rows = []
    for side in (32, 64, 128, 256, 512):
        n = side * side
        rows += [_cost("sparse", side, 1e-3 * n),  # linear
                 _cost("dense_sdpa", side, 2e-6 * n * n),  # quadratic, cheaper at small sides
                 _cost("dense_materialised", side, 1e-5 * n * n,
                       "ok" if side < 256 else "out of memory")]
    return rows


def test_exponents_and_crossovers_on_synthetic_timings() -> None:
    rows = _synthetic()
    sparse = bench.exponent_row([r for r in rows if r["attention"] == "sparse"], "attention",
                                "time_exponent[sparse]", "fp32", "")
    dense = bench.exponent_row([r for r in rows if r["attention"] == "dense_materialised"],
                               "attention", "time_exponent[dense_materialised]", "fp32", "")
    assert (sparse["value"], dense["value"]) == (1.0, 2.0)
    assert "[32, 64, 128]" in dense["note"]  # only the sides that ran
    # sparse 1e-3 n < 2e-6 n^2 from n > 500 (side 32: 1024 px); materialised from n > 100
    sdpa = bench.crossover(rows, "dense_sdpa", "fp32")
    assert (sdpa["value"], sdpa["status"]) == (32, "ok")
    slow = [r for r in rows if not (r["attention"] == "dense_sdpa" and r["side"] < 128)]
    slow += [_cost("dense_sdpa", 32, 1e-9), _cost("dense_sdpa", 64, 1e-9)]
    assert bench.crossover(slow, "dense_sdpa", "fp32")["value"] == 128
    assert "faster at every larger side" in bench.crossover(slow, "dense_sdpa", "fp32")["note"]
    oom_only = [r for r in rows if r["side"] >= 256]
    row = bench.crossover(oom_only, "dense_materialised", "fp32")
    assert row["value"] == 256 and "ran out of memory" in row["note"]
    never = [r for r in rows if r["attention"] != "sparse"] + [
        _cost("sparse", s, math.nan, "out of memory") for s in (32, 64)]
    none = bench.crossover(never, "dense_sdpa", "fp32")
    assert math.isnan(none["value"]) and none["status"] == "no result"


def test_half_side_exponents() -> None:
    rows = [_cost("sparse", 8, 2.0), _cost("sparse", 16, 16.0), _cost("dense_sdpa", 16, 1.0),
            _cost("sparse", 32, math.nan, "out of memory")]
    bench.add_half_side_exponents(rows, lambda r: r["attention"])
    assert rows[1]["time_exponent_vs_half_side"] == 1.5  # x8 for x4 pixels
    assert all(math.isnan(rows[i]["time_exponent_vs_half_side"]) for i in (0, 2, 3))


def _variant(variant: str, ms: float, status: str = "ok") -> dict:
    return {"part": "variants", "kind": "inference", "variant": variant, "precision": "fp32",
            "side": 256, "mean_ms": ms, "status": status}


def test_ratios_against_the_papers_targets() -> None:
    rows = bench.ratio_rows([_variant("df_full", 40.0), _variant("df_cocosnet_v2", 90.0),
                             _variant("df_cocosnet", 47.0)])
    v2, v1 = rows
    full = _paper_time("df_full")
    assert v2["paper_value"] == round(full / _paper_time("df_cocosnet_v2"), 4) == 0.4438
    assert v1["paper_value"] == round(full / _paper_time("df_cocosnet"), 4) == 0.8374
    assert (v2["target"], v1["target"]) == ("<= 0.44", "<= 0.84")
    assert (v2["value"], v2["target_met"]) == (0.4444, "met")  # 0.44 at two decimals
    assert (v1["value"], v1["target_met"]) == (0.8511, "not met")
    assert "claims/dynast.yaml" in v2["paper_source"]
    missing = bench.ratio_rows([_variant("df_full", 40.0),
                                _variant("df_cocosnet_v2", math.nan, "out of memory")])
    assert missing[0]["status"] == "no result" and missing[0]["target_met"] == ""


def test_no_paper_value_is_typed_into_the_benchmark() -> None:
    printed = {TABLE.cells[r]["time"] for r in ("ours", "cocosnet", "cocosnet_v2")}
    printed |= {100 * t for t in printed} | {0.44, 0.84}
    tree = ast.parse((REPO_ROOT / "src" / "sparsegen" / "bench" / "dynast.py").read_text())
    numbers = {n.value for n in ast.walk(tree) if isinstance(n, ast.Constant)
               and isinstance(n.value, float)}
    assert not numbers & printed


# --- out of memory ------------------------------------------------------------------------------

def test_out_of_memory_in_the_first_or_a_later_call_is_a_result() -> None:
    calls = []

    def later() -> None:
        calls.append(1)
        if len(calls) > 2:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory (simulated)")

    result = bench.timed(later, CPU, warmup=2, repeats=3)
    assert result["status"] == "out of memory" and math.isnan(result["mean_ms"])

    def first() -> None:
        raise torch.cuda.OutOfMemoryError("CUDA out of memory (simulated)")

    result = bench.timed(first, CPU, warmup=2, repeats=3)
    assert result["status"] == "out of memory" and result["repeats"] == 0
    assert result["attention_scores"] == 0 and "first call" in result["note"]


def test_a_dense_form_out_of_memory_is_recorded_and_loses_the_crossover(monkeypatch) -> None:
    real = bench.dense_dynamic_attention

    def dense(q, k, v, *args, **kwargs):  # the materialised form runs out of memory at 16²
        if kwargs.get("image") is not None and q.shape[-1] >= 16:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory (simulated)")
        return real(q, k, v, *args, **kwargs)

    monkeypatch.setattr(bench, "dense_dynamic_attention", dense)
    plan = replace(bench.plan_for(CPU), attention_calls=(1, 1))
    rows = bench.attention_rows(plan, CPU, "fp32")
    cost = {(r["attention"], r["side"]): r for r in rows if r["kind"] == "attention_cost"}
    oom = cost["dense_materialised", 16]
    assert oom["status"] == "out of memory" and math.isnan(oom["mean_ms"])
    assert "first call" in oom["note"] and oom["note"].startswith("a Dense Attn Block")
    assert all(r["status"] == "ok" for key, r in cost.items() if key != ("dense_materialised", 16))
    summary = {r["metric"]: r for r in rows if r["kind"] == "summary"}
    crossing = summary["crossover_side[sparse/dense_materialised]"]
    assert crossing["value"] in (8, 16) and crossing["status"] == "ok"
    assert crossing["value"] == 8 or "ran out of memory" in crossing["note"]
    assert math.isnan(summary["time_exponent[dense_materialised]"]["value"])  # one side ran


# --- training -----------------------------------------------------------------------------------

def test_synthetic_batch_is_shaped_like_the_tasks() -> None:
    settings = _settings("smoke")
    batch = bench.synthetic_batch(settings)
    n, side = settings["train"]["batch_size"], settings["model"]["size"]
    assert batch["s_tgt"].shape == batch["s_ref"].shape == (n, 20, side, side)
    assert batch["i_tgt"].shape == batch["i_ref"].shape == (n, 3, side, side)
    assert batch["i_ref"].min() >= -1 and batch["i_ref"].max() <= 1 and batch["i_ref"].min() < 0
    assert batch["s_tgt"].min() >= 0 and torch.equal(batch["weight"], torch.ones(n))


def test_schedule_iterations_count_the_papers_epochs() -> None:
    settings = _settings("paper")  # 80 + 20 epochs at batch 32
    assert bench.schedule_iterations(settings, 3200) == 100 * 100
    assert bench.schedule_iterations(settings, 3201) == 100 * 101  # the last batch is kept
    assert bench.schedule_iterations(settings, bench.ASSUMED_TRAIN_PAIRS) == 100 * math.ceil(
        bench.ASSUMED_TRAIN_PAIRS / 32)


def test_training_step_and_gpu_hours(tmp_path) -> None:
    # one sample per device: the schedule's iterations of the smoke batch on `batch` devices
    out = bench.run(tmp_path / "dynast.csv", device_name="cpu", parts=("training",),
                    train_calls=(1, 1), train_batches=(1,), train_pairs=1000)
    _, rows = _read(out)
    assert len(rows) == 1
    row = rows[0]
    settings = _settings("smoke")
    t = settings["train"]
    batch = t["batch_size"]
    assert (row["part"], row["kind"], row["status"], row["batch"]) == (
        "training", "train_step", "ok", "1")
    assert (t["epochs"], t["decay_epochs"]) == (80, 20)
    iterations = 100 * math.ceil(1000 / batch)  # epochs of the global batch
    assert int(row["iterations"]) == iterations
    assert float(row["gpu_hours_per_model"]) == pytest.approx(
        float(row["mean_ms"]) / 1e3 * iterations * batch / 3600, abs=0.01)
    assert f"x {batch} device(s) (global batch {batch} / 1)" in row["derived_from"]
    assert "|train list| = 1000 (given)" in row["derived_from"] and "1000" in row["note"]
    assert row["deterministic"] == str(settings["deterministic"])


# --- the module's command line ------------------------------------------------------------------

def test_command_line_sets_plan_fields(tmp_path, capsys) -> None:
    with pytest.raises(SystemExit) as done:
        bench.main(["--help"])
    assert done.value.code == 0 and "--variant-calls WARMUP TIMED" in capsys.readouterr().out
    out = tmp_path / "attention.csv"
    bench.main(["--device", "cpu", "--out", str(out), "--parts", "attention",
                "--attention-sides", "4", "8", "--attention-calls", "1", "1"])
    assert capsys.readouterr().out.strip() == str(out)
    _, rows = _read(out)
    cost = [r for r in rows if r["kind"] == "attention_cost"]
    assert {(r["part"], r["side"], r["warmup"], r["repeats"]) for r in cost} == {
        ("attention", "4", "1", "1"), ("attention", "8", "1", "1")}
    with pytest.raises(SystemExit):
        bench.main(["--device", "cpu", "--parts", "latency"])

