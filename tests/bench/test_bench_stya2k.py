"""StyA2K benchmark bookkeeping: the models timed and their settings, ratios and exponents pair
the right rows, the paper's numbers come from the claims file, and a CPU dry run writes every
row kind (inference, loader alone, GPU step alone, the loop with both). Speed is never
asserted."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from sparsegen.bench import stya2k as bench
from sparsegen.claims import load_claims
from sparsegen.io import read_image, write_image
from sparsegen.provenance import REPO_ROOT

CLAIMS = load_claims(REPO_ROOT / "pipeline" / "claims" / "stya2k.yaml").tables["1"]


def test_adaattn_dense_is_the_adaattn_variant_with_the_dense_transform() -> None:
    dense, adaattn = bench.model_settings("adaattn_dense"), bench.model_settings("adaattn")
    assert dense["model"].pop("transform") == "adaattn_dense"
    assert adaattn["model"].pop("transform") == "adaattn"
    assert dense == adaattn
    assert [bench.model_settings(m)["model"]["transform"] for m in bench.MODELS] == [
        "a2k", "all_to_all", "adaattn", "adaattn_dense", "adain"]
    assert bench.model_settings("a2k")["weights"] == "random"


def _row(model: str, side: int, ms: float, backend: str = "sdpa", precision: str = "fp32",
         status: str = "ok") -> dict:
    return {"kind": "inference", "model": model, "backend": backend, "side": side,
            "mean_ms": ms, "status": status, "precision": precision}


def test_ratios_and_exponents_pair_the_right_rows() -> None:
    rows = [_row("a2k", 512, 10.0), _row("a2k", 1024, 40.0), _row("adaattn", 512, 20.0),
            _row("adaattn", 1024, math.nan, status="out of memory"),
            _row("adaattn_dense", 512, 40.0), _row("adaattn_dense", 1024, 80.0),
            # other kernel and precision: must not be paired with the rows above
            _row("a2k", 512, 7.0, backend="explicit"), _row("adaattn", 512, 70.0, "explicit"),
            _row("a2k", 512, 3.0, precision="fp32+tf32conv"),
            _row("adaattn", 512, 6.0, precision="fp32+tf32conv"),
            _row("adain", 512, 5.0, backend="none")]
    bench.add_ratios(rows)
    a2k, a2k_big, *_ = rows
    assert (a2k["ratio_to_adaattn"], a2k["ratio_to_adaattn_dense"]) == (0.5, 0.25)
    assert math.isnan(a2k_big["ratio_to_adaattn"])  # the peer ran out of memory
    assert a2k_big["ratio_to_adaattn_dense"] == 0.5
    assert a2k_big["time_exponent_vs_half_side"] == pytest.approx(1.0)
    assert math.isnan(a2k["time_exponent_vs_half_side"])
    assert rows[6]["ratio_to_adaattn"] == 0.1 and math.isnan(rows[6]["ratio_to_adaattn_dense"])
    assert rows[8]["ratio_to_adaattn"] == 0.5
    assert rows[10]["ratio_to_adaattn"] == 0.25  # AdaIN (no attention) against sdpa rows


def test_ratio_summaries_carry_the_papers_ratio_from_the_claims() -> None:
    rows = [_row("a2k", 512, 10.0), _row("adaattn", 512, 20.0), _row("adaattn_dense", 512, 40.0),
            _row("a2k", 1024, 1.0), _row("adaattn", 1024, 1.0)]
    plan = bench.plan_for(torch.device("cpu"), [512, 1024])
    summaries = {r["metric"]: r for r in bench.ratio_summaries(rows, plan)}
    peer, dense = summaries["time_ratio[a2k/adaattn]"], summaries["time_ratio[a2k/adaattn_dense]"]
    assert (peer["value"], peer["side"], peer["status"]) == (0.5, 512, "ok")
    cells = CLAIMS.cells
    assert peer["paper_value"] == round(cells["stya2k"]["inference_time"]
                                        / cells["adaattn"]["inference_time"], 4) == 0.4498
    assert "inference_time" in peer["paper_source"] and "paper_value" not in dense
    assert dense["value"] == 0.25


def test_inference_rows_at_512_carry_the_papers_seconds() -> None:
    assert bench.inference_claim("a2k", 512)["paper_value"] == \
        CLAIMS.cells["stya2k"]["inference_time"]
    assert bench.inference_claim("adaattn", 512)["paper_value"] == \
        CLAIMS.cells["adaattn"]["inference_time"]
    assert bench.inference_claim("adaattn", 1024) == {}
    assert bench.inference_claim("adaattn_dense", 512) == {}  # not the paper's AdaAttN


@pytest.mark.parametrize(("first_s", "calls"), [(0.001, (10, 50)), (0.3, (1, 5)), (4.0, (0, 3))])
def test_inference_calls_follow_the_first_calls_time(first_s, calls) -> None:
    assert bench.inference_calls(first_s) == calls


def test_photo_like_images_compress_like_photos(tmp_path) -> None:
    rng = np.random.default_rng(0)
    image = bench.photo_like(rng, 128)
    assert image.dtype == np.uint8 and image.shape == (128, 128, 3)
    write_image(tmp_path / "photo.png", image)
    write_image(tmp_path / "noise.png", rng.integers(0, 256, (128, 128, 3), dtype=np.uint8))
    assert (tmp_path / "photo.png").stat().st_size < 0.8 * (tmp_path / "noise.png").stat().st_size
    np.testing.assert_array_equal(read_image(tmp_path / "photo.png"), image)


def test_cpu_dry_run_writes_every_row_kind(stya2k_dry_run) -> None:
    _, rows = stya2k_dry_run
    inference = {(r["model"], r["backend"]): r for r in rows if r["kind"] == "inference"}
    assert set(inference) == {(m, k) for m in bench.MODELS for k in bench.KERNELS
                              if m != "adain"} | {("adain", "none")}
    for (_, kernel), r in inference.items():
        assert r["status"] == ("skipped" if kernel == "explicit" else "ok"), r
        assert r["side"] == "64" and r["precision"] == "fp32"
    assert inference["adaattn_dense", "sdpa"]["variant"] == \
        "adaattn + model.transform=adaattn_dense"
    assert int(inference["a2k", "sdpa"]["attention_scores"]) > 0
    assert inference["adain", "none"]["attention_scores"] == "0"

    # ratios: the A2K row over the peers' rows of the same side, kernel and precision
    a2k = inference["a2k", "sdpa"]
    for peer in bench.PEERS:
        expected = float(a2k["mean_ms"]) / float(inference[peer, "sdpa"]["mean_ms"])
        assert float(a2k[f"ratio_to_{peer}"]) == pytest.approx(expected, abs=1e-4)
    summaries = {r["metric"]: r for r in rows if r["kind"] == "summary"}
    assert set(summaries) == {"time_ratio[a2k/adaattn]", "time_ratio[a2k/adaattn_dense]"}
    assert summaries["time_ratio[a2k/adaattn]"]["value"] == a2k["ratio_to_adaattn"]
    assert float(summaries["time_ratio[a2k/adaattn]"]["paper_value"]) == 0.4498
    assert "side 512 was not measured" in summaries["time_ratio[a2k/adaattn]"]["note"]

    # the training cost, split: the loader alone (1 and 4 threads), the step alone, the loop
    loader = {r["threads"]: r for r in rows if r["kind"] == "train_loader"}
    assert set(loader) == {"1", str(bench.TRAIN_THREADS)}
    assert all(r["status"] == "ok" and float(r["mean_ms"]) > 0 for r in loader.values())
    assert loader["1"]["batch"] == "1" and loader["1"]["side"] == "64"  # smoke: 64² crops
    assert "PNG" in loader["1"]["note"]
    trained = {(r["kind"], r["model"]): r for r in rows
               if r["kind"] in ("train_step", "train_loop")}
    assert set(trained) == {(k, m) for k in ("train_step", "train_loop") for m in bench.MODELS}
    for (_, model), r in trained.items():
        assert r["status"] == ("ok" if model == "adain" else "skipped"), r
    step, looped = trained["train_step", "adain"], trained["train_loop", "adain"]
    assert float(step["mean_ms"]) > 0 and looped["threads"] == str(bench.TRAIN_THREADS)
    assert looped["deterministic"] == "True"
    hours = float(looped["mean_ms"]) / 1e3 * int(looped["iterations"]) / 3600
    assert float(looped["gpu_hours_per_model"]) == pytest.approx(hours, abs=1e-4)
    assert "loop steps" in looped["derived_from"]
    assert all(r["comparable"] == "False" and r["non_comparable_reasons"] for r in rows)
