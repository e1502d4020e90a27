"""Atomic outputs and image errors that name the file."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from sparsegen.io import ImageReadError, atomic_path, read_image, write_image


def test_failed_write_keeps_the_previous_file(tmp_path: Path) -> None:
    target = tmp_path / "out.txt"
    target.write_text("old")
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_text("half")
        raise RuntimeError("crash")
    assert target.read_text() == "old"
    assert list(tmp_path.iterdir()) == [target]


def test_image_round_trip(tmp_path: Path) -> None:
    img = np.random.default_rng(0).integers(0, 256, (8, 9, 3), dtype=np.uint8)
    write_image(tmp_path / "a.png", img)
    assert np.array_equal(read_image(tmp_path / "a.png"), img)


def test_corrupt_image_names_the_file(tmp_path: Path) -> None:
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    with pytest.raises(ImageReadError, match=r"broken\.png"):
        read_image(bad)
    with pytest.raises(ImageReadError, match=r"missing\.png: image file not found"):
        read_image(tmp_path / "missing.png")


def test_atomic_outputs_get_the_usual_permissions(tmp_path: Path) -> None:
    import os

    with atomic_path(tmp_path / "x.txt") as tmp:
        tmp.write_text("x")
    mask = os.umask(0)
    os.umask(mask)
    assert (tmp_path / "x.txt").stat().st_mode & 0o777 == 0o666 & ~mask
