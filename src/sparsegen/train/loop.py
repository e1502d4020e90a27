"""The shared training loop.

A paper plugs in a `TrainTask`; the loop owns everything else: seeding, the learning-rate
schedule, periodic atomic checkpoints, resuming after a kill, the loss log and the progress bar.

Resume gives the same result as an uninterrupted run because (1) batches and any other
randomness of step `s` are drawn from generators seeded by `step_seed(seed, s)`, (2) the schedule
is a pure function of the step, and (3) module and optimizer states are restored exactly.

Under torchrun (see `sparsegen.train.distributed`) every rank runs this loop: rank r draws its
batches from its own seed streams, so ranks see different data; only rank 0 writes the
checkpoints, the loss log and the progress bar, and checkpoint writes are fenced by barriers.
Wrapping networks in DDP is the task's business (`distributed.wrap`), as is the EMA.
"""

from __future__ import annotations

import csv
import io
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import torch
from tqdm import tqdm

from sparsegen.io import write_text
from sparsegen.train import checkpoint, distributed
from sparsegen.train.seeding import step_seed

LAST = "last.pt"


class TrainTask(Protocol):
    """What a paper's model provides to the loop."""

    modules: dict[str, torch.nn.Module]         # everything whose state is checkpointed
    optimizers: dict[str, torch.optim.Optimizer]
    checkpoint_extra: dict[str, Any]            # provenance stored with every checkpoint

    def batch(self, step: int, generator: torch.Generator) -> Any:
        """The training batch of `step`, drawn only from `generator`.

        Called from background threads (prefetch): it must not touch shared mutable state."""

    def train_step(self, step: int, batch: Any) -> dict[str, float]:
        """One optimisation step; returns the losses to log."""


@dataclass(frozen=True)
class LoopConfig:
    iterations: int
    checkpoint_every: int
    log_every: int
    seed: int
    lr_factor: Callable[[int], float]
    stop_after: int | None = None  # end this invocation early after this step (time-limited jobs)
    prefetch: int = 2  # batches loaded ahead in background threads (0: load inline)


def _set_lr(optimizers: dict[str, torch.optim.Optimizer], factor: float) -> None:
    for opt in optimizers.values():
        for group in opt.param_groups:
            group.setdefault("initial_lr", group["lr"])
            group["lr"] = group["initial_lr"] * factor


