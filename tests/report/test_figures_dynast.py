"""DynaST figure functions on a fake run folder (sample PNGs, pairs.csv, kept.json, metric
records, training logs, a bench CSV) and the notebook's interface."""

from __future__ import annotations

import ast
import csv

import numpy as np
import pandas as pd
import pytest

from sparsegen.data.images import load_rgb, to_uint8
from sparsegen.figures import dynast as figs
from sparsegen.io import read_image, write_image, write_json, write_text
from sparsegen.metrics.records import Measurement, ResultRecord, write_records
from sparsegen.provenance import REPO_ROOT
from sparsegen.train import checkpoint

SIDE = 16  # the fake eval size; the dataset images are 24 x 24
# (target, exemplar) of each pair id: t0 and t1 share exemplar e0; p5 crosses t0 with e1.
PAIRS = {"p0": (0, 0), "p1": (1, 0), "p2": (2, 1), "p3": (3, 2), "p4": (4, 3), "p5": (0, 1)}
BLOCK_NAMES = ("4-B1", "4-B2", "8-B1", "8-B2", "16-B1", "16-B2")  # "16-B1" < "4-B1" as text
VARIANTS = ("df_full", "df_wo_dyna", "df_wo_inner", "df_cocosnet", "df_cocosnet_v2",
            "celeba_full", "celeba_cocosnet", "st_full", "showcase")  # no celeba_cocosnet_v2
KEPT = {  # formed links and kept-link histogram per block (what sampling.generate writes)
    "4-B1": {"formed": 16, "mode": "dense", "side": 4,
             "histogram": [3, 0, 5, 1, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 5]},
    "16-B1": {"formed": 4, "mode": "inter", "side": 16, "histogram": [10, 20, 30, 40, 156]},
    "8-B2": {"formed": 5, "mode": "inner", "side": 8, "histogram": [0, 1, 2, 3, 4, 54]},
}
LOG_COLUMNS = {"df_full": "step,g,d,warp,vgg,kept_fraction", "st_full": "step,g,warp,vgg",
               "showcase": "step,g,d,warp,vgg,kept_fraction", "df_cocosnet": "step,g,d,warp,vgg"}


def shown(ax) -> np.ndarray:
    return np.asarray(ax.images[0].get_array())


def grid(fig, n_cols: int) -> np.ndarray:
    return np.array(fig.axes).reshape(-1, n_cols)


def _record(metric: str, value: float) -> ResultRecord:
    rec = ResultRecord.from_measurement(metric, False, Measurement(value, 6, {"n": 6}))
    rec.source = {"paper": "dynast", "variant": "x", "preset": "smoke"}
    return rec


