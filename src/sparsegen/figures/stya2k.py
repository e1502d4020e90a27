"""StyA2K figures (Fig. 5-8, 10 and training curves) from a run folder.

`runs_dir` is the experiment folder with one folder per variant (runs/<preset>/stya2k/
coco_wikiart). Every function saves a PNG into `figures_dir` atomically and returns the Figure.
Sample grids read the stylised PNGs the pipeline wrote; Fig. 5 and Fig. 8 run the full model's
checkpoint.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle

from sparsegen.config import SHOWCASE
from sparsegen.data.images import load_rgb, to_uint8
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
from sparsegen.models.stya2k import PAPER
from sparsegen.models.stya2k.evaluation import UNTRAINED_SUFFIX as SUFFIX
from sparsegen.models.stya2k.sampling import UNTRAINED

SAMPLE_COLUMNS = ("id", "content_id", "style_id", "output", "content_path", "style_path")
LOSS_COLUMNS = PAPER.loss_columns
COMPARISON = {"full": "StyA2K", "adaattn": "AdaAttN (ours)", "adain": "AdaIN (ours)"}  # Fig. 6
ABLATION = {  # Fig. 7, the Table 2 models
    "all_to_all": "All-to-all", "wo_da": "w/o DA", "wo_pa": "w/o PA",
    "wo_pa_step1": "w/o PA step 1", "wo_l_a2k": "w/o L_A2K*", "wo_l_adaa2k": "w/o L_AdaA2K*",
    "wo_multihead": "w/o multi-head", "full": "Full model",
}
A2K_VS_ALL = {"full": "All-to-key", "all_to_all": "All-to-all"}  # Fig. 10


def read_samples(variant_dir: Path) -> pd.DataFrame:
    """A variant's samples/samples.csv; `output` becomes the absolute PNG path."""
    path = Path(variant_dir) / "samples" / "samples.csv"
    if not path.is_file():
        raise FileNotFoundError(f"{path}: samples table not found")
    table = pd.read_csv(path, dtype=str)
    missing = [c for c in SAMPLE_COLUMNS if c not in table]
    if missing:
        raise ValueError(f"{path}: missing column(s) {missing}")
    if table.empty:
        raise ValueError(f"{path}: no samples")
    table["output"] = [str(path.parent / name) for name in table["output"]]
    return table


def select_pairs(samples: pd.DataFrame, n: int) -> list[tuple[str, str]]:
    """Up to n (content_id, style_id) pairs with distinct contents and styles, deterministic:
    the i-th content (sorted) with the i-th style (cyclically)."""
    contents = sorted(samples["content_id"].unique())
    styles = sorted(samples["style_id"].unique())
    present = set(zip(samples["content_id"], samples["style_id"], strict=True))
    pairs = [(c, styles[i % len(styles)]) for i, c in enumerate(contents)]
    return [p for p in pairs if p in present][:n]


def _row_of(samples: pd.DataFrame, pair: tuple[str, str], where: Path) -> pd.Series:
    hit = samples[(samples["content_id"] == pair[0]) & (samples["style_id"] == pair[1])]
    if hit.empty:
        raise ValueError(f"{where}/samples/samples.csv: no sample for content {pair[0]!r} "
                         f"and style {pair[1]!r}")
    return hit.iloc[0]


def sample_grid(runs_dir: Path, columns: dict[str, str], n_pairs: int) -> Figure:
    """Rows of (content, style, one stylisation per variant) for pairs every variant has."""
    runs_dir = Path(runs_dir)
    tables = {v: read_samples(runs_dir / v) for v in columns}
    first = next(iter(columns))
    pairs = select_pairs(tables[first], n_pairs)
    rows = []
    for pair in pairs:
        outputs = [read_image(_row_of(tables[v], pair, runs_dir / v)["output"]) for v in columns]
        size = outputs[0].shape[:2]
        ref = _row_of(tables[first], pair, runs_dir / first)
        content = to_uint8(load_rgb(ref["content_path"], size=size))
        style = to_uint8(load_rgb(ref["style_path"], size=size))
        rows.append([content, style, *outputs])
    return image_grid(rows, ["Content", "Style", *columns.values()],
                      row_titles=[f"{c} / {s}" for c, s in pairs])


def figure_comparison(runs_dir: Path, figures_dir: Path, n_pairs: int = 4) -> Figure:
    """Fig. 6: StyA2K beside our AdaAttN- and AdaIN-style peers on the same encoder/decoder."""
    fig = sample_grid(runs_dir, COMPARISON, n_pairs)
    save_png(fig, Path(figures_dir) / "fig6_comparison.png")
    return fig


def figure_ablation(runs_dir: Path, figures_dir: Path, n_pairs: int = 3) -> Figure:
    """Fig. 7: the Table 2 ablations."""
    fig = sample_grid(runs_dir, ABLATION, n_pairs)
    save_png(fig, Path(figures_dir) / "fig7_ablation.png")
    return fig


