"""StyleNAT figures (Figs. 1, 3, 4, 5, Hydra-NA attention maps, training curves) from a run
folder.

`runs_dir` is the experiment folder with one folder per variant (runs/<preset>/stylenat/
generation), each holding samples/ (the sample step's PNGs), metrics.json, train_log.csv and
final.pt. Every function saves a PNG into `figures_dir` atomically and returns the Figure.
Fig. 3 draws the paper's Table 1 points from pipeline/claims/stylenat.yaml beside ours.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from itertools import pairwise
from pathlib import Path

import numpy as np
import torch
from matplotlib.figure import Figure

from sparsegen import judge
from sparsegen.claims import load_claims
from sparsegen.config import SHOWCASE
from sparsegen.figures.common import (
    checkpoint_settings,
    image_grid,
    overlay,
    read_metrics,
    read_training_logs,
    save_png,
    training_curves,
)
from sparsegen.io import read_image
from sparsegen.layout import dataset_dir
from sparsegen.metrics.records import ResultRecord
from sparsegen.models.stylenat import PAPER
from sparsegen.models.stylenat.evaluation import UNTRAINED_SUFFIX as SUFFIX
from sparsegen.models.stylenat.sampling import UNTRAINED, mosaic
from sparsegen.provenance import REPO_ROOT

CLAIMS = REPO_ROOT / "pipeline" / "claims" / "stylenat.yaml"
FID = "fid_legacy_pytorch"
LOSS_COLUMNS = PAPER.loss_columns
FIGURE1 = {"stylenat": "FFHQ-256", "ffhq1024": "FFHQ-1024", "church_p8": "LSUN Church"}
MEASURED = {"stylenat": "StyleNAT", "styleswin": "StyleSwin"}  # Fig. 3 points we measure
BUBBLE_AREA = 20.0  # marker area (pt^2) per million parameters


def sample_files(variant_dir: Path, n: int, within: str = "") -> list[Path]:
    """The first `n` sample PNGs (by name) of a variant's samples/[within/]images."""
    folder = Path(variant_dir) / "samples" / within / "images"
    files = sorted(folder.glob("*.png"))
    if not files:
        raise FileNotFoundError(f"{folder}: no sample PNGs (run the sample step)")
    return files[:n]


def comparable(record: ResultRecord, claims_path: Path = CLAIMS) -> bool:
    """Whether an FID record compares with Table 1's FID-256 (the judge's verdict)."""
    table = load_claims(claims_path).tables["1"]
    return not judge.reasons(record, table.protocol, table.recipe_of("fid_256"))


def _fid_text(records: dict[str, ResultRecord], claims_path: Path) -> str:
    rec = records.get(FID)
    if rec is None:
        return "FID not evaluated"
    return f"FID {rec.value:.2f}" + ("" if comparable(rec, claims_path) else "†")


def figure_samples(runs_dir: Path, figures_dir: Path, variant: str, name: str,
                   n: int = 16, columns: int = 4, claims_path: Path = CLAIMS) -> Figure:
    """A grid of a variant's first `n` samples (Fig. 4: FFHQ-256, Fig. 5: LSUN Church), titled
    with its FID († when the record is not comparable with the paper)."""
    variant_dir = Path(runs_dir) / variant
    images = [read_image(p) for p in sample_files(variant_dir, n)]
    rows = [images[i:i + columns] for i in range(0, len(images), columns)]
    rows[-1] = rows[-1] + [None] * (columns - len(rows[-1]))
    fig = image_grid(rows, [""] * columns)
    fig.suptitle(f"{variant}: {_fid_text(read_metrics(variant_dir), claims_path)}", fontsize=9)
    save_png(fig, Path(figures_dir) / f"{name}.png")
    return fig


