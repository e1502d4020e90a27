"""StyleNAT benchmark bookkeeping: the generator widths each attention call is timed at, which
calls run at which batch and pass and in what order, the bytes, flops and bandwidth arithmetic,
which SDPA kernel ran, the summary rows and their targets (throughput ratio, NA against window,
bandwidth fraction, crossover side, GPU-hours) on synthetic timings, failures and the budget
recorded as results, the DDP worker under torchrun (gloo on the CPU), and a CPU dry run end to
end (columns, row kinds, skipped backends, paper values). Speed is never asserted."""

from __future__ import annotations

import csv
import math
import warnings
from dataclasses import replace
from typing import Any

import pytest
import torch
import torch.nn.functional as F

from sparsegen.attention.neighborhood import available_backends
from sparsegen.bench import common
from sparsegen.bench import stylenat as bench
from sparsegen.bench import stylenat_attention as attention
from sparsegen.bench import stylenat_measure as measure
from sparsegen.bench.common import COLUMNS
from sparsegen.claims import load_claims
from sparsegen.config import load_params, resolve
from sparsegen.models.stylenat.generator import build_generator
from sparsegen.provenance import REPO_ROOT

CPU = torch.device("cpu")
CLAIMS = load_claims(REPO_ROOT / "pipeline" / "claims" / "stylenat.yaml").tables["1"]


def _model(preset: str) -> dict[str, Any]:
    params = load_params(overrides={"preset": preset, "weights": "random"})
    return resolve(params, "stylenat", "stylenat", check=False)["model"]


@pytest.mark.parametrize(("side", "heads", "head_dim", "dilations", "window"), [
    (32, 16, 32, (1, 4), 8), (64, 16, 32, (1, 8), 8), (128, 8, 32, (1, 16), 8),
    (256, 4, 32, (1, 32), 8), (8, 16, 32, (1,), 8)])
def test_levels_use_the_ffhq256_generator_widths(side: int, heads: int, head_dim: int,
                                                  dilations: tuple[int, ...], window: int) -> None:
    # official FFHQ-256: widths 512 (<=64), 256, 128; head_dim 32; dilations [1, side/8]
    level = attention.level_of(_model("paper"), side)
    assert (level.heads, level.head_dim, level.dilations, level.window, level.kernel) == (
        heads, head_dim, dilations, window, 7)


@pytest.mark.parametrize("side", [4, 48, 512])
def test_sizes_that_are_not_neighbourhood_levels_are_refused(side: int) -> None:
    with pytest.raises(ValueError, match=f"--sizes: {side} is not"):
        attention.level_of(_model("paper"), side)


def test_every_attention_is_configured_at_a_level() -> None:
    configs = attention.attention_configs(attention.level_of(_model("paper"), 64), (1, 8))
    na = {(c["backend"], c["rpb"], c["dilation"], c["batch"], c["pass"]) for c in configs
          if c["attention"] == "neighborhood"}
    both = ("forward", "forward_backward")
    fused = {("fused", True, d, b, p) for d in (1, 8) for b in (1, 8) for p in both}
    references = {(b, rpb, d, 8, p) for d in (1, 8) for b, rpb, passes in [
        ("flex", True, both), ("flex", False, ("forward",)), ("natten", False, both),
        ("torch", True, both)] for p in passes}  # the reference backends: batch 8 only
    assert na == fused | references
    window = [(c["window"], c["shift"], c["batch"], c["pass"]) for c in configs
              if c["attention"] == "window"]
    assert window == [(8, s, b, p) for b in (1, 8) for p in both for s in (0, 4)]
    assert {c["sdpa_choice"] for c in configs if c["attention"] != "neighborhood"} == {"default"}
    assert [(c["batch"], c["pass"]) for c in configs if c["attention"] == "dense"] == [
        (1, "forward"), (8, "forward")]
    small = attention.attention_configs(attention.level_of(_model("paper"), 8), (8,))
    assert {c["shift"] for c in small if c["attention"] == "window"} == {0}  # window == side


def test_fused_window_and_dense_run_first_then_references_by_priority() -> None:
    model = _model("paper")
    plan = replace(bench.plan_for(CPU), stylenat={"model": model}, sides=(32, 256),
                   batches=(1, 8))
    tasks = attention.cost_tasks(plan)
    main, references = attention.run_order(tasks)
    assert sorted(main + references) == list(range(len(tasks)))
    assert main == sorted(main) and not any(attention.is_reference(tasks[i][1]) for i in main)
    first = [(tasks[i][0].side, tasks[i][1]["backend"], tasks[i][1]["rpb"],
              tasks[i][1]["dilation"], tasks[i][1]["pass"]) for i in references[:5]]
    assert first == [(256, "flex", True, 1, "forward"), (256, "natten", False, 1, "forward"),
                     (256, "flex", False, 1, "forward"), (256, "torch", True, 1, "forward"),
                     (32, "flex", True, 1, "forward")]
    last = tasks[references[-1]]
    assert (last[0].side, last[1]["pass"], last[1]["dilation"]) == (32, "forward_backward", 4)


