"""Training under torchrun: 2 CPU processes on gloo train a toy task with the shared loop.

The test starts this file itself under `torch.distributed.run`; each rank writes what it saw
and its final weights to the test's folder (outside the run folder), then the test checks:
ranks end with identical weights (also in the EMA copy), they drew different batches, rank 0
drew the single-process batches, DDP averaged the gradients (the run equals one process
training on both ranks' batches together), the log holds rank-averaged losses, and only
rank 0 wrote files.
"""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from torch import nn

from sparsegen.train import checkpoint, distributed, loop, schedules
from sparsegen.train.ema import EMA
from sparsegen.train.seeding import step_seed

SEED, STEPS, BATCH, LR = 3, 6, 8, 0.05
W = torch.tensor([[1.0], [-2.0], [0.5], [3.0]])
SETTINGS = {"paper": "toy", "variant": "ddp", "seed": SEED}


def _batch(generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    x = torch.randn(BATCH, 4, generator=generator)
    return x, x @ W


def _factor() -> Callable[[int], float]:
    return schedules.constant_then_linear(STEPS, STEPS // 2)


class ToyDDPTask:
    """Linear regression through a DDP-wrapped layer, with an EMA of it."""

    def __init__(self, device: torch.device, init_seed: int) -> None:
        torch.manual_seed(init_seed)  # ranks start apart: DDP must broadcast rank 0's weights
        self.net = nn.Linear(4, 1)
        self.ddp = distributed.wrap(self.net, device)
        self.ema = EMA(self.ddp, decay=0.5)
        self.modules = {"net": self.net, "ema": self.ema.module}
        self.optimizers = {"sgd": torch.optim.SGD(self.net.parameters(), lr=LR)}
        self.checkpoint_extra: dict = {}
        self.seen: list[torch.Tensor] = []
        self.losses: list[float] = []

    def batch(self, step: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        return _batch(generator)

    def train_step(self, step: int, batch: tuple[torch.Tensor, torch.Tensor]) -> dict[str, float]:
        x, y = batch
        loss = ((self.ddp(x) - y) ** 2).mean()
        opt = self.optimizers["sgd"]
        opt.zero_grad()
        loss.backward()
        opt.step()
        self.ema.update(self.ddp)
        self.seen.append(x)
        self.losses.append(loss.item())
        return {"loss": loss.item()}


def _rank_main(out: Path) -> None:
    """One rank under torchrun: train, then record what it saw and ended with."""
    world, device = distributed.setup(torch.device("cpu"))
    task = ToyDDPTask(device, init_seed=world.rank)
    # Rank 0 gets the real run folder; any other rank a folder of its own that must stay empty.
    run_dir = out / ("run" if world.is_main else f"rank{world.rank}")
    cfg = loop.LoopConfig(iterations=STEPS, checkpoint_every=2, log_every=2, seed=SEED,
                          lr_factor=_factor())
    assert loop.run(task, cfg, SETTINGS, run_dir, run_dir / "final.pt", run_dir / "log.csv")
    torch.save({"world": (world.rank, world.world_size), "seen": task.seen,
                "losses": task.losses, "net": task.net.state_dict(),
                "ema": task.ema.module.state_dict()}, out / f"result{world.rank}.pt")
    distributed.teardown()


@pytest.fixture(scope="module")
def ddp_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[dict]]:
    out = tmp_path_factory.mktemp("ddp")
    env = {k: v for k, v in os.environ.items() if k not in distributed.ENV_KEYS}
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone",
                           "--nproc_per_node", "2", __file__, str(out)],
                          capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return out, [torch.load(out / f"result{r}.pt") for r in range(2)]


def test_ranks_end_identical_and_rank0_checkpoint_holds_them(ddp_run) -> None:
    out, (r0, r1) = ddp_run
    assert r0["world"] == (0, 2) and r1["world"] == (1, 2)
    final = checkpoint.load(out / "run" / "final.pt")["modules"]
    for module in ("net", "ema"):
        for key, value in r0[module].items():
            assert torch.equal(value, r1[module][key]), f"{module}.{key}"
            assert torch.equal(value, final[module][key]), f"{module}.{key}"


def test_ranks_draw_different_batches_and_rank0_the_single_process_ones(ddp_run) -> None:
    _, (r0, r1) = ddp_run
    assert len(r0["seen"]) == len(r1["seen"]) == STEPS
    for step in range(STEPS):
        assert not torch.equal(r0["seen"][step], r1["seen"][step])
        alone = _batch(torch.Generator().manual_seed(step_seed(SEED, step)))[0]
        assert torch.equal(r0["seen"][step], alone)


def test_gradients_are_averaged_over_ranks(ddp_run) -> None:
    """One process on the concatenated batches of both ranks, from rank 0's initial weights,
    ends where the 2-rank run ended (the mean loss over 2 x 8 samples has the mean gradient)."""
    _, (r0, r1) = ddp_run
    torch.manual_seed(0)
    net = nn.Linear(4, 1)
    ema = EMA(net, decay=0.5)
    opt = torch.optim.SGD(net.parameters(), lr=LR)
    factor = _factor()
    for step in range(STEPS):
        opt.param_groups[0]["lr"] = LR * factor(step)
        x = torch.cat([r0["seen"][step], r1["seen"][step]])
        loss = ((net(x) - x @ W) ** 2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        ema.update(net)
    for key, value in net.state_dict().items():
        torch.testing.assert_close(r0["net"][key], value, rtol=1e-5, atol=1e-6)
    for key, value in ema.module.state_dict().items():
        torch.testing.assert_close(r0["ema"][key], value, rtol=1e-5, atol=1e-6)


def test_only_rank0_writes_and_logs_rank_means(ddp_run) -> None:
    out, (r0, r1) = ddp_run
    assert not (out / "rank1").exists()
    written = sorted(str(p.relative_to(out / "run")) for p in (out / "run").rglob("*"))
    assert written == ["ckpt", "ckpt/last.pt", "final.pt", "log.csv"]
    with open(out / "run" / "log.csv") as f:
        rows = list(csv.DictReader(f))
    assert [int(r["step"]) for r in rows] == [2, 4, 6]
    for r in rows:
        i = int(r["step"]) - 1
        assert float(r["loss"]) == pytest.approx((r0["losses"][i] + r1["losses"][i]) / 2)


def test_env_world_reads_torchrun_variables() -> None:
    assert distributed.env_world({}) == distributed.World(0, 1, 0)
    world = distributed.env_world({"RANK": "3", "WORLD_SIZE": "8", "LOCAL_RANK": "1"})
    assert world == distributed.World(3, 8, 1) and not world.is_main
    with pytest.raises(ValueError, match="RANK=8"):
        distributed.env_world({"RANK": "8", "WORLD_SIZE": "8", "LOCAL_RANK": "0"})
    with pytest.raises(ValueError, match="WORLD_SIZE"):
        distributed.env_world({"RANK": "0", "WORLD_SIZE": "two", "LOCAL_RANK": "0"})


def test_single_process_helpers_are_no_ops() -> None:
    net = nn.Linear(2, 2)
    assert not distributed.active()
    assert distributed.current() == distributed.World()
    assert distributed.wrap(net, torch.device("cpu")) is net
    assert distributed.unwrap(net) is net
    assert distributed.mean_over_ranks({"b": 1.0, "a": 2.0}) == {"b": 1.0, "a": 2.0}
    distributed.barrier()


if __name__ == "__main__":
    _rank_main(Path(sys.argv[1]))
