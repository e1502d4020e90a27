"""Plotting pieces every paper's figures share: atomic PNG output, image grids, heat-map overlays,
training curves. Figures are built with `matplotlib.figure.Figure` (no pyplot state), so a
notebook shows the returned figure once and scripts never leak open figures."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from sparsegen.io import atomic_path


def save_png(fig: Figure, path: str | Path, dpi: int = 150) -> Path:
    """Write `fig` as a PNG atomically and return the path."""
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=dpi, bbox_inches="tight")
    return path


def image_grid(rows: Sequence[Sequence[np.ndarray | None]], col_titles: Sequence[str],
               row_titles: Sequence[str] | None = None, cell_inches: float = 1.8) -> Figure:
    """A grid of uint8 (H, W, 3) images; None leaves a cell blank."""
    n_rows, n_cols = len(rows), len(col_titles)
    if any(len(r) != n_cols for r in rows):
        raise ValueError(f"every row needs {n_cols} images (one per column title)")
    fig = Figure(figsize=(cell_inches * n_cols, cell_inches * n_rows + 0.4), layout="constrained")
    axes = fig.subplots(n_rows, n_cols, squeeze=False)
    for i, row in enumerate(rows):
        for j, image in enumerate(row):
            ax = axes[i, j]
            ax.set_xticks([])
            ax.set_yticks([])
            for spine in ax.spines.values():
                spine.set_visible(image is not None)
            if image is not None:
                ax.imshow(image)
            if i == 0:
                ax.set_title(col_titles[j], fontsize=8)
            if row_titles is not None and j == 0:
                ax.set_ylabel(row_titles[i], fontsize=7)
    return fig


def overlay(ax: Axes, image: np.ndarray, heat: np.ndarray, title: str,
            shown: np.ndarray | None = None, cmap: str = "magma", alpha: float = 0.65) -> None:
    """Show a (h, w) map stretched over a uint8 (H, W, 3) image (nearest neighbour cells);
    cells where the boolean `shown` is False stay uncoloured."""
    h, w = image.shape[:2]
    if shown is not None:
        heat = np.ma.masked_where(~shown, heat)
    ax.imshow(image.mean(axis=2), cmap="gray", extent=(0, w, h, 0))
    ax.imshow(heat, cmap=cmap, alpha=alpha, extent=(0, w, h, 0), interpolation="nearest")
    ax.set_title(title, fontsize=8)
    ax.set_xticks([])
    ax.set_yticks([])


def read_metrics(variant_dir: Path) -> dict[str, Any]:
    """A variant's metric records by name ({} when it has no metrics.json yet)."""
    from sparsegen.metrics.records import read_records

    path = Path(variant_dir) / "metrics.json"
    return {r.metric: r for r in read_records(path)} if path.is_file() else {}


def checkpoint_settings(path: Path) -> dict[str, Any]:
    """The resolved settings a checkpoint was trained with."""
    from sparsegen.train.checkpoint import load

    return load(path)["settings"]


def read_training_logs(runs_dir: Path, required: Sequence[str]) -> dict[str, pd.DataFrame]:
    """Every variant's train_log.csv under `runs_dir` by variant name; each must hold the
    `required` columns."""
    logs = {}
    for path in sorted(Path(runs_dir).glob("*/train_log.csv")):
        log = pd.read_csv(path)
        missing = [c for c in required if c not in log]
        if missing:
            raise ValueError(f"{path}: missing column(s) {missing}")
        logs[path.parent.name] = log
    if not logs:
        raise FileNotFoundError(f"{runs_dir}: no */train_log.csv")
    return logs


def training_curves(logs: Mapping[str, pd.DataFrame], columns: Sequence[str], x: str = "step"
                    ) -> Figure:
    """One panel per logged column, one line per run (e.g. per variant)."""
    fig = Figure(figsize=(3.2 * len(columns), 3.0), layout="constrained")
    axes = fig.subplots(1, len(columns), squeeze=False)[0]
    for ax, column in zip(axes, columns, strict=True):
        for name, log in logs.items():
            if column in log:
                ax.plot(log[x], log[column], label=name, linewidth=1)
        ax.set_title(column, fontsize=9)
        ax.set_xlabel(x)
        ax.grid(alpha=0.3)
    handles, labels = axes[0].get_legend_handles_labels()
    if handles:
        fig.legend(handles, labels, loc="outside right center", fontsize=7)
    return fig


def read_sample_index(path: Path, columns: Sequence[str], relative: Sequence[str], what: str
                      ) -> pd.DataFrame:
    """A sample step's CSV index (`path`) indexed by id, checked for `columns` and rows; the
    `relative` columns become absolute paths ("" stays "")."""
    if not path.is_file():
        raise FileNotFoundError(f"{path}: {what} index not found (run the sample step)")
    table = pd.read_csv(path, dtype=str, keep_default_na=False)
    missing = [col for col in columns if col not in table]
    if missing:
        raise ValueError(f"{path}: missing column(s) {missing}")
    if table.empty:
        raise ValueError(f"{path}: no {what} listed")
    for column in relative:
        table[column] = [str(path.parent / name) if name else "" for name in table[column]]
    return table.set_index("id", drop=False)