def test_dense_and_full_neighbourhood_calls_see_the_same_inputs() -> None:
    # kernel == side: neighbourhood attention is full attention, so the dense SDPA call (which
    # flattens the heads-last inputs) must give the same output as the neighbourhood call
    level = attention.Level(side=7, heads=2, head_dim=4, kernel=7, dilations=(1,), window=7)
    dense = attention.attention_call({"attention": "dense"}, level, 2, CPU)()
    na = attention.attention_call({"attention": "neighborhood", "backend": "torch", "rpb": False,
                                   "dilation": 1}, level, 2, CPU)()
    torch.testing.assert_close(dense.transpose(1, 2).reshape(na.shape), na, atol=1e-5,
                               rtol=1e-5)


@pytest.mark.parametrize(("config", "name"), [
    ({"attention": "neighborhood", "backend": "torch", "rpb": True, "dilation": 2},
     "neighborhood_attention"),
    ({"attention": "window", "window": 4, "shift": 2, "rpb": True}, "window_attention")])
def test_forward_backward_calls_run_under_inference_mode(monkeypatch, config: dict,
                                                         name: str) -> None:
    # the timer runs every call under inference mode: the call must switch it off itself and
    # send a gradient back through the attention, to q, k, v and the table
    seen = []

    def spy(q, k, v, *args, **kwargs):
        out = attend(q, k, v, *args, **kwargs)
        out.register_hook(lambda grad: seen.append(grad.shape))
        seen.append((q.requires_grad, k.requires_grad, v.requires_grad,
                     args[2].requires_grad, torch.is_inference_mode_enabled()))
        return out

    attend = getattr(attention, name)
    monkeypatch.setattr(attention, name, spy)
    level = attention.Level(side=8, heads=2, head_dim=4, kernel=3, dilations=(1, 2), window=4)
    call = attention.attention_call({**config, "pass": "forward_backward"}, level, 2, CPU)
    with torch.inference_mode():
        assert call() is None
    assert seen == [(True, True, True, True, False), (2, 8, 8, 2, 4)]


PAPER_256 = attention.Level(side=256, heads=4, head_dim=32, kernel=7, dilations=(1, 32), window=8)


def _na(batch: int, pass_: str, rpb: bool = True) -> dict:
    return {"attention": "neighborhood", "backend": "fused", "rpb": rpb, "dilation": 1,
            "batch": batch, "pass": pass_}


