"""StyleNAT benchmark bookkeeping: the generator widths each attention call is timed at, the
summary rows (throughput ratio, crossover side, GPU-hours) on synthetic timings, failures recorded
as results, the DDP worker under torchrun (gloo on the CPU), and a CPU dry run end to end (columns,
row kinds, skipped backends, paper values). Speed is never asserted."""

from __future__ import annotations

import math
from dataclasses import replace
from typing import Any

import pytest
import torch

from sparsegen.bench import common
from sparsegen.bench import stylenat as bench
from sparsegen.bench.common import COLUMNS
from sparsegen.claims import load_claims
from sparsegen.config import load_params, resolve
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
    assert result["median_ms"] >= 0 and math.isnan(result["peak_mem_gib"])
    assert set(result) <= set(COLUMNS)


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
    paper = round(CLAIMS.cells["stylenat"]["throughput"] / CLAIMS.cells["styleswin"]["throughput"],
                  4)
    assert (row["value"], row["backend"], row["paper_value"]) == (1.1, "flex", paper)
    assert paper == 1.0781 and "claims/stylenat.yaml" in row["paper_source"]
    missing = bench.throughput_ratio([rows[1], _throughput("styleswin", "torch", math.nan,
                                                           "out of memory")])
    assert math.isnan(missing["value"]) and missing["status"] == "no result"


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
    assert math.isnan(row["value"]) and row["status"] == "no result"


def test_cpu_dry_run_writes_every_row_kind(stylenat_dry_run) -> None:
    columns, rows = stylenat_dry_run
    assert columns == list(COLUMNS)
    kinds = [r["kind"] for r in rows]
    assert kinds.count("summary") == 1 + len(bench.CROSSOVERS) + 1  # + GPU-hours
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
    for (model, _), r in throughput.items():  # the paper's numbers, from the claims file
        assert float(r["paper_value"]) == CLAIMS.cells[model]["throughput"]
        assert float(r["paper_params_m"]) == CLAIMS.cells[model]["params"]
        assert r["paper_unit"] == "img/s"

    cost = [r for r in rows if r["kind"] == "attention_cost"]
    assert {int(r["side"]) for r in cost} == {8, 16}
    for r in [*cost, *throughput.values()]:  # dry run: only the torch backend is timed
        runs = r["attention"] not in ("neighborhood", "hydra_na") or r["backend"] == "torch"
        assert r["status"] == ("ok" if runs else "skipped"), r
        assert runs or "dry run on cpu" in r["note"] or (
            r["backend"] == "natten" and "natten is not installed" in r["note"])
    torch_na = {(int(r["side"]), int(r["dilation"])) for r in cost
                if r["attention"] == "neighborhood" and r["backend"] == "torch"}
    assert torch_na == {(8, 1), (16, 1), (16, 2)}  # smoke model: dilations [1, 2] at side 16
    assert {(r["heads"], r["head_dim"], r["batch"]) for r in cost} == {("8", "4", "4")}

    train = {(r["variant"], r["gpus"], r["metric"]): r for r in rows if r["kind"] == "train_step"}
    assert set(train) == {("stylenat", "0", "iteration"), ("stylenat", "0", "iteration_with_r1"),
                          ("stylenat", "2", "iteration"), ("ffhq1024", "0", "iteration")}
    one = train["stylenat", "0", "iteration"]
    assert one["status"] == "ok" and float(one["compile_s"]) > 0 and one["backend"] == "torch"
    assert train["stylenat", "0", "iteration_with_r1"]["status"] == "ok"
    assert train["stylenat", "2", "iteration"]["status"] == "skipped"
    assert train["ffhq1024", "0", "iteration"]["status"] == "skipped"
    hours = next(r for r in rows if r["metric"] == "gpu_hours_per_model")
    assert hours["status"] == "ok" and "1 GPU (no DDP measured)" in hours["derived_from"]
    assert float(hours["value"]) == float(hours["gpu_hours_per_model"]) > 0


def _train(gpus: int, metric: str, ms: float) -> dict:
    return {"kind": "train_step", "variant": "stylenat", "gpus": gpus, "metric": metric,
            "median_ms": ms, "status": "ok", "precision": "fp32+tf32conv"}


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
    # the full benchmark's code paths (compiled Flex in the generator, NATTEN when installed,
    # memory deltas) with 2 timed calls and one side, so a GPU session can check them before the
    # 500-pass run
    monkeypatch.setenv(common.ALLOW_UNKNOWN_COMMIT, "1")  # a copy without .git
    cuda = torch.device("cuda")
    plan = replace(bench.plan_for(cuda, [32]), throughput_calls=(1, 2), cost_calls=(1, 2))
    rows = bench.benchmark(plan, cuda, sections=("throughput", "cost"))
    assert {(r["model"], r["backend"], r["status"]) for r in rows if r["kind"] == "throughput"} == {
        ("stylenat", "torch", "ok"), ("stylenat", "flex", "ok"), ("styleswin", "torch", "ok")}
    cost = [r for r in rows if r["kind"] == "attention_cost"]
    natten = "natten" in bench.available_backends(cuda)
    assert all(r["status"] == ("ok" if natten or r["backend"] != "natten" else "skipped")
               for r in cost), cost
    assert all(r["peak_mem_gib"] > 0 for r in cost if r["status"] == "ok")
    assert {r["backend"] for r in cost} == {"torch", "flex", "natten", "sdpa"}