def figure_overview(runs_dir: Path, figures_dir: Path, per_column: int = 3,
                    variants: dict[str, str] = FIGURE1, claims_path: Path = CLAIMS) -> Figure:
    """Fig. 1: samples of FFHQ-256, FFHQ-1024 and LSUN Church side by side, with their FIDs."""
    columns, titles = [], []
    for variant, title in variants.items():
        variant_dir = Path(runs_dir) / variant
        files = sample_files(variant_dir, per_column)
        columns.append([read_image(p) for p in files] + [None] * (per_column - len(files)))
        titles.append(f"{title} ({variant}), "
                      f"{_fid_text(read_metrics(variant_dir), claims_path)}")
    fig = image_grid([list(row) for row in zip(*columns, strict=True)], titles)
    save_png(fig, Path(figures_dir) / "fig1_samples.png")
    return fig


# ---------------------------------------------------------------------------------------------
# Fig. 3: FID against throughput, bubble area = parameters


@dataclass(frozen=True)
class BubblePoint:
    label: str
    throughput: float   # images/s
    fid: float
    params_m: float
    measured: bool      # ours (hollow) or the paper's (filled)


def paper_points(claims_path: Path = CLAIMS) -> list[BubblePoint]:
    """Table 1 rows that print FID-256, throughput and parameters (Fig. 3's models; not our
    rows of the authors' weights, which repeat a printed row)."""
    table = load_claims(claims_path).tables["1"]
    points = []
    for rid, row in table.rows.items():
        cells = table.cells[rid]
        printed = (cells["fid_256"], cells["throughput"], cells["params"])
        if row.released_of is None and None not in printed:
            points.append(BubblePoint(row.label, cells["throughput"], cells["fid_256"],
                                      cells["params"], measured=False))
    return points


def measured_points(runs_dir: Path, variants: dict[str, str] = MEASURED,
                    claims_path: Path = CLAIMS) -> list[BubblePoint]:
    """Our FID / throughput / parameter records, labelled with preset and GPU."""
    points = []
    for variant, name in variants.items():
        records = read_metrics(Path(runs_dir) / variant)
        if not all(m in records for m in (FID, "throughput_img_s", "params_m")):
            continue
        speed = records["throughput_img_s"]
        where = speed.protocol.get("device", speed.device)
        flag = "" if comparable(records[FID], claims_path) else ", not comparable"
        points.append(BubblePoint(
            f"{name} (ours)\n{speed.source.get('preset', '?')}, {where}{flag}",
            speed.value, records[FID].value, records["params_m"].value, measured=True))
    return points


def fid_throughput_plot(points: Sequence[BubblePoint]) -> Figure:
    """FID (y) against throughput (x); marker area proportional to the parameter count.
    The y axis is logarithmic when the FIDs span more than a factor of 20 (smoke runs)."""
    if not points:
        raise ValueError("Fig. 3 needs at least one point")
    fig = Figure(figsize=(8.0, 4.8), layout="constrained")
    ax = fig.subplots()
    for measured, style in ((False, {"alpha": 0.45}),
                            (True, {"facecolors": "none", "edgecolors": "C3", "linewidths": 1.5})):
        group = [p for p in points if p.measured == measured]
        if group:
            ax.scatter([p.throughput for p in group], [p.fid for p in group],
                       s=[BUBBLE_AREA * p.params_m for p in group],
                       label="ours" if measured else "paper (Table 1)", **style)
    ours = [p for p in points if p.measured]
    right = max(p.throughput for p in points)
    for p in points:
        lift = 4 + 28 * ours.index(p) if p.measured else 4  # stagger our labels (one corner)
        east = p.throughput > 0.6 * right  # labels of points near the right edge go left
        ax.annotate(f"{p.label}\n{p.params_m:.2f}M", (p.throughput, p.fid), fontsize=7,
                    xytext=(-4 if east else 4, -lift if p.measured else lift),
                    textcoords="offset points", ha="right" if east else "left",
                    va="top" if p.measured else "bottom")
    ax.margins(x=0.12, y=0.3)
    fids = [p.fid for p in points]
    if min(fids) > 0 and max(fids) / min(fids) > 20:
        ax.set_yscale("log")
    ax.set_xlabel("throughput (images/s, batch 1)")
    ax.set_ylabel("FID50k ↓" if not any(p.measured for p in points) else "FID ↓")
    ax.grid(alpha=0.3)
    legend = ax.legend(fontsize=7)
    for handle in legend.legend_handles:  # legend markers of one size, whatever the areas
        handle.set_sizes([40])
    return fig