def figure_a2k_vs_all_to_all(runs_dir: Path, figures_dir: Path, n_pairs: int = 4) -> Figure:
    """Fig. 10: all-to-key (full model) against all-to-all attention."""
    fig = sample_grid(runs_dir, A2K_VS_ALL, n_pairs)
    save_png(fig, Path(figures_dir) / "fig10_a2k_vs_all_to_all.png")
    return fig


def figure_training_curves(runs_dir: Path, figures_dir: Path) -> Figure:
    """Loss terms of Eq. 17 against step for every variant with a train_log.csv (the smoke
    showcase, trained longer, has its own figure)."""
    logs = read_training_logs(runs_dir, ("step", *LOSS_COLUMNS))
    fig = training_curves({v: log for v, log in logs.items() if v != SHOWCASE}, LOSS_COLUMNS)
    save_png(fig, Path(figures_dir) / "training_curves.png")
    return fig


def figure_showcase(runs_dir: Path, figures_dir: Path, n_pairs: int = 4) -> Figure:
    """The smoke showcase: the full model trained longer at the smoke size, beside the same
    network untrained, titled with its length and the measured structure (SSIM to the content,
    grayscale) and style (StyTr2 style loss against the untrained network's)."""
    folder = Path(runs_dir) / SHOWCASE
    table = read_samples(folder)
    records = read_metrics(folder)
    train = checkpoint_settings(folder / "final.pt")["train"]
    rows = []
    for pair in select_pairs(table, n_pairs):
        row = _row_of(table, pair, folder)
        trained = read_image(row["output"])
        untrained = read_image(Path(row["output"]).parent / UNTRAINED / Path(row["output"]).name)
        size = trained.shape[:2]
        rows.append([to_uint8(load_rgb(row["content_path"], size=size)),
                     to_uint8(load_rgb(row["style_path"], size=size)), untrained, trained])
    fig = image_grid(rows, ["Content", "Style", "Untrained", "Trained"])
    ssim, ssim0 = (records[m].value for m in ("ssim_gray_skimage", f"ssim_gray_skimage{SUFFIX}"))
    style, style0 = (records[m].value for m in ("style_loss_stytr2", f"style_loss_stytr2{SUFFIX}"))
    fig.suptitle(f"smoke showcase: {train['iterations']} iterations at {train['crop_size']}² "
                 f"(batch {train['batch_size']}), random-init VGG\nSSIM to content {ssim:.2f} "
                 f"(untrained {ssim0:.2f}); style loss {style:.2f} = {style / style0:.2f} x "
                 "untrained", fontsize=8)
    save_png(fig, Path(figures_dir) / "smoke_showcase.png")
    return fig


# ---------------------------------------------------------------------------------------------
# Figures that run the full model


def _load_full(runs_dir: Path, device: str):
    from sparsegen.models.stya2k.task import load_model

    net, settings = load_model(Path(runs_dir) / "full" / "final.pt", torch.device(device))
    return net.eval(), settings


def _pick(samples: pd.DataFrame, pair: tuple[str, str] | None, where: Path) -> pd.Series:
    return _row_of(samples, pair or select_pairs(samples, 1)[0], where)


def _image(t: torch.Tensor) -> np.ndarray:
    return to_uint8(t[0] if t.dim() == 4 else t)


