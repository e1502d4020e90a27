"""StyleNAT benchmark bookkeeping: the generator widths each attention call is timed at, the
summary rows (throughput ratio, crossover side) on synthetic timings, failures recorded as results,
and a CPU dry run end to end (columns, row kinds, skipped backends). Speed is never asserted."""

from __future__ import annotations

import csv
import math
from dataclasses import replace
from typing import Any

import pytest
import torch

from sparsegen.bench import stylenat as bench
from sparsegen.config import load_params, resolve

CPU = torch.device("cpu")


def _model(preset: str) -> dict[str, Any]:
    params = load_params(overrides={"preset": preset, "weights": "random"})
    return resolve(params, "stylenat", "stylenat", check=False)["model"]


@pytest.mark.parametrize(("side", "heads", "head_dim", "dilations", "window"), [
    (32, 16, 32, (1, 4), 8), (64, 16, 32, (1, 8), 8), (128, 8, 32, (1, 16), 8),
    (256, 4, 32, (1, 32), 8), (8, 16, 32, (1,), 8)])
def test_levels_use_the_ffhq256_generator_widths(side: int, heads: int, head_dim: int,
                                                  dilations: tuple[int, ...], window: int) -> None:
    # official FFHQ-256: widths 512 (<=64), 256, 128; head_dim 32; dilations [1, side/8]
    level = bench.level_of(_model("paper"), side)
    assert (level.heads, level.head_dim, level.dilations, level.window, level.kernel) == (
        heads, head_dim, dilations, window, 7)


@pytest.mark.parametrize("side", [4, 48, 512])
def test_sizes_that_are_not_neighbourhood_levels_are_refused(side: int) -> None:
    with pytest.raises(ValueError, match=f"--sizes: {side} is not"):
        bench.level_of(_model("paper"), side)


def test_every_attention_is_configured_at_a_level() -> None:
    configs = bench.attention_configs(bench.level_of(_model("paper"), 64))
    na = {(c["backend"], c["rpb"], c["dilation"]) for c in configs
          if c["attention"] == "neighborhood"}
    assert na == {(b, rpb, d) for d in (1, 8) for b, rpb in
                  [("torch", True), ("flex", True), ("flex", False), ("natten", False)]}
    assert [(c["window"], c["shift"]) for c in configs if c["attention"] == "window"] == [
        (8, 0), (8, 4)]
    assert [c["backend"] for c in configs if c["attention"] == "dense"] == ["sdpa"]
    small = bench.attention_configs(bench.level_of(_model("paper"), 8))
    assert [c["shift"] for c in small if c["attention"] == "window"] == [0]  # window == side


def test_dense_and_full_neighbourhood_calls_see_the_same_inputs() -> None:
    # kernel == side: neighbourhood attention is full attention, so the dense SDPA call (which
    # flattens the heads-last inputs) must give the same output as the neighbourhood call
    level = bench.Level(side=7, heads=2, head_dim=4, kernel=7, dilations=(1,), window=7)
    dense = bench.attention_call({"attention": "dense"}, level, 2, CPU)()
    na = bench.attention_call({"attention": "neighborhood", "backend": "torch", "rpb": False,
                               "dilation": 1}, level, 2, CPU)()
    torch.testing.assert_close(dense.transpose(1, 2).reshape(na.shape), na, atol=1e-5,
                               rtol=1e-5)


def test_calls_are_counted_and_timed() -> None:
    calls = []
    result = bench.measure_calls(lambda: calls.append(1), CPU, warmup=3, repeats=4)
    assert len(calls) == 7 and result["status"] == "ok" and result["repeats"] == 4
    assert result["median_ms"] >= 0 and math.isnan(result["peak_mem_mib"])


@pytest.mark.parametrize(("error", "status"), [
    (torch.OutOfMemoryError("CUDA out of memory"), "out of memory"),
    (RuntimeError("flex compilation failed"), "error")])
def test_failures_are_results(error: Exception, status: str) -> None:
    def fail() -> None:
        raise error

    result = bench.measure_calls(fail, CPU, warmup=1, repeats=2)
    assert result["status"] == status and math.isnan(result["median_ms"])
    assert status == "out of memory" or "flex compilation failed" in result["note"]


def test_a_bug_in_the_benchmark_is_not_hidden_as_a_result() -> None:
    with pytest.raises(TypeError):
        bench.measure_calls(lambda: len(3), CPU, warmup=1, repeats=2)


def _throughput(model: str, backend: str, imgs: float, status: str = "ok") -> dict:
    return {"kind": "throughput", "model": model, "backend": backend, "imgs_per_s": imgs,
            "status": status}


def test_throughput_ratio_takes_the_best_stylenat_backend() -> None:
    rows = [_throughput("stylenat", "torch", 20.0), _throughput("stylenat", "flex", 33.0),
            _throughput("styleswin", "torch", 30.0)]
    row = bench.throughput_ratio(rows)
    assert (row["value"], row["backend"], row["paper_value"]) == (1.1, "flex", 1.078)
    missing = bench.throughput_ratio([rows[1], _throughput("styleswin", "torch", math.nan,
                                                           "out of memory")])
    assert math.isnan(missing["value"]) and missing["status"] == "n/a"


