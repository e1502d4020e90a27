"""Seeds and determinism switches."""

from __future__ import annotations

import os
import random

import numpy as np
import torch


def seed_everything(seed: int, deterministic: bool) -> None:
    """Seed Python, NumPy and torch; optionally force deterministic kernels (CPU and CUDA)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.benchmark = False
        torch.backends.cudnn.deterministic = True


def step_seed(seed: int, step: int, stream: int = 0) -> int:
    """A seed that depends only on (run seed, step, stream).

    Everything random in training step `step` is drawn from generators seeded with this, so a
    run resumed at any checkpoint draws exactly what an uninterrupted run would have drawn."""
    return int(np.random.SeedSequence([seed, step, stream]).generate_state(1, np.uint64)[0]
               % (2**63 - 1))


class DeviceError(RuntimeError):
    """The requested compute device is not available."""


def resolve_device(name: str) -> torch.device:
    """'auto' picks CUDA when available; 'cuda' without a GPU is an error, not a silent CPU run."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise DeviceError(f"device {name!r} was requested but torch sees no CUDA GPU "
                          f"(torch {torch.__version__}, CUDA build {torch.version.cuda})")
    return torch.device(name)