def _write_samples(variant_dir, images, rng, blocks_of: tuple[str, ...], untrained: bool
                   ) -> None:
    samples = variant_dir / "samples"
    rows = []
    for pair_id, (t, e) in PAIRS.items():
        for within in ("", "untrained/") if untrained else ("",):
            for kind in ("outputs", "warps"):
                write_image(samples / f"{within}{kind}/{pair_id}.png",
                            rng.integers(0, 256, (SIDE, SIDE, 3), dtype=np.uint8))
        rows.append({"id": pair_id, "output": f"outputs/{pair_id}.png",
                     "warp": f"warps/{pair_id}.png", "target": str(images / f"t{t}.png"),
                     "exemplar": str(images / f"e{e}.png")})
    for pair_id in blocks_of:
        for name in BLOCK_NAMES:
            write_image(samples / "blocks" / pair_id / f"{name}.png",
                        rng.integers(0, 256, (SIDE, SIDE, 3), dtype=np.uint8))
    with (samples / "pairs.csv").open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows[::-1])  # unsorted on disk: the figures sort ids
    write_json(samples / "kept.json", KEPT)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("dynast")
    rng = np.random.default_rng(0)
    images = root / "images"
    for i in range(5):
        write_image(images / f"t{i}.png", rng.integers(0, 256, (24, 24, 3), dtype=np.uint8))
        write_image(images / f"e{i}.png", rng.integers(0, 256, (24, 24, 3), dtype=np.uint8))
    runs = root / "runs"
    for k, variant in enumerate(VARIANTS):
        # df_wo_inner kept no block warps of p0: the cascade must take p1.
        blocks = ("p1", "p2") if variant == "df_wo_inner" else ("p0", "p1", "p2")
        _write_samples(runs / variant, images, rng, blocks, untrained=variant == "showcase")
        columns = LOG_COLUMNS.get(variant, "step,g,d,warp,vgg,kept_fraction")
        log = [columns] + [",".join(str(s if c == "step" else (k + 1) / s + j)
                                    for j, c in enumerate(columns.split(",")))
                           for s in (2, 4, 6)]
        write_text(runs / variant / "train_log.csv", "\n".join(log) + "\n")
    write_records(runs / "showcase" / "metrics.json", [
        _record("l1", 0.1), _record("l1@untrained", 0.3), _record("ssim_gauss11", 0.7),
        _record("ssim_gauss11@untrained", 0.2), _record("psnr", 15.0)])
    write_records(runs / "st_full" / "metrics.json", [
        _record("ssim_gauss11", 0.61), _record("style_loss_adain", 2.5),
        _record("style_loss_stytr2", 1.5)])
    checkpoint.save(runs / "showcase" / "final.pt", step=200, modules={}, optimizers={},
                    settings={"paper": "dynast", "variant": "showcase",
                              "model": {"size": 32}, "train": {"iterations": 200,
                                                               "batch_size": 4}})
    return runs


def dataset_image(runs, name: str) -> np.ndarray:
    """A dataset image resized as the figures show it (independently of figs.image_at)."""
    return to_uint8(load_rgb(runs.parent / "images" / f"{name}.png", size=SIDE))


def sample(runs, variant: str, relative: str) -> np.ndarray:
    return read_image(runs / variant / "samples" / relative)


def test_read_pairs_resolves_sample_paths_and_names_faults(runs, tmp_path):
    table = figs.read_pairs(runs / "df_full")
    assert list(table.index) == list(PAIRS)[::-1]
    assert table.loc["p2", "output"] == str(runs / "df_full" / "samples" / "outputs" / "p2.png")
    assert table.loc["p2", "exemplar"] == str(runs.parent / "images" / "e1.png")
    with pytest.raises(FileNotFoundError, match=r"nothing/samples/pairs\.csv: pairs index"):
        figs.read_pairs(tmp_path / "nothing")
    write_text(tmp_path / "bad" / "samples" / "pairs.csv", "id,output,target\np0,a.png,b.png\n")
    with pytest.raises(ValueError, match=r"bad/samples/pairs\.csv: missing column\(s\) "
                                         r"\['warp', 'exemplar'\]"):
        figs.read_pairs(tmp_path / "bad")


def test_block_key_orders_by_side_then_block():
    assert sorted(BLOCK_NAMES, key=figs.block_key) == [
        "4-B1", "4-B2", "8-B1", "8-B2", "16-B1", "16-B2"]
    with pytest.raises(ValueError, match=r"'final' is not <side>-B<block>"):
        figs.block_key("final")


def test_showcase_puts_untrained_beside_trained(runs, tmp_path):
    fig = figs.figure_showcase(runs, tmp_path, n_pairs=2)
    assert (tmp_path / "smoke_showcase.png").is_file()
    axes = grid(fig, 6)
    assert axes.shape == (2, 6)
    assert [a.get_title() for a in axes[0]] == ["Exemplar", "Ground truth", "Untrained warp",
                                                "Trained warp", "Untrained output",
                                                "Trained output"]
    expected = [dataset_image(runs, "e0"), dataset_image(runs, "t1"),
                sample(runs, "showcase", "untrained/warps/p1.png"),
                sample(runs, "showcase", "warps/p1.png"),
                sample(runs, "showcase", "untrained/outputs/p1.png"),
                sample(runs, "showcase", "outputs/p1.png")]
    assert [a.get_ylabel() for a in axes[:, 0]] == ["p0", "p1"]
    for ax, image in zip(axes[1], expected, strict=True):  # the second pair: p1 (t1, e0)
        np.testing.assert_array_equal(shown(ax), image)
    assert fig.get_suptitle() == ("smoke showcase: DynaST (df_full) 200 iterations at 32² "
                                  "(batch 4)\nwarp L1 ↓ 0.100 (untrained 0.300); "
                                  "warp SSIM ↑ 0.700 (untrained 0.200)")