def _cost(attention: str, backend: str, side: int, ms: float, *, rpb: bool = False,
          dilation: int = 1, max_dilation: int = 4, status: str = "ok") -> dict:
    return {"kind": "attention_cost", "attention": attention, "backend": backend, "side": side,
            "median_ms": ms, "rpb": rpb, "dilation": dilation, "max_dilation": max_dilation,
            "status": status}


def _synthetic() -> list[dict]:
    rows = []
    dense = {32: 1.0, 64: 4.0, 128: 16.0, 256: math.nan}
    for side, ms in dense.items():
        rows.append(_cost("dense", "sdpa", side, ms,
                          status="ok" if side < 256 else "out of memory"))
        d = side // 8
        rows += [  # torch (rpb) beats dense from 128, natten (no rpb) already from 64
            _cost("neighborhood", "torch", side, side / 12, rpb=True, max_dilation=d),
            _cost("neighborhood", "natten", side, side / 32, max_dilation=d),
            # dilated calls are slower; dilated torch only wins where dense ran out of memory
            _cost("neighborhood", "torch", side, side, rpb=True, dilation=d, max_dilation=d),
            _cost("neighborhood", "natten", side, side / 20, dilation=d, max_dilation=d),
            _cost("neighborhood", "flex", side, math.nan, rpb=True, status="error",
                  max_dilation=d),
            _cost("window", "torch", side, 0.001)]  # never counts as neighbourhood attention
    return rows


@pytest.mark.parametrize(("metric", "side", "backend"), [
    ("crossover_side[d=1, rpb]", 128, "torch"), ("crossover_side[d=1, any]", 64, "natten"),
    ("crossover_side[d=max, rpb]", 256, "torch"), ("crossover_side[d=max, any]", 64, "natten")])
def test_crossover_is_the_first_side_where_neighbourhood_beats_dense(metric: str, side: int,
                                                                     backend: str) -> None:
    row = bench.crossover(_synthetic(), metric)
    assert (row["value"], row["backend"], row["status"]) == (side, backend, "ok")
    assert "faster at every larger side" in row["note"]
    assert (side == 256) == ("dense ran out of memory" in row["note"])


def test_no_crossover_when_dense_always_wins() -> None:
    rows = [r for r in _synthetic() if r["side"] < 128]
    row = bench.crossover(rows, "crossover_side[d=1, rpb]")
    assert math.isnan(row["value"]) and row["status"] == "n/a"


def test_cpu_dry_run_writes_every_row_kind(tmp_path) -> None:
    out = bench.run(tmp_path / "stylenat.csv", sizes=[8, 16], device_name="cpu")
    with out.open() as f:
        reader = csv.DictReader(f)
        assert tuple(reader.fieldnames) == bench.COLUMNS
        rows = list(reader)
    kinds = [r["kind"] for r in rows]
    assert kinds.count("summary") == 1 + len(bench.CROSSOVERS)
    assert {r["device"] for r in rows} == {bench.environment(CPU)["device"]}
    assert {r["precision"] for r in rows} == {"fp32"}

    throughput = {(r["model"], r["backend"]): r for r in rows if r["kind"] == "throughput"}
    assert set(throughput) == {("stylenat", "torch"), ("stylenat", "flex"),
                               ("styleswin", "torch")}
    nat = throughput["stylenat", "torch"]
    assert nat["status"] == "ok" and float(nat["imgs_per_s"]) > 0 and nat["repeats"] == "2"
    smoke = bench.build_generator({**_model("smoke"), "backend": "torch"})
    assert float(nat["params_m"]) == pytest.approx(
        sum(p.numel() for p in smoke.parameters()) / 1e6, abs=1e-3)

    cost = [r for r in rows if r["kind"] == "attention_cost"]
    assert {int(r["side"]) for r in cost} == {8, 16}
    for r in [*cost, *throughput.values()]:  # dry run: only the torch backend is timed
        runs = r["attention"] not in ("neighborhood", "hydra_na") or r["backend"] == "torch"
        assert r["status"] == ("ok" if runs else "skipped"), r
        assert runs or "dry run on cpu" in r["note"]
    torch_na = {(int(r["side"]), int(r["dilation"])) for r in cost
                if r["attention"] == "neighborhood" and r["backend"] == "torch"}
    assert torch_na == {(8, 1), (16, 1), (16, 2)}  # smoke model: dilations [1, 2] at side 16
    assert {(r["heads"], r["head_dim"], r["batch"]) for r in cost} == {("8", "4", "4")}


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_every_backend_runs_on_the_gpu() -> None:
    # the full benchmark's code paths (compiled Flex in the generator, NATTEN, memory deltas) with
    # 2 timed calls and one side, so a GPU session can check them before the 500-pass run
    cuda = torch.device("cuda")
    plan = replace(bench.plan_for(cuda, [32]), throughput_calls=(1, 2), cost_calls=(1, 2))
    rows = bench.benchmark(plan, cuda)
    assert {(r["model"], r["backend"], r["status"]) for r in rows if r["kind"] == "throughput"} == {
        ("stylenat", "torch", "ok"), ("stylenat", "flex", "ok"), ("styleswin", "torch", "ok")}
    cost = [r for r in rows if r["kind"] == "attention_cost"]
    assert all(r["status"] == "ok" and r["peak_mem_mib"] > 0 for r in cost), cost
    assert {r["backend"] for r in cost} == {"torch", "flex", "natten", "sdpa"}
