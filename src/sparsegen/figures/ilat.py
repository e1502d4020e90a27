"""iLAT figures (Figs. 1B, 3-13 as our runs can show them, time against masked rate, training
curves, tokenizer reconstructions, the smoke showcase) from a run folder.

`runs_dir` is the experiment folder with one folder per variant (runs/<preset>/ilat/
local_editing), each holding samples/ (the sample step's folder, `models.ilat.sampling`:
examples.csv, outputs/, recon/, inputs/, truths/, masks/, conditions/, untrained/, sampling.json),
metrics.json, train_log.csv and final.pt. Every function saves a PNG into `figures_dir`
atomically, returns the Figure and names under it the files it read and the command that made
them; a variant that was not run is skipped with a printed note, and a figure none of whose
inputs exists is not drawn (None, with a printed note). No figure runs a network: the images
are the sample step's, the attention masks and leak regions are drawn by our builders
(`attention.local_autoregressive`, `models.ilat.two_stream`) on a small example.
"""

from __future__ import annotations

import textwrap
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from sparsegen.attention.local_autoregressive import (
    ae_mask,
    causal_mask,
    causal_positions,
    la_mask,
    token_mask,
)
from sparsegen.claims import load_claims
from sparsegen.config import SHOWCASE
from sparsegen.data.manifest import Sample, read_manifest
from sparsegen.data.pose_masks import ACTION_KERNELS
from sparsegen.figures.common import (
    checkpoint_settings,
    image_grid,
    read_metrics,
    read_sample_index,
    read_training_logs,
    save_png,
    training_curves,
)
from sparsegen.figures.dynast import common_ids
from sparsegen.io import read_image
from sparsegen.layout import FINAL, METRICS, SAMPLES, TRAIN_LOG, dataset_dir, prepared_dir
from sparsegen.models.ilat.evaluation import UNTRAINED_SUFFIX
from sparsegen.models.ilat.sampling import COLUMNS, EXAMPLES_CSV, UNTRAINED, soft_blend_mask
from sparsegen.models.ilat.two_stream import leak_region, pool_mask

# What made each kind of input (named under every figure).
COMMANDS = {
    "samples": "python -m sparsegen sample (Snakemake rule sample)",
    "metrics": "python -m sparsegen evaluate (rule evaluate)",
    "train_log": "python -m sparsegen train (rule train)",
    "checkpoint": "python -m sparsegen train (rule train)",
    "manifest": "python -m sparsegen prepare (rule prepare)",
    "bench": "python -m sparsegen bench ilat (rule bench)",
    "claims": "the paper's printed numbers",
    "builder": "drawn here by our mask builders, no run",
}
IMAGE_COLUMNS = ("output", "recon", "input", "truth", "mask", "condition")
DATASETS = {"pa": "Penn Action", "sdf": "Synthetic DeepFashion", "ffhq": "FFHQ"}
FACES = "ffhq"  # the dataset whose condition is a sketch, not the reference frame
METHODS = {"taming": "Taming", "taming_star": "Taming*", "ilat_star": "iLAT*", "ilat": "iLAT"}
COMPARED = {"pa": ("taming", "ilat_star", "ilat"), "sdf": ("taming", "ilat"),
            "ffhq": ("taming", "taming_star", "ilat_star", "ilat")}  # Fig. 4 and Figs. 10-12
TOKENIZERS = {"pa": ("vq_pa", "vq_eq4_pa", "ts_pa"), "sdf": ("vq_sdf", "ts_sdf"),
              "ffhq": ("vq_ffhq", "vq_eq4_ffhq", "ts_ffhq", "sketch_ffhq")}
TOKENIZER_LABELS = {"vq": "VQGAN", "vq_eq4": "VQGAN + Eq. 4 (iLAT*)", "ts": "TS-VQGAN",
                    "sketch": "sketch VQGAN"}  # by variant prefix
MORE = {"ffhq": "fig10_faces_more", "pa": "fig11_pa_more", "sdf": "fig12_sdf_more"}
LOSSES = {"tokenizer": ("rec", "codebook", "g", "lambda", "d"),
          "transformer": ("ce", "masked_fraction")}
# Fig. 3(b)'s example: a 3 x 3 token grid with t1, t2, t5, t7 masked, from a pixel hole of
# 12 x 12 pixels (4 x 4 per token) that touches those cells only.
FIG3_GRID, FIG3_SIDE = 3, 12
FIG3_HOLES = ((slice(1, 4), slice(6, 11)), (slice(5, 7), slice(9, 11)),
              (slice(9, 11), slice(5, 7)))
# The benchmark's CSV (results/bench/ilat.csv): candidate column names, looked up in order.
BENCH_METHOD = ("method", "model", "variant")
BENCH_MASKED = ("masked_fraction", "masked_rate", "masked_rate_tokens")
BENCH_SECONDS = ("total_s", "seconds", "mean_s", "seconds_per_image")
BENCH_MS = ("mean_ms", "median_ms")
BENCH_SPLIT = ("dataset", "cache", "cached", "precision", "mask")  # lines (parts merge)


# ---------------------------------------------------------------------------------------------
# Reading the sample folders and naming sources


def read_examples(variant_dir: Path) -> pd.DataFrame:
    """A variant's samples/examples.csv indexed by example id, its image columns as absolute
    paths ("" where the stage writes none, e.g. `recon` of a transformer)."""
    return read_sample_index(Path(variant_dir) / SAMPLES / EXAMPLES_CSV, COLUMNS, IMAGE_COLUMNS,
                             "examples")