def test_cascade_rows_are_the_ablations_and_columns_the_blocks_in_order(runs, tmp_path):
    fig = figs.figure_cascade(runs, tmp_path)
    assert (tmp_path / "fig6_cascade.png").is_file()
    axes = grid(fig, 9)
    assert [a.get_title() for a in axes[0]] == [
        "Exemplar", "Ground truth", "4-B1", "4-B2", "8-B1", "8-B2", "16-B1", "16-B2",
        "Final output"]
    assert [a.get_ylabel() for a in axes[:, 0]] == [
        "w/o Dyna (df_wo_dyna)", "Full model (df_full)", "w/o Inner (df_wo_inner)"]
    assert "pair p1" in fig.get_suptitle()  # p0 has no block warps in df_wo_inner
    for row, variant in zip(axes, ("df_wo_dyna", "df_full", "df_wo_inner"), strict=True):
        np.testing.assert_array_equal(shown(row[0]), dataset_image(runs, "e0"))
        np.testing.assert_array_equal(shown(row[1]), dataset_image(runs, "t1"))
        np.testing.assert_array_equal(shown(row[6]), sample(runs, variant, "blocks/p1/16-B1.png"))
        np.testing.assert_array_equal(shown(row[2]), sample(runs, variant, "blocks/p1/4-B1.png"))
        np.testing.assert_array_equal(shown(row[8]), sample(runs, variant, "outputs/p1.png"))
    fig = figs.figure_cascade(runs, tmp_path, pair_id="p2")
    np.testing.assert_array_equal(shown(grid(fig, 9)[1, 4]),
                                  sample(runs, "df_full", "blocks/p2/8-B1.png"))


def test_comparison_puts_datasets_side_by_side_and_skips_missing_peers(runs, tmp_path, capsys):
    fig = figs.figure_comparison(runs, tmp_path, n_pairs=3)
    assert (tmp_path / "fig4_9_comparison.png").is_file()
    assert "skipped celeba_cocosnet_v2" in capsys.readouterr().out
    peer, peer_v2 = "CoCosNet\n(same-backbone peer)", "CoCosNet-v2\n(same-backbone peer)"
    axes = grid(fig, 9)
    assert [a.get_title() for a in axes[0]] == [
        "DeepFashion\nExemplar", "Ground truth", peer, peer_v2, "Ours",
        "CelebA-HQ\nExemplar", "Ground truth", peer, "Ours"]
    assert axes.shape[0] == 3 and axes[2, 0].get_ylabel() == "p2 / p2"
    np.testing.assert_array_equal(shown(axes[2, 0]), dataset_image(runs, "e1"))
    np.testing.assert_array_equal(shown(axes[2, 1]), dataset_image(runs, "t2"))
    for col, variant in ((2, "df_cocosnet"), (3, "df_cocosnet_v2"), (4, "df_full"),
                         (7, "celeba_cocosnet"), (8, "celeba_full")):
        np.testing.assert_array_equal(shown(axes[2, col]), sample(runs, variant,
                                                                  "outputs/p2.png"))
    only_df = figs.figure_comparison(runs, tmp_path, n_pairs=1, datasets={"df": "DF",
                                                                          "xx": "none"})
    assert len(only_df.axes) == 5
    assert figs.figure_comparison(runs, tmp_path / "no", datasets={"xx": "none"}) is None
    assert not (tmp_path / "no").exists()


