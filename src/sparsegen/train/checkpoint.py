"""Checkpoint files: written atomically, carrying the settings, inputs and code that made them.

A resumable checkpoint (`ckpt/last.pt`) and a final one (`final.pt`) hold the module states, the
resolved settings, the run's identity (what the weights were computed from: settings, the
prepared data's manifests, pretrained weights and upstream checkpoints; `run_identity`), the
run's code lineage (the code fingerprint of every stretch of training) and the loss-log rows
so far, so a resumed run can rewrite every output of its job.
"""

from __future__ import annotations

import random
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from sparsegen.io import torch_save
from sparsegen.provenance import git_commit, library_versions, sha256_file, stable_hash

# Settings keys that do not change what training computes: the code fingerprint (a code-only
# change may resume; the lineage records it).
NOT_IDENTITY = ("code",)


class CheckpointError(ValueError):
    """A checkpoint does not fit what loads it (another paper, other weights, other modules)."""


def settings_hash(settings: Mapping[str, Any]) -> str:
    return stable_hash({k: v for k, v in settings.items() if k not in NOT_IDENTITY}, length=16)


def run_identity(settings: Mapping[str, Any]) -> dict[str, Any]:
    """What a run's weights are computed from: its settings (code fingerprint aside), the
    sha256 of each prepared dataset's manifest (which lists every file's sha256), what each
    pretrained network loads, and the sha256 of every upstream checkpoint it `uses`."""
    from sparsegen.data.manifest import MANIFEST
    from sparsegen.layout import dataset_dir

    data = {}
    for role in settings.get("datasets", {}):
        manifest = dataset_dir(settings, role) / MANIFEST
        data[role] = sha256_file(manifest) if manifest.is_file() else "missing"
    upstream = {role: sha256_file(u["checkpoint"]) for role, u in settings.get("uses", {}).items()}
    return {"settings": settings_hash(settings), "data": data,
            "weights": dict(settings.get("weights_state", {})), "upstream": upstream}


def identity_differences(recorded: Mapping[str, Any], current: Mapping[str, Any]) -> list[str]:
    """How two run identities differ, one phrase per part ([] when equal)."""
    out = []
    if recorded.get("settings") != current["settings"]:
        out.append("other settings")
    for part, noun in (("data", "prepared data"), ("weights", "pretrained weights"),
                       ("upstream", "upstream checkpoint")):
        old, new = recorded.get(part, {}), current[part]
        for key in sorted(set(old) | set(new)):
            if old.get(key) != new.get(key):
                out.append(f"other {noun} for {key} ({str(old.get(key))[:12]} -> "
                           f"{str(new.get(key))[:12]})")
    return out


def rng_state() -> dict[str, Any]:
    state = {"python": random.getstate(), "numpy": np.random.get_state(),
             "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def save(path: str | Path, *, step: int, modules: dict[str, torch.nn.Module],
         optimizers: dict[str, torch.optim.Optimizer], settings: Mapping[str, Any],
         extra: dict[str, Any] | None = None, identity: Mapping[str, Any] | None = None,
         lineage: list[dict[str, Any]] | None = None,
         log_rows: list[dict[str, Any]] | None = None) -> None:
    """Write a checkpoint atomically (a kill mid-write leaves the previous one)."""
    torch_save({
        "step": step,
        "modules": {k: m.state_dict() for k, m in modules.items()},
        "optimizers": {k: o.state_dict() for k, o in optimizers.items()},
        "rng": rng_state(),
        "settings": dict(settings),
        "settings_hash": settings_hash(settings),
        "identity": dict(identity or {}),
        "lineage": list(lineage or []),
        "log_rows": list(log_rows or []),
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
        raise CheckpointError(f"{path}: unreadable checkpoint ({type(e).__name__}: {e})"
                              ) from None
    if not isinstance(ckpt, dict) or "modules" not in ckpt:
        raise CheckpointError(f"{path}: not a sparsegen checkpoint")
    return ckpt


def restore(ckpt: dict[str, Any], modules: dict[str, torch.nn.Module],
            optimizers: dict[str, torch.optim.Optimizer] | None = None) -> None:
    """Load module (and optimizer) states; names must match exactly."""
    missing = set(modules) - set(ckpt["modules"])
    if missing:
        raise CheckpointError(f"checkpoint has no state for module(s) {sorted(missing)}")
    for name, module in modules.items():
        module.load_state_dict(ckpt["modules"][name])
    for name, opt in (optimizers or {}).items():
        opt.load_state_dict(ckpt["optimizers"][name])


def load_trained(path: str | Path, paper: str, modules: tuple[str, ...],
                 label: str | None = None) -> dict[str, Any]:
    """A trained checkpoint of `paper` holding `modules` (else a CheckpointError naming it and
    the paper's `label`)."""
    ckpt = load(path)
    settings = ckpt.get("settings") or {}
    if settings.get("paper") != paper or not set(modules) <= set(ckpt["modules"]):
        raise CheckpointError(f"{path}: not a {label or paper} checkpoint with "
                              f"{', '.join(modules)} "
                              f"(paper {settings.get('paper')!r}, modules "
                              f"{sorted(ckpt['modules'])})")
    return ckpt


def check_rebuilt(ckpt: Mapping[str, Any], path: str | Path, **rebuilt_with: str) -> None:
    """What a loader rebuilds rather than restores (e.g. a frozen encoder: name -> fingerprint
    of the weights it resolves to now) must be what the checkpoint's `extra` recorded at
    training time, so a decoder trained on one encoder is never run on another."""
    settings = ckpt.get("settings") or {}
    for key, now in rebuilt_with.items():
        trained_with = ckpt.get("extra", {}).get(key)
        if trained_with is not None and trained_with != now:
            raise CheckpointError(
                f"{path}: trained with {key} {trained_with}, but the {key} now resolves to "
                f"{now} (weights: {settings.get('weights')!r}, folder "
                f"{settings.get('paths', {}).get('weights')}); restore the weights file it was "
                "trained with or retrain")


def restore_module(ckpt: dict[str, Any], name: str, module: torch.nn.Module,
                   path: str | Path) -> torch.nn.Module:
    """Load `ckpt`'s state `name` into `module`, naming the file when they do not match."""
    try:
        module.load_state_dict(ckpt["modules"][name])
    except RuntimeError as e:
        raise CheckpointError(f"{path}: {name} does not match the network of its own settings "
                              f"({str(e).splitlines()[0]})") from None
    return module


def training_facts(ckpt: Mapping[str, Any], selected: str = "final") -> dict[str, Any]:
    """The training recipe behind a checkpoint, as the comparability judge reads it. A
    converted checkpoint of the authors' weights (`sparsegen.released`) states where they come
    from instead: the authors trained it, with the paper's recipe by definition."""
    settings = ckpt.get("settings", {})
    released = ckpt.get("extra", {}).get("released")
    if released is not None:
        return {"released": dict(released), "checkpoint": "released",
                "checkpoint_step": released.get("step"),
                "networks": dict(settings.get("weights_state", {}))}
    train = settings.get("train", {})
    processes = int(ckpt.get("extra", {}).get("world_size", 1))
    batch = train.get("batch_size")
    return {
        "processes": processes,
        "batch_per_process": batch,
        "global_batch": None if batch is None else processes * batch,
        "iterations": int(train.get("iterations", ckpt["step"])),  # the run's length
        "checkpoint": selected,
        "checkpoint_step": int(ckpt["step"]),
        "networks": dict(settings.get("weights_state", {})),
        "code": list(dict.fromkeys(e["code"] for e in ckpt.get("lineage", []))),
    }