def examples_csv(runs_dir: Path, variant: str) -> Path:
    return Path(runs_dir) / variant / SAMPLES / EXAMPLES_CSV


def available(runs_dir: Path, variants: Sequence[str], figure: str) -> list[str]:
    """The variants among `variants` that have samples, in order; a note for each missing one."""
    found = []
    for variant in variants:
        path = examples_csv(runs_dir, variant)
        if path.is_file():
            found.append(variant)
        else:
            print(f"{figure}: skipped {variant} ({path} not found)")
    return found


def _no_figure(figure: str, why: str) -> None:
    print(f"{figure}: not drawn ({why})")


def name_sources(fig: Figure, sources: Sequence[tuple[str | Path, str]]) -> str:
    """Write "sources: <file> (<command>); ..." under the figure and return it; `sources` are
    (file or module, kind of COMMANDS)."""
    seen = dict.fromkeys(f"{path} ({COMMANDS[kind]})" for path, kind in sources)
    text = "sources: " + "; ".join(seen)
    width = max(60, int(fig.get_figwidth() * 16))
    fig.supxlabel(textwrap.fill(text, width, break_long_words=False, break_on_hyphens=False),
                  fontsize=6, color="0.3")
    return text


def image(path: str | Path) -> np.ndarray:
    return read_image(path)


def hole_overlay(picture: np.ndarray, mask: np.ndarray, colour: Sequence[int] = (255, 0, 0),
                 alpha: float = 0.45) -> np.ndarray:
    """The uint8 picture with the hole (white in the mask PNG) tinted."""
    hole = mask[..., :1] > 127
    tinted = picture * (1 - alpha) + np.asarray(colour, dtype=float) * alpha
    return np.where(hole, tinted, picture).round().astype(np.uint8)


# ---------------------------------------------------------------------------------------------
# Figs. 1(B) and 3: the attention masks and the leak region, from our builders


def fig3_token_mask() -> tuple[torch.Tensor, torch.Tensor]:
    """Fig. 3(b)'s example: the pixel hole (1, 1, 12, 12) and its token mask Bool (1, 9)
    (`token_mask`: t1, t2, t5, t7)."""
    hole = torch.zeros(1, 1, FIG3_SIDE, FIG3_SIDE)
    for rows, cols in FIG3_HOLES:
        hole[0, 0, rows, cols] = 1
    return hole, token_mask(hole, FIG3_GRID)


def _sequence_labels(n_cond: int, n: int) -> list[str]:
    return ["c_s", *(f"c{i}" for i in range(n_cond - 1)), "t_s", *(f"t{i}" for i in range(n))]


def _draw_mask(ax: Axes, attend: np.ndarray, labels: Sequence[str], n_cond: int, title: str,
               causal: np.ndarray | None = None) -> None:
    """A boolean (L, L) mask, rows = queries, dark = may attend; target positions that are
    causal under the LA mask get red tick labels."""
    ax.imshow(attend, cmap="Greys", vmin=0, vmax=1.6, interpolation="nearest")
    ticks = np.arange(len(labels))
    ax.set_xticks(ticks, labels, fontsize=5, rotation=90)
    ax.set_yticks(ticks, labels, fontsize=5)
    if causal is not None:
        for tick_labels in (ax.get_xticklabels(), ax.get_yticklabels()):
            for p, is_causal in enumerate(causal):
                tick_labels[n_cond + p].set_color("C3" if is_causal else "black")
    ax.axhline(n_cond - 0.5, color="C0", linewidth=0.8)
    ax.axvline(n_cond - 0.5, color="C0", linewidth=0.8)
    ax.set_title(title, fontsize=8)


def figure_attention_masks(figures_dir: Path, form: str = "paper") -> Figure:
    """Figs. 1(B) and 3(b): the AE, vanilla AR (Taming) and LA (Eq. 7) attention masks our
    builders make for Fig. 3(b)'s example (3 x 3 tokens, t1, t2, t5, t7 masked, from a pixel
    hole through `token_mask`), with 1 + 9 condition positions; rows are queries, dark = may
    attend. Red target labels: positions the LA mask makes causal (their token or the next one
    is masked); the others are global and never see a causal position."""
    hole, masked = fig3_token_mask()
    n_cond, n = 1 + FIG3_GRID ** 2, FIG3_GRID ** 2
    labels = _sequence_labels(n_cond, n)
    causal = causal_positions(masked)[0].numpy()
    panels = [("AE (Fig. 1(B) a)", ae_mask(masked, n_cond)[0], None),
              ("vanilla AR, Taming (Fig. 1(B) b)", causal_mask(n_cond, n), None),
              (f"LA, Eq. 7 (Fig. 1(B) c, 3(b); form {form})", la_mask(masked, n_cond, form)[0],
               causal)]
    fig = Figure(figsize=(13.0, 3.9), layout="constrained")
    axes = fig.subplots(1, 4, width_ratios=[0.7, 1, 1, 1])
    ax = axes[0]
    ax.imshow(hole[0, 0].numpy(), cmap="Greys", vmin=0, vmax=1.6, interpolation="nearest")
    cell = FIG3_SIDE // FIG3_GRID
    for i in range(1, FIG3_GRID):
        ax.axhline(i * cell - 0.5, color="C0", linewidth=0.8)
        ax.axvline(i * cell - 0.5, color="C0", linewidth=0.8)
    for k, is_masked in enumerate(masked[0].tolist()):
        y, x = divmod(k, FIG3_GRID)
        ax.text(x * cell + cell / 2 - 0.5, y * cell + cell / 2 - 0.5, f"t{k}", ha="center",
                va="center", fontsize=8, color="C3" if is_masked else "C0")
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_title("pixel hole (dark) and its tokens\n(red: masked, token_mask)", fontsize=8)
    for ax, (title, attend, marks) in zip(axes[1:], panels, strict=True):
        _draw_mask(ax, attend.numpy(), labels, n_cond, title, marks)
    name_sources(fig, [("sparsegen.attention.local_autoregressive (token_mask, ae_mask, "
                        "causal_mask, la_mask)", "builder")])
    save_png(fig, Path(figures_dir) / "fig1b_3b_attention_masks.png")
    return fig


