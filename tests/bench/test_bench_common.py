"""Benchmark bookkeeping: out-of-memory is recorded, not raised; ratios and growth exponents."""

from __future__ import annotations

import math

import pytest
import torch

from sparsegen.bench.common import exponent, measure
from sparsegen.bench.stya2k import _add_ratios


def test_out_of_memory_is_a_result() -> None:
    def explode() -> None:
        raise torch.OutOfMemoryError("CUDA out of memory")

    result = measure(explode, torch.device("cpu"), warmup=1, repeats=2)
    assert result["status"] == "out of memory" and math.isnan(result["mean_s"])


def test_measure_times_a_call() -> None:
    result = measure(lambda: torch.ones(8).sum(), torch.device("cpu"), warmup=1, repeats=3)
    assert result["status"] == "ok" and result["repeats"] == 3 and result["mean_s"] > 0


@pytest.mark.parametrize(("t2", "expected"), [(4.0, 1.0), (16.0, 2.0)])
def test_exponent_of_cost_against_pixels(t2: float, expected: float) -> None:
    assert exponent(1.0, t2, 512**2, 1024**2) == pytest.approx(expected)


def test_ratios_and_exponents_pair_the_right_rows() -> None:
    def row(model: str, size: int, t: float, status: str = "ok") -> dict:
        return {"model": model, "attention": "sdpa", "size": size, "mean_s": t, "status": status,
                "precision": "fp32"}

    rows = [row("a2k", 512, 0.01), row("a2k", 1024, 0.04), row("adaattn", 512, 0.02),
            row("adaattn", 1024, math.nan, "out of memory")]
    _add_ratios(rows)
    assert rows[0]["ratio_to_adaattn"] == 0.5
    assert math.isnan(rows[1]["ratio_to_adaattn"])  # the peer ran out of memory
    assert rows[1]["time_exponent_vs_half_side"] == pytest.approx(1.0)
    assert math.isnan(rows[0]["time_exponent_vs_half_side"])
