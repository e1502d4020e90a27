"""A temporary copy of the repository (git + DVC) in which the real DAG runs."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

import pytest

from sparsegen.provenance import REPO_ROOT

BIN = Path(sys.executable).parent


def tool_env(repo: Path) -> dict[str, str]:
    """Environment for Snakemake/DVC subprocesses: this interpreter's tools, the copy's code."""
    env = dict(os.environ)
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"
    env["PYTHONPATH"] = str(repo / "src")
    env["PYTHONUNBUFFERED"] = "1"
    env.pop("SPARSEGEN_DVC_PRESET", None)
    return env


def run(cmd: Sequence[str], repo: Path, check: bool = True, timeout: float = 1200
        ) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(list(cmd), cwd=repo, env=tool_env(repo), capture_output=True,
                          text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"`{' '.join(cmd)}` exited {proc.returncode}\n--- stdout\n"
                             f"{proc.stdout[-4000:]}\n--- stderr\n{proc.stderr[-6000:]}")
    return proc


def copy_repository(dest: Path) -> Path:
    """Copy the tracked and unignored files into a fresh git repository at `dest`."""
    files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard", "-z"],
                           cwd=REPO_ROOT, capture_output=True, text=True,
                           check=True).stdout.split("\0")
    for rel in filter(None, files):
        src = REPO_ROOT / rel
        if src.is_file():
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / rel)
    for cmd in (["git", "init", "-q"], ["git", "add", "-A"],
                ["git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "copy"]):
        subprocess.run(cmd, cwd=dest, check=True, capture_output=True)
    return dest


@pytest.fixture(scope="session")
def sh():
    """`sh(cmd, repo, check=True)`: run a tool in a repository copy (see `run`)."""
    return run


@pytest.fixture(scope="module")
def repo_copy(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return copy_repository(tmp_path_factory.mktemp("sparsegen") / "repo")
