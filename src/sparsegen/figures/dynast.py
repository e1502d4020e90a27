"""DynaST figures (Figs. 1 right and 4-13, the dynamic number of matches, training and bench
curves) from a run folder.

`runs_dir` is the experiment folder with one folder per variant (runs/<preset>/dynast/
exemplar), each holding samples/ (the sample step's folder, `models.dynast.sampling`),
metrics.json, train_log.csv and final.pt. Every function saves a PNG into `figures_dir`
atomically and returns the Figure; a variant that was not run is skipped with a printed note,
and a figure none of whose variants was run is not drawn (None). The images are read from the
samples only: no figure runs a network. Our peers (`*_cocosnet`, `*_cocosnet_v2`) are our
CoCosNet- and CoCosNet-v2-style matchings on DynaST's backbone, not the authors' models.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from sparsegen.config import SHOWCASE
from sparsegen.data.images import load_rgb, to_uint8
from sparsegen.figures.common import (
    checkpoint_settings,
    image_grid,
    read_metrics,
    read_sample_index,
    read_training_logs,
    save_png,
    training_curves,
)
from sparsegen.io import read_image, read_json
from sparsegen.models.dynast import PAPER
from sparsegen.models.dynast.evaluation import UNTRAINED_SUFFIX as SUFFIX
from sparsegen.models.dynast.sampling import (
    BLOCKS,
    COLUMNS,
    KEPT_JSON,
    OUTPUTS,
    PAIRS_CSV,
    UNTRAINED,
    WARPS,
)

SAMPLES = "samples"
LOSS_COLUMNS = PAPER.loss_columns
DATASETS = {"df": "DeepFashion", "celeba": "CelebA-HQ"}  # variant prefix -> dataset
PEER = "same-backbone peer"
COMPARISON = {"cocosnet": f"CoCosNet\n({PEER})", "cocosnet_v2": f"CoCosNet-v2\n({PEER})",
              "full": "Ours"}  # Figs. 4 and 9, by variant suffix
CASCADE = {"df_wo_dyna": "w/o Dyna", "df_full": "Full model", "df_wo_inner": "w/o Inner"}  # Fig. 6
STYLE = "st_full"  # Figs. 7, 8 left, 10, 13
BENCH_FORM = ("form", "attention", "mode", "matching", "model")  # candidate column names
BENCH_TIME = ("mean_ms", "median_ms", "time_ms")
BENCH_MEMORY = ("peak_mem_gib", "peak_mem_mib", "memory_gib", "memory_mib")
BENCH_SPLIT = ("backend", "precision", "batch", "device")  # also separate lines when they vary


# ---------------------------------------------------------------------------------------------
# Reading the sample folders


def read_pairs(variant_dir: Path) -> pd.DataFrame:
    """A variant's samples/pairs.csv indexed by pair id; `output` and `warp` become absolute
    paths (`warp` "" where the variant attends nowhere), `target` and `exemplar` stay as written
    (image files of the prepared dataset)."""
    return read_sample_index(Path(variant_dir) / SAMPLES / PAIRS_CSV, COLUMNS,
                             ("output", "warp"), "pairs")


def available(runs_dir: Path, variants: Sequence[str], figure: str) -> list[str]:
    """The variants among `variants` that have samples, in order; a note for each missing one."""
    found = []
    for variant in variants:
        path = Path(runs_dir) / variant / SAMPLES / PAIRS_CSV
        if path.is_file():
            found.append(variant)
        else:
            print(f"{figure}: skipped {variant} ({path} not found)")
    return found


def common_ids(tables: Sequence[pd.DataFrame], n: int) -> list[str]:
    """The first `n` pair ids (sorted) that every table lists."""
    ids = set(tables[0].index)
    for table in tables[1:]:
        ids &= set(table.index)
    return sorted(ids)[:n]


def image_at(path: str | Path, size: int) -> np.ndarray:
    """An image file as uint8 (size, size, 3), bilinearly resized when its side differs."""
    return to_uint8(load_rgb(path, size=size))


def output_size(table: pd.DataFrame) -> int:
    """The evaluation side the samples were written at (the first output's height)."""
    return read_image(table["output"].iloc[0]).shape[0]


def block_key(name: str) -> tuple[int, int]:
    """A block name "<side>-B<block>" (e.g. 64-B1) as (side, block): the cascade's order."""
    side, _, block = name.partition("-B")
    if not (side.isdigit() and block.isdigit()):
        raise ValueError(f"block name {name!r} is not <side>-B<block> (e.g. 64-B1)")
    return int(side), int(block)


def block_warps(variant_dir: Path, pair_id: str) -> dict[str, Path]:
    """Every block's warp PNG of one pair by block name, coarsest block first."""
    folder = Path(variant_dir) / SAMPLES / BLOCKS / pair_id
    files = {p.stem: p for p in folder.glob("*.png")}
    return {name: files[name] for name in sorted(files, key=block_key)}


def _no_figure(figure: str, why: str) -> None:
    print(f"{figure}: not drawn ({why})")


# ---------------------------------------------------------------------------------------------
# Smoke showcase


def _trained_vs_untrained(records: Mapping[str, Any], metric: str, label: str) -> str:
    if metric not in records or f"{metric}{SUFFIX}" not in records:
        return f"warp {label} not evaluated"
    return (f"warp {label} {records[metric].value:.3f} (untrained "
            f"{records[f'{metric}{SUFFIX}'].value:.3f})")


def figure_showcase(runs_dir: Path, figures_dir: Path, n_pairs: int = 4) -> Figure | None:
    """The smoke showcase: the full DeepFashion model trained longer at the smoke size, beside
    the same network initialised as training starts: exemplar, ground truth, the last block's
    warp and the output of each, titled with its length and the warp's L1 and SSIM to the ground
    truth against the untrained network's (showcase/metrics.json)."""
    name = "smoke showcase"
    if not available(runs_dir, [SHOWCASE], name):
        _no_figure(name, "no smoke showcase under this preset")
        return None
    folder = Path(runs_dir) / SHOWCASE
    table = read_pairs(folder)
    size = output_size(table)
    untrained = folder / SAMPLES / UNTRAINED
    ids = common_ids([table], n_pairs)
    rows = []
    for pair_id in ids:
        row = table.loc[pair_id]
        warps = [read_image(untrained / WARPS / f"{pair_id}.png"), read_image(row["warp"])] \
            if row["warp"] else [None, None]
        rows.append([image_at(row["exemplar"], size), image_at(row["target"], size),
                     warps[0], warps[1], read_image(untrained / OUTPUTS / f"{pair_id}.png"),
                     read_image(row["output"])])
    fig = image_grid(rows, ["Exemplar", "Ground truth", "Untrained warp", "Trained warp",
                            "Untrained output", "Trained output"], row_titles=ids)
    records = read_metrics(folder)
    length = "trained longer"
    if (folder / "final.pt").is_file():
        s = checkpoint_settings(folder / "final.pt")
        length = (f"{s['train']['iterations']} iterations at {s['model']['size']}² "
                  f"(batch {s['train']['batch_size']})")
    fig.suptitle(f"smoke showcase: DynaST (df_full) {length}\n"
                 f"{_trained_vs_untrained(records, 'l1', 'L1 ↓')}; "
                 f"{_trained_vs_untrained(records, 'ssim_gauss11', 'SSIM ↑')}", fontsize=8)
    save_png(fig, Path(figures_dir) / "smoke_showcase.png")
    return fig


# ---------------------------------------------------------------------------------------------
# Fig. 1 right / Fig. 6: the warp after every block


def figure_cascade(runs_dir: Path, figures_dir: Path, pair_id: str | None = None,
                   variants: Mapping[str, str] = CASCADE) -> Figure | None:
    """Fig. 1 right and Fig. 6: the exemplar warped by every block's attention, coarsest block
    first (the sample step keeps them for its first eval.n_figure pairs), then the output;
    one row per variant (w/o Dyna, Full model, w/o Inner). `pair_id` None: the first pair
    (sorted) with block warps in every row's variant."""
    name = "Fig. 6 (cascade)"
    found = available(runs_dir, list(variants), name)
    if not found:
        _no_figure(name, "none of its variants was run")
        return None
    runs_dir = Path(runs_dir)
    tables = {v: read_pairs(runs_dir / v) for v in found}
    if pair_id is None:
        with_blocks = [i for i in common_ids(list(tables.values()), len(tables[found[0]]))
                       if all(block_warps(runs_dir / v, i) for v in found)]
        if not with_blocks:
            raise FileNotFoundError(f"{runs_dir}: no pair has samples/{BLOCKS}/<id>/ in every "
                                    f"one of {found}")
        pair_id = with_blocks[0]
    warps = {v: block_warps(runs_dir / v, pair_id) for v in found}
    names = sorted({n for w in warps.values() for n in w}, key=block_key)
    first = tables[found[0]].loc[pair_id]
    size = output_size(tables[found[0]])
    rows = []
    for v in found:
        row = tables[v].loc[pair_id]
        rows.append([image_at(first["exemplar"], size), image_at(first["target"], size),
                     *(read_image(warps[v][n]) if n in warps[v] else None for n in names),
                     read_image(row["output"])])
    fig = image_grid(rows, ["Exemplar", "Ground truth", *names, "Final output"],
                     row_titles=[f"{variants[v]} ({v})" for v in found])
    fig.suptitle(f"pair {pair_id}: the exemplar warped by each block's attention (Eq. 12-13)",
                 fontsize=8)
    save_png(fig, Path(figures_dir) / "fig6_cascade.png")
    return fig


# ---------------------------------------------------------------------------------------------
# Figs. 4, 5, 9: outputs beside the peers'


def _output_rows(runs_dir: Path, columns: Sequence[str], n_pairs: int
                 ) -> tuple[list[str], list[list[np.ndarray]]]:
    """Pair ids and rows (exemplar, ground truth, each column variant's output) for the first
    pairs every column variant has; exemplar and ground truth from the last column."""
    tables = [read_pairs(Path(runs_dir) / v) for v in columns]
    ids = common_ids(tables, n_pairs)
    if not ids:
        raise ValueError(f"{runs_dir}: variants {list(columns)} share no pair id")
    size = output_size(tables[-1])
    rows = []
    for pair_id in ids:
        ref = tables[-1].loc[pair_id]
        rows.append([image_at(ref["exemplar"], size), image_at(ref["target"], size),
                     *(image_at(t.loc[pair_id, "output"], size) for t in tables)])
    return ids, rows


def figure_comparison(runs_dir: Path, figures_dir: Path, n_pairs: int = 4,
                      datasets: Mapping[str, str] = DATASETS) -> Figure | None:
    """Figs. 4 and 9: exemplar, ground truth, our CoCosNet and CoCosNet-v2 peers (same
    backbone) and Ours, DeepFashion and CelebA-HQ side by side when both were run."""
    name = "Figs. 4 and 9 (comparison)"
    blocks, titles, ids = [], [], []
    for prefix, dataset in datasets.items():
        found = available(runs_dir, [f"{prefix}_{s}" for s in COMPARISON], name)
        if f"{prefix}_full" not in found:
            print(f"{name}: {dataset} left out ({prefix}_full not run)")
            continue
        pair_ids, rows = _output_rows(runs_dir, found, n_pairs)
        blocks.append(rows)
        ids.append(pair_ids)
        titles += [f"{dataset}\nExemplar", "Ground truth",
                   *(COMPARISON[v.removeprefix(f"{prefix}_")] for v in found)]
    if not blocks:
        _no_figure(name, "no dataset's full model was run")
        return None
    n = max(len(b) for b in blocks)
    rows = [[cell for b in blocks
             for cell in (b[i] if i < len(b) else [None] * len(b[0]))] for i in range(n)]
    fig = image_grid(rows, titles,
                     row_titles=[" / ".join(p[i] for p in ids if i < len(p)) for i in range(n)])
    save_png(fig, Path(figures_dir) / "fig4_9_comparison.png")
    return fig


def figure_cocosnet_v2(runs_dir: Path, figures_dir: Path, n_pairs: int = 4,
                       prefix: str = "df") -> Figure | None:
    """Fig. 5: Ours against our CoCosNet-v2 peer (fixed top-k PatchMatch, no pruning) on the
    first pairs; the paper's hand-picked scale-dissimilar and no-match cases are not selected."""
    name = "Fig. 5 (vs CoCosNet-v2)"
    found = available(runs_dir, [f"{prefix}_cocosnet_v2", f"{prefix}_full"], name)
    if len(found) < 2:
        _no_figure(name, "it needs both variants")
        return None
    ids, rows = _output_rows(runs_dir, found, n_pairs)
    fig = image_grid(rows, ["Exemplar", "Ground truth", f"CoCosNet-v2 ({PEER})", "Ours"],
                     row_titles=ids)
    save_png(fig, Path(figures_dir) / "fig5_vs_cocosnet_v2.png")
    return fig


# ---------------------------------------------------------------------------------------------
# Style transfer: Figs. 7, 10, 13 and Fig. 8 left


def figure_style(runs_dir: Path, figures_dir: Path, n_pairs: int = 4, variant: str = STYLE
                 ) -> Figure | None:
    """Figs. 7, 10 and 13: content, style and DynaST's stylisation for the first pairs."""
    name = "Figs. 7, 10, 13 (style transfer)"
    if not available(runs_dir, [variant], name):
        _no_figure(name, f"{variant} was not run")
        return None
    table = read_pairs(Path(runs_dir) / variant)
    size = output_size(table)
    ids = common_ids([table], n_pairs)
    rows = [[image_at(table.loc[i, "target"], size), image_at(table.loc[i, "exemplar"], size),
             read_image(table.loc[i, "output"])] for i in ids]
    fig = image_grid(rows, ["Content", "Style", "Ours"], row_titles=ids)
    save_png(fig, Path(figures_dir) / "fig7_10_13_style.png")
    return fig


def figure_ssim_style(runs_dir: Path, figures_dir: Path, variant: str = STYLE
                      ) -> Figure | None:
    """Fig. 8 left: content SSIM against style loss (Eq. 11's l_s, `style_loss_adain`); only
    our point (the paper prints no numbers for its other methods)."""
    name = "Fig. 8 left (SSIM vs style loss)"
    records = read_metrics(Path(runs_dir) / variant)
    missing = [m for m in ("ssim_gauss11", "style_loss_adain") if m not in records]
    if missing:
        _no_figure(name, f"{Path(runs_dir) / variant / 'metrics.json'} has no {missing}")
        return None
    style, ssim = records["style_loss_adain"], records["ssim_gauss11"]
    fig = Figure(figsize=(4.4, 3.6), layout="constrained")
    ax = fig.subplots()
    ax.scatter([style.value], [ssim.value], color="C3", zorder=3)
    ax.annotate(f"DynaST (ours, {style.source.get('preset', '?')})\nSSIM {ssim.value:.3f}, "
                f"style loss {style.value:.3g}", (style.value, ssim.value), fontsize=7,
                xytext=(6, 6), textcoords="offset points")
    ax.set_xlabel("style loss (Eq. 11 l_s, AdaIN VGG) ↓")
    ax.set_ylabel("content SSIM (Gaussian 11) ↑")
    ax.set_title("only our point: the paper prints no numbers for Fig. 8", fontsize=8)
    ax.margins(0.5)
    ax.grid(alpha=0.3)
    save_png(fig, Path(figures_dir) / "fig8_ssim_vs_style_loss.png")
    return fig


# ---------------------------------------------------------------------------------------------
# Figs. 11-12: input x exemplar


def figure_pair_grid(runs_dir: Path, figures_dir: Path, variant: str, name: str,
                     n: int = 4) -> Figure | None:
    """Figs. 11-12: outputs for the first `n` targets (rows, their ground truth in the first
    column) and the exemplars those pairs use (columns, first row); a cell is drawn where that
    (target, exemplar) pair was evaluated, blank elsewhere (the figures do not run the network,
    and the test pairs give each target one exemplar)."""
    if not available(runs_dir, [variant], name):
        _no_figure(name, f"{variant} was not run")
        return None
    table = read_pairs(Path(runs_dir) / variant)
    size = output_size(table)
    chosen = table.loc[common_ids([table], n)]
    targets = list(dict.fromkeys(chosen["target"]))
    exemplars = list(dict.fromkeys(chosen["exemplar"]))
    outputs = {(r["target"], r["exemplar"]): r["output"] for _, r in table.iterrows()}
    rows: list[list[np.ndarray | None]] = [
        [None, *(image_at(e, size) for e in exemplars)]]
    for t in targets:
        rows.append([image_at(t, size), *(read_image(outputs[t, e]) if (t, e) in outputs
                                          else None for e in exemplars)])
    fig = image_grid(rows, ["Input (target)", *(f"Exemplar {j + 1}"
                                                for j in range(len(exemplars)))],
                     row_titles=["", *(Path(t).stem for t in targets)])
    fig.suptitle(f"{variant}: outputs of the evaluated (target, exemplar) pairs", fontsize=8)
    save_png(fig, Path(figures_dir) / f"{name}.png")
    return fig


# ---------------------------------------------------------------------------------------------
# The dynamic number of matches


def read_kept(variant_dir: Path) -> dict[str, dict[str, Any]]:
    """samples/kept.json by block name, coarsest block first; every histogram must have
    formed + 1 bins (0 ... formed links kept)."""
    path = Path(variant_dir) / SAMPLES / KEPT_JSON
    if not path.is_file():
        raise FileNotFoundError(f"{path}: kept-link histograms not found (run the sample step)")
    kept = read_json(path)
    for block, entry in kept.items():
        missing = [k for k in ("formed", "mode", "side", "histogram") if k not in entry]
        if missing:
            raise ValueError(f"{path}: block {block!r} lacks {missing}")
        if len(entry["histogram"]) != entry["formed"] + 1:
            raise ValueError(f"{path}: block {block!r} has {len(entry['histogram'])} histogram "
                             f"bins for {entry['formed']} formed links (needs formed + 1)")
    return {b: kept[b] for b in sorted(kept, key=block_key)}


def figure_kept_histograms(runs_dir: Path, figures_dir: Path, variant: str = "df_full",
                           columns: int = 4) -> Figure | None:
    """The dynamic number of matches (Fig. 1 left's claim, Eq. 5-7): for every block, how many
    queries (over every evaluated pair) kept 0, 1, ..., all of their formed links."""
    name = "dynamic number of matches"
    if not available(runs_dir, [variant], name):
        _no_figure(name, f"{variant} was not run")
        return None
    kept = read_kept(Path(runs_dir) / variant)
    if not kept:
        _no_figure(name, f"{variant} has no attention block")
        return None
    n_rows = -(-len(kept) // columns)
    fig = Figure(figsize=(3.0 * min(columns, len(kept)), 2.4 * n_rows), layout="constrained")
    axes = list(fig.subplots(n_rows, min(columns, len(kept)), squeeze=False).flat)
    for ax, (block, entry) in zip(axes, kept.items(), strict=False):
        counts = np.asarray(entry["histogram"], dtype=float)
        links = np.arange(entry["formed"] + 1)
        mean = float((links * counts).sum() / counts.sum()) if counts.sum() else float("nan")
        ax.bar(links, counts, width=1.0, color="C0")
        ax.set_title(f"{block} ({entry['mode']}, side {entry['side']}): mean {mean:.1f} of "
                     f"{entry['formed']}", fontsize=8)
        ax.set_xlim(-0.5, entry["formed"] + 0.5)
        ax.set_xlabel("links kept per query", fontsize=7)
        ax.set_ylabel("queries", fontsize=7)
        ax.tick_params(labelsize=7)
    for ax in axes[len(kept):]:  # the unused panels of the last row
        ax.set_axis_off()
    fig.suptitle(f"{variant}: kept links per query (D = 1, Eq. 5) in every block", fontsize=9)
    save_png(fig, Path(figures_dir) / "kept_links_histograms.png")
    return fig


# ---------------------------------------------------------------------------------------------
# Training and bench curves


def figure_training_curves(runs_dir: Path, figures_dir: Path) -> Figure | None:
    """G and D losses, warp and VGG terms and the kept fraction against step for every variant
    that logged them (the smoke showcase, trained longer, has its own figure)."""
    name = "training curves"
    try:
        logs = read_training_logs(runs_dir, ("step", "g"))
    except FileNotFoundError as e:
        _no_figure(name, str(e))
        return None
    logs = {v: log for v, log in logs.items() if v != SHOWCASE}
    columns = [c for c in LOSS_COLUMNS if any(c in log and log[c].notna().any()
                                              for log in logs.values())]
    if not logs or not columns:
        _no_figure(name, "no variant's log holds a loss column")
        return None
    fig = training_curves(logs, columns)
    save_png(fig, Path(figures_dir) / "training_curves.png")
    return fig


def _first_column(table: pd.DataFrame, names: Sequence[str]) -> str | None:
    return next((c for c in names if c in table and table[c].notna().any()), None)


def figure_bench(bench_csv: Path, figures_dir: Path) -> Figure | None:
    """Attention time and peak memory against side, one line per attention form, from the
    benchmark's CSV (results/bench/dynast.csv). Columns are looked up by name: the form from
    one of BENCH_FORM, time from BENCH_TIME, memory from BENCH_MEMORY; rows whose `status` is
    not "ok" are dropped, and where a `part` or `kind` column names attention rows only those
    are kept. Lines are also split by BENCH_SPLIT columns that vary (e.g. precision)."""
    name = "bench curves"
    bench_csv = Path(bench_csv)
    if not bench_csv.is_file():
        _no_figure(name, f"{bench_csv} not found (run the benchmark)")
        return None
    table = pd.read_csv(bench_csv)
    if "status" in table:
        table = table[table["status"].astype(str) == "ok"]
    for column in ("part", "kind"):  # the attention part's rows (not its summary rows)
        if column in table:
            attention = table[column].astype(str).str.contains("attention")
            table = table[attention] if attention.any() else table
    form = _first_column(table, BENCH_FORM)
    panels = [(c, label) for c, label in ((_first_column(table, BENCH_TIME), "time"),
                                          (_first_column(table, BENCH_MEMORY), "peak memory"))
              if c is not None]
    if "side" not in table or form is None or not panels:
        _no_figure(name, f"{bench_csv}: needs a side column, a form column (one of "
                         f"{BENCH_FORM}) and a time or memory column (one of "
                         f"{BENCH_TIME + BENCH_MEMORY}); it has {list(table.columns)}")
        return None
    split = [c for c in BENCH_SPLIT if c in table and table[c].nunique(dropna=True) > 1]
    fig = Figure(figsize=(4.2 * len(panels), 3.4), layout="constrained")
    axes = fig.subplots(1, len(panels), squeeze=False)[0]
    for ax, (column, label) in zip(axes, panels, strict=True):
        for key, group in table.dropna(subset=[column]).groupby([form, *split], sort=True):
            group = group.groupby("side")[column].median()
            ax.plot(group.index, group.values, marker="o", linewidth=1,
                    label=", ".join(str(k) for k in (key if isinstance(key, tuple) else (key,))))
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel("side (query and key grid)")
        ax.set_ylabel(column)
        ax.set_title(f"attention {label} by form", fontsize=9)
        ax.grid(alpha=0.3)
    handles, labels = axes[0].get_legend_handles_labels()
    if handles:
        fig.legend(handles, labels, loc="outside right center", fontsize=7)
    save_png(fig, Path(figures_dir) / "bench_attention_vs_side.png")
    return fig
