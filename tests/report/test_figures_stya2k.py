"""StyA2K figure functions on fake run folders (sample grids, curves) and a tiny real model."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from matplotlib.patches import Rectangle

from sparsegen import config
from sparsegen.attention.all_to_key import inspect_query
from sparsegen.data.images import load_rgb, to_uint8
from sparsegen.figures import stya2k as figs
from sparsegen.io import read_image, write_image
from sparsegen.models.stya2k.network import build_network
from sparsegen.models.stya2k.task import checkpointed_modules, load_model
from sparsegen.train import checkpoint


def shown(ax) -> np.ndarray:
    return np.asarray(ax.images[0].get_array())


def test_sample_grid_shows_the_right_images(sample_runs, tmp_path):
    out = tmp_path / "figures"
    fig = figs.figure_comparison(sample_runs, out, n_pairs=2)
    assert read_image(out / "fig6_comparison.png").shape[2] == 3
    axes = np.array(fig.axes).reshape(2, 5)
    assert [a.get_title() for a in axes[0]] == ["Content", "Style", *figs.COMPARISON.values()]
    samples = pd.read_csv(sample_runs / "full" / "samples" / "samples.csv", dtype=str)
    for i, (c, s) in enumerate([("c0", "s0"), ("c1", "s1")]):
        row = samples[(samples.content_id == c) & (samples.style_id == s)].iloc[0]
        np.testing.assert_array_equal(shown(axes[i, 0]),
                                      to_uint8(load_rgb(row.content_path, size=32)))
        np.testing.assert_array_equal(shown(axes[i, 1]),
                                      to_uint8(load_rgb(row.style_path, size=32)))
        for j, variant in enumerate(figs.COMPARISON, start=2):
            png = sample_runs / variant / "samples" / f"c-{c}__s-{s}.png"
            np.testing.assert_array_equal(shown(axes[i, j]), read_image(png))


def test_ablation_and_a2k_grids(sample_runs, tmp_path, fakes):
    fig7 = figs.figure_ablation(sample_runs, tmp_path, n_pairs=3)
    assert len(fig7.axes) == 3 * (2 + len(figs.ABLATION))
    assert set(figs.ABLATION) <= set(fakes.variants)
    fig10 = figs.figure_a2k_vs_all_to_all(sample_runs, tmp_path, n_pairs=1)
    assert [a.get_title() for a in fig10.axes] == ["Content", "Style", "All-to-key",
                                                   "All-to-all"]
    assert {p.name for p in tmp_path.glob("*.png")} == {"fig7_ablation.png",
                                                        "fig10_a2k_vs_all_to_all.png"}


def test_select_pairs_distinct_and_deterministic():
    samples = pd.DataFrame({"content_id": ["b", "a", "a", "b", "c"],
                            "style_id": ["y", "x", "y", "x", "z"]})
    # contents a, b, c with styles x, y, z in order; (c, z) exists, all distinct.
    assert figs.select_pairs(samples, 5) == [("a", "x"), ("b", "y"), ("c", "z")]
    assert figs.select_pairs(samples.iloc[:4], 5) == [("a", "x"), ("b", "y")]
    assert figs.select_pairs(samples, 1) == [("a", "x")]


def test_missing_samples_are_named(sample_runs, tmp_path):
    (sample_runs / "adain" / "samples" / "samples.csv").unlink()
    with pytest.raises(FileNotFoundError, match=r"adain/samples/samples\.csv: samples table"):
        figs.figure_comparison(sample_runs, tmp_path)
    table = sample_runs / "adaattn" / "samples" / "samples.csv"
    rows = table.read_text().splitlines()
    table.write_text("\n".join(r for r in rows if "c-c1__s-s1" not in r) + "\n")
    with pytest.raises(ValueError, match=r"adaattn/samples/samples\.csv: no sample for content "
                                         r"'c1' and style 's1'"):
        figs.sample_grid(sample_runs, {"full": "a", "adaattn": "b"}, n_pairs=2)


def test_training_curves_plot_every_variant_log(sample_runs, tmp_path, fakes):
    fig = figs.figure_training_curves(sample_runs, tmp_path)
    assert (tmp_path / "training_curves.png").is_file()
    assert [a.get_title() for a in fig.axes] == list(figs.LOSS_COLUMNS)
    log = pd.read_csv(sample_runs / "wo_da" / "train_log.csv")
    for ax, column in zip(fig.axes, figs.LOSS_COLUMNS, strict=True):
        lines = {line.get_label(): line for line in ax.get_lines()}
        assert set(lines) == set(fakes.variants)
        np.testing.assert_allclose(lines["wo_da"].get_xdata(), log["step"])
        np.testing.assert_allclose(lines["wo_da"].get_ydata(), log[column])


@pytest.fixture(scope="module")
def model_runs(tmp_path_factory):
    """A run folder whose full/final.pt is a tiny random StyA2K at 64x64 (decoder re-drawn
    with He-scaled weights so outputs depend on the style), plus 2x2 samples."""
    root = tmp_path_factory.mktemp("model_runs")
    params = config.load_params(overrides={"weights": "random"})
    settings = config.resolve(params, "stya2k", "full")
    net = build_network(settings)
    gen = torch.Generator().manual_seed(0)
    for m in net.decoder.modules():
        if isinstance(m, torch.nn.Conv2d):
            torch.nn.init.normal_(m.weight, 0, (2 / (m.in_channels * 9)) ** 0.5, generator=gen)
    checkpoint.save(root / "full" / "final.pt", step=1, modules=checkpointed_modules(net),
                    optimizers={}, settings=settings)
    rng = np.random.default_rng(1)
    images = root / "images"
    rows = []
    for c in range(2):
        write_image(images / f"c{c}.png", rng.integers(0, 256, (64, 64, 3), dtype=np.uint8))
        write_image(images / f"s{c}.png", rng.integers(0, 256, (64, 64, 3), dtype=np.uint8))
    for c in range(2):
        for s in range(2):
            name = f"c-c{c}__s-s{s}"  # outputs at the evaluation size (64), as sampling writes
            write_image(root / "full" / "samples" / f"{name}.png",
                        rng.integers(0, 256, (64, 64, 3), dtype=np.uint8))
            rows.append({"id": name, "content_id": f"c{c}", "style_id": f"s{s}",
                         "output": f"{name}.png", "content_path": str(images / f"c{c}.png"),
                         "style_path": str(images / f"s{s}.png")})
    pd.DataFrame(rows).to_csv(root / "full" / "samples" / "samples.csv", index=False)
    return root


def test_attention_figure_maps_the_query(model_runs, tmp_path):
    fig = figs.figure_attention(model_runs, tmp_path, layer="relu3_1", query=(0.5, 0.25))
    assert (tmp_path / "fig5_attention.png").is_file()
    axes = np.array(fig.axes).reshape(3, 4)
    # relu3_1 of a 64x64 image is 16x16 (blocks of 8): the query cell (8, 4) is 4 pixels wide.
    (marker,) = [p for p in axes[0, 0].patches if isinstance(p, Rectangle)]
    assert marker.get_xy() == (16.0, 32.0) and marker.get_width() == 4.0
    net, _ = load_model(model_runs / "full" / "final.pt", torch.device("cpu"))
    content = load_rgb(model_runs / "images" / "c0.png", 64)[None]
    style = load_rgb(model_runs / "images" / "s0.png", 64)[None]
    with torch.no_grad():
        maps = inspect_query(net.encode(content)["relu3_1"][0], net.encode(style)["relu3_1"][0],
                             8, (8, 4))
    # Panels hold [style in grey, map]; the argmax panel lights exactly one 8x8 block.
    argmax = np.asarray(axes[2, 1].images[1].get_array())
    np.testing.assert_array_equal(argmax, maps["pa_block_argmax"].numpy())
    assert argmax.sum() == 64  # one block of 8x8 style positions
    np.testing.assert_allclose(np.asarray(axes[1, 3].images[1].get_array()).sum(), 1.0,
                               rtol=1e-5)  # DA softmax over the 4 keys at the query's offset


def test_interpolation_ends_are_the_single_styles(model_runs, tmp_path):
    fig = figs.figure_interpolation(model_runs, tmp_path, weights=(0.0, 1.0))
    assert (tmp_path / "fig8_interpolation_multistyle.png").is_file()
    axes = np.array(fig.axes).reshape(2, 4)
    net, _ = load_model(model_runs / "full" / "final.pt", torch.device("cpu"))
    content = load_rgb(model_runs / "images" / "c0.png", 64)[None]
    with torch.no_grad():
        only = [to_uint8(net.stylize(content, load_rgb(model_runs / "images" / f"s{s}.png",
                                                        64)[None])[0]) for s in (0, 1)]
    assert np.abs(only[0].astype(int) - only[1].astype(int)).max() > 10
    for k in (0, 1):
        diff = np.abs(shown(axes[0, 1 + k]).astype(int) - only[k].astype(int))
        assert diff.max() <= 1
    assert axes[1, 3].images  # the multi-style output


def test_attention_figure_picks_a_layer_with_several_blocks(model_runs, tmp_path):
    """At 64² relu4_1 is one 8x8 block (PA step 1 would be trivial): relu3_1 is shown."""
    fig = figs.figure_attention(model_runs, tmp_path)
    assert "at relu3_1" in fig.axes[0].get_title()
