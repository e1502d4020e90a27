"""The common benchmark schema and mechanics: both CSVs share one column list, paper values come
from the claims files, a GPU run refuses to record an unknown commit, out-of-memory and a broken
run are recorded rather than lost, precision switches are restored."""

from __future__ import annotations

import ast
import csv
import math

import pytest
import torch

from sparsegen.bench import common
from sparsegen.bench.common import COLUMNS, BenchError, checked_commit, exponent, measure
from sparsegen.claims import load_claims
from sparsegen.provenance import REPO_ROOT, git_commit

CPU, CUDA = torch.device("cpu"), torch.device("cuda")
FULL = "0123456789abcdef0123456789abcdef01234567"


def test_both_benchmarks_write_the_same_columns(stya2k_dry_run, stylenat_dry_run) -> None:
    (a2k_columns, a2k_rows), (nat_columns, nat_rows) = stya2k_dry_run, stylenat_dry_run
    assert a2k_columns == nat_columns == list(COLUMNS)
    for name in ("mean_ms", "median_ms", "std_ms", "peak_mem_gib", "imgs_per_s", "commit",
                 "gpu_hours_per_model", "paper_value", "paper_unit", "paper_source", "torch",
                 "cuda", "cudnn", "natten", "python", "driver", "comparable",
                 "non_comparable_reasons"):
        assert name in COLUMNS
    # one precision vocabulary: a CPU row is fp32 whatever precision a GPU row would have had
    assert {r["precision"] for r in a2k_rows + nat_rows} <= {"fp32", ""}
    assert {r["paper"] for r in a2k_rows} == {"stya2k"}
    assert {r["paper"] for r in nat_rows} == {"stylenat"}


def test_rows_record_the_full_commit_and_environment(stya2k_dry_run, stylenat_dry_run) -> None:
    rows = stya2k_dry_run[1] + stylenat_dry_run[1]
    assert {r["commit"] for r in rows} == {git_commit()}
    if git_commit() != "unknown":  # a checkout: the full hash, not an abbreviation
        assert common.FULL_COMMIT.fullmatch(git_commit())
    assert {r["torch"] for r in rows} == {torch.__version__}  # with its build tag (+cu130)
    assert all(r["python"].count(".") == 2 for r in rows)
    assert {r["natten"] for r in stya2k_dry_run[1]} == {""}  # not relevant to StyA2K
    assert all(r["natten"] for r in stylenat_dry_run[1])      # a version or "absent"


def test_unknown_commit_stops_a_gpu_run_unless_allowed(monkeypatch) -> None:
    for commit in ("unknown", "b9dbc52", FULL[:39]):
        with pytest.raises(BenchError, match="SPARSEGEN_GIT_COMMIT"):
            checked_commit(commit, CUDA)
    assert checked_commit(FULL, CUDA) == FULL
    assert checked_commit(FULL + "-dirty", CUDA) == FULL + "-dirty"
    assert checked_commit("unknown", CPU) == "unknown"  # a dry run records what it has
    monkeypatch.setenv(common.ALLOW_UNKNOWN_COMMIT, "1")
    assert checked_commit("unknown", CUDA) == "unknown"


@pytest.mark.parametrize(("paper", "row", "column", "unit"), [
    ("stya2k", "stya2k", "inference_time", "Sec./Image"),
    ("stya2k", "adaattn", "inference_time", "Sec./Image"),
    ("stylenat", "stylenat", "throughput", "img/s"),
    ("stylenat", "styleswin", "params", "M")])
def test_paper_values_are_read_from_the_claims_file(paper, row, column, unit) -> None:
    claims = load_claims(REPO_ROOT / "pipeline" / "claims" / f"{paper}.yaml")
    claim = common.paper_claim(paper, "1", row, column)
    assert claim["paper_value"] == claims.tables["1"].cells[row][column]
    assert claim["paper_unit"] == unit
    assert claim["paper_source"] == (f"pipeline/claims/{paper}.yaml: table 1, row {row}, "
                                     f"column {column}")


