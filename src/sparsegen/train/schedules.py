"""Learning-rate factors as pure functions of the step (so resuming needs no scheduler state)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any


def constant_then_linear(total: int, decay_start: int) -> Callable[[int], float]:
    """1 until `decay_start`, then linearly to 0 at `total` (StyA2K paper Sec. 4.1)."""

    def factor(step: int) -> float:
        if step < decay_start:
            return 1.0
        return max(0.0, 1.0 - (step - decay_start) / max(1, total - decay_start))

    return factor


def step_decay(decay_start: int, every: int, gamma: float) -> Callable[[int], float]:
    """1 until `decay_start`, then x gamma at its start and every `every` steps after."""

    def factor(step: int) -> float:
        if step < decay_start:
            return 1.0
        return gamma ** (1 + (step - decay_start) // every)

    return factor


def warmup_linear(warmup: int, total: int) -> Callable[[int], float]:
    """Linear warm-up from 0 over `warmup` steps, then linearly to 0 at `total` (minGPT's
    schedule, iLAT Sec. 4: 10k warm-up, 0 at 300k)."""

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        return max(0.0, 1.0 - (step - warmup) / max(1, total - warmup))

    return factor


def by_epochs(train: dict[str, Any], n_train: int) -> dict[str, int]:
    """A length given in epochs (`iterations: null`): iterations = (epochs + decay_epochs) x
    ceil(n_train / batch_size), the linear decay starting after `epochs` epochs."""
    per_epoch = -(-n_train // train["batch_size"])
    return {"iterations": (train["epochs"] + train["decay_epochs"]) * per_epoch,
            "decay_start": train["epochs"] * per_epoch}


def from_settings(train: dict[str, Any]) -> Callable[[int], float]:
    """The schedule named by `train.lr_schedule`; without that key, `linear` (constant, then
    linearly to 0 from `decay_start` to `iterations`: StyA2K Sec. 4.1, StyleNAT Sec. 4.1).

    The loop multiplies every optimizer's initial learning rate by this one factor."""
    name = train.get("lr_schedule", "linear")
    if name == "linear":
        return constant_then_linear(train["iterations"], train["decay_start"])
    if name == "step":
        return step_decay(train["decay_start"], train["step_every"], train["step_gamma"])
    if name == "warmup_linear":
        return warmup_linear(train["warmup"], train["iterations"])
    raise ValueError(f"train.lr_schedule: unknown schedule {name!r}")
