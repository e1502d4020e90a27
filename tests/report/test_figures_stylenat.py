"""StyleNAT figure functions on fake run folders (sample grids, Fig. 3, curves) and a tiny
Hydra-NA generator (attention maps)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from sparsegen.figures import stylenat as figs
from sparsegen.io import read_image, write_image, write_text
from sparsegen.metrics.records import Measurement, ResultRecord, write_records
from sparsegen.models.stylenat.generator import build_generator
from sparsegen.models.stylenat.sampling import latents
from sparsegen.train import checkpoint

TINY_MODEL = {"resolution": 16, "style_dim": 8, "n_mlp": 2, "lr_mlp": 0.01, "max_channels": 16,
              "channel_multiplier": 2, "head_dim": 4, "min_heads": 4, "mlp_ratio": 2,
              "attention": "hydra_na", "kernel_size": 7, "dilations": "progressive",
              "partitions": 2, "window_size": 8, "backend": "torch"}
SIDES = {"stylenat": 16, "ffhq1024": 24, "church_p8": 16, "styleswin": 16}


def shown(ax) -> np.ndarray:
    return np.asarray(ax.images[0].get_array())


def _record(metric: str, value: float, variant: str, comparable: bool = False,
            protocol: dict | None = None) -> ResultRecord:
    rec = ResultRecord.from_measurement(metric, metric == "throughput_img_s",
                                        Measurement(value, 10, protocol or {"n": 10}))
    rec.source = {"paper": "stylenat", "variant": variant, "preset": "smoke"}
    rec.facts = {"preset": "paper" if comparable else "smoke"}
    return rec


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Every figure variant with 5 sample PNGs, metrics.json and train_log.csv; stylenat also
    has final.pt, a tiny Hydra-NA generator at 16x16."""
    root = tmp_path_factory.mktemp("runs")
    rng = np.random.default_rng(0)
    for k, (variant, side) in enumerate(SIDES.items()):
        for i in range(5):
            write_image(root / variant / "samples" / "images" / f"{i:06d}.png",
                        rng.integers(0, 256, (side, side, 3), dtype=np.uint8))
        write_records(root / variant / "metrics.json", [
            _record("fid_legacy_pytorch", 100.0 + k, variant),
            _record("throughput_img_s", 5.0 + k, variant,
                    protocol={"device": "NVIDIA H100 80GB HBM3"}),
            _record("params_m", 0.5 + k / 10, variant, comparable=True)])
        log = ["step,lr_g,lr_d,wall_s,d,bcr_real,bcr_fake,g,r1"]
        log += [f"{s},5e-05,0.0002,{s / 10},{(k + 1) / s},{0.1 / s},{0.2 / s},{k + s},"
                for s in range(5, 25, 5)]
        write_text(root / variant / "train_log.csv", "\n".join(log) + "\n")
    torch.manual_seed(1)
    g = build_generator(TINY_MODEL)
    checkpoint.save(root / "stylenat" / "final.pt", step=1, modules={"g_ema": g},
                    optimizers={}, settings={"paper": "stylenat", "variant": "stylenat",
                                             "model": TINY_MODEL})
    return root


def test_sample_grid_shows_the_first_samples_and_fid(runs, tmp_path):
    fig = figs.figure_samples(runs, tmp_path, "church_p8", "fig5_church", n=3, columns=2)
    assert read_image(tmp_path / "fig5_church.png").shape[2] == 3
    assert fig.get_suptitle() == "church_p8: FID 102.00†"
    axes = np.array(fig.axes).reshape(2, 2)
    for i, ax in enumerate(axes.flat[:3]):
        np.testing.assert_array_equal(
            shown(ax), read_image(runs / "church_p8" / "samples" / "images" / f"{i:06d}.png"))
    assert not axes[1, 1].images  # the blank fourth cell


def test_overview_puts_the_three_datasets_side_by_side(runs, tmp_path):
    fig = figs.figure_overview(runs, tmp_path, per_column=2)
    assert (tmp_path / "fig1_samples.png").is_file()
    axes = np.array(fig.axes).reshape(2, 3)
    assert [a.get_title() for a in axes[0]] == [
        "FFHQ-256 (stylenat), FID 100.00†", "FFHQ-1024 (ffhq1024), FID 101.00†",
        "LSUN Church (church_p8), FID 102.00†"]
    np.testing.assert_array_equal(
        shown(axes[1, 1]), read_image(runs / "ffhq1024" / "samples" / "images" / "000001.png"))
    assert shown(axes[1, 1]).shape[:2] == (24, 24)
    with pytest.raises(FileNotFoundError, match=r"nothing/samples/images: no sample PNGs"):
        figs.figure_overview(runs, tmp_path, variants={"nothing": "x"})


def test_paper_points_are_the_fully_printed_table1_rows():
    points = {p.label: (p.throughput, p.fid, p.params_m) for p in figs.paper_points()}
    assert points == {"StyleGAN2": (95.79, 3.83, 30.03), "StyleGAN-XL": (14.29, 2.19, 67.93),
                      "StyleSwin": (30.20, 2.81, 48.93), "HiT-L": (20.67, 2.58, 97.46),
                      "StyleNAT (ours)": (32.56, 2.05, 48.92)}