def figure_attention(runs_dir: Path, figures_dir: Path, layer: str | None = None,
                     query: tuple[float, float] = (0.5, 0.5),
                     pair: tuple[str, str] | None = None, device: str = "cpu") -> Figure:
    """Fig. 5: where one content position attends in the style image.

    `query` is the (y, x) position as a fraction of the content image. The maps are the
    parameter-free attention on normalised VGG features at `layer` (the block size of that layer
    from the checkpoint's settings, one head): all-to-all before/after softmax, DA before/after
    softmax (Eq. 7), PA step-1 block scores and argmax (Eq. 8), PA step-2 softmax (Eq. 10).
    `layer` None: relu4_1 if its map holds at least 2x2 blocks (the paper's 512² case), else
    relu3_1 (small evaluation sizes, where relu4_1 is a single block).
    Beside the full model's output it shows the AdaAttN peer's sample of the same pair, when
    that variant was run."""
    from sparsegen.attention.all_to_key import A2KSpec, block_shape, inspect_query

    runs_dir = Path(runs_dir)
    net, settings = _load_full(runs_dir, device)
    row = _pick(read_samples(runs_dir / "full"), pair, runs_dir / "full")
    size = read_image(row["output"]).shape[0]  # the evaluation size the samples were made at
    content = load_rgb(row["content_path"], size)[None].to(device)
    style = load_rgb(row["style_path"], size)[None].to(device)
    model = settings["model"]

    def spec_of(name: str) -> A2KSpec:
        return A2KSpec(block=int(model["block_sizes"][name]), block_mode=model["block_mode"],
                       heads=1, layer=name)

    if layer is None:
        side = size // 8  # relu4_1
        blocks = side // block_shape(spec_of("relu4_1"), (side, side), (side, side))[0]
        layer = "relu4_1" if blocks >= 2 else "relu3_1"
    spec = spec_of(layer)
    with torch.inference_mode():
        fc, fs = net.encode(content)[layer], net.encode(style)[layer]
        stylised = net.stylize(content, style)
    block = block_shape(spec, tuple(fc.shape[-2:]), tuple(fs.shape[-2:]))[0]
    hq, wq = fc.shape[-2:]
    qy, qx = min(int(query[0] * hq), hq - 1), min(int(query[1] * wq), wq - 1)
    maps = {k: v.float().cpu().numpy() for k, v in
            inspect_query(fc[0], fs[0], block, (qy, qx), heads=1).items()}

    fig = Figure(figsize=(11, 8), layout="constrained")
    axes = fig.subplots(3, 4)
    for ax in axes.flat:
        ax.set_axis_off()
    content_img, style_img = _image(content), _image(style)
    scale = size / hq
    axes[0, 0].imshow(content_img)
    axes[0, 0].add_patch(Rectangle((qx * scale, qy * scale), scale, scale, fill=False,
                                   edgecolor="red", linewidth=2))
    axes[0, 0].set_title(f"Content, query ({qy}, {qx}) at {layer}", fontsize=8)
    axes[0, 1].imshow(style_img)
    axes[0, 1].set_title("Style", fontsize=8)
    axes[0, 2].imshow(_image(stylised))
    axes[0, 2].set_title("StyA2K (full model)", fontsize=8)
    peer = runs_dir / "adaattn"
    if (peer / "samples" / "samples.csv").is_file():  # Fig. 5 (a): the all-to-all peer's output
        pair_ids = (row["content_id"], row["style_id"])
        axes[0, 3].imshow(read_image(_row_of(read_samples(peer), pair_ids, peer)["output"]))
        axes[0, 3].set_title("AdaAttN (ours), sample", fontsize=8)
    panels = [
        (1, 0, "all_to_all_logits", "All-to-all, before softmax"),
        (1, 1, "all_to_all_softmax", "All-to-all, after softmax"),
        (1, 2, "da_logits", "DA, before softmax"),
        (1, 3, "da_softmax", "DA, after softmax"),
        (2, 0, "pa_block_scores", "PA step 1, block scores"),
        (2, 1, "pa_block_argmax", "PA step 1, argmax"),
        (2, 2, "pa_softmax", "PA step 2, after softmax"),
    ]
    # Logits are drawn only where the attention reaches (its softmax is positive there).
    reach = {"da_logits": maps["da_softmax"] > 0}
    for i, j, key, title in panels:
        axes[i, j].set_axis_on()
        overlay(axes[i, j], style_img, maps[key], title, shown=reach.get(key))
    save_png(fig, Path(figures_dir) / "fig5_attention.png")
    return fig


def figure_interpolation(runs_dir: Path, figures_dir: Path,
                         weights: Sequence[float] = (0.0, 0.25, 0.5, 0.75, 1.0),
                         device: str = "cpu") -> Figure:
    """Fig. 8: style interpolation between two styles, and two styles in the left/right halves.

    Interpolation weight w mixes (1 - w) of the first style with w of the second."""
    runs_dir = Path(runs_dir)
    net, _ = _load_full(runs_dir, device)
    samples = read_samples(runs_dir / "full")
    styles_ids = sorted(samples["style_id"].unique())
    if len(styles_ids) < 2:
        raise ValueError(f"{runs_dir}/full/samples/samples.csv: Fig. 8 needs two styles")
    first = samples[samples["style_id"] == styles_ids[0]].iloc[0]
    second = samples[samples["style_id"] == styles_ids[1]].iloc[0]
    size = read_image(first["output"]).shape[0]  # the evaluation size the samples were made at
    content = load_rgb(first["content_path"], size)[None].to(device)
    style_a = load_rgb(first["style_path"], size)[None].to(device)
    style_b = load_rgb(second["style_path"], size)[None].to(device)
    left = torch.zeros(1, 1, size, size, device=device)
    left[..., : size // 2] = 1.0
    with torch.inference_mode():
        mixed = [net.stylize_interpolated(content, [style_a, style_b], [1.0 - w, w])
                 for w in weights]
        multi = net.stylize_multi(content, [style_a, style_b], [left, 1.0 - left])
    top = [_image(style_a), *(_image(m) for m in mixed), _image(style_b)]
    bottom = [_image(content), _image(style_a), _image(style_b), _image(multi)]
    bottom += [None] * (len(top) - len(bottom))
    fig = image_grid([top, bottom],
                     ["Style A", *(f"w = {w:g}" for w in weights), "Style B"],
                     row_titles=["interpolation", "content | A | B | A left, B right"])
    save_png(fig, Path(figures_dir) / "fig8_interpolation_multistyle.png")
    return fig
