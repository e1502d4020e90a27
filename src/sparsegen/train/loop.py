"""The shared training loop.

A paper plugs in a `TrainTask`; the loop owns everything else: seeding, the learning-rate
schedule, periodic atomic checkpoints, resuming after a kill, the loss log, kept checkpoints and
progress (a bar on a terminal, a plain line every 30 s in a job's log: `sparsegen.progress`).

Resume gives the same result as an uninterrupted run because (1) batches and any other
randomness of step `s` are drawn from generators seeded by `step_seed(seed, s)`, (2) the schedule
is a pure function of the step, and (3) module and optimizer states are restored exactly.

A run resumes only from a checkpoint made from the same inputs: settings, prepared data
(manifest hashes), pretrained weights and upstream checkpoints (`checkpoint.run_identity`).
Anything else is moved aside (`last.stale-<hash>.pt`) and training starts afresh, saying why. A
code change alone resumes: the checkpoint's lineage records every code fingerprint the run
trained under (the judge reports a mixed lineage). A run that finds its training complete still
writes every output (final checkpoint, loss log, kept checkpoints) from the checkpoint.

Under torchrun (see `sparsegen.train.distributed`) every rank runs this loop: rank r draws its
batches from its own seed streams, so ranks see different data; only rank 0 writes the
checkpoints, the loss log and the progress, and checkpoint writes are fenced by barriers.
Wrapping networks in DDP is the task's business (`distributed.wrap`), as is the EMA.
"""

from __future__ import annotations

import csv
import io
import os
import shutil
import time
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import torch

from sparsegen.io import atomic_dir, write_json, write_text
from sparsegen.progress import Progress
from sparsegen.provenance import git_commit, sha256_file
from sparsegen.train import checkpoint, distributed
from sparsegen.train.seeding import step_seed

LAST = "last.pt"
KEPT_INDEX = "index.json"


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
    stop_after: int | None = None  # end this invocation early after this step (tests, debugging)
    prefetch: int = 2  # batches loaded ahead in background threads (0: load inline)
    keep_every: int = 0  # keep a copy of the modules every this many steps before the last
    # (the final checkpoint is the last candidate; 0: none)
    deadline: float | None = None  # time.monotonic() after which to checkpoint and stop


@dataclass(frozen=True)
class Outcome:
    """How one invocation of `run` ended."""

    complete: bool
    step: int
    reason: str = ""  # why it stopped early: "stop_after" or "deadline"

    def __bool__(self) -> bool:
        return self.complete


def _set_lr(optimizers: dict[str, torch.optim.Optimizer], factor: float) -> None:
    for opt in optimizers.values():
        for group in opt.param_groups:
            group.setdefault("initial_lr", group["lr"])
            group["lr"] = group["initial_lr"] * factor


def write_log(path: Path, rows: list[dict[str, Any]]) -> None:
    """The loss log as CSV (atomic), with a header even before the first logged step."""
    fields: list[str] = ["step"]
    for r in rows:
        fields += [k for k in r if k not in fields]
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=fields)
    writer.writeheader()
    writer.writerows(rows)
    write_text(path, buf.getvalue())


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


def say(message: str) -> None:
    """A line for the job's log (stdout, flushed)."""
    print(message, flush=True)


@dataclass
class _State:
    """What a run carries from checkpoint to checkpoint besides the module states."""

    step: int
    lineage: list[dict[str, Any]]
    log_rows: list[dict[str, Any]]


def _resume(ckpt_dir: Path, settings: Mapping[str, Any], identity: dict[str, Any],
            task: TrainTask, world: distributed.World) -> _State:
    """Restore the last checkpoint if it was made from the same inputs; else start afresh.

    Every rank reads it; rank 0 alone moves a checkpoint of other inputs aside, once all ranks
    have read it, and says why in the log."""
    last = ckpt_dir / LAST
    ckpt = checkpoint.load(last) if last.exists() else None
    distributed.barrier()
    code = settings.get("code")
    fresh = _State(0, [{"code": code, "from_step": 0, "commit": git_commit()}], [])
    if ckpt is None:
        return fresh
    differences = checkpoint.identity_differences(ckpt.get("identity", {}), identity)
    if differences:
        if world.is_main:
            stale = last.with_name(f"last.stale-{ckpt['settings_hash']}.pt")
            last.replace(stale)
            say(f"{last}: made from {'; '.join(differences)}; kept as {stale.name}, starting "
                "afresh")
        return fresh
    checkpoint.restore(ckpt, task.modules, task.optimizers)
    step = int(ckpt["step"])
    lineage = list(ckpt.get("lineage", []))
    if not lineage or lineage[-1]["code"] != code:
        lineage.append({"code": code, "from_step": step, "commit": git_commit()})
    if world.is_main:
        say(f"resuming from {last} at step {step}")
        if len(lineage) > 1 and lineage[-1]["from_step"] == step and step > 0:
            say(f"note: the code changed since step {step} (fingerprint "
                f"{lineage[-2]['code']} -> {code}); the run's lineage records both")
        trained_on = ckpt.get("extra", {}).get("world_size", 1)
        if trained_on != world.world_size:
            say(f"warning: {last} was written by a run of {trained_on} process(es), this run "
                f"has {world.world_size}: the global batch and the batches drawn from here on "
                "differ from an uninterrupted run")
    return _State(step, lineage, [r for r in ckpt.get("log_rows", [])
                                  if int(r["step"]) <= step])


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


