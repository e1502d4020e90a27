"""Checkpoint files: written atomically, carrying the settings and commit that produced them."""

from __future__ import annotations

import random
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from sparsegen.io import torch_save
from sparsegen.provenance import git_commit, library_versions, stable_hash


def settings_hash(settings: dict[str, Any]) -> str:
    return stable_hash(settings, length=16)


def rng_state() -> dict[str, Any]:
    state = {"python": random.getstate(), "numpy": np.random.get_state(),
             "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def save(path: str | Path, *, step: int, modules: dict[str, torch.nn.Module],
         optimizers: dict[str, torch.optim.Optimizer], settings: dict[str, Any],
         extra: dict[str, Any] | None = None) -> None:
    """Write a resumable checkpoint atomically (a kill mid-write leaves the previous one)."""
    torch_save({
        "step": step,
        "modules": {k: m.state_dict() for k, m in modules.items()},
        "optimizers": {k: o.state_dict() for k, o in optimizers.items()},
        "rng": rng_state(),
        "settings": settings,
        "settings_hash": settings_hash(settings),
        "git_commit": git_commit(),
        "versions": library_versions(),
        "saved_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "extra": extra or {},
    }, path)


def load(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    path = Path(path)
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=False)
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: checkpoint not found") from None
    except Exception as e:  # torch raises several types for truncated/corrupt files
        raise ValueError(f"{path}: unreadable checkpoint ({type(e).__name__}: {e})") from None
    if not isinstance(ckpt, dict) or "modules" not in ckpt:
        raise ValueError(f"{path}: not a sparsegen checkpoint")
    return ckpt


def restore(ckpt: dict[str, Any], modules: dict[str, torch.nn.Module],
            optimizers: dict[str, torch.optim.Optimizer] | None = None) -> None:
    """Load module (and optimizer) states; names must match exactly."""
    missing = set(modules) - set(ckpt["modules"])
    if missing:
        raise ValueError(f"checkpoint has no state for module(s) {sorted(missing)}")
    for name, module in modules.items():
        module.load_state_dict(ckpt["modules"][name])
    for name, opt in (optimizers or {}).items():
        opt.load_state_dict(ckpt["optimizers"][name])