def test_fig5_ours_against_the_cocosnet_v2_peer(runs, tmp_path):
    fig = figs.figure_cocosnet_v2(runs, tmp_path, n_pairs=2)
    assert (tmp_path / "fig5_vs_cocosnet_v2.png").is_file()
    axes = grid(fig, 4)
    assert [a.get_title() for a in axes[0]] == [
        "Exemplar", "Ground truth", "CoCosNet-v2 (same-backbone peer)", "Ours"]
    np.testing.assert_array_equal(shown(axes[0, 2]), sample(runs, "df_cocosnet_v2",
                                                            "outputs/p0.png"))
    np.testing.assert_array_equal(shown(axes[0, 3]), sample(runs, "df_full", "outputs/p0.png"))
    assert figs.figure_cocosnet_v2(runs, tmp_path, prefix="celeba") is None  # no v2 peer


def test_style_grid_and_fig8_point(runs, tmp_path):
    fig = figs.figure_style(runs, tmp_path, n_pairs=3)
    assert (tmp_path / "fig7_10_13_style.png").is_file()
    axes = grid(fig, 3)
    assert axes.shape == (3, 3) and axes[2, 0].get_ylabel() == "p2"
    np.testing.assert_array_equal(shown(axes[2, 0]), dataset_image(runs, "t2"))
    np.testing.assert_array_equal(shown(axes[2, 1]), dataset_image(runs, "e1"))
    np.testing.assert_array_equal(shown(axes[2, 2]), sample(runs, "st_full", "outputs/p2.png"))

    fig = figs.figure_ssim_style(runs, tmp_path)
    assert (tmp_path / "fig8_ssim_vs_style_loss.png").is_file()
    ax = fig.axes[0]
    np.testing.assert_allclose(ax.collections[0].get_offsets(), [(2.5, 0.61)])
    assert ax.texts[0].get_text() == "DynaST (ours, smoke)\nSSIM 0.610, style loss 2.5"
    assert figs.figure_ssim_style(runs, tmp_path, variant="df_full") is None  # no records


def test_pair_grid_fills_the_evaluated_pairs_only(runs, tmp_path):
    fig = figs.figure_pair_grid(runs, tmp_path, "celeba_full", "fig12_celeba_pairs", n=3)
    assert (tmp_path / "fig12_celeba_pairs.png").is_file()
    # First 3 ids: p0 (t0, e0), p1 (t1, e0), p2 (t2, e1) -> rows t0..t2, columns e0, e1.
    axes = grid(fig, 3)
    assert axes.shape == (4, 3)
    assert [a.get_title() for a in axes[0]] == ["Input (target)", "Exemplar 1", "Exemplar 2"]
    assert not axes[0, 0].images
    np.testing.assert_array_equal(shown(axes[0, 2]), dataset_image(runs, "e1"))
    np.testing.assert_array_equal(shown(axes[3, 0]), dataset_image(runs, "t2"))
    filled = {(0, 0): "p0", (0, 1): "p5", (1, 0): "p1", (2, 1): "p2"}  # p5: t0 with e1
    for i in range(3):
        for j in range(2):
            cell = axes[i + 1, j + 1]
            if (i, j) in filled:
                np.testing.assert_array_equal(
                    shown(cell), sample(runs, "celeba_full", f"outputs/{filled[i, j]}.png"))
            else:
                assert not cell.images


