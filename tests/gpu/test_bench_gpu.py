"""The benchmarks' CUDA-only code paths, small and quick, so a GPU session can check them before
the full runs: StyA2K inference rows and the training split (loader, step, loop) on CUDA, the
StyleNAT training iteration with compiled Flex under the training job's switches, and the DDP
worker under torchrun with NCCL when two GPUs are visible. Speed is never asserted."""

from __future__ import annotations

import math
from dataclasses import replace

import pytest
import torch

from sparsegen.bench import common, stya2k, stylenat

pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]
CUDA = torch.device("cuda")


@pytest.fixture(autouse=True)
def _copy_without_git(monkeypatch) -> None:
    monkeypatch.setenv(common.ALLOW_UNKNOWN_COMMIT, "1")


def test_stya2k_inference_and_training_rows_on_cuda(tmp_path) -> None:
    plan = replace(stya2k.plan_for(CUDA, [256]), precisions=("fp32+tf32conv",), images=8,
                   loader_batches=(1, 2), step_calls=(1, 2), loop_steps=(1, 2),
                   train_models=("a2k",))
    rows = stya2k.inference_rows(plan, CUDA, "fp32+tf32conv")
    assert {(r["model"], r["backend"]) for r in rows} == {
        (m, k) for m in stya2k.MODELS for k in stya2k.KERNELS if m != "adain"} | {
        ("adain", "none")}
    assert all(r["status"] == "ok" and r["peak_mem_gib"] > 0 and r["repeats"] >= 3
               for r in rows), rows
    assert all(r["precision"] == "fp32+tf32conv" for r in rows)
    stya2k.add_ratios(rows)
    a2k = next(r for r in rows if r["model"] == "a2k" and r["backend"] == "sdpa")
    assert a2k["ratio_to_adaattn"] > 0 and a2k["attention_scores"] > 0

    trained = stya2k.training_rows(plan, CUDA, tmp_path)
    kinds = {(r["kind"], r.get("model"), r["status"]) for r in trained}
    assert {("train_loader", "", "ok"), ("train_step", "a2k", "ok"),
            ("train_loop", "a2k", "ok")} <= kinds
    looped = next(r for r in trained if r["kind"] == "train_loop" and r["model"] == "a2k")
    assert looped["gpu_hours_per_model"] > 0 and looped["precision"] == "fp32+tf32conv"
    # the switches are restored for whatever runs next
    assert not torch.are_deterministic_algorithms_enabled()


def test_stylenat_iteration_with_compiled_flex() -> None:
    settings = stylenat.train_settings("cuda", preset="smoke", backend="flex")
    with stylenat.training_flags(settings, CUDA) as label:
        timing = stylenat.train_step_timing(settings, CUDA, (2, 2, 1))
    assert timing["status"] == "ok", timing
    assert timing["compile_s"] > 0 and len(timing["plain_s"]) == 2 and timing["r1_steps"] == [16]
    rows = stylenat.train_rows(timing, settings, 1, label, CUDA)
    assert [r["metric"] for r in rows] == ["iteration", "iteration_with_r1"]
    assert all(r["peak_mem_gib"] > 0 and not math.isnan(r["median_ms"]) for r in rows)
    assert label == "fp32+tf32conv"


@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs 2 GPUs")
def test_stylenat_ddp_worker_on_two_gpus() -> None:
    timing = stylenat.launch_ddp(2, "cuda", (1, 1, 1), timeout=300, preset="smoke",
                                 backend="torch")
    assert timing["status"] == "ok" and timing["world_size"] == 2
    assert timing["peak_mem_gib"] > 0
