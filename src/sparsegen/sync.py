"""`sparsegen sync`: make Snakemake and DVC agree on what is up to date.

The two tools keep separate records: DVC hashes content into dvc.lock; Snakemake compares
mtimes, params and code against its metadata in .snakemake/. After `dvc checkout`/`pull` the
files are right but their mtimes are arbitrary, so Snakemake wants to rerun; after a direct
`snakemake` run dvc.lock is stale. For every dvc.yaml stage:

- DVC clean (and every stage upstream of it clean) but Snakemake would rerun it: touch its
  outputs with `snakemake --touch` (the bytes are exactly what DVC recorded for these params);
- Snakemake up to date but DVC changed: `dvc commit -f` the stage (record what is on disk);
- both stale: leave it; the pipeline needs to run.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

UP_TO_DATE = "no update"


def _run(cmd: Sequence[str], cwd: Path) -> str:
    proc = subprocess.run(list(cmd), cwd=cwd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"`{' '.join(cmd)}` failed ({proc.returncode}):\n"
                           f"{proc.stderr.strip() or proc.stdout.strip()}")
    return proc.stdout


def _paths(entries: Sequence[Any]) -> list[str]:
    return [next(iter(e)) if isinstance(e, Mapping) else e for e in entries]


def load_stages(root: Path) -> dict[str, dict[str, list[str]]]:
    """deps and outs of every stage in dvc.yaml."""
    doc = yaml.safe_load((root / "dvc.yaml").read_text())
    return {name: {"deps": _paths(st.get("deps", [])), "outs": _paths(st.get("outs", []))}
            for name, st in doc["stages"].items()}


def dvc_changed(root: Path) -> set[str]:
    """Stages `dvc status` reports as changed (any dep, param, out or command)."""
    out = _run(["dvc", "status", "--json"], root)
    status = json.loads(out or "{}")
    return {name.split(":")[-1] for name in status}


def snakemake_plans(root: Path, targets: Sequence[str]) -> dict[str, str]:
    """Snakemake's plan ('no update', 'update pending', ...) for every file behind `targets`."""
    out = _run(["snakemake", "--summary", "--cores", "1", *targets], root)
    plans = {}
    lines = [line for line in out.splitlines() if "\t" in line]
    if not lines:
        return plans
    header = lines[0].split("\t")
    file_col, plan_col = header.index("output_file"), header.index("plan")
    for line in lines[1:]:
        cols = line.split("\t")
        plans[cols[file_col].rstrip("/")] = cols[plan_col]
    return plans


def upstream(stages: Mapping[str, Mapping[str, list[str]]]) -> dict[str, set[str]]:
    """For each stage, every stage whose outputs it depends on, transitively."""
    producer = {o: name for name, st in stages.items() for o in st["outs"]}

    def direct(name: str) -> set[str]:
        return {producer[d] for d in stages[name]["deps"] if d in producer}

    closure: dict[str, set[str]] = {}

    def visit(name: str) -> set[str]:
        if name not in closure:
            closure[name] = set()
            for parent in direct(name):
                closure[name] |= {parent, *visit(parent)}
        return closure[name]

    for name in stages:
        visit(name)
    return closure


def plan_sync(stages: Mapping[str, Mapping[str, list[str]]], changed: set[str],
              plans: Mapping[str, str], existing: set[str]) -> tuple[list[str], list[str]]:
    """(outputs to touch for Snakemake, stages to commit for DVC); pure, for testing."""
    ancestors = upstream(stages)
    touch, commit = [], []
    for name, st in stages.items():
        fresh = all(plans.get(o) == UP_TO_DATE for o in st["outs"])
        present = all(o in existing for o in st["outs"])
        if name not in changed and not (ancestors[name] & changed):
            if not fresh and present:
                touch += st["outs"]
        elif fresh and present:
            commit.append(name)
    return touch, commit


def sync(root: Path, dry_run: bool = False, cores: int = 1) -> int:
    """Commit what Snakemake made, then touch what DVC restored (see module doc).

    Committing can rewrite files from the DVC cache (new mtimes), so the touch pass is planned
    after it, from fresh status."""
    stages = load_stages(root)
    outs = [o for st in stages.values() for o in st["outs"]]

    def plan() -> tuple[list[str], list[str], set[str]]:
        existing = {o for o in outs if (root / o).exists()}
        changed = dvc_changed(root)
        return (*plan_sync(stages, changed, snakemake_plans(root, outs), existing), changed)

    _, commit, changed = plan()
    if commit:
        print(f"dvc commit {len(commit)} stage(s) that Snakemake produced: {', '.join(commit)}")
        if not dry_run:
            # Every changed stage is to be committed (a direct run of the whole DAG): one
            # untargeted commit, which re-records unchanged stages as they are. DVC collects
            # the pipeline once per target, so naming hundreds of stages costs minutes.
            targets = [] if set(commit) == changed else commit
            _run(["dvc", "commit", "--force", *targets], root)
    touch, _, _ = plan()
    if touch:
        print(f"snakemake --touch {len(touch)} output(s) whose bytes DVC recorded")
        if not dry_run:
            _run(["snakemake", "--touch", "--cores", str(cores), *touch], root)
    if not touch and not commit:
        print("in sync: nothing to commit, nothing to touch")
    return 0