def figure_leak_region(figures_dir: Path, side: int = 16) -> Figure:
    """Fig. 3(a): where a convolution leaks hole features (Eq. 2): the pixel hole M, then for
    a 3 x 3 convolution (stride 1, padding 1), the face tokenizer's 4 x 4 stride-2 down-conv
    (padding 1) and taming's 3 x 3 stride-2 down-conv (padding right/bottom) the output's M'
    (`pool_mask`, black) and leak region M_l (`leak_region`, red), which the two-stream
    convolution computes from F (1 - M') (Eq. 3)."""
    hole = torch.zeros(1, 1, side, side)
    hole[0, 0, side // 4:side // 2 + 1, side // 4 + 1:side // 2 + 3] = 1
    hole[0, 0, side // 2:3 * side // 4, side // 2:side // 2 + 2] = 1
    convs = [("3x3 conv, stride 1, pad 1", 3, 1, 1), ("4x4 down-conv, stride 2, pad 1", 4, 2, 1),
             ("3x3 down-conv, stride 2,\npad (0, 1, 0, 1) (taming)", 3, 2, (0, 1, 0, 1))]
    fig = Figure(figsize=(3.0 * (len(convs) + 1), 3.4), layout="constrained")
    axes = fig.subplots(1, len(convs) + 1)
    white, black, red = (np.array(c, dtype=float) for c in ((1, 1, 1), (0, 0, 0),
                                                             (0.85, 0.15, 0.1)))

    def show(ax: Axes, m: torch.Tensor, leak: torch.Tensor | None, title: str) -> None:
        rgb = np.where(m[0, 0, ..., None].numpy() > 0, black, white)
        if leak is not None:
            rgb = np.where(leak[0, 0, ..., None].numpy() > 0, red, rgb)
        ax.imshow(rgb, interpolation="nearest")
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_title(title, fontsize=8)

    show(axes[0], hole, None, f"hole M ({side}x{side} pixels)")
    for ax, (title, k, s, p) in zip(axes[1:], convs, strict=True):
        leak = leak_region(hole, k, s, p)
        m_out = pool_mask(hole, leak.shape[-2:])
        show(ax, m_out, leak, f"{title}\nM' (black), M_l (red): {int(leak.sum())} positions")
    fig.suptitle("Eq. 2-3: outside the hole, M_l positions take conv(F (1 - M')), the rest "
                 "conv(F)", fontsize=8)
    name_sources(fig, [("sparsegen.models.ilat.two_stream (pool_mask, leak_region)",
                        "builder")])
    save_png(fig, Path(figures_dir) / "fig3a_leak_region.png")
    return fig


# ---------------------------------------------------------------------------------------------
# Figs. 4, 5, 9-12: outputs side by side


def blend_mask(mask: torch.Tensor, form: str = "paper") -> torch.Tensor:
    """A soft (B, 1, S, S) mask for blending an output with its reference: "paper" (A.3: the
    mask resized to 128 x 128 and back to 256, i.e. to half the side and back, bilinearly;
    halving bilinearly averages each 2 x 2 block), "official" (the demo's feathered mask,
    `sampling.soft_blend_mask`)."""
    if form == "official":
        return soft_blend_mask(mask)
    if form != "paper":
        raise ValueError(f"blend form {form!r} is not paper or official")
    side = mask.shape[-1]
    half = F.interpolate(mask, size=(side // 2, side // 2), mode="bilinear", align_corners=False)
    return F.interpolate(half, size=(side, side), mode="bilinear", align_corners=False)


def blended(output: np.ndarray, reference: np.ndarray, mask: np.ndarray, form: str = "paper"
            ) -> np.ndarray:
    """output * soft + reference * (1 - soft) for uint8 pictures and the mask PNG (white =
    hole), soft = `blend_mask`."""
    hole = torch.from_numpy((mask[..., 0] > 127).astype(np.float32))[None, None]
    soft = blend_mask(hole, form)[0, 0, ..., None].numpy().astype(np.float64)
    return (output * soft + reference * (1 - soft)).round().astype(np.uint8)


def _context(dataset: str) -> list[tuple[str, str]]:
    """The (title, examples.csv column) pairs shown before the outputs."""
    if dataset == FACES:
        return [("Reference", "input"), ("Sketch (edited)", "condition"), ("Mask", "mask")]
    return [("Reference", "input"), ("Mask", "mask"), ("Target", "truth")]


class Block:
    """A dataset's share of a grid: column titles, example ids, rows, sources."""

    def __init__(self, titles: list[str], ids: list[str], rows: list[list[np.ndarray | None]],
                 sources: list[tuple[str | Path, str]]) -> None:
        self.titles, self.ids, self.rows, self.sources = titles, ids, rows, sources


def method_block(runs_dir: Path, dataset: str, methods: Sequence[str], figure: str, n: int,
                 offset: int = 0, context: Sequence[tuple[str, str]] | None = None,
                 blend: Sequence[str] = (), form: str = "paper", prefix: str = ""
                 ) -> Block | None:
    """Context columns, then each run method's output (`<method>_<dataset>`), for the examples
    offset ... offset + n (sorted ids every run method shares); after each method in `blend`
    its output blended with the reference (`blended`). None when no method ran."""
    variants = available(runs_dir, [f"{m}_{dataset}" for m in methods], figure)
    if not variants:
        print(f"{figure}: {DATASETS[dataset]} left out (none of its variants was run)")
        return None
    tables = [read_examples(Path(runs_dir) / v) for v in variants]
    ids = common_ids(tables, offset + n)[offset:]
    if not ids:
        print(f"{figure}: {DATASETS[dataset]} left out ({variants} share no example id "
              f"beyond the first {offset})")
        return None
    context = list(context or _context(dataset))
    titles = [f"{prefix}{t}" if j == 0 else t for j, (t, _) in enumerate(context)]
    for v in variants:
        method = v.removesuffix(f"_{dataset}")
        titles += [METHODS[method]] + ([f"{METHODS[method]} + Ref"] if method in blend else [])
    rows = []
    for example in ids:
        ref = tables[-1].loc[example]
        row: list[np.ndarray | None] = [image(ref[c]) for _, c in context]
        for v, table in zip(variants, tables, strict=True):
            output = image(table.loc[example, "output"])
            row.append(output)
            if v.removesuffix(f"_{dataset}") in blend:
                row.append(blended(output, image(ref["input"]), image(ref["mask"]), form))
        rows.append(row)
    sources = [(examples_csv(runs_dir, v), "samples") for v in variants]
    return Block(titles, ids, rows, sources)


def _side_by_side(blocks: Sequence[Block], name: str, file: str, figures_dir: Path,
                  title: str | None = None) -> Figure | None:
    blocks = [b for b in blocks if b is not None]
    if not blocks:
        _no_figure(name, "none of its variants was run")
        return None
    n = max(len(b.rows) for b in blocks)
    rows = [[cell for b in blocks
             for cell in (b.rows[i] if i < len(b.rows) else [None] * len(b.titles))]
            for i in range(n)]
    fig = image_grid(rows, [t for b in blocks for t in b.titles],
                     row_titles=[" / ".join(b.ids[i] for b in blocks if i < len(b.ids))
                                 for i in range(n)])
    if title:
        fig.suptitle(title, fontsize=8)
    name_sources(fig, [s for b in blocks for s in b.sources])
    save_png(fig, Path(figures_dir) / file)
    return fig


def figure_comparison(runs_dir: Path, figures_dir: Path, dataset: str = "pa", n: int = 4
                      ) -> Figure | None:
    """Fig. 4: the first test examples of `dataset`: the reference (target stream), the mask
    and the target (faces: the edited sketch), then Taming, (faces: Taming*), iLAT* and iLAT."""
    name = f"Fig. 4 ({DATASETS[dataset]})"
    block = method_block(runs_dir, dataset, COMPARED[dataset], name, n)
    return _side_by_side([block], name, f"fig4_{dataset}.png", figures_dir)


def figure_ablation(runs_dir: Path, figures_dir: Path, n: int = 2) -> Figure | None:
    """Fig. 5: (A) iLAT* against iLAT on Penn Action, (B) on faces (the two-stream ablation),
    (C) Taming against iLAT on SDF; reference and target (faces: edited sketch) before each."""
    name = "Fig. 5 (ablation, SDF)"
    blocks = [method_block(runs_dir, dataset, methods, name, n, prefix=f"({part}) ",
                           context=[_context(dataset)[0], _context(dataset)[1 if dataset ==
                                                                              FACES else 2]])
              for part, dataset, methods in (("A", "pa", ("ilat_star", "ilat")),
                                             ("B", "ffhq", ("ilat_star", "ilat")),
                                             ("C", "sdf", ("taming", "ilat")))]
    return _side_by_side(blocks, name, "fig5_ablation_sdf.png", figures_dir)


def figure_blend(runs_dir: Path, figures_dir: Path, n: int = 4, form: str = "paper"
                 ) -> Figure | None:
    """Fig. 9: face edits of Taming and iLAT, each also blended with the reference through a
    soft mask (`blend_mask`: A.3's resize to half the side and back, or the official demo's)."""
    name = "Fig. 9 (blend with the reference)"
    block = method_block(runs_dir, FACES, ("taming", "ilat"), name, n,
                         blend=("taming", "ilat"), form=form)
    how = ("mask resized to half the side and back (A.3: 256 -> 128 -> 256)" if form == "paper"
           else "the official demo's feathered mask (max-pooled to 16-128, averaged)")
    return _side_by_side([block] if block else [], name, "fig9_blend.png", figures_dir,
                         title=f"blend = output x soft + reference x (1 - soft); soft: {how}")


def figure_more(runs_dir: Path, figures_dir: Path, dataset: str, n: int = 6, offset: int = 4
                ) -> Figure | None:
    """Figs. 10 (faces, with iLAT blended with the reference), 11 (Penn Action) and 12 (SDF):
    the next test examples after Fig. 4's, every method of the dataset."""
    name = f"{MORE[dataset].split('_')[0].replace('fig', 'Fig. ')} ({DATASETS[dataset]})"
    block = method_block(runs_dir, dataset, COMPARED[dataset], name, n, offset=offset,
                         blend=("ilat",) if dataset == FACES else ())
    return _side_by_side([block] if block else [], name, f"{MORE[dataset]}.png", figures_dir)


# ---------------------------------------------------------------------------------------------
# Figs. 6 and 13 (sequences), 7 (PA masks), 8 (SDF): with the prepared dataset's manifest


def prepared_manifest(variant_dir: Path) -> tuple[Path, dict[str, Sample]] | None:
    """The manifest of the dataset a variant was trained on (its final.pt's settings) as
    (manifest path, rows by id), or None with the reason printed when it cannot be read."""
    final = Path(variant_dir) / FINAL
    if not final.is_file():
        print(f"{final} not found: the dataset's manifest (videos, actions) is unknown")
        return None
    settings = checkpoint_settings(final)
    try:  # resolved settings describe their datasets; a unit's keep `data` at least
        folder = dataset_dir(settings, "images") if "datasets" in settings else \
            Path(prepared_dir(settings["paths"], settings["data"]["images"]))
    except (KeyError, TypeError) as e:
        print(f"{final}: its settings name no images dataset ({e!r})")
        return None
    try:
        rows = read_manifest(folder)
    except (FileNotFoundError, ValueError) as e:
        print(f"{folder / 'manifest.csv'}: not read ({e})")
        return None
    return folder / "manifest.csv", {r.id: r for r in rows}


def figure_sequence(runs_dir: Path, figures_dir: Path, video: str | None = None, n: int = 6,
                    dataset: str = "pa") -> Figure | None:
    """Figs. 6 and 13: the test pairs of one test video (the one with the most pairs, or
    `video`) in the order of their target frames: the target, the reference and each method's
    output. The paper drives one reference through a sequence of poses; our test pairs each
    have their own reference (a seeded other frame of the video), so the reference row
    changes too."""
    name = "Figs. 6 and 13 (sequence)"
    variants = available(runs_dir, [f"{m}_{dataset}" for m in COMPARED[dataset]], name)
    if not variants:
        _no_figure(name, "none of its variants was run")
        return None
    manifest = prepared_manifest(Path(runs_dir) / variants[-1])
    if manifest is None:
        _no_figure(name, "the test videos are unknown without the dataset's manifest")
        return None
    manifest_path, rows = manifest
    tables = [read_examples(Path(runs_dir) / v) for v in variants]
    ids = common_ids(tables, len(tables[0]))
    videos: dict[str, list[str]] = {}
    for example in ids:
        if example in rows:
            videos.setdefault(rows[example].extra.get("video", ""), []).append(example)
    videos.pop("", None)
    if video is None and videos:
        video = max(sorted(videos), key=lambda v: len(videos[v]))
    if video not in videos:
        _no_figure(name, f"{manifest_path}: no evaluated test pair of video {video!r}")
        return None
    order = list(rows)
    chosen = sorted(videos[video], key=lambda i: order.index(rows[i].extra["pair"])
                    if rows[i].extra.get("pair") in rows else len(order))[:n]
    ref = tables[-1]
    grid = [[image(ref.loc[i, "truth"]) for i in chosen],
            [image(ref.loc[i, "input"]) for i in chosen],
            *([image(t.loc[i, "output"]) for i in chosen] for t in tables)]
    labels = ["Target (pose)", "Reference", *(METHODS[v.removesuffix(f"_{dataset}")]
                                              for v in variants)]
    fig = image_grid(grid, [f"{i}\n-> {rows[i].extra.get('pair', '?')}" for i in chosen],
                     row_titles=labels)
    fig.suptitle(f"video {video} ({rows[chosen[0]].extra.get('action', '?')}): test pairs in "
                 "target-frame order", fontsize=8)
    name_sources(fig, [*((examples_csv(runs_dir, v), "samples") for v in variants),
                       (manifest_path, "manifest")])
    save_png(fig, Path(figures_dir) / "fig6_13_sequence.png")
    return fig


def figure_pose_masks(runs_dir: Path, figures_dir: Path, variant: str = "ilat_pa", n: int = 6
                      ) -> Figure | None:
    """Fig. 7: Penn Action masks (A.2: both poses' skeletons dilated by the action's kernel)
    over the reference and the target, one test pair per action (the first pairs, unlabelled,
    when the dataset's manifest cannot be read)."""
    name = "Fig. 7 (PA masks)"
    if not available(runs_dir, [variant], name):
        _no_figure(name, f"{variant} was not run")
        return None
    table = read_examples(Path(runs_dir) / variant)
    manifest = prepared_manifest(Path(runs_dir) / variant)
    sources: list[tuple[str | Path, str]] = [(examples_csv(runs_dir, variant), "samples")]
    ids = sorted(table.index)
    titles = list(ids[:n])
    if manifest is not None:
        sources.append((manifest[0], "manifest"))
        per_action: dict[str, str] = {}
        for example in ids:
            action = manifest[1][example].extra.get("action", "") if example in manifest[1] \
                else ""
            per_action.setdefault(action, example)
        per_action.pop("", None)
        chosen = sorted(per_action.items(), key=lambda a: (ACTION_KERNELS.get(a[0], 0), a[0]))
        titles = [f"{a} (kernel {ACTION_KERNELS.get(a, '?')})\n{i}" for a, i in chosen[:n]]
        ids = [i for _, i in chosen]
    ids = ids[:n]
    rows = [[hole_overlay(image(table.loc[i, key]), image(table.loc[i, "mask"])) for i in ids]
            for key in ("input", "truth")]
    rows.append([image(table.loc[i, "mask"]) for i in ids])
    fig = image_grid(rows, titles, row_titles=["Reference + hole", "Target + hole", "Mask"])
    name_sources(fig, sources)
    save_png(fig, Path(figures_dir) / "fig7_pa_masks.png")
    return fig


def figure_sdf(runs_dir: Path, figures_dir: Path, variant: str = "ilat_sdf", n: int = 4
               ) -> Figure | None:
    """Fig. 8: Synthetic DeepFashion test pairs: the reference and target composites (one
    person in two poses on one background), the mask (the union of both dilated person masks)
    and the reference under it (what the target stream keeps); the background's name from the
    manifest when it can be read."""
    name = "Fig. 8 (SDF)"
    if not available(runs_dir, [variant], name):
        _no_figure(name, f"{variant} was not run")
        return None
    table = read_examples(Path(runs_dir) / variant)
    manifest = prepared_manifest(Path(runs_dir) / variant)
    sources: list[tuple[str | Path, str]] = [(examples_csv(runs_dir, variant), "samples")]
    ids = sorted(table.index)[:n]
    labels = list(ids)
    if manifest is not None:
        sources.append((manifest[0], "manifest"))
        labels = [f"{i}\n{manifest[1][i].extra.get('background', '')}" if i in manifest[1]
                  else i for i in ids]
    rows = []
    for i in ids:
        ref, mask = image(table.loc[i, "input"]), image(table.loc[i, "mask"])
        kept = np.where(mask[..., :1] > 127, 128, ref).astype(np.uint8)
        rows.append([ref, image(table.loc[i, "truth"]), mask, kept])
    fig = image_grid(rows, ["Reference", "Target", "Mask", "Reference outside the hole"],
                     row_titles=labels)
    name_sources(fig, sources)
    save_png(fig, Path(figures_dir) / "fig8_sdf.png")
    return fig


# ---------------------------------------------------------------------------------------------
# Table 2 as a plot: time against masked rate


def _first(table: pd.DataFrame, names: Sequence[str]) -> str | None:
    return next((c for c in names if c in table and table[c].notna().any()), None)


def read_bench(bench_csv: Path) -> tuple[pd.DataFrame, str] | None:
    """The benchmark's rows as (method, masked, seconds, series) and a note, or None with the
    reason printed. Columns by name: method from BENCH_METHOD, masked fraction from
    BENCH_MASKED (or masked_tokens / tokens), seconds from BENCH_SECONDS (or BENCH_MS / 1000).
    Rows whose `status` is not ok and `kind` summary rows are dropped; where a `metric` column
    has `total` rows (encode + sample + decode, as Table 2) only those are kept. The dataset is
    the `variant`'s suffix (taming_pa -> pa) unless a `dataset` column names it; series = the
    BENCH_SPLIT columns that vary."""
    bench_csv = Path(bench_csv)
    if not bench_csv.is_file():
        print(f"{bench_csv} not found (run the benchmark: {COMMANDS['bench']})")
        return None
    table = pd.read_csv(bench_csv)
    for column, keep in (("status", lambda c: c == "ok"), ("kind", lambda c: c != "summary"),
                         ("metric", lambda c: c == "total")):
        if column in table:
            chosen = keep(table[column].astype(str))
            table = table[chosen] if column != "metric" or chosen.any() else table
    method = _first(table, BENCH_METHOD)
    if "dataset" not in table and "variant" in table and method != "variant":
        table = table.assign(dataset=table["variant"].astype(str).str.rsplit("_", n=1).str[-1])
    masked = _first(table, BENCH_MASKED)
    if masked is None and {"masked_tokens", "tokens"} <= set(table.columns):
        table = table.assign(masked_fraction=table["masked_tokens"] / table["tokens"])
        masked = "masked_fraction"
    seconds, scale = _first(table, BENCH_SECONDS), 1.0
    if seconds is None:
        seconds, scale = _first(table, BENCH_MS), 1e-3
    if method is None or masked is None or seconds is None:
        print(f"{bench_csv}: needs a method ({BENCH_METHOD}), masked-fraction "
              f"({BENCH_MASKED}) and time ({BENCH_SECONDS + BENCH_MS}) column; it has "
              f"{list(table.columns)}")
        return None
    table = table.dropna(subset=[method, masked, seconds])
    split = [c for c in BENCH_SPLIT if c in table and table[c].nunique(dropna=True) > 1]
    series = table[split].astype(str).agg(", ".join, axis=1) if split else ""
    out = pd.DataFrame({"method": table[method].astype(str), "masked": table[masked].astype(float),
                        "seconds": table[seconds].astype(float) * scale, "series": series})
    return out, f"{seconds}{' / 1000' if scale != 1 else ''} against {masked}"


def _bench_method(name: str) -> str | None:
    """taming / ilat from a method, model or variant name (iLAT* and Taming* are not timed)."""
    lowered = name.lower()
    if "star" in lowered:
        return None
    return "taming" if "taming" in lowered else "ilat" if "ilat" in lowered else None


def figure_time_vs_masked_rate(runs_dir: Path, figures_dir: Path, claims: Path,
                               bench_csv: Path) -> Figure | None:
    """Table 2 as a plot: seconds per image (left) and the iLAT / Taming time ratio (right)
    against the fraction of masked tokens: the paper's points (claims, Table 2), ours from
    each dataset's taming_* / ilat_* metrics.json (seconds_per_image at iLAT's
    masked_rate_tokens, on the sample step's device), the benchmark's rows as lines. The
    dotted line on the right is ratio = masked fraction (one step per masked token)."""
    name = "time vs masked rate"
    fig = Figure(figsize=(10.0, 4.0), layout="constrained")
    ax_time, ax_ratio = fig.subplots(1, 2)
    sources: list[tuple[str | Path, str]] = []
    drawn = False
    claims = Path(claims)
    if claims.is_file():
        cells = load_claims(claims).tables["2"].cells
        sources.append((f"{claims} (Table 2)", "claims"))
        for k, (row, cell) in enumerate(cells.items()):
            rate = cell["masked_rate"]
            for method, marker in (("taming", "o"), ("ilat", "s")):
                ax_time.scatter([rate], [cell[method]], marker=marker, facecolors="none",
                                edgecolors=f"C{k}", label=f"paper {row} {METHODS[method]}")
            ax_ratio.scatter([rate], [cell["ilat"] / cell["taming"]], marker="s",
                             facecolors="none", edgecolors=f"C{k}", label=f"paper {row}")
        drawn = True
    else:
        print(f"{name}: {claims} not found (the paper's points left out)")
    for k, dataset in enumerate(DATASETS):
        records = {m: read_metrics(Path(runs_dir) / f"{m}_{dataset}") for m in ("taming", "ilat")}
        ilat = records["ilat"]
        if "seconds_per_image" not in ilat or "masked_rate_tokens" not in ilat:
            path = Path(runs_dir) / f"ilat_{dataset}" / METRICS
            print(f"{name}: ours on {dataset} left out ({path} has no seconds_per_image / "
                  "masked_rate_tokens)")
            continue
        rate = ilat["masked_rate_tokens"].value
        sources.append((Path(runs_dir) / f"ilat_{dataset}" / METRICS, "metrics"))
        ax_time.scatter([rate], [ilat["seconds_per_image"].value], marker="s", color=f"C{k}",
                        label=f"ours {dataset} iLAT ({ilat['seconds_per_image'].device})")
        taming = records["taming"].get("seconds_per_image")
        if taming is not None:
            sources.append((Path(runs_dir) / f"taming_{dataset}" / METRICS, "metrics"))
            ax_time.scatter([rate], [taming.value], marker="o", color=f"C{k}",
                            label=f"ours {dataset} Taming")
            ax_ratio.scatter([rate], [ilat["seconds_per_image"].value / taming.value],
                             marker="s", color=f"C{k}", label=f"ours {dataset}")
        drawn = True
    bench = read_bench(bench_csv)
    if bench is not None:
        rows, note = bench
        sources.append((f"{bench_csv} ({note})", "bench"))
        rows = rows.assign(kind=rows["method"].map(_bench_method)).dropna(subset=["kind"])
        for (method, series), group in rows.groupby(["method", "series"], sort=True):
            curve = group.groupby("masked")["seconds"].median()
            ax_time.plot(curve.index, curve.values, marker=".", linewidth=1, alpha=0.7,
                         label=f"bench {method}{f' ({series})' if series else ''}")
        for series, group in rows.groupby("series", sort=True):
            both = group.groupby(["masked", "kind"])["seconds"].median().unstack()
            if {"taming", "ilat"} <= set(both.columns):
                ratio = (both["ilat"] / both["taming"]).dropna()
                ax_ratio.plot(ratio.index, ratio.values, marker=".", linewidth=1, alpha=0.7,
                              label=f"bench{f' ({series})' if series else ''}")
        drawn = drawn or not rows.empty
    if not drawn:
        _no_figure(name, "no claims, metrics or benchmark rows")
        return None
    ax_ratio.plot([0, 1], [0, 1], linestyle=":", color="0.5", linewidth=1,
                  label="ratio = masked fraction")
    for ax, ylabel in ((ax_time, "seconds per image"), (ax_ratio, "iLAT time / Taming time")):
        ax.set_xlabel("masked fraction of target tokens")
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=5, loc="best")
    ax_time.set_yscale("log")
    ax_time.set_title("Table 2: time per image (hardware-bound)", fontsize=8)
    ax_ratio.set_title("speed-up: only masked tokens are sampled", fontsize=8)
    name_sources(fig, sources)
    save_png(fig, Path(figures_dir) / "table2_time_vs_masked_rate.png")
    return fig


# ---------------------------------------------------------------------------------------------
# Training curves, tokenizer reconstructions, the smoke showcase


def figure_training_curves(runs_dir: Path, figures_dir: Path, stage: str = "transformer"
                           ) -> Figure | None:
    """The training losses of every variant of a stage (tokenizer: rec, codebook, g, lambda,
    d; transformer: ce on masked tokens (Eq. 6) and the masked fraction) against step; the
    smoke showcase, trained longer, has its own figure."""
    name = f"training curves ({stage})"
    columns = LOSSES[stage]
    try:
        logs = read_training_logs(runs_dir, ("step",))
    except FileNotFoundError as e:
        _no_figure(name, str(e))
        return None
    logs = {v: log for v, log in logs.items() if v != SHOWCASE and columns[0] in log}
    shown = [c for c in columns if any(c in log and log[c].notna().any()
                                       for log in logs.values())]
    if not logs or not shown:
        _no_figure(name, f"no {stage} log holds {columns[0]!r}")
        return None
    fig = training_curves(logs, shown)
    name_sources(fig, [(Path(runs_dir) / f"{{{','.join(logs)}}}" / TRAIN_LOG, "train_log")])
    save_png(fig, Path(figures_dir) / f"training_{stage}s.png")
    return fig


def _metric(records: Mapping[str, Any], metric: str, label: str) -> str:
    return f"{label} {records[metric].value:.2f}" if metric in records else f"{label} -"


def figure_tokenizers(runs_dir: Path, figures_dir: Path, dataset: str = "pa", n: int = 3
                      ) -> Figure | None:
    """Tokenizer reconstructions: the test image and mask, then per tokenizer the plain
    reconstruction (`recon/`, PSNR) and the one under the mask through its decoding (`outputs/`:
    Eq. 4 for TS-VQGAN and VQGAN + Eq. 4, D(z_q) for the plain VQGAN; PSNR@masked); a tokenizer
    of other images (the sketch VQGAN) shows its own input too."""
    name = f"tokenizer reconstructions ({DATASETS[dataset]})"
    variants = available(runs_dir, TOKENIZERS[dataset], name)
    if not variants:
        _no_figure(name, "none of its tokenizers was run")
        return None
    tables = [read_examples(Path(runs_dir) / v) for v in variants]
    ids = common_ids(tables, n)
    first = tables[0]
    titles = ["Image", "Mask"]
    rows: list[list[np.ndarray | None]] = [[image(first.loc[i, "truth"]),
                                            image(first.loc[i, "mask"])] for i in ids]
    sources: list[tuple[str | Path, str]] = []
    for v, table in zip(variants, tables, strict=True):
        records = read_metrics(Path(runs_dir) / v)
        label = TOKENIZER_LABELS[v.rsplit("_", 1)[0]]
        own = [image(table.loc[i, "truth"]) for i in ids]
        if any(not np.array_equal(a, r[0]) for a, r in zip(own, rows, strict=True)):
            titles.append(f"{label}\ninput")
            for row, picture in zip(rows, own, strict=True):
                row.append(picture)
        titles += [f"{label} ({v})\nplain, {_metric(records, 'psnr', 'PSNR')}",
                   f"under the mask\n{_metric(records, 'psnr@masked', 'PSNR')}"]
        for row, i in zip(rows, ids, strict=True):
            row += [image(table.loc[i, "recon"]) if table.loc[i, "recon"] else None,
                    image(table.loc[i, "output"])]
        sources.append((examples_csv(runs_dir, v), "samples"))
        if records:
            sources.append((Path(runs_dir) / v / METRICS, "metrics"))
    fig = image_grid(rows, titles, row_titles=ids)
    name_sources(fig, sources)
    save_png(fig, Path(figures_dir) / f"tokenizers_{dataset}.png")
    return fig


def _trained_vs_untrained(records: Mapping[str, Any], metric: str, label: str) -> str:
    if metric not in records or f"{metric}{UNTRAINED_SUFFIX}" not in records:
        return f"{label} not evaluated"
    return (f"{label} {records[metric].value:.3f} (untrained "
            f"{records[f'{metric}{UNTRAINED_SUFFIX}'].value:.3f})")


def figure_showcase(runs_dir: Path, figures_dir: Path, n: int = 4) -> Figure | None:
    """The smoke showcase: iLAT on Penn Action (ilat_pa) trained longer at the smoke size,
    beside the same transformer initialised as training starts (same tokenizer): reference,
    mask, target, the untrained and the trained edit, titled with the share of sampled hole
    tokens equal to the target's own, the L1 inside the hole (to the target) and outside it
    (to the reference: Eq. 4 keeps it), trained against untrained (showcase/metrics.json)."""
    name = "smoke showcase"
    if not available(runs_dir, [SHOWCASE], name):
        _no_figure(name, "no smoke showcase under this preset")
        return None
    folder = Path(runs_dir) / SHOWCASE
    table = read_examples(folder)
    ids = common_ids([table], n)
    samples = folder / SAMPLES
    rows = [[image(table.loc[i, "input"]), image(table.loc[i, "mask"]),
             image(table.loc[i, "truth"]),
             image(samples / UNTRAINED / Path(table.loc[i, "output"]).relative_to(samples)),
             image(table.loc[i, "output"])] for i in ids]
    fig = image_grid(rows, ["Reference", "Mask", "Target", "Untrained edit", "Trained edit"],
                     row_titles=ids)
    records = read_metrics(folder)
    length, sources = "trained longer", [(examples_csv(runs_dir, SHOWCASE), "samples")]
    if (folder / FINAL).is_file():
        s = checkpoint_settings(folder / FINAL)
        length = (f"{s['train']['iterations']} iterations at {s['model']['size']}² "
                  f"(batch {s['train']['batch_size']})")
        sources.append((folder / FINAL, "checkpoint"))
    if records:
        sources.append((folder / METRICS, "metrics"))
    fig.suptitle(f"smoke showcase: iLAT (ilat_pa) {length}\n"
                 f"{_trained_vs_untrained(records, 'token_accuracy_hole', 'hole tokens = target')}"
                 f"; {_trained_vs_untrained(records, 'l1_hole', 'hole L1 ↓')}; "
                 f"{_trained_vs_untrained(records, 'l1_outside', 'outside L1 ↓')}", fontsize=8)
    name_sources(fig, sources)
    save_png(fig, Path(figures_dir) / "smoke_showcase.png")
    return fig
