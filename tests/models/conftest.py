"""Tiny prepared content/style datasets and StyA2K settings, and StyleNAT smoke settings, for
CPU tests."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from sparsegen.config import load_params, resolve
from sparsegen.data.manifest import write_manifest
from sparsegen.io import write_image
from sparsegen.provenance import sha256_file


def _gradient(rng: np.random.Generator, size: int) -> np.ndarray:
    """Smooth colour waves of random direction and phase around mid-grey: stand-in for a photo,
    with similar statistics in every image so that held-out images resemble training ones."""
    y, x = np.mgrid[0:size, 0:size] / size
    fy, fx = rng.uniform(-1.5, 1.5, (2, 3))
    phase = rng.uniform(0, 2 * np.pi, 3)
    return np.stack([0.5 + 0.3 * np.sin(2 * np.pi * (fx[i] * x + fy[i] * y) + phase[i])
                     for i in range(3)], -1)


STYLE_COLOURS = np.array([[0.9, 0.6, 0.1], [0.1, 0.2, 0.6]])


def _texture(rng: np.random.Generator, size: int) -> np.ndarray:
    """Two-colour stripes at one frequency and angle with a random phase, plus noise: copies of
    one painting's style, so that a few training steps see a consistent style target."""
    y, x = np.mgrid[0:size, 0:size] / size
    phase = rng.uniform(0, 2 * np.pi)
    stripes = 0.5 + 0.5 * np.sin(2 * np.pi * 6 * (0.8 * x + 0.6 * y) + phase)
    img = stripes[..., None] * STYLE_COLOURS[0] + (1 - stripes[..., None]) * STYLE_COLOURS[1]
    return np.clip(img + rng.normal(0, 0.08, img.shape), 0, 1)


def make_dataset(root: Path, kind: str, n_train: int, n_test: int, size: int, seed: int) -> Path:
    rng = np.random.default_rng(seed)
    make = _gradient if kind == "content" else _texture
    rows = []
    for i in range(n_train + n_test):
        rel = f"images/{kind}{i:03d}.png"
        write_image(root / rel, (make(rng, size) * 255).round().astype(np.uint8))
        rows.append({"id": f"{kind}{i:03d}", "split": "train" if i < n_train else "test",
                     "path": rel, "sha256": sha256_file(root / rel)})
    write_manifest(root, rows)
    return root


@pytest.fixture(scope="session")
def prepared(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """data/prepared with `content` (gradients) and `style` (textures), 96x96 PNGs."""
    root = tmp_path_factory.mktemp("prepared")
    make_dataset(root / "content", "content", n_train=6, n_test=4, size=96, seed=0)
    make_dataset(root / "style", "style", n_train=6, n_test=5, size=96, seed=1)
    return root


@pytest.fixture
def settings(prepared: Path, tmp_path: Path) -> dict[str, Any]:
    """Full-model settings on the tiny datasets: random-init VGG, crop 64, CPU."""
    s = copy.deepcopy(resolve(load_params(), "stya2k", "full"))
    s["paths"] = {**s["paths"], "prepared": str(prepared), "weights": str(tmp_path / "weights")}
    s["datasets"] = {"content": {"name": "content"}, "style": {"name": "style"}}
    s["weights"] = "random"
    s["device"] = "cpu"
    s["train"].update(batch_size=2, iterations=4, load_size=80, crop_size=64,
                      checkpoint_every=2, log_every=1, decay_start=4)
    s["eval"].update(n_content=2, n_style=3, size=64, timing_warmup=0, timing_repeats=1)
    return s


@pytest.fixture(scope="module")
def smoke() -> dict[str, Any]:
    """The smoke preset's StyleNAT settings, on the CPU with the torch attention backend."""
    s = resolve(load_params(overrides={"preset": "smoke"}), "stylenat", "stylenat")
    s["model"]["backend"] = "torch"
    s["device"] = "cpu"
    return s