def figure_fid_throughput(runs_dir: Path, figures_dir: Path, claims_path: Path = CLAIMS
                          ) -> Figure:
    """Fig. 3: the paper's models beside our measured StyleNAT (and StyleSwin) points."""
    fig = fid_throughput_plot(paper_points(claims_path)
                              + measured_points(runs_dir, claims_path=claims_path))
    save_png(fig, Path(figures_dir) / "fig3_fid_throughput.png")
    return fig


# ---------------------------------------------------------------------------------------------
# Attention maps of one query: a local (d = 1) and a dilated Hydra-NA head group


def _attention_layer(generator: torch.nn.Module, layer: str | None) -> tuple[str, torch.nn.Module]:
    layers = generator.attention_layers()
    if layer is not None:
        if layer not in layers:
            raise KeyError(f"attention layer {layer!r} not found; the generator has "
                           f"{', '.join(layers)}")
        return layer, layers[layer]
    dilated = [(int(name.split(".")[0]), name) for name, m in layers.items()
               if hasattr(m, "attention_map") and max(getattr(m, "dilations", [1])) > 1
               and min(m.dilations) == 1]
    if not dilated:
        raise ValueError("no attention layer has both a local (d=1) and a dilated partition "
                         "(a Hydra-NA generator is needed)")
    name = max(dilated)[1]
    return name, layers[name]


@dataclass(frozen=True)
class QueryMaps:
    layer: str                    # "<side>.<block>"
    image: np.ndarray             # the generated sample, uint8 (R, R, 3)
    query: tuple[int, int]        # (row, col) on the layer's grid
    side: int                     # the layer's grid side
    groups: list[np.ndarray]      # per partition: mean softmax map of its heads, (side, side)
    kernel_sizes: list[int]
    dilations: list[int]
    head_splits: list[int]


def query_maps(generator: torch.nn.Module, z: torch.Tensor, layer: str | None,
               query: tuple[float, float]) -> QueryMaps:
    """Generate one image from z [1, style_dim] and return it with the attention of one query
    (given as a fraction of the map) at `layer`: the mean map of each partition's heads."""
    from sparsegen.models.stylenat.sampling import to_png_uint8

    name, attn = _attention_layer(generator, layer)
    captured = {}
    handle = attn.register_forward_hook(lambda m, args, out: captured.setdefault("x", args[0]))
    try:
        with torch.inference_mode():
            image = to_png_uint8(generator(z))[0]
    finally:
        handle.remove()
    x = captured["x"]
    side = x.shape[1]
    qy, qx = (min(int(f * side), side - 1) for f in query)
    with torch.inference_mode():
        heads = attn.attention_map(x, (qy, qx)).float().cpu().numpy()
    bounds = np.cumsum([0, *attn.head_splits])
    return QueryMaps(layer=name, image=image, query=(qy, qx), side=side,
                     groups=[heads[a:b].mean(0) for a, b in pairwise(bounds)],
                     kernel_sizes=list(attn.kernel_sizes), dilations=list(attn.dilations),
                     head_splits=list(attn.head_splits))


