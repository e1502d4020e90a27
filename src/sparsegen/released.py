"""The authors' released weights: from an official state-dict layout to ours, checked.

A released variant (a params variant entry with `released: [weights-manifest names]`) is not
trained: its `convert` job reads the authors' files, maps every official tensor onto our
network by an explicit name table (`Rename`, one per tensor, written out in the paper's
`released` module), and writes `converted.pt`, a checkpoint in our format that the sample and
evaluate jobs read as they read a trained `final.pt`.

Where the official tensors come from (`source_kind`):
- `file`: the verified manifest file, under the paper preset when `weights` is `pretrained`
  (required) or `auto` (when present). Nothing downloads here: `fetch weights --name ...`;
- `stand-in` (the smoke preset, `weights: random`, or `auto` without the file): our network at
  the variant's settings initialised from the seed, written out in the official layout
  (`to_official`) and converted back, so every tier runs the converter; records say the
  weights are a stand-in and the judge never calls them comparable.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from sparsegen.weights import MODES, WeightsError, get_spec, verify

FILE, STAND_IN = "file", "stand-in"
Transform = Callable[[torch.Tensor], torch.Tensor]


class ConversionError(ValueError):
    """An official state dict does not map one-to-one onto our network; names the tensors."""


@dataclass(frozen=True)
class Rename:
    """One official tensor and the tensor of ours it becomes. `to_ours` / `to_official` change
    its layout (e.g. channels-first to channels-last) and must be inverses; None: unchanged."""

    official: str
    ours: str
    to_ours: Transform | None = None
    to_official: Transform | None = None


def _duplicates(names: Sequence[str]) -> list[str]:
    seen: set[str] = set()
    return sorted({n for n in names if n in seen or seen.add(n)})  # type: ignore[func-returns-value]


def _check_table(renames: Sequence[Rename]) -> None:
    for side in ("official", "ours"):
        twice = _duplicates([getattr(r, side) for r in renames])
        if twice:
            raise ConversionError(f"name table maps {side} tensor(s) {twice[:5]} more than once")


def convert_state(official: Mapping[str, torch.Tensor], renames: Sequence[Rename],
                  ours: Mapping[str, torch.Tensor], source: str) -> dict[str, torch.Tensor]:
    """Our state dict from `official` by `renames`, checked one-to-one against `ours` (the
    state dict of the network it will load into): every official tensor used exactly once,
    every tensor of ours filled exactly once, shapes equal. Raises ConversionError listing
    every problem, naming `source` (the file, or the stand-in)."""
    _check_table(renames)
    table_official = {r.official for r in renames}
    table_ours = {r.ours for r in renames}
    mismatches = (
        (set(official) - table_official, "official tensor(s) have no counterpart in our network"),
        (table_official - set(official), "tensor(s) of the official layout are missing"),
        (set(ours) - table_ours, "tensor(s) of our network are not filled"),
        (table_ours - set(ours), "tensor(s) the name table fills are not in our network"))
    problems = [f"{len(names)} {what}: {', '.join(sorted(names)[:8])}"
                f"{' ...' if len(names) > 8 else ''}" for names, what in mismatches if names]
    out: dict[str, torch.Tensor] = {}
    for r in renames:
        if r.official not in official or r.ours not in ours:
            continue
        value = official[r.official]
        value = r.to_ours(value) if r.to_ours else value
        if tuple(value.shape) != tuple(ours[r.ours].shape):
            problems.append(f"{r.official} {tuple(official[r.official].shape)} -> {r.ours} "
                            f"needs {tuple(ours[r.ours].shape)}")
            continue
        out[r.ours] = value.detach().clone().to(ours[r.ours].dtype)
    if problems:
        raise ConversionError(f"{source}: does not convert onto our network:\n  - "
                              + "\n  - ".join(problems))
    return out


def to_official(ours: Mapping[str, torch.Tensor], renames: Sequence[Rename]
                ) -> dict[str, torch.Tensor]:
    """The official layout of our state dict (the stand-in; the inverse of convert_state)."""
    _check_table(renames)
    return {r.official: (r.to_official(ours[r.ours]) if r.to_official else ours[r.ours]).clone()
            for r in renames}


def single_release(settings: Mapping[str, Any]) -> str:
    """The one manifest name of a released variant whose authors ship one file."""
    names = list(settings.get("released") or [])
    if len(names) != 1:
        raise ConversionError(f"{settings.get('paper')} released variant "
                              f"{settings.get('variant')!r}: expected one manifest name in "
                              f"`released`, got {names}")
    return names[0]


def source_kind(settings: Mapping[str, Any], name: str) -> str:
    """`file` or `stand-in` for released weights `name` under the job's settings (module doc);
    raises WeightsError when `weights: pretrained` needs a file that is not there."""
    mode = settings["weights"]
    if mode not in MODES:
        raise WeightsError(f"weights: {mode!r} is not one of {', '.join(MODES)}")
    if settings["preset"] != "paper" or mode == "random":
        return STAND_IN
    path = Path(settings["paths"]["weights"]) / get_spec(name).filename
    if path.exists():
        return FILE
    if mode == "pretrained":
        raise WeightsError(
            f"weights: pretrained needs {path} ({get_spec(name).description}). Fetch it with "
            f"`python -m sparsegen fetch weights --name {name} --dest {path.parent}`.")
    return STAND_IN


def release_state(settings: Mapping[str, Any], name: str) -> str:
    """What released weights `name` resolve to now, without failing: the verified file's
    sha256, `stand-in`, or `missing` (a file `weights: pretrained` still has to fetch). Part of
    the convert job's params: a file that appears or changes reruns it."""
    try:
        kind = source_kind(settings, name)
    except WeightsError:
        return "missing"
    return official_file(settings, name)[1] if kind == FILE else STAND_IN


def official_file(settings: Mapping[str, Any], name: str) -> tuple[Path, str]:
    """The verified file of released weights `name` and its sha256 (kind `file` only)."""
    spec = get_spec(name)
    path = Path(settings["paths"]["weights"]) / spec.filename
    return path, verify(spec, path)


def released_facts(settings: Mapping[str, Any], sources: Mapping[str, Mapping[str, Any]],
                   step: int | None, note: str) -> dict[str, Any]:
    """What a converted checkpoint records about its origin (its `extra["released"]`, read by
    `checkpoint.training_facts` and the judge): per manifest name, kind (file / stand-in),
    sha256 and URL; the authors' training step when known; a line on the conversion."""
    return {"sources": {n: dict(s) for n, s in sources.items()},
            "stand_in": any(s["kind"] == STAND_IN for s in sources.values()),
            "step": step, "conversion": note, "variant": settings["variant"]}


def write_converted(out: Path, settings: Mapping[str, Any], modules: Mapping[str, torch.nn.Module],
                    facts: Mapping[str, Any], extra: Mapping[str, Any] | None = None) -> None:
    """Write `converted.pt` (atomically): our checkpoint format with the loaded `modules`,
    the variant's settings and `extra["released"] = facts` (`released_facts`)."""
    from sparsegen.train import checkpoint

    checkpoint.save(out, step=int(facts.get("step") or 0), modules=dict(modules), optimizers={},
                    settings=settings, extra={**(extra or {}), "released": dict(facts)},
                    identity=checkpoint.run_identity(settings))
