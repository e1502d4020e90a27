"""Atomic file output and image input with errors that name the file."""

from __future__ import annotations

import glob
import io
import json
import logging
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

log = logging.getLogger(__name__)


class ImageReadError(ValueError):
    """An image file is missing, unreadable or corrupt."""


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside `path`; on success it replaces `path` atomically.

    A crash leaves the previous file (or nothing) in place, never a half-written one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.chmod(tmp_path, 0o666 & ~_umask())  # mkstemp makes 0600; give the usual mode
        os.replace(tmp_path, path)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


@contextmanager
def atomic_dir(path: str | Path) -> Iterator[Path]:
    """Folder version of `atomic_path`: yield a temporary sibling folder that replaces `path`
    (old content removed) only on success. Leftovers of an interrupted earlier call are
    removed first."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    for stale in path.parent.glob(f".{glob.escape(path.name)}.tmp-*"):
        log.info("removing %s, left by an interrupted run", stale)
        shutil.rmtree(stale, ignore_errors=True)
    tmp = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.tmp-"))
    try:
        yield tmp
        if path.exists():
            old = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.tmp-old-"))
            os.replace(path, old / path.name)
            os.replace(tmp, path)
            shutil.rmtree(old)
        else:
            os.replace(tmp, path)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)


def write_text(path: str | Path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def write_bytes(path: str | Path, data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def write_json(path: str | Path, obj: Any) -> None:
    write_text(path, json.dumps(obj, indent=2, sort_keys=False, default=str) + "\n")


def read_json(path: str | Path) -> Any:
    path = Path(path)
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: file not found") from None
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}: not valid JSON ({e})") from None


def torch_save(obj: Any, path: str | Path) -> None:
    import torch

    with atomic_path(path) as tmp:
        torch.save(obj, tmp)


def read_image(source: str | Path | bytes, mode: str = "RGB", name: str | None = None
               ) -> np.ndarray:
    """Decode an image file (or its bytes, e.g. an archive member) to a writable uint8 array
    (H, W, 3); grayscale, CMYK and palette images are converted. Any failure names the file
    (`name` for bytes)."""
    from PIL import Image

    where = name or str(source if not isinstance(source, bytes) else "<bytes>")
    try:
        fp = io.BytesIO(source) if isinstance(source, bytes) else Path(source)
        with Image.open(fp) as im:
            im.load()
            return np.array(im.convert(mode))
    except FileNotFoundError:
        raise ImageReadError(f"{where}: image file not found") from None
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:
        raise ImageReadError(f"{where}: unreadable or corrupt image ({e})") from None


def write_image(path: str | Path, array: np.ndarray, **save_kwargs: Any) -> None:
    """Write a uint8 (H, W, 3) array atomically; format from the suffix (.png, .jpg)."""
    from PIL import Image

    path = Path(path)
    if array.dtype != np.uint8:
        raise TypeError(f"{path}: expected a uint8 image array, got {array.dtype}")
    fmt = {".png": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG"}.get(path.suffix.lower())
    if fmt is None:
        raise ValueError(f"{path}: unsupported image suffix {path.suffix!r} (use .png or .jpg)")
    with atomic_path(path) as tmp:
        Image.fromarray(array).save(tmp, format=fmt, **save_kwargs)