def test_fid_throughput_bubbles(runs, tmp_path):
    measured = figs.measured_points(runs)
    assert [p.label for p in measured] == [
        "StyleNAT (ours)\nsmoke, NVIDIA H100 80GB HBM3, not comparable",
        "StyleSwin (ours)\nsmoke, NVIDIA H100 80GB HBM3, not comparable"]
    assert (measured[0].throughput, measured[0].fid, measured[0].params_m) == (5.0, 100.0, 0.5)
    fig = figs.figure_fid_throughput(runs, tmp_path)
    assert (tmp_path / "fig3_fid_throughput.png").is_file()
    ax = fig.axes[0]
    paper, ours = ax.collections
    points = figs.paper_points()
    np.testing.assert_allclose(paper.get_offsets(), [(p.throughput, p.fid) for p in points])
    np.testing.assert_allclose(paper.get_sizes(), [figs.BUBBLE_AREA * p.params_m
                                                   for p in points])
    np.testing.assert_allclose(ours.get_offsets(), [(5.0, 100.0), (8.0, 103.0)])
    np.testing.assert_allclose(ours.get_sizes(), [figs.BUBBLE_AREA * 0.5,
                                                  figs.BUBBLE_AREA * 0.8])
    assert ax.get_yscale() == "log"  # FIDs 2.05 .. 103 span more than 20x
    assert any("StyleNAT (ours)\nsmoke" in t.get_text() for t in ax.texts)
    assert figs.fid_throughput_plot(points).axes[0].get_yscale() == "linear"
    with pytest.raises(ValueError, match="at least one point"):
        figs.fid_throughput_plot([])


def test_attention_maps_local_and_dilated_neighbourhoods(runs, tmp_path):
    fig = figs.figure_attention(runs, tmp_path, query=(0.5, 0.25))
    assert (tmp_path / "attention_local_vs_dilated.png").is_file()
    from sparsegen.models.stylenat.task import load_generator

    g, _ = load_generator(runs / "stylenat" / "final.pt", torch.device("cpu"))
    maps = figs.query_maps(g, latents(1, 8, 0), None, (0.5, 0.25))
    assert maps.layer == "16.1" and maps.dilations == [1, 2] and maps.query == (8, 4)
    np.testing.assert_array_equal(shown(fig.axes[0]), maps.image)
    local, dilated = maps.groups
    rows, cols = np.nonzero(local)
    # k = 7 around (8, 4): rows 5..11, columns 1..7; d = 2: every other cell, 13 wide.
    assert (rows.min(), rows.max(), cols.min(), cols.max()) == (5, 11, 1, 7)
    rows, cols = np.nonzero(dilated)
    assert len(rows) == 49 and set(rows % 2) == {0} and set(cols % 2) == {0}
    assert rows.max() - rows.min() == 12 and cols.max() - cols.min() == 12
    for heat in (local, dilated):
        assert heat.sum() == pytest.approx(1.0, rel=1e-5)  # softmax weights, head mean
    panel = np.ma.getdata(fig.axes[2].images[1].get_array())
    np.testing.assert_allclose(panel, dilated)
    with pytest.raises(KeyError, match=r"'99\.0' not found"):
        figs.query_maps(g, latents(1, 8, 0), "99.0", (0.5, 0.5))


def test_training_curves_plot_every_variant_log(runs, tmp_path):
    fig = figs.figure_training_curves(runs, tmp_path)
    assert (tmp_path / "training_curves.png").is_file()
    # r1 is never logged in these logs: no empty panel for it.
    assert [a.get_title() for a in fig.axes] == ["g", "d", "bcr_real", "bcr_fake"]
    log = pd.read_csv(runs / "church_p8" / "train_log.csv")
    lines = {line.get_label(): line for line in fig.axes[0].get_lines()}
    assert set(lines) == set(SIDES)
    np.testing.assert_allclose(lines["church_p8"].get_xdata(), log["step"])
    np.testing.assert_allclose(lines["church_p8"].get_ydata(), log["g"])


def test_notebook_takes_paths_and_calls_existing_figures():
    import ast

    import nbformat
    import papermill

    from sparsegen.provenance import REPO_ROOT

    notebook = REPO_ROOT / "notebooks" / "stylenat.ipynb"
    params = papermill.inspect_notebook(str(notebook))
    # what pipeline/rules/figures.smk passes
    assert set(params) == {"runs_dir", "figures_dir", "claims"}
    assert all(p["inferred_type_name"] == "str" for p in params.values())
    nb = nbformat.read(notebook, as_version=4)
    assert all(not c.get("outputs") for c in nb.cells if c.cell_type == "code")
    called = set()
    for cell in nb.cells:
        if cell.cell_type == "code":
            code = "\n".join(line for line in cell.source.splitlines() if not line.startswith("%"))
            called |= {node.attr for node in ast.walk(ast.parse(code))
                       if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name)
                       and node.value.id == "figures"}
    assert called == {"figure_overview", "figure_fid_throughput", "figure_samples",
                      "figure_attention", "figure_training_curves", "figure_showcase"}
    assert all(callable(getattr(figs, name)) for name in called)