def test_bytes_and_scores_of_the_generators_largest_level() -> None:
    # 256², batch 8, 4 heads of 32: one fp32 tensor is 8 * 65536 * 4 * 32 * 4 B = 256 MiB;
    # the RPB table is 4 * 13 * 13 * 4 B = 2704 B
    tensor, table, lse = 268_435_456, 2704, 8 * 65536 * 4 * 4
    assert attention.min_bytes(_na(8, "forward"), PAPER_256) == 4 * tensor + table == 1_073_744_528
    assert attention.min_bytes(_na(8, "forward", rpb=False), PAPER_256) == 4 * tensor
    assert attention.min_bytes(_na(8, "forward_backward"), PAPER_256) == (
        12 * tensor + 2 * lse + 3 * table) == 3_238_010_800
    assert attention.attention_scores(_na(8, "forward"), PAPER_256) == 8 * 65536 * 4 * 49
    # bfloat16 rows: tensors and table at 2 bytes, the log-sum-exp rows stay fp32
    assert attention.min_bytes(_na(8, "forward"), PAPER_256, 2) == (4 * tensor + table) // 2
    assert attention.min_bytes(_na(8, "forward_backward"), PAPER_256, 2) == (
        (12 * tensor + 3 * table) // 2 + 2 * lse)
    level64 = attention.Level(side=64, heads=16, head_dim=32, kernel=7, dilations=(1, 8), window=8)
    window = {"attention": "window", "window": 8, "shift": 4, "rpb": True, "batch": 1,
              "pass": "forward"}
    assert attention.min_bytes(window, level64) == 4 * 4096 * 16 * 32 * 4 + 16 * 15 * 15 * 4
    assert attention.attention_scores(window, level64) == 4096 * 16 * 64
    dense = {"attention": "dense", "rpb": False, "batch": 2, "pass": "forward"}
    assert attention.attention_scores(dense, level64) == 2 * 4096 * 16 * 4096


def test_achieved_bandwidth_and_flops_from_the_median() -> None:
    row = {**_na(8, "forward"), "status": "ok", "median_ms": 1.0, "head_dim": 32,
           "min_bytes": 1_073_744_528, "attention_scores": 102_760_448}
    assert attention.achieved(row, copy_gb_per_s=4000.0) == {
        "achieved_gb_per_s": 1073.74, "bandwidth_fraction": 0.2684,
        "achieved_tflop_per_s": 13.153}  # 4 * 102,760,448 * 32 flops in 1 ms
    back = {**row, "pass": "forward_backward", "median_ms": 2.0, "min_bytes": 3_238_010_800}
    assert attention.achieved(back, 4000.0) == {
        "achieved_gb_per_s": 1619.01, "bandwidth_fraction": 0.4048,
        "achieved_tflop_per_s": 23.018}  # 3.5 x the forward's flops in 2 ms
    assert attention.achieved({**row, "status": "out of memory"}, 4000.0) == {}


def test_copy_bandwidth_counts_read_and_write() -> None:
    plan = replace(bench.plan_for(CPU), copy_bytes=2**20)
    row = attention.bandwidth_row(plan, CPU)
    assert row["status"] == "ok" and row["min_bytes"] == 2**21 and set(row) <= set(COLUMNS)
    assert row["achieved_gb_per_s"] == pytest.approx(2**21 / row["median_ms"] / 1e6, abs=0.01)


def test_calls_are_counted_and_timed() -> None:
    calls = []
    result = measure.measure_calls(lambda: calls.append(1), CPU, warmup=3, repeats=4)
    assert len(calls) == 7 and result["status"] == "ok" and result["repeats"] == 4
    assert result["median_ms"] >= 0 and math.isnan(result["peak_mem_gib"])
    assert set(result) <= set(COLUMNS)


def test_slow_calls_are_timed_fewer_times() -> None:
    assert measure.fewer_repeats(20, 0.001, 3.0) == 20
    assert measure.fewer_repeats(20, 0.2, 3.0) == 15
    assert measure.fewer_repeats(20, 1.0, 3.0) == measure.MIN_REPEATS
    assert measure.fewer_repeats(2, 1.0, 3.0) == 2  # never more than asked
    calls = []
    result = measure.measure_calls(lambda: calls.append(1), CPU, warmup=3, repeats=20, max_s=0.0)
    assert result["repeats"] == measure.MIN_REPEATS and result["warmup"] == 3
    assert len(calls) == 3 + measure.MIN_REPEATS


@pytest.mark.parametrize(("error", "status"), [
    (torch.OutOfMemoryError("CUDA out of memory"), "out of memory"),
    (RuntimeError("flex compilation failed"), "error")])
def test_failures_are_results(error: Exception, status: str) -> None:
    def fail() -> None:
        raise error

    result = measure.measure_calls(fail, CPU, warmup=1, repeats=2)
    assert result["status"] == status and math.isnan(result["median_ms"])
    assert status == "out of memory" or "flex compilation failed" in result["note"]


def test_a_bug_in_the_benchmark_is_not_hidden_as_a_result() -> None:
    with pytest.raises(TypeError):
        measure.measure_calls(lambda: len(3), CPU, warmup=1, repeats=2)


def _sdpa() -> torch.Tensor:
    q = torch.randn(1, 2, 16, 8)
    return F.scaled_dot_product_attention(q, q, q, attn_mask=torch.zeros(1, 2, 16, 16))


def test_each_sdpa_choice_is_timed_or_recorded_as_refused() -> None:
    math_row = measure.measure_sdpa(_sdpa, CPU, (1, 2), "math")
    assert (math_row["status"], math_row["sdpa_backend"]) == ("ok", "math")
    assert "SDPA ran: math" in math_row["note"]
    default = measure.measure_sdpa(_sdpa, CPU, (1, 2), "default")
    assert default["status"] == "ok" and default["sdpa_backend"] in ("flash", "math")
    for choice in ("efficient", "cudnn"):  # CUDA kernels: the CPU refuses them
        refused = measure.measure_sdpa(_sdpa, CPU, (1, 2), choice)
        assert refused["status"] == "error" and "sdpa_backend" not in refused
        assert "RuntimeError" in refused["note"]
    assert measure.sdpa_ran(lambda: torch.ones(3) * 2, CPU)["sdpa_backend"] == ""


def test_a_refused_sdpa_choice_keeps_pytorchs_reasons() -> None:
    def refuse() -> None:
        warnings.warn("cuDNN attention kernel not used because: fp32", UserWarning,
                      stacklevel=1)
        raise RuntimeError("No available kernel. Aborting execution.")

    row = measure.measure_sdpa(refuse, CPU, (1, 2), "cudnn")
    assert row["status"] == "error" and "not used because: fp32" in row["note"]


def _throughput(model: str, backend: str, imgs: float, status: str = "ok",
                choice: str = "") -> dict:
    return {"kind": "throughput", "model": model, "backend": backend, "imgs_per_s": imgs,
            "status": status, "sdpa_choice": choice, "sdpa_backend": choice}


@pytest.mark.parametrize(("nat", "met", "stretch"), [
    (33.0, "met", "not met"), (40.0, "met", "met"), (30.0, "not met", "not met")])
def test_throughput_ratio_takes_the_best_stylenat_and_the_fastest_styleswin(
        nat: float, met: str, stretch: str) -> None:
    rows = [_throughput("stylenat", "torch", 20.0), _throughput("stylenat", "fused", nat),
            _throughput("styleswin", "torch", 25.0, choice="math"),
            _throughput("styleswin", "torch", 30.0, choice="efficient"),
            _throughput("styleswin", "torch", math.nan, "error", choice="cudnn")]
    row = bench.throughput_ratio(rows)
    paper = round(CLAIMS.cells["stylenat"]["throughput"] / CLAIMS.cells["styleswin"]["throughput"],
                  4)
    assert (row["value"], row["backend"], row["paper_value"]) == (round(nat / 30, 4), "fused",
                                                                  paper)
    assert row["sdpa_choice"] == "efficient" and "ran efficient" in row["note"]
    assert (row["target"], row["target_met"]) == (">= 1.08", met)
    assert paper == 1.0781 and "claims/stylenat.yaml" in row["paper_source"]
    high = bench.throughput_ratio(rows, "throughput_ratio[stretch]")
    assert (high["value"], high["target"], high["target_met"]) == (row["value"], ">= 1.3",
                                                                   stretch)


def test_throughput_ratio_without_both_models() -> None:
    rows = [_throughput("stylenat", "flex", 33.0),
            _throughput("styleswin", "torch", math.nan, "out of memory", choice="default")]
    missing = bench.throughput_ratio(rows)
    assert math.isnan(missing["value"]) and missing["status"] == "no result"
    assert missing["target_met"] == ""


def _cost(attention: str, backend: str, side: int, ms: float, *, rpb: bool = False,
          dilation: int = 1, max_dilation: int = 4, status: str = "ok", batch: int = 8,
          pass_: str = "forward", shift: int = 0) -> dict:
    return {"kind": "attention_cost", "attention": attention, "backend": backend, "side": side,
            "median_ms": ms, "rpb": rpb, "dilation": dilation, "max_dilation": max_dilation,
            "status": status, "batch": batch, "pass": pass_, "shift": shift}


def _synthetic() -> list[dict]:
    rows = []
    dense = {32: 1.0, 64: 4.0, 128: 16.0, 256: math.nan}
    for side, ms in dense.items():
        rows.append(_cost("dense", "sdpa", side, ms,
                          status="ok" if side < 256 else "out of memory"))
        rows.append(_cost("dense", "sdpa", side, 0.001, batch=1))  # another batch: not used
        d = side // 8
        rows += [  # torch (rpb) beats dense from 128, natten (no rpb) already from 64
            _cost("neighborhood", "torch", side, side / 12, rpb=True, max_dilation=d),
            _cost("neighborhood", "natten", side, side / 32, max_dilation=d),
            # dilated calls are slower; dilated torch only wins where dense ran out of memory
            _cost("neighborhood", "torch", side, side, rpb=True, dilation=d, max_dilation=d),
            _cost("neighborhood", "natten", side, side / 20, dilation=d, max_dilation=d),
            _cost("neighborhood", "flex", side, math.nan, rpb=True, status="error",
                  max_dilation=d),
            # the backward's time is not a forward's
            _cost("neighborhood", "natten", side, 0.0001, max_dilation=d,
                  pass_="forward_backward"),
            _cost("window", "torch", side, 0.001)]  # never counts as neighbourhood attention
    return rows


@pytest.mark.parametrize(("metric", "side", "backend"), [
    ("crossover_side[d=1, rpb]", 128, "torch"), ("crossover_side[d=1, any]", 64, "natten"),
    ("crossover_side[d=max, rpb]", 256, "torch"), ("crossover_side[d=max, any]", 64, "natten")])
def test_crossover_is_the_first_side_where_neighbourhood_beats_dense(metric: str, side: int,
                                                                     backend: str) -> None:
    row = attention.crossover(_synthetic(), metric, batch=8)
    assert (row["value"], row["backend"], row["status"]) == (side, backend, "ok")
    assert "faster at every larger side" in row["note"]
    assert (side == 256) == ("dense ran out of memory" in row["note"])


def test_no_crossover_when_dense_always_wins() -> None:
    rows = [r for r in _synthetic() if r["side"] < 128]
    row = attention.crossover(rows, "crossover_side[d=1, rpb]", batch=8)
    assert math.isnan(row["value"]) and row["status"] == "no result"


def _na_and_window(na_ms: dict[tuple[int, int], float], status: str = "ok") -> list[dict]:
    """Fused NA (d=1 and d=side/8) and window (shift 0 and 4) rows at 32-128, batch 8,
    forward; window takes 1 ms unshifted, 2 ms shifted."""
    rows = []
    for side in (32, 64, 128):
        d = side // 8
        for dilation, shift, window_ms in ((1, 0, 1.0), (d, 4, 2.0)):
            rows += [_cost("neighborhood", "fused", side, na_ms.get((side, dilation), 0.5),
                           rpb=True, dilation=dilation, max_dilation=d,
                           status=status if side == 128 else "ok"),
                     _cost("window", "torch", side, window_ms, rpb=True, shift=shift)]
    return rows


def test_na_no_slower_than_window_met() -> None:
    rows = _na_and_window({(64, 1): 0.9, (128, 16): 1.8, (32, 1): 5.0})  # 32 is not judged
    row = attention.na_over_window(rows, 8, "forward")
    assert (row["value"], row["status"], row["target"], row["target_met"]) == (
        0.9, "ok", "<= 1", "met")
    assert row["metric"] == "na_over_window[batch=8, forward]"
    assert "64 d=1 vs shift 0: 0.9" in row["note"] and "128 d=max vs shift 4: 0.9" in row["note"]
    assert math.isnan(attention.na_over_window(rows, 1, "forward")["value"])  # no batch-1 rows


def test_na_slower_than_window_somewhere_is_not_met() -> None:
    row = attention.na_over_window(_na_and_window({(128, 16): 2.5}), 8, "forward")
    assert (row["value"], row["target_met"]) == (1.25, "not met")


@pytest.mark.parametrize(("status", "met"), [("error", "not met"), ("skipped", "")])
def test_na_against_window_with_a_fused_row_missing(status: str, met: str) -> None:
    row = attention.na_over_window(_na_and_window({}, status=status), 8, "forward")
    assert row["value"] == 0.5 and row["target_met"] == met  # 64's ratios are known
    assert f"128 d=1 vs shift 0: fused {status}, window ok" in row["note"]


@pytest.mark.parametrize(("fraction", "met"), [(0.62, "met"), (0.31, "not met")])
def test_bandwidth_target_reads_fused_na_at_256(fraction: float, met: str) -> None:
    rows = [{**_cost("neighborhood", "fused", 256, 1.0, rpb=True, max_dilation=32),
             "bandwidth_fraction": fraction, "achieved_gb_per_s": 3000.0, "min_bytes": 3e9},
            {**_cost("neighborhood", "fused", 256, 1.0, rpb=True, dilation=32,
                     max_dilation=32), "bandwidth_fraction": 0.99}]
    row = attention.bandwidth_target(rows, batch=8)
    assert (row["value"], row["target"], row["target_met"]) == (fraction, ">= 0.5", met)
    missing = attention.bandwidth_target(rows, batch=1)
    assert missing["status"] == "no result" and missing["target_met"] == ""


def test_bfloat16_cost_rows(tmp_path, stylenat_dry_run) -> None:
    out = tmp_path / "stylenat.csv"
    bench.main(["--device", "cpu", "--sizes", "8", "--sections", "cost", "--cost-dtype",
                "bfloat16", "--out", str(out)])
    with out.open(newline="") as f:
        rows = list(csv.DictReader(f))
    cost = [r for r in rows if r["kind"] == "attention_cost"]
    assert {r["precision"] for r in rows if r["kind"] != "bandwidth"} == {"bf16"}
    assert {r["status"] for r in cost if r["backend"] in ("torch", "sdpa")} == {"ok"}
    # the same calls in float32 (the dry run at side 8): half the bytes but the fp32 lse rows
    key = ("attention", "backend", "rpb", "batch", "pass", "dilation", "shift")
    fp32 = {tuple(r[c] for c in key): int(r["min_bytes"]) for r in stylenat_dry_run[1]
            if r["kind"] == "attention_cost" and r["side"] == "8"}
    for r in cost:
        lse = 2 * int(r["batch"]) * 8 * 8 * int(r["heads"]) * 4 if r["pass"] != "forward" else 0
        assert int(r["min_bytes"]) - lse == (fp32[tuple(r[c] for c in key)] - lse) // 2, r
    level = attention.Level(side=8, heads=2, head_dim=4, kernel=3, dilations=(1,), window=4)
    for config in ({"attention": "neighborhood", "backend": "torch", "rpb": True, "dilation": 1},
                   {"attention": "window", "window": 4, "shift": 2, "rpb": True}):
        assert attention.attention_call(config, level, 1, CPU, torch.bfloat16)().dtype == (
            torch.bfloat16)


def test_a_spent_budget_skips_every_row_but_the_copy(tmp_path) -> None:
    out = tmp_path / "stylenat.csv"
    bench.main(["--device", "cpu", "--sizes", "8", "--budget-s", "0", "--out", str(out)])
    with out.open(newline="") as f:
        rows = list(csv.DictReader(f))
    measured = [r for r in rows if r["kind"] not in ("summary", "bandwidth")]
    budget = [r for r in measured if r["note"].startswith("skipped (budget)")]
    assert {r["kind"] for r in budget} == {"throughput", "attention_cost", "train_step"}
    assert all(r["status"] == "skipped" for r in budget)
    assert not [r for r in measured if r["status"] == "ok"]
    assert next(r for r in rows if r["kind"] == "bandwidth")["status"] == "ok"
    hours = next(r for r in rows if r["metric"] == "gpu_hours_per_model")
    assert hours["status"] == "no result"


def test_cpu_dry_run_writes_every_row_kind(stylenat_dry_run) -> None:
    columns, rows = stylenat_dry_run
    assert columns == list(COLUMNS)
    kinds = [r["kind"] for r in rows]
    # throughput ratio and stretch, bandwidth, NA vs window (2 batches x 2 passes), crossovers,
    # GPU-hours of the one backend timed
    assert kinds.count("summary") == 2 + 1 + 4 + len(attention.CROSSOVERS) + 1
    assert kinds.count("bandwidth") == 1 and kinds[0] == "bandwidth"
    assert {r["device"] for r in rows} == {common.environment(CPU)["device"]}
    assert {r["precision"] for r in rows} == {"fp32"}
    copy = rows[0]
    assert copy["status"] == "ok" and int(copy["min_bytes"]) == 2 * attention.COPY_BYTES["cpu"]

    throughput = {(r["model"], r["backend"], r["sdpa_choice"]): r for r in rows
                  if r["kind"] == "throughput"}
    assert set(throughput) == {("stylenat", b, "") for b in ("fused", "flex", "torch")} | {
        ("styleswin", "torch", c) for c in ("default", "efficient", "math", "cudnn")}
    nat = throughput["stylenat", "torch", ""]
    assert nat["status"] == "ok" and float(nat["imgs_per_s"]) > 0 and nat["repeats"] == "2"
    smoke = build_generator({**_model("smoke"), "backend": "torch"})
    assert float(nat["params_m"]) == pytest.approx(
        sum(p.numel() for p in smoke.parameters()) / 1e6, abs=1e-3)
    swin = {c: throughput["styleswin", "torch", c] for c in measure.SDPA_CHOICES}
    assert (swin["math"]["status"], swin["math"]["sdpa_backend"]) == ("ok", "math")
    assert swin["default"]["status"] == "ok" and swin["default"]["sdpa_backend"]
    assert swin["efficient"]["status"] == swin["cudnn"]["status"] == "error"
    for (model, _, _), r in throughput.items():  # the paper's numbers, from the claims file
        assert float(r["paper_value"]) == CLAIMS.cells[model]["throughput"]
        assert float(r["paper_params_m"]) == CLAIMS.cells[model]["params"]
        assert r["paper_unit"] == "img/s"
    ratio = next(r for r in rows if r["metric"] == "throughput_ratio")
    assert ratio["status"] == "ok" and ratio["target"] == ">= 1.08" and ratio["target_met"]

    cost = [r for r in rows if r["kind"] == "attention_cost"]
    assert {int(r["side"]) for r in cost} == {8, 16}
    assert {(r["batch"], r["pass"]) for r in cost} == {
        (b, p) for b in ("1", "4") for p in attention.PASSES}
    for r in [*cost, *throughput.values()]:  # dry run: only the torch backend is timed
        runs = r["attention"] not in ("neighborhood", "hydra_na") or r["backend"] == "torch"
        assert r["status"] in (("ok", "error") if r["sdpa_choice"] in ("efficient", "cudnn")
                               else ("ok",) if runs else ("skipped",)), r
        assert runs or "dry run on cpu" in r["note"] or "not available on cpu" in r["note"]
        if r["kind"] == "attention_cost":
            assert int(r["min_bytes"]) > 0 and int(r["attention_scores"]) > 0
            assert (r["status"] == "ok") == (r["achieved_gb_per_s"] != "")
            assert (r["status"] == "ok") == (float(r["bandwidth_fraction"] or 0) > 0)
    torch_na = {(int(r["side"]), int(r["dilation"]), r["pass"]) for r in cost
                if r["attention"] == "neighborhood" and r["backend"] == "torch"}
    assert torch_na == {(s, d, p) for s, d in ((8, 1), (16, 1), (16, 2))
                        for p in attention.PASSES}  # smoke model: dilations [1, 2] at side 16
    assert {r["batch"] for r in cost if r["attention"] == "neighborhood"
            and r["backend"] == "torch"} == {"4"}  # a reference backend: the training batch
    assert {(r["heads"], r["head_dim"]) for r in cost} == {("8", "4")}
    assert all(r["sdpa_backend"] for r in cost if r["attention"] != "neighborhood")
    natten_rows = [r for r in cost if r["backend"] == "natten"]
    path = ("its compiled kernels" if __import__("natten").HAS_LIBNATTEN
            else "NATTEN's Flex Attention path, eager")  # float32 rows: never compiled Flex
    assert natten_rows and all(path in r["note"] for r in natten_rows)

    train = {(r["variant"], r["backend"], r["gpus"], r["metric"]): r for r in rows
             if r["kind"] == "train_step"}
    assert set(train) == {("stylenat", "torch", "0", "iteration"),
                          ("stylenat", "torch", "0", "iteration_with_r1"),
                          ("stylenat", "fused", "0", "iteration"),
                          ("stylenat", "flex", "0", "iteration"),
                          ("stylenat", "torch", "2", "iteration"),
                          ("ffhq1024", "torch", "0", "iteration")}
    one = train["stylenat", "torch", "0", "iteration"]
    assert one["status"] == "ok" and float(one["compile_s"]) > 0
    assert train["stylenat", "torch", "0", "iteration_with_r1"]["status"] == "ok"
    for key in (("stylenat", "fused", "0", "iteration"), ("stylenat", "flex", "0", "iteration"),
                ("stylenat", "torch", "2", "iteration"), ("ffhq1024", "torch", "0", "iteration")):
        assert train[key]["status"] == "skipped"
    hours = [r for r in rows if r["metric"] == "gpu_hours_per_model"]
    assert [r["backend"] for r in hours] == ["torch"]
    assert hours[0]["status"] == "ok" and "1 GPU (no DDP measured)" in hours[0]["derived_from"]
    assert float(hours[0]["value"]) == float(hours[0]["gpu_hours_per_model"]) > 0


def _train(gpus: int, metric: str, ms: float, backend: str = "flex") -> dict:
    return {"kind": "train_step", "variant": "stylenat", "backend": backend, "gpus": gpus,
            "metric": metric, "median_ms": ms, "status": "ok", "precision": "fp32+tf32conv"}


def test_gpu_hours_come_from_the_ddp_rows_when_measured() -> None:
    settings = bench.train_settings("cuda")  # the paper preset: batch 8, R1 every 16
    one = [_train(1, "iteration", 1000.0), _train(1, "iteration_with_r1", 1000.0)]
    ddp = [_train(2, "iteration", 1200.0), _train(2, "iteration_with_r1", 2800.0)]
    row = bench.gpu_hours(one + ddp, settings)
    s_it = (15 * 1.2 + 2.8) / 16  # 1.3 s
    assert row["value"] == round(1_000_000 * s_it * 8 / 3600) == 2889
    assert row["gpus"] == 2 and "2 GPUs (DDP)" in row["derived_from"]
    only_one = bench.gpu_hours(one, settings)
    assert only_one["value"] == round(1_000_000 * 1.0 * 8 / 3600)
    assert "1 GPU (no DDP measured)" in only_one["derived_from"]
    assert bench.gpu_hours([], settings)["status"] == "no result"


def test_gpu_hours_are_per_backend() -> None:
    rows = [_train(1, "iteration", 1000.0), _train(1, "iteration_with_r1", 1000.0),
            _train(1, "iteration", 500.0, "fused"), _train(1, "iteration_with_r1", 500.0, "fused")]
    fused = bench.gpu_hours(rows, bench.with_backend(bench.train_settings("cuda"), "fused"))
    flex = bench.gpu_hours(rows, bench.train_settings("cuda"))
    assert (fused["backend"], fused["value"]) == ("fused", round(1_000_000 * 0.5 * 8 / 3600))
    assert (flex["backend"], flex["value"]) == ("flex", round(1_000_000 * 1.0 * 8 / 3600))
    assert "(fused)" in fused["derived_from"]


def test_timed_steps_separate_r1_iterations() -> None:
    plain, r1 = bench.timed_steps(3, 10, 2, 16)
    assert plain == list(range(3, 13)) and r1 == [16, 32]
    plain, _ = bench.timed_steps(14, 4, 1, 16)
    assert plain == [14, 15, 17, 18]  # step 16 carries R1


def test_host_batch_is_shaped_like_the_tasks() -> None:
    settings = bench.train_settings("cpu")
    batch = bench.host_batch(settings, 3)
    n, side = settings["train"]["batch_size"], settings["model"]["resolution"]
    assert batch["reals"].shape == (n, 3, side, side) and batch["z_g"].shape[0] == n
    assert torch.equal(batch["z_d"], bench.host_batch(settings, 3)["z_d"])


def test_ddp_worker_times_the_task_under_torchrun() -> None:
    # two gloo ranks on the CPU: the same worker the GPU run starts with NCCL
    timing = bench.launch_ddp(2, "cpu", (1, 1, 1), timeout=180)
    assert timing["status"] == "ok" and timing["world_size"] == 2
    assert len(timing["plain_s"]) == 1 and len(timing["r1_s"]) == 1 and timing["r1_steps"] == [16]
    rows = bench.train_rows(timing, bench.train_settings("cpu"), 2, "fp32", CPU)
    assert [r["metric"] for r in rows] == ["iteration", "iteration_with_r1"]
    assert "under DDP" in rows[0]["note"]


def test_a_failed_launch_is_reported() -> None:
    with pytest.raises(bench.LaunchFailed, match="exited with") as err:
        bench.launch_ddp(2, "tpu", (1, 1, 1), timeout=120)  # the worker refuses the device
    assert err.value.status == "error"


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_every_backend_runs_on_the_gpu(monkeypatch) -> None:
    # the full benchmark's code paths (compiled Flex and the fused kernels in the generator,
    # NATTEN when installed, SDPA choices and the profiler, memory deltas, forward+backward)
    # with 2 timed calls and one side, so a GPU session can check them before the 500-pass run
    monkeypatch.setenv(common.ALLOW_UNKNOWN_COMMIT, "1")  # a copy without .git
    cuda = torch.device("cuda")
    plan = replace(bench.plan_for(cuda, [32]), throughput_calls=(1, 2), cost_calls=(1, 2),
                   sections=("throughput", "cost"))
    rows = bench.benchmark(plan, cuda)
    throughput = {(r["model"], r["sdpa_choice"] or r["backend"]): r for r in rows
                  if r["kind"] == "throughput"}
    assert all(throughput["stylenat", b]["status"] == "ok" for b in bench.RPB_BACKENDS)
    assert all(throughput["styleswin", c]["status"] == "ok" for c in ("default", "math"))
    assert throughput["styleswin", "math"]["sdpa_backend"] == "math"
    assert throughput["styleswin", "default"]["sdpa_backend"]
    assert next(r for r in rows if r["kind"] == "bandwidth")["achieved_gb_per_s"] > 0
    cost = [r for r in rows if r["kind"] == "attention_cost"]
    natten = "natten" in available_backends(cuda)
    for r in cost:
        expected = ("ok", "skipped") if r["backend"] == "natten" else ("ok",)
        assert r["status"] in expected and (natten or r["backend"] != "natten"
                                            or r["status"] == "skipped"), r
    ran = [r for r in cost if r["status"] == "ok"]
    assert all(r["peak_mem_gib"] > 0 and r["bandwidth_fraction"] > 0 for r in ran)
    assert {r["backend"] for r in cost} == {"fused", "torch", "flex", "natten", "sdpa"}
    assert all(r["sdpa_backend"] for r in ran if r["attention"] != "neighborhood")
