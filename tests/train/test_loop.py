"""The shared training loop: resume equals uninterrupted, checkpoints carry provenance."""

from __future__ import annotations

import csv
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