class LossLog:
    """CSV of logged steps; on resume, rows after the resumed step are dropped."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.rows: list[dict[str, Any]] = []
        if path.exists():
            with open(path, newline="") as f:
                self.rows = list(csv.DictReader(f))

    def truncate(self, step: int) -> None:
        self.rows = [r for r in self.rows if int(r["step"]) <= step]

    def append(self, row: dict[str, Any]) -> None:
        self.rows.append(row)

    def flush(self) -> None:
        if not self.rows:
            return
        fields: list[str] = []
        for r in self.rows:
            fields += [k for k in r if k not in fields]
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=fields)
        writer.writeheader()
        writer.writerows(self.rows)
        write_text(self.path, buf.getvalue())


def _stream(rank: int, kind: int) -> int:
    """Seed stream of rank `rank` for batches (kind 0) or the global torch RNG (kind 1).

    Rank 0 keeps streams 0 and 1, so a single process draws what it always drew."""
    return 2 * rank + kind


def _batches(task: TrainTask, seed: int, steps: range, prefetch: int, rank: int
             ) -> Iterator[Any]:
    """Batches of `steps` in order; each drawn from a generator seeded by (seed, step, rank)
    alone, so loading them ahead in threads changes nothing but the wall time."""

    def load(step: int) -> Any:
        gen = torch.Generator().manual_seed(step_seed(seed, step, stream=_stream(rank, 0)))
        return task.batch(step, gen)

    if prefetch <= 0:
        yield from map(load, steps)
        return
    with ThreadPoolExecutor(max_workers=prefetch) as pool:
        queue = [pool.submit(load, s) for s in steps[:prefetch]]
        for i in range(len(steps)):
            if i + prefetch < len(steps):
                queue.append(pool.submit(load, steps[i + prefetch]))
            yield queue.pop(0).result()


def _resume_point(ckpt_dir: Path, settings: dict[str, Any], task: TrainTask,
                  world: distributed.World) -> int:
    """Restore the last checkpoint if it belongs to these settings; return the next step.

    Every rank reads it; rank 0 alone moves a checkpoint of other settings aside, once all
    ranks have read it."""
    last = ckpt_dir / LAST
    ckpt = checkpoint.load(last) if last.exists() else None
    distributed.barrier()
    if ckpt is None:
        return 0
    if ckpt["settings_hash"] != checkpoint.settings_hash(settings):
        if world.is_main:
            stale = last.with_name(f"last.stale-{ckpt['settings_hash']}.pt")
            last.replace(stale)
            tqdm.write(f"{last}: written for other settings; kept as {stale.name}, "
                       "starting afresh")
        return 0
    checkpoint.restore(ckpt, task.modules, task.optimizers)
    if world.is_main:
        tqdm.write(f"resuming from {last} at step {ckpt['step']}")
        trained_on = ckpt.get("extra", {}).get("world_size", 1)
        if trained_on != world.world_size:
            tqdm.write(f"warning: {last} was written by a run of {trained_on} process(es), this "
                       f"run has {world.world_size}: the global batch and the batches drawn "
                       "from here on differ from an uninterrupted run")
    return int(ckpt["step"])


def _save(path: Path, world: distributed.World, **kwargs: Any) -> None:
    """Rank 0 writes the checkpoint while the other ranks wait (so none runs ahead of, or
    exits before, a checkpoint that is being written)."""
    distributed.barrier()
    if world.is_main:
        checkpoint.save(path, **kwargs)
    distributed.barrier()


def _learning_rates(optimizers: dict[str, torch.optim.Optimizer]) -> dict[str, float]:
    """Logged learning rate(s): `lr` for one optimizer, `lr_<name>` for each of several."""
    if len(optimizers) == 1:
        return {"lr": next(iter(optimizers.values())).param_groups[0]["lr"]}
    return {f"lr_{name}": opt.param_groups[0]["lr"] for name, opt in optimizers.items()}


def run(task: TrainTask, cfg: LoopConfig, settings: dict[str, Any], run_dir: str | Path,
        final_path: str | Path, log_path: str | Path) -> bool:
    """Train to `cfg.iterations`, resuming from `run_dir/ckpt/last.pt` when present.

    Writes `final_path` (modules only, with settings and commit) when training is complete and
    returns True; returns False when `stop_after` ended this invocation early. Under torchrun
    every rank calls this; the logged losses are averaged over ranks."""
    world = distributed.current()
    extra = {**task.checkpoint_extra, "world_size": world.world_size}  # checked on resume
    run_dir = Path(run_dir)
    ckpt_dir = run_dir / "ckpt"
    if world.is_main:
        ckpt_dir.mkdir(parents=True, exist_ok=True)
    start = _resume_point(ckpt_dir, settings, task, world)
    log = LossLog(Path(log_path))
    log.truncate(start)
    for m in task.modules.values():
        m.train()
    t0 = time.perf_counter()
    bar = tqdm(range(start, cfg.iterations), initial=start, total=cfg.iterations,
               desc=f"train {settings.get('paper', '')}/{settings.get('variant', '')}",
               disable=None if world.is_main else True)
    batches = _batches(task, cfg.seed, range(start, cfg.iterations), cfg.prefetch, world.rank)
    for step, batch in zip(bar, batches, strict=True):
        torch.manual_seed(step_seed(cfg.seed, step, stream=_stream(world.rank, 1)))
        _set_lr(task.optimizers, cfg.lr_factor(step))
        losses = task.train_step(step, batch)
        done = step + 1
        if done % cfg.log_every == 0 or done == cfg.iterations:
            losses = distributed.mean_over_ranks({k: float(v) for k, v in losses.items()})
            log.append({"step": done, **_learning_rates(task.optimizers),
                        "wall_s": round(time.perf_counter() - t0, 3), **losses})
            bar.set_postfix({k: f"{v:.4g}" for k, v in losses.items()})
        stop_now = cfg.stop_after is not None and cfg.stop_after <= done < cfg.iterations
        if done % cfg.checkpoint_every == 0 or done == cfg.iterations or stop_now:
            if world.is_main:
                log.flush()
            _save(ckpt_dir / LAST, world, step=done, modules=task.modules,
                  optimizers=task.optimizers, settings=settings, extra=extra)
        if stop_now:
            bar.close()
            batches.close()
            return False
    bar.close()
    if world.is_main:
        log.flush()
    _save(Path(final_path), world, step=cfg.iterations, modules=task.modules, optimizers={},
          settings=settings, extra=extra)
    return True