def figure_attention(runs_dir: Path, figures_dir: Path, variant: str = "stylenat",
                     layer: str | None = None, query: tuple[float, float] = (0.5, 0.5),
                     seed: int = 0, device: str = "cpu") -> Figure:
    """Where one query attends in a local (d = 1) and in the most dilated head group of a
    Hydra-NA layer (default: the largest side with both), for a sample of the variant's
    EMA generator. `query` is (y, x) as a fraction of the feature map."""
    from sparsegen.models.stylenat.sampling import latents
    from sparsegen.models.stylenat.task import load_generator

    generator, settings = load_generator(Path(runs_dir) / variant / "final.pt",
                                         torch.device(device))
    z = latents(1, settings["model"]["style_dim"], seed).to(device)
    maps = query_maps(generator, z, layer, query)
    local, wide = maps.dilations.index(1), int(np.argmax(maps.dilations))
    fig = Figure(figsize=(9.6, 3.4), layout="constrained")
    axes = fig.subplots(1, 3)
    (qy, qx), scale = maps.query, maps.image.shape[0] / maps.side
    axes[0].imshow(maps.image)
    axes[0].plot([(qx + 0.5) * scale], [(qy + 0.5) * scale], "r+", markersize=12, mew=2)
    axes[0].set_title(f"{variant} sample, query ({qy}, {qx}) at {maps.layer}", fontsize=8)
    axes[0].set_axis_off()
    for ax, g in ((axes[1], local), (axes[2], wide)):
        heat = maps.groups[g]
        title = (f"partition {g}: k={maps.kernel_sizes[g]}, d={maps.dilations[g]} "
                 f"({maps.head_splits[g]} heads, mean)")
        overlay(ax, maps.image, heat, title, shown=heat > 0)
    save_png(fig, Path(figures_dir) / "attention_local_vs_dilated.png")
    return fig


# ---------------------------------------------------------------------------------------------
# Training curves


def figure_showcase(runs_dir: Path, figures_dir: Path, n: int = 16) -> Figure:
    """The smoke showcase: the StyleNAT model trained longer at the smoke size (short-run
    recipe), the same z through the untrained generator, and real images of the dataset,
    titled with its length and FIDs (random-init Inception) against the untrained one's."""
    folder = Path(runs_dir) / SHOWCASE
    records = read_metrics(folder)
    settings = checkpoint_settings(folder / "final.pt")
    train, side = settings["train"], settings["model"]["resolution"]
    real = [read_image(p) for p in sorted(dataset_dir(settings, "images").rglob("*.png"))[:n]]
    untrained = [read_image(p) for p in sample_files(folder, n, UNTRAINED)]
    trained = [read_image(p) for p in sample_files(folder, n)]
    columns = int(n ** 0.5)
    panels = [mosaic(np.stack(images), columns) for images in (real, untrained, trained)]
    fig = image_grid([panels], ["Real (procedural faces)", "Untrained", "Trained"],
                     cell_inches=2.4)
    fid, fid0 = (records[m].value for m in (FID, f"{FID}{SUFFIX}"))
    fig.suptitle(f"smoke showcase: {train['iterations']} iterations at {side}² (batch "
                 f"{train['batch_size']}, lr {train['lr_g']:g}/{train['lr_d']:g}, EMA "
                 f"{train['ema_decay']:g})\nFID (random-init Inception) {fid:.3f} = "
                 f"{fid / fid0:.2f} x untrained ({fid0:.3f})", fontsize=8)
    save_png(fig, Path(figures_dir) / "smoke_showcase.png")
    return fig


def figure_training_curves(runs_dir: Path, figures_dir: Path) -> Figure:
    """G and D losses (and R1 / bCR where logged) against step for every variant (the smoke
    showcase, trained longer with another recipe, has its own figure)."""
    logs = {v: log for v, log in read_training_logs(runs_dir, ("step", "g", "d")).items()
            if v != SHOWCASE}
    columns = [c for c in LOSS_COLUMNS if any(c in log and log[c].notna().any()
                                              for log in logs.values())]
    fig = training_curves(logs, columns)
    save_png(fig, Path(figures_dir) / "training_curves.png")
    return fig
