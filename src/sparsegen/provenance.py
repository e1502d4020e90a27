"""Where a result came from: git commit, library versions, file hashes, hardware."""

from __future__ import annotations

import functools
import hashlib
import importlib.metadata
import json
import os
import platform
import subprocess
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[2]

# Libraries whose versions change numbers; recorded in every result and checkpoint.
TRACKED_LIBRARIES = (
    "torch", "torchvision", "numpy", "scipy", "scikit-image", "pillow",
    "clean-fid", "lpips", "natten", "sparsegen",
)


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    """Hex sha256 of a file, read in chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def stable_hash(obj: Any, length: int = 12) -> str:
    """Short sha256 of a JSON-serialisable object with sorted keys (config fingerprints)."""
    text = json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:length]


@functools.cache
def git_commit(cwd: str | None = None) -> str:
    """HEAD commit of the repository, with a '-dirty' suffix when tracked files changed.

    SPARSEGEN_GIT_COMMIT overrides it (a copy of the tree without .git, e.g. on a cluster node
    or a benchmark machine); outside a git checkout it is 'unknown'."""
    if os.environ.get("SPARSEGEN_GIT_COMMIT"):
        return os.environ["SPARSEGEN_GIT_COMMIT"]
    where = cwd or str(REPO_ROOT)
    try:
        sha = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=where, capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=where, capture_output=True, text=True, check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return f"{sha}-dirty" if dirty else sha


def library_versions() -> dict[str, str]:
    out = {}
    for name in TRACKED_LIBRARIES:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    out["python"] = platform.python_version()
    return out


def device_description(device: Any = None) -> str:
    """Human name of the compute device ('cpu: x86_64, 2 threads' or the CUDA GPU name)."""
    import torch

    dev = torch.device(device) if device is not None else None
    if dev is not None and dev.type == "cuda":
        return torch.cuda.get_device_name(dev)
    return f"cpu: {platform.machine()}, {torch.get_num_threads()} threads"


def _source_files(path: Path) -> list[Path]:
    if path.is_file():
        return [path]
    return sorted(p for p in path.rglob("*")
                  if p.is_file() and "__pycache__" not in p.parts and p.suffix != ".pyc")


@functools.cache
def _code_fingerprint(paths: tuple[str, ...], root: str) -> str:
    digest = hashlib.sha256()
    for rel in paths:
        path = Path(root) / rel
        if not path.exists():
            raise FileNotFoundError(f"{path}: source path listed for a code fingerprint is "
                                    "missing")
        for file in _source_files(path):
            digest.update(f"{file.relative_to(root).as_posix()}\0".encode())
            digest.update(hashlib.sha256(file.read_bytes()).digest())
    return digest.hexdigest()[:16]


def code_fingerprint(paths: list[str] | tuple[str, ...], root: str | Path = REPO_ROOT) -> str:
    """16-hex hash of the source files under `paths` (repository-relative files or folders;
    `__pycache__` left out): names and contents, so any edit, addition or removal changes it."""
    return _code_fingerprint(tuple(paths), str(root))
