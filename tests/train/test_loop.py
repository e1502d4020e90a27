"""The shared training loop: resume equals uninterrupted, checkpoints carry provenance."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import torch
from torch import nn

from sparsegen.train import checkpoint, loop, schedules
from sparsegen.train.seeding import step_seed


class ToyTask:
    """Noisy linear regression with dropout: every source of randomness the loop must control."""

    def __init__(self, seed: int = 0) -> None:
        torch.manual_seed(seed)
        self.net = nn.Sequential(nn.Linear(4, 8), nn.Dropout(0.2), nn.Linear(8, 1))
        self.modules = {"net": self.net}
        self.optimizers = {"adam": torch.optim.Adam(self.net.parameters(), lr=1e-2)}
        self.checkpoint_extra = {"task": "toy"}
        self.w = torch.tensor([[1.0], [-2.0], [0.5], [3.0]])

    def batch(self, step: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        x = torch.randn(16, 4, generator=generator)
        return x, x @ self.w + 0.1 * torch.randn(16, 1, generator=generator)

    def train_step(self, step: int, batch: tuple[torch.Tensor, torch.Tensor]) -> dict[str, float]:
        x, y = batch
        loss = ((self.net(x) - y) ** 2).mean()
        opt = self.optimizers["adam"]
        opt.zero_grad()
        loss.backward()
        opt.step()
        return {"loss": loss.item()}


SETTINGS = {"paper": "toy", "variant": "v", "seed": 3}


def _cfg(stop_after: int | None = None, prefetch: int = 2) -> loop.LoopConfig:
    return loop.LoopConfig(iterations=20, checkpoint_every=5, log_every=2, seed=3,
                           lr_factor=schedules.constant_then_linear(20, 10),
                           stop_after=stop_after, prefetch=prefetch)


def _train(run_dir: Path, stop_after: int | None = None, prefetch: int = 2) -> bool:
    return loop.run(ToyTask(), _cfg(stop_after, prefetch), SETTINGS, run_dir,
                    run_dir / "final.pt", run_dir / "train_log.csv")


def _final_state(run_dir: Path) -> dict[str, torch.Tensor]:
    return checkpoint.load(run_dir / "final.pt")["modules"]["net"]


def test_resumed_run_equals_uninterrupted(tmp_path: Path) -> None:
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    assert _train(straight)
    assert not _train(resumed, stop_after=7)  # ends early, after a checkpoint at step 7
    assert not (resumed / "final.pt").exists()
    assert checkpoint.load(resumed / "ckpt" / loop.LAST)["step"] == 7
    assert _train(resumed)  # the same call again resumes at 7 and completes
    a, b = _final_state(straight), _final_state(resumed)
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key
    with open(straight / "train_log.csv") as f:
        straight_rows = list(csv.DictReader(f))
    with open(resumed / "train_log.csv") as f:
        resumed_rows = list(csv.DictReader(f))
    assert [r["step"] for r in resumed_rows] == [str(s) for s in range(2, 21, 2)]
    assert [r["loss"] for r in resumed_rows] == [r["loss"] for r in straight_rows]


def test_prefetch_does_not_change_results(tmp_path: Path) -> None:
    _train(tmp_path / "inline", prefetch=0)
    _train(tmp_path / "ahead", prefetch=3)
    a, b = _final_state(tmp_path / "inline"), _final_state(tmp_path / "ahead")
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_training_reduces_loss(tmp_path: Path) -> None:
    _train(tmp_path)
    with open(tmp_path / "train_log.csv") as f:
        losses = [float(r["loss"]) for r in csv.DictReader(f)]
    assert losses[-1] < 0.5 * losses[0]


def test_checkpoint_carries_settings_commit_and_versions(tmp_path: Path) -> None:
    _train(tmp_path)
    ckpt = checkpoint.load(tmp_path / "final.pt")
    assert ckpt["settings"] == SETTINGS
    assert ckpt["extra"] == {"task": "toy", "world_size": 1}
    assert ckpt["step"] == 20
    assert ckpt["git_commit"]
    assert "torch" in ckpt["versions"]


def test_checkpoint_of_other_settings_is_kept_aside(tmp_path: Path) -> None:
    _train(tmp_path, stop_after=5)
    other = loop.run(ToyTask(), _cfg(), {**SETTINGS, "seed": 4}, tmp_path,
                     tmp_path / "final.pt", tmp_path / "train_log.csv")
    assert other
    stale = list((tmp_path / "ckpt").glob("last.stale-*.pt"))
    assert len(stale) == 1 and checkpoint.load(stale[0])["step"] == 5


def test_unreadable_checkpoint_names_the_file(tmp_path: Path) -> None:
    bad = tmp_path / "ckpt.pt"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match=str(bad)):
        checkpoint.load(bad)


def test_step_seed_depends_only_on_seed_and_step() -> None:
    assert step_seed(0, 5) == step_seed(0, 5)
    assert len({step_seed(0, s) for s in range(100)}) == 100
    assert step_seed(0, 5) != step_seed(1, 5) != step_seed(0, 5, stream=1)


@pytest.mark.parametrize(("step", "expected"), [(0, 1.0), (9, 1.0), (10, 1.0), (15, 0.5),
                                                (20, 0.0)])
def test_linear_schedule(step: int, expected: float) -> None:
    assert schedules.constant_then_linear(20, 10)(step) == pytest.approx(expected)


def test_step_schedule() -> None:
    f = schedules.step_decay(decay_start=2, every=1, gamma=0.3)
    assert [round(f(s), 6) for s in range(5)] == [1.0, 1.0, 0.3, 0.09, 0.027]


def test_resume_with_another_process_count_is_reported(tmp_path: Path, capsys) -> None:
    _train(tmp_path, stop_after=5)
    last = tmp_path / "ckpt" / loop.LAST
    ckpt = checkpoint.load(last)
    assert ckpt["extra"]["world_size"] == 1
    ckpt["extra"]["world_size"] = 2  # as if written under torchrun --nproc_per_node 2
    torch.save(ckpt, last)
    capsys.readouterr()
    assert _train(tmp_path)
    out = capsys.readouterr().out
    assert "written by a run of 2 process(es), this run has 1" in out


# ---------------------------------------------------------------------------------------------
# What a run resumes from: only a checkpoint made from the same inputs; code alone may differ.


def _data_settings(root: Path, code: str = "code-a") -> dict:
    """Settings that read a prepared dataset `images` under root (a manifest is enough)."""
    from sparsegen.data.manifest import write_manifest

    if not (root / "images" / "manifest.csv").exists():
        write_manifest(root / "images", [{"id": "a", "split": "train", "path": "a.png",
                                          "sha256": "0" * 64}])
    return {**SETTINGS, "paths": {"prepared": str(root)}, "code": code,
            "datasets": {"images": {"name": "images"}}}


def _run(run_dir: Path, settings: dict, stop_after: int | None = None) -> loop.Outcome:
    return loop.run(ToyTask(), _cfg(stop_after), settings, run_dir, run_dir / "final.pt",
                    run_dir / "train_log.csv", kept_dir=run_dir / "kept")


def test_a_complete_run_rewrites_every_output_from_its_checkpoint(tmp_path: Path, capsys
                                                                   ) -> None:
    settings = _data_settings(tmp_path / "prepared")
    run_dir = tmp_path / "run"
    assert _run(run_dir, settings)
    log = (run_dir / "train_log.csv").read_text()
    final = _final_state(run_dir)
    (run_dir / "train_log.csv").unlink()  # as Snakemake deletes a rerun job's outputs
    (run_dir / "final.pt").unlink()
    capsys.readouterr()
    outcome = _run(run_dir, settings)
    assert outcome and outcome.step == 20
    assert "resuming from" in capsys.readouterr().out
    assert (run_dir / "train_log.csv").read_text() == log  # the rows come from the checkpoint
    assert all(torch.equal(final[k], _final_state(run_dir)[k]) for k in final)


def test_other_prepared_data_starts_afresh_and_says_why(tmp_path: Path, capsys) -> None:
    prepared = tmp_path / "prepared"
    settings = _data_settings(prepared)
    run_dir = tmp_path / "run"
    assert not _run(run_dir, settings, stop_after=5)
    manifest = prepared / "images" / "manifest.csv"
    manifest.write_text(manifest.read_text())  # rewritten, same bytes: resumes
    capsys.readouterr()
    assert not _run(run_dir, settings, stop_after=10)
    assert "resuming from" in capsys.readouterr().out
    manifest.write_text(manifest.read_text().replace("0" * 64, "1" * 64))  # other data
    assert _run(run_dir, settings)
    out = capsys.readouterr().out
    assert "other prepared data for images" in out and "starting afresh" in out
    assert len(list((run_dir / "ckpt").glob("last.stale-*.pt"))) == 1
    straight = tmp_path / "straight"
    assert _run(straight, settings)  # the fresh run equals an uninterrupted one on the new data
    a, b = _final_state(straight), _final_state(run_dir)
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_other_weights_or_upstream_checkpoint_start_afresh(tmp_path: Path, capsys) -> None:
    settings = {**_data_settings(tmp_path / "prepared"), "weights_state": {"vgg": "random-init"}}
    run_dir = tmp_path / "run"
    assert not _run(run_dir, settings, stop_after=5)
    capsys.readouterr()
    assert not _run(run_dir, {**settings, "weights_state": {"vgg": "ab" * 32}}, stop_after=6)
    assert "other pretrained weights for vgg" in capsys.readouterr().out
    upstream = tmp_path / "up.pt"
    upstream.write_bytes(b"one")
    uses = {"encoder": {"variant": "enc", "checkpoint": str(upstream)}}
    assert not _run(run_dir, {**settings, "uses": uses}, stop_after=7)
    upstream.write_bytes(b"two")
    capsys.readouterr()
    assert not _run(run_dir, {**settings, "uses": uses}, stop_after=8)
    assert "other upstream checkpoint for encoder" in capsys.readouterr().out


def test_a_code_change_alone_resumes_and_the_lineage_records_it(tmp_path: Path, capsys) -> None:
    from sparsegen import judge
    from sparsegen.train.checkpoint import training_facts

    prepared = tmp_path / "prepared"
    run_dir = tmp_path / "run"
    assert not _run(run_dir, _data_settings(prepared, code="code-a"), stop_after=5)
    capsys.readouterr()
    assert _run(run_dir, _data_settings(prepared, code="code-b"))
    out = capsys.readouterr().out
    assert "resuming from" in out and "code changed since step 5" in out
    final = checkpoint.load(run_dir / "final.pt")
    assert [(e["code"], e["from_step"]) for e in final["lineage"]] == [("code-a", 0),
                                                                       ("code-b", 5)]
    facts = training_facts(final)
    assert facts["code"] == ["code-a", "code-b"]
    record = _record_with(facts)
    assert any(r.startswith("mixed lineage: training resumed across 2 code versions")
               for r in judge.reasons(record, {"data": "x"}, {}))
    straight = tmp_path / "straight"
    assert _run(straight, _data_settings(prepared, code="code-a"))
    assert training_facts(checkpoint.load(straight / "final.pt"))["code"] == ["code-a"]


def _record_with(training: dict):
    from sparsegen.metrics.records import Measurement, ResultRecord

    record = ResultRecord.from_measurement("l1", False, Measurement(1.0, 1, {}))
    record.facts = {"training": training}
    return record


def test_a_deadline_stops_checkpointed_and_the_next_attempt_resumes(tmp_path: Path) -> None:
    straight, stopped = tmp_path / "straight", tmp_path / "stopped"
    assert _train(straight)
    cfg = loop.LoopConfig(**{**_cfg().__dict__, "deadline": 0.0})  # already past
    outcome = loop.run(ToyTask(), cfg, SETTINGS, stopped, stopped / "final.pt",
                       stopped / "train_log.csv")
    assert not outcome and outcome.reason == "deadline" and outcome.step == 1
    assert checkpoint.load(stopped / "ckpt" / loop.LAST)["step"] == 1
    assert not (stopped / "final.pt").exists()
    assert _train(stopped)
    a, b = _final_state(straight), _final_state(stopped)
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_kept_checkpoints_are_published_with_their_hashes(tmp_path: Path) -> None:
    from sparsegen.provenance import sha256_file

    cfg = loop.LoopConfig(**{**_cfg().__dict__, "keep_every": 5})
    run_dir = tmp_path / "run"
    assert loop.run(ToyTask(), cfg, SETTINGS, run_dir, run_dir / "final.pt",
                    run_dir / "log.csv", kept_dir=run_dir / "kept")
    index = json.loads((run_dir / "kept" / loop.KEPT_INDEX).read_text())["checkpoints"]
    assert [e["step"] for e in index] == [5, 10, 15]  # the final checkpoint is not repeated
    for entry in index:
        path = run_dir / "kept" / entry["file"]
        assert sha256_file(path) == entry["sha256"]
        assert checkpoint.load(path)["step"] == entry["step"]
    assert not checkpoint.load(run_dir / "kept" / index[0]["file"])["optimizers"]


@pytest.mark.parametrize("step,expected", [(0, 0.25), (3, 1.0), (4, 1.0), (8, 0.5), (12, 0.0),
                                           (20, 0.0)])
def test_warmup_linear_schedule(step, expected):
    """Warm-up over 4 steps ((s + 1) / 4), then linearly from 1 at step 4 to 0 at step 12."""
    assert schedules.warmup_linear(4, 12)(step) == pytest.approx(expected)
    assert schedules.from_settings({"lr_schedule": "warmup_linear", "warmup": 4,
                                    "iterations": 12})(step) == pytest.approx(expected)