def _publish_kept(ckpt_dir: Path, kept_dir: Path) -> None:
    """kept_dir = the kept checkpoints (hard links where possible) + index.json listing them.

    They are written under ckpt/kept while training (a retried job keeps them) and published
    when training completes."""
    files = sorted((ckpt_dir / "kept").glob("step-*.pt"))
    with atomic_dir(kept_dir) as tmp:
        entries = []
        for f in files:
            try:
                os.link(f, tmp / f.name)
            except OSError:
                shutil.copy2(f, tmp / f.name)
            entries.append({"file": f.name, "step": int(f.stem.split("-")[1]),
                            "sha256": sha256_file(f)})
        write_json(tmp / KEPT_INDEX, {"checkpoints": entries})


def run(task: TrainTask, cfg: LoopConfig, settings: Mapping[str, Any], run_dir: str | Path,
        final_path: str | Path, log_path: str | Path, kept_dir: str | Path | None = None
        ) -> Outcome:
    """Train to `cfg.iterations`, resuming from `run_dir/ckpt/last.pt` when it was made from
    the same inputs.

    Writes `final_path` (modules only, with settings, identity and lineage), the loss log at
    every logged step and, with `kept_dir`, the kept checkpoints when training is complete.
    Ends early (checkpointed) after `stop_after` or past `deadline`. Under torchrun every rank
    calls this; the logged losses are averaged over ranks."""
    world = distributed.current()
    extra = {**task.checkpoint_extra, "world_size": world.world_size}  # checked on resume
    run_dir, log_path = Path(run_dir), Path(log_path)
    ckpt_dir = run_dir / "ckpt"
    if world.is_main:
        ckpt_dir.mkdir(parents=True, exist_ok=True)
    identity = checkpoint.run_identity(settings)
    state = _resume(ckpt_dir, settings, identity, task, world)
    label = f"train {settings.get('paper', '')}/{settings.get('variant', '')}"

    def save(path: Path, step: int, optimizers: dict[str, torch.optim.Optimizer]) -> None:
        _save(path, world, step=step, modules=task.modules, optimizers=optimizers,
              settings=settings, extra=extra, identity=identity, lineage=state.lineage,
              log_rows=state.log_rows)

    for m in task.modules.values():
        m.train()
    steps = range(state.step, cfg.iterations)
    outcome = Outcome(True, cfg.iterations)
    t0 = time.perf_counter()
    with Progress(cfg.iterations, label, initial=state.step, unit="step",
                  disable=not world.is_main) as progress:
        batches = _batches(task, cfg.seed, steps, cfg.prefetch, world.rank)
        for step, batch in zip(steps, batches, strict=True):
            torch.manual_seed(step_seed(cfg.seed, step, stream=_stream(world.rank, 1)))
            _set_lr(task.optimizers, cfg.lr_factor(step))
            losses = task.train_step(step, batch)
            done = step + 1
            progress.update()
            if done % cfg.log_every == 0 or done == cfg.iterations:
                losses = distributed.mean_over_ranks({k: float(v) for k, v in losses.items()})
                state.log_rows.append({"step": done, **_learning_rates(task.optimizers),
                                       "wall_s": round(time.perf_counter() - t0, 3), **losses})
                progress.set_postfix(losses)
                if world.is_main:
                    write_log(log_path, state.log_rows)
            if cfg.keep_every and done % cfg.keep_every == 0 and done < cfg.iterations:
                save(ckpt_dir / "kept" / f"step-{done:09d}.pt", done, {})
            state.step = done
            if done < cfg.iterations:
                if cfg.stop_after is not None and done >= cfg.stop_after:
                    outcome = Outcome(False, done, "stop_after")
                elif cfg.deadline is not None and time.monotonic() >= cfg.deadline:
                    outcome = Outcome(False, done, "deadline")
            if done % cfg.checkpoint_every == 0 or done == cfg.iterations or not outcome.complete:
                save(ckpt_dir / LAST, done, task.optimizers)
            if not outcome.complete:
                batches.close()
                break
    if not outcome.complete:
        return outcome
    if world.is_main:
        write_log(log_path, state.log_rows)
        if kept_dir is not None:
            _publish_kept(ckpt_dir, Path(kept_dir))
    save(Path(final_path), cfg.iterations, {})
    return outcome