def test_kept_histograms_are_the_kept_json_counts(runs, tmp_path):
    fig = figs.figure_kept_histograms(runs, tmp_path, columns=2)
    assert (tmp_path / "kept_links_histograms.png").is_file()
    panels = fig.axes
    assert len(panels) == 4 and not panels[3].axison  # 3 blocks in a 2 x 2 grid
    for ax, block in zip(panels, ("4-B1", "8-B2", "16-B1"), strict=False):
        entry = KEPT[block]
        bars = ax.patches
        assert [b.get_height() for b in bars] == entry["histogram"]
        assert [b.get_x() + b.get_width() / 2 for b in bars] == list(range(entry["formed"] + 1))
        mean = sum(n * c for n, c in enumerate(entry["histogram"])) / sum(entry["histogram"])
        assert ax.get_title() == (f"{block} ({entry['mode']}, side {entry['side']}): "
                                  f"mean {mean:.1f} of {entry['formed']}")
    assert panels[0].get_title().endswith("mean 6.6 of 16")  # (2*5 + 3 + 6*2 + 16*5) / 16
    bad = tmp_path / "bad"
    write_json(bad / "df_full" / "samples" / "kept.json",
               {"8-B1": {"formed": 4, "mode": "inter", "side": 8, "histogram": [1, 2]}})
    write_text(bad / "df_full" / "samples" / "pairs.csv", "id,output,warp,target,exemplar\n")
    with pytest.raises(ValueError, match=r"block '8-B1' has 2 histogram bins for 4 formed"):
        figs.figure_kept_histograms(bad, tmp_path)


def test_training_curves_leave_out_the_showcase(runs, tmp_path):
    fig = figs.figure_training_curves(runs, tmp_path)
    assert (tmp_path / "training_curves.png").is_file()
    assert [a.get_title() for a in fig.axes] == list(figs.LOSS_COLUMNS)
    lines = {line.get_label(): line for line in fig.axes[1].get_lines()}  # d
    assert set(lines) == set(VARIANTS) - {"showcase", "st_full"}  # st_full logs no d
    log = pd.read_csv(runs / "df_cocosnet" / "train_log.csv")
    g = {line.get_label(): line for line in fig.axes[0].get_lines()}["df_cocosnet"]
    np.testing.assert_allclose(g.get_xdata(), log["step"])
    np.testing.assert_allclose(g.get_ydata(), log["g"])


def test_bench_curves_read_columns_defensively(tmp_path, capsys):
    assert figs.figure_bench(tmp_path / "none.csv", tmp_path) is None
    assert "none.csv not found" in capsys.readouterr().out
    # As bench.dynast writes it: the attention part's rows, its summaries, other parts.
    rows = ["part,kind,attention,side,mean_ms,peak_mem_gib,status,precision",
            "attention,attention_cost,dense,32,1.0,0.1,ok,fp32",
            "attention,attention_cost,dense,64,4.0,0.4,ok,fp32",
            "attention,attention_cost,dense,128,99.0,9.9,out of memory,fp32",
            "attention,attention_cost,sparse,32,0.5,0.05,ok,fp32",
            "attention,attention_cost,sparse,64,1.0,0.1,ok,fp32",
            "attention,attention_cost,sparse,128,2.0,0.2,ok,fp32",
            "attention,summary,sparse,64,7.0,,ok,fp32",
            "variants,inference,dense,256,9.0,3.0,ok,fp32"]
    write_text(tmp_path / "dynast.csv", "\n".join(rows) + "\n")
    fig = figs.figure_bench(tmp_path / "dynast.csv", tmp_path)
    assert (tmp_path / "bench_attention_vs_side.png").is_file()
    time, memory = fig.axes
    assert (time.get_ylabel(), memory.get_ylabel()) == ("mean_ms", "peak_mem_gib")
    lines = {line.get_label(): line for line in time.get_lines()}
    assert set(lines) == {"dense", "sparse"}
    np.testing.assert_allclose(lines["dense"].get_xdata(), [32, 64])  # 128 ran out of memory
    np.testing.assert_allclose(lines["sparse"].get_xdata(), [32, 64, 128])  # no summary row
    np.testing.assert_allclose(lines["sparse"].get_ydata(), [0.5, 1.0, 2.0])
    mem = {line.get_label(): line for line in memory.get_lines()}
    np.testing.assert_allclose(mem["dense"].get_ydata(), [0.1, 0.4])
    # Other names: the form in `attention`, time in `median_ms`, no memory, two backends.
    rows = ["attention,side,median_ms,backend", "dense,8,1.0,torch", "dense,16,3.0,torch",
            "dense,8,0.5,sdpa", "dense,16,1.5,sdpa"]
    write_text(tmp_path / "other.csv", "\n".join(rows) + "\n")
    fig = figs.figure_bench(tmp_path / "other.csv", tmp_path)
    assert len(fig.axes) == 1
    lines = {line.get_label(): line for line in fig.axes[0].get_lines()}
    np.testing.assert_allclose(lines["dense, sdpa"].get_ydata(), [0.5, 1.5])
    write_text(tmp_path / "bare.csv", "side,value\n8,1\n")
    assert figs.figure_bench(tmp_path / "bare.csv", tmp_path) is None
    assert "needs a side column, a form column" in capsys.readouterr().out