def test_no_paper_value_is_typed_into_the_benchmarks() -> None:
    printed = {0.0121, 0.0269, 32.56, 30.20, 48.92, 48.93}  # Table 1 cells of the two papers
    for module in ("common.py", "stya2k.py", "stylenat.py"):
        tree = ast.parse((REPO_ROOT / "src" / "sparsegen" / "bench" / module).read_text())
        numbers = {n.value for n in ast.walk(tree) if isinstance(n, ast.Constant)
                   and isinstance(n.value, float)}
        assert not numbers & printed, module


def test_a_row_outside_the_schema_is_a_bug(tmp_path) -> None:
    with pytest.raises(KeyError, match="mean_s"):
        common.write_csv(tmp_path / "x.csv", [{"kind": "inference", "mean_s": 1.0}])
    path = common.write_csv(tmp_path / "x.csv", [{"kind": "inference", "mean_ms": 1.0}])
    with path.open() as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == list(COLUMNS) and rows[0]["mean_ms"] == "1.0"


def test_a_broken_run_keeps_its_rows(tmp_path) -> None:
    rows = [{"kind": "inference", "status": "ok"}]

    def finish(r: dict) -> dict:
        return {"paper": "stya2k", **r}

    with pytest.raises(ZeroDivisionError), \
            common.rows_kept_on_failure("stya2k", tmp_path / "x.csv", rows, finish):
        rows.append({"kind": "train_step", "status": "ok"})
        _ = 1 / 0
    with (tmp_path / "x.csv").open() as f:
        kept = list(csv.DictReader(f))
    assert [r["kind"] for r in kept] == ["inference", "train_step", "run"]
    assert kept[-1]["status"] == "error" and "ZeroDivisionError" in kept[-1]["note"]


@pytest.mark.parametrize("name", ["fp32", "fp32+tf32conv", "tf32"])
def test_precisions_set_and_restore_tf32(name: str) -> None:
    matmul, cudnn = torch.backends.cuda.matmul, torch.backends.cudnn
    before = (matmul.allow_tf32, cudnn.allow_tf32, cudnn.benchmark)
    with common.precision(name, cudnn_benchmark=True):
        assert (matmul.allow_tf32, cudnn.allow_tf32) == common.PRECISIONS[name]
        assert cudnn.benchmark
    assert (matmul.allow_tf32, cudnn.allow_tf32, cudnn.benchmark) == before
    assert common.precision_label(name, CUDA) == name
    assert common.precision_label(name, CPU) == "fp32"


def test_training_switches_are_restored() -> None:
    before = torch.are_deterministic_algorithms_enabled()
    with common.training_switches(True):
        assert torch.are_deterministic_algorithms_enabled()
        assert torch.is_deterministic_algorithms_warn_only_enabled()
    assert torch.are_deterministic_algorithms_enabled() == before


def test_out_of_memory_is_a_result() -> None:
    def explode() -> None:
        raise torch.OutOfMemoryError("CUDA out of memory")

    result = measure(explode, CPU, warmup=1, repeats=2)
    assert result["status"] == "out of memory" and math.isnan(result["mean_ms"])


def test_measure_times_a_call() -> None:
    calls = []
    result = measure(lambda: calls.append(torch.ones(8).sum()), CPU, warmup=1, repeats=3)
    assert result["status"] == "ok" and result["repeats"] == 3 and len(calls) == 4
    assert result["median_ms"] > 0 and result["mean_ms"] >= 0
    assert set(result) <= set(COLUMNS)


@pytest.mark.parametrize(("t2", "expected"), [(4.0, 1.0), (16.0, 2.0)])
def test_exponent_of_cost_against_pixels(t2: float, expected: float) -> None:
    assert exponent(1.0, t2, 512**2, 1024**2) == pytest.approx(expected)