def test_every_figure_skips_an_empty_runs_folder(tmp_path, capsys):
    out = tmp_path / "figures"
    for draw in (figs.figure_showcase, figs.figure_cascade, figs.figure_comparison,
                 figs.figure_cocosnet_v2, figs.figure_style, figs.figure_ssim_style,
                 figs.figure_kept_histograms, figs.figure_training_curves):
        assert draw(tmp_path / "runs", out) is None
    assert figs.figure_pair_grid(tmp_path / "runs", out, "df_full", "fig11") is None
    assert not out.exists()
    printed = capsys.readouterr().out
    assert "Fig. 6 (cascade): skipped df_wo_dyna" in printed
    assert "training curves: not drawn" in printed


def test_notebook_takes_paths_and_calls_existing_figures():
    import nbformat
    import papermill

    notebook = REPO_ROOT / "notebooks" / "dynast.ipynb"
    params = papermill.inspect_notebook(str(notebook))
    # what pipeline/rules/figures.smk passes
    assert set(params) == {"runs_dir", "figures_dir", "claims"}
    assert all(p["inferred_type_name"] == "str" for p in params.values())
    nb = nbformat.read(notebook, as_version=4)
    assert all(not c.get("outputs") for c in nb.cells if c.cell_type == "code")
    assert nb.cells[0].cell_type == "markdown" and "smoke" in nb.cells[0].source
    called = set()
    for cell in nb.cells:
        if cell.cell_type == "code":
            code = "\n".join(line for line in cell.source.splitlines() if not line.startswith("%"))
            called |= {node.attr for node in ast.walk(ast.parse(code))
                       if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name)
                       and node.value.id == "figures"}
    assert called == {"figure_showcase", "figure_cascade", "figure_comparison",
                      "figure_cocosnet_v2", "figure_style", "figure_ssim_style",
                      "figure_pair_grid", "figure_kept_histograms", "figure_training_curves",
                      "figure_bench"}
    assert all(callable(getattr(figs, name)) for name in called)


def test_notebook_runs_on_the_fake_runs_and_writes_every_figure(runs, tmp_path):
    from sparsegen.notebooks import execute

    results = tmp_path / "results"
    write_text(results / "bench" / "dynast.csv",  # where the notebook looks for the benchmark
               "attention,side,mean_ms\ndense,8,1.0\ndense,16,3.0\n")
    execute(REPO_ROOT / "notebooks" / "dynast.ipynb", results / "notebooks" / "dynast.ipynb",
            results / "notebooks" / "dynast.html",
            {"runs_dir": runs, "figures_dir": results / "figures" / "dynast",
             "claims": REPO_ROOT / "pipeline" / "claims" / "dynast.yaml"}, cwd=tmp_path)
    assert sorted(p.name for p in (results / "figures" / "dynast").iterdir()) == [
        "bench_attention_vs_side.png", "fig11_deepfashion_pairs.png", "fig12_celeba_pairs.png",
        "fig4_9_comparison.png", "fig5_vs_cocosnet_v2.png", "fig6_cascade.png",
        "fig7_10_13_style.png", "fig8_ssim_vs_style_loss.png", "kept_links_histograms.png",
        "smoke_showcase.png", "training_curves.png"]
    assert (results / "notebooks" / "dynast.html").is_file()
