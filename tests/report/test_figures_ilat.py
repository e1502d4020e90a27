"""iLAT figure functions on a fake run folder (8x8 sample PNGs, examples.csv, metric records,
training logs, final.pt naming a prepared manifest, a bench CSV) and the notebook's interface."""

from __future__ import annotations

import ast
import csv

import numpy as np
import pandas as pd
import pytest
import torch

from sparsegen.figures import ilat as figs
from sparsegen.io import read_image, write_image, write_text
from sparsegen.metrics.records import Measurement, ResultRecord, write_records
from sparsegen.models.ilat.sampling import COLUMNS
from sparsegen.provenance import REPO_ROOT
from sparsegen.train import checkpoint

SIDE = 8
CLAIMS = REPO_ROOT / "pipeline" / "claims" / "ilat.yaml"
# Penn Action test pairs: reference frame -> target frame, in two videos.
PA_PAIRS = {"v0_f0": "v0_f3", "v0_f1": "v0_f0", "v0_f2": "v0_f1", "v0_f3": "v0_f2",
            "v1_f0": "v1_f1", "v1_f1": "v1_f0"}
PA_ACTIONS = {"v0": "squat", "v1": "baseball_pitch"}
SDF_IDS = ("i0_pose0", "i1_pose0", "i2_pose0")
FACE_IDS = tuple(f"{i:05d}" for i in range(6))
SAMPLED = {  # variant -> its example ids (no taming_star_ffhq, ilat_star_ffhq, vq_eq4_*)
    "taming_pa": tuple(PA_PAIRS), "ilat_star_pa": tuple(PA_PAIRS), "ilat_pa": tuple(PA_PAIRS),
    "taming_sdf": SDF_IDS, "ilat_sdf": SDF_IDS, "taming_ffhq": FACE_IDS,
    "ilat_ffhq": FACE_IDS, "vq_pa": tuple(PA_PAIRS), "ts_pa": tuple(PA_PAIRS),
    "ts_ffhq": FACE_IDS, "sketch_ffhq": FACE_IDS, "showcase": tuple(PA_PAIRS)[:3]}
TOKENIZERS = ("vq_pa", "ts_pa", "ts_ffhq", "sketch_ffhq")


def shown(ax) -> np.ndarray:
    return np.asarray(ax.images[0].get_array())


def grid(fig, n_cols: int) -> np.ndarray:
    return np.array(fig.axes).reshape(-1, n_cols)


def sources(fig) -> str:
    return " ".join(t.get_text().replace("\n", " ") for t in fig.texts)


def sample(runs, variant: str, relative: str) -> np.ndarray:
    return read_image(runs / variant / "samples" / relative)


def _record(metric: str, value: float, device: str = "cpu") -> ResultRecord:
    rec = ResultRecord.from_measurement(metric, False, Measurement(value, 6, {"n": 6}))
    rec.source = {"paper": "ilat", "variant": "x", "preset": "smoke"}
    rec.device = device
    return rec


def _mask(rng) -> np.ndarray:
    hole = rng.random((SIDE, SIDE)) < 0.4
    return np.repeat(np.where(hole, 255, 0).astype(np.uint8)[..., None], 3, axis=2)


def _write_samples(folder, ids, rng, tokenizer: bool, untrained: bool) -> None:
    rows = []
    for i in ids:
        kinds = ["outputs", "inputs", "truths"] + (["recon"] if tokenizer else ["conditions"])
        for kind in kinds + (["untrained/outputs"] if untrained else []):
            write_image(folder / kind / f"{i}.png",
                        rng.integers(0, 256, (SIDE, SIDE, 3), dtype=np.uint8))
        write_image(folder / "masks" / f"{i}.png", _mask(rng))
        rows.append({"id": i, "output": f"outputs/{i}.png",
                     "recon": f"recon/{i}.png" if tokenizer else "",
                     "input": f"inputs/{i}.png", "truth": f"truths/{i}.png",
                     "mask": f"masks/{i}.png",
                     "condition": "" if tokenizer else f"conditions/{i}.png",
                     "masked_tokens": 3, "tokens": 4, "masked_pixels": 20, "pixels": 64,
                     "steps": 3, "seconds": 0.1})
    with (folder / "examples.csv").open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=COLUMNS)
        writer.writeheader()
        writer.writerows(rows[::-1])  # unsorted on disk: the figures sort ids


def _manifests(prepared) -> None:
    rows = ["id,split,path,sha256,video,action,pair"]
    for video, action in PA_ACTIONS.items():
        for f in range(4 if video == "v0" else 2):
            frame = f"{video}_f{f}"
            rows.append(f"{frame},test,images/{frame}.png,0,{video},{action},{PA_PAIRS[frame]}")
    write_text(prepared / "smoke_pa" / "manifest.csv", "\n".join(rows) + "\n")
    rows = ["id,split,path,sha256,video,action,pair,background"]
    for k, ref in enumerate(SDF_IDS):
        target = ref.replace("pose0", "pose1")
        rows += [f"{ref},test,images/{ref}.png,0,i{k},sdf,{target},scene_{k}",
                 f"{target},test,images/{target}.png,0,i{k},sdf,,scene_{k}"]
    write_text(prepared / "smoke_sdf" / "manifest.csv", "\n".join(rows) + "\n")


def _final(path, prepared, dataset: str, iterations: int = 160, described: bool = True
           ) -> None:
    """A final.pt whose settings name the dataset as resolved settings do (`datasets`) or
    only by `data` (`described` False)."""
    where = {"datasets": {"images": {"name": dataset}}} if described else \
        {"data": {"images": dataset}}
    checkpoint.save(path, step=iterations, modules={}, optimizers={}, settings={
        "paper": "ilat", "variant": path.parent.name, "model": {"size": 32},
        "train": {"iterations": iterations, "batch_size": 8},
        "paths": {"prepared": str(prepared)}, **where})


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("ilat")
    rng = np.random.default_rng(0)
    runs = root / "runs"
    for variant, ids in SAMPLED.items():
        _write_samples(runs / variant / "samples", ids, rng, variant in TOKENIZERS,
                       untrained=variant == "showcase")
    _manifests(root / "prepared")
    _final(runs / "ilat_pa" / "final.pt", root / "prepared", "smoke_pa")
    _final(runs / "ilat_sdf" / "final.pt", root / "prepared", "smoke_sdf", described=False)
    _final(runs / "showcase" / "final.pt", root / "prepared", "smoke_pa", iterations=480)
    # Image tokenizers of one dataset read the same test images; sketch_ffhq reads sketches.
    for variant, same in (("ts_ffhq", "ilat_ffhq"), ("vq_pa", "ts_pa")):
        for i in SAMPLED[variant]:
            write_image(runs / variant / "samples" / "truths" / f"{i}.png",
                        read_image(runs / same / "samples" / "truths" / f"{i}.png"))
    write_records(runs / "ilat_pa" / "metrics.json", [
        _record("masked_rate_tokens", 0.3), _record("seconds_per_image", 0.02),
        _record("l1_hole", 0.2)])
    write_records(runs / "taming_pa" / "metrics.json", [
        _record("masked_rate_tokens", 1.0), _record("seconds_per_image", 0.05)])
    write_records(runs / "showcase" / "metrics.json", [
        _record("l1_hole", 0.1), _record("l1_hole@untrained", 0.4),
        _record("l1_outside", 0.01), _record("l1_outside@untrained", 0.02)])
    write_records(runs / "ts_pa" / "metrics.json", [
        _record("psnr", 21.5), _record("psnr@masked", 19.25)])
    logs = {"ts_pa": "step,rec,codebook,g,lambda,d", "vq_pa": "step,rec,codebook,g,lambda,d",
            "ilat_pa": "step,ce,masked_fraction", "taming_pa": "step,ce,masked_fraction",
            "showcase": "step,ce,masked_fraction"}
    for k, (variant, columns) in enumerate(logs.items()):
        lines = [columns] + [",".join(str(s if c == "step" else (k + 1) / s + j)
                                      for j, c in enumerate(columns.split(",")))
                             for s in (2, 4, 6)]
        write_text(runs / variant / "train_log.csv", "\n".join(lines) + "\n")
    return runs


def test_read_examples_resolves_sample_paths_and_names_faults(runs, tmp_path):
    table = figs.read_examples(runs / "ilat_pa")
    assert list(table.index) == list(PA_PAIRS)[::-1]
    folder = runs / "ilat_pa" / "samples"
    assert table.loc["v0_f2", "condition"] == str(folder / "conditions" / "v0_f2.png")
    assert figs.read_examples(runs / "ts_pa").loc["v0_f2", "condition"] == ""
    with pytest.raises(FileNotFoundError, match=r"nothing/samples/examples\.csv: examples"):
        figs.read_examples(tmp_path / "nothing")
    write_text(tmp_path / "bad" / "samples" / "examples.csv", "id,output\np0,a.png\n")
    with pytest.raises(ValueError, match=r"bad/samples/examples\.csv: missing column\(s\) "
                                         r"\['recon', 'input'"):
        figs.read_examples(tmp_path / "bad")


def test_attention_masks_show_the_builders_masks_for_fig_3b(tmp_path):
    from sparsegen.attention.local_autoregressive import ae_mask, causal_mask, la_mask

    hole, masked = figs.fig3_token_mask()
    assert masked[0].nonzero().flatten().tolist() == [1, 2, 5, 7]  # Fig. 3(b)'s tokens
    fig = figs.figure_attention_masks(tmp_path)
    assert (tmp_path / "fig1b_3b_attention_masks.png").is_file()
    pixels, ae, ar, la = fig.axes[:4]
    np.testing.assert_array_equal(shown(pixels), hole[0, 0].numpy())
    for ax, expected in ((ae, ae_mask(masked, 10)[0]), (ar, causal_mask(10, 9)),
                         (la, la_mask(masked, 10)[0])):
        np.testing.assert_array_equal(shown(ax), expected.numpy())
    labels = [t.get_text() for t in la.get_yticklabels()]
    assert labels[:2] == ["c_s", "c0"] and labels[10:12] == ["t_s", "t0"]
    # Fig. 3(b): t_s, t3 and t8 are global (black), the other target positions causal (red).
    black = {t.get_text() for t in la.get_yticklabels()[10:] if t.get_color() == "black"}
    assert black == {"t_s", "t3", "t8"}
    assert "sparsegen.attention.local_autoregressive" in sources(fig)
    assert "drawn here by our mask builders" in sources(fig)


def test_leak_region_of_a_3x3_conv_is_the_one_pixel_ring(tmp_path):
    fig = figs.figure_leak_region(tmp_path, side=16)
    assert (tmp_path / "fig3a_leak_region.png").is_file()
    hole = shown(fig.axes[0])[..., 0] == 0  # black = hole
    ring = np.zeros_like(hole)
    for y in range(16):  # independent reference: 3x3 neighbourhood touches the hole
        for x in range(16):
            ring[y, x] = not hole[y, x] and hole[max(0, y - 1):y + 2, max(0, x - 1):x + 2].any()
    red = shown(fig.axes[1])
    leak = (red[..., 0] > 0.5) & (red[..., 1] < 0.5)
    np.testing.assert_array_equal(leak, ring)
    assert f"{int(ring.sum())} positions" in fig.axes[1].get_title()
    assert shown(fig.axes[2]).shape[:2] == (8, 8)  # stride 2: the output size
    assert "two_stream (pool_mask, leak_region)" in sources(fig)


def test_comparison_grid_reads_the_samples_and_names_them(runs, tmp_path, capsys):
    fig = figs.figure_comparison(runs, tmp_path, "pa", n=2)
    assert (tmp_path / "fig4_pa.png").is_file()
    axes = grid(fig, 6)
    assert [a.get_title() for a in axes[0]] == ["Reference", "Mask", "Target", "Taming",
                                                "iLAT*", "iLAT"]
    assert [a.get_ylabel() for a in axes[:, 0]] == ["v0_f0", "v0_f1"]
    for col, relative in ((0, "inputs"), (1, "masks"), (2, "truths")):
        np.testing.assert_array_equal(shown(axes[1, col]),
                                      sample(runs, "ilat_pa", f"{relative}/v0_f1.png"))
    for col, variant in ((3, "taming_pa"), (4, "ilat_star_pa"), (5, "ilat_pa")):
        np.testing.assert_array_equal(shown(axes[1, col]),
                                      sample(runs, variant, "outputs/v0_f1.png"))
        assert str(runs / variant / "samples" / "examples.csv") in sources(fig)
    assert "python -m sparsegen sample" in sources(fig)

    fig = figs.figure_comparison(runs, tmp_path, "ffhq", n=1)
    assert "skipped taming_star_ffhq" in capsys.readouterr().out
    assert [a.get_title() for a in fig.axes] == ["Reference", "Sketch (edited)", "Mask",
                                                 "Taming", "iLAT"]
    np.testing.assert_array_equal(shown(fig.axes[1]),
                                  sample(runs, "ilat_ffhq", "conditions/00000.png"))


def test_ablation_puts_three_blocks_side_by_side(runs, tmp_path, capsys):
    fig = figs.figure_ablation(runs, tmp_path, n=2)
    assert (tmp_path / "fig5_ablation_sdf.png").is_file()
    assert "skipped ilat_star_ffhq" in capsys.readouterr().out
    axes = grid(fig, 11)
    assert [a.get_title() for a in axes[0]] == [
        "(A) Reference", "Target", "iLAT*", "iLAT", "(B) Reference", "Sketch (edited)", "iLAT",
        "(C) Reference", "Target", "Taming", "iLAT"]
    assert axes[1, 0].get_ylabel() == "v0_f1 / 00001 / i1_pose0"
    np.testing.assert_array_equal(shown(axes[1, 9]), sample(runs, "taming_sdf",
                                                            "outputs/i1_pose0.png"))


def _half_and_back(hole: np.ndarray) -> np.ndarray:
    """Independent reference of the paper's blend mask: 2 x 2 means, then bilinear back with
    half-pixel centres (edge-clamped), by explicit loops."""
    side = hole.shape[0]
    half = hole.reshape(side // 2, 2, side // 2, 2).mean(axis=(1, 3))
    out = np.zeros_like(hole, dtype=float)
    for y in range(side):
        for x in range(side):
            sy = min(max((y + 0.5) / 2 - 0.5, 0), side // 2 - 1)
            sx = min(max((x + 0.5) / 2 - 0.5, 0), side // 2 - 1)
            y0, x0 = int(np.floor(sy)), int(np.floor(sx))
            y1, x1 = min(y0 + 1, side // 2 - 1), min(x0 + 1, side // 2 - 1)
            wy, wx = sy - y0, sx - x0
            out[y, x] = ((1 - wy) * ((1 - wx) * half[y0, x0] + wx * half[y0, x1])
                         + wy * ((1 - wx) * half[y1, x0] + wx * half[y1, x1]))
    return out


def test_blend_is_output_and_reference_through_the_half_size_mask(runs, tmp_path):
    fig = figs.figure_blend(runs, tmp_path, n=2)
    assert (tmp_path / "fig9_blend.png").is_file()
    axes = grid(fig, 7)
    assert [a.get_title() for a in axes[0]] == ["Reference", "Sketch (edited)", "Mask",
                                                "Taming", "Taming + Ref", "iLAT", "iLAT + Ref"]
    ref = sample(runs, "ilat_ffhq", "inputs/00001.png").astype(float)
    mask = sample(runs, "ilat_ffhq", "masks/00001.png")
    soft = _half_and_back((mask[..., 0] > 127).astype(float))[..., None]
    for col, variant in ((4, "taming_ffhq"), (6, "ilat_ffhq")):
        out = sample(runs, variant, "outputs/00001.png").astype(float)
        np.testing.assert_allclose(shown(axes[1, col]), out * soft + ref * (1 - soft), atol=0.51)
    official = figs.blend_mask(torch.from_numpy(mask[..., 0] > 127).float()[None, None],
                               "official")
    assert official.min() >= 0 and official.max() <= 1
    assert bool((official[0, 0][torch.from_numpy(mask[..., 0] > 127)] == 1).all())
    with pytest.raises(ValueError, match="blend form 'soft' is not paper or official"):
        figs.blend_mask(official, "soft")


def test_more_edits_continue_after_fig_4(runs, tmp_path):
    fig = figs.figure_more(runs, tmp_path, "ffhq", n=6, offset=4)
    assert (tmp_path / "fig10_faces_more.png").is_file()
    axes = grid(fig, 6)
    assert [a.get_ylabel() for a in axes[:, 0]] == ["00004", "00005"]
    assert axes[0, 5].get_title() == "iLAT + Ref"
    assert figs.figure_more(runs, tmp_path, "sdf", offset=4) is None  # 3 SDF examples only


def test_sequence_orders_a_videos_pairs_by_target_frame(runs, tmp_path):
    fig = figs.figure_sequence(runs, tmp_path)
    assert (tmp_path / "fig6_13_sequence.png").is_file()
    axes = grid(fig, 4)
    # targets v0_f3, v0_f0, v0_f1, v0_f2 of references f0..f3 -> by target frame: f1, f2, f3, f0
    assert [a.get_title().split("\n")[0] for a in axes[0]] == ["v0_f1", "v0_f2", "v0_f3",
                                                               "v0_f0"]
    assert [a.get_ylabel() for a in axes[:, 0]] == ["Target (pose)", "Reference", "Taming",
                                                    "iLAT*", "iLAT"]
    np.testing.assert_array_equal(shown(axes[4, 0]), sample(runs, "ilat_pa",
                                                            "outputs/v0_f1.png"))
    assert "video v0 (squat)" in fig.get_suptitle()
    assert "smoke_pa/manifest.csv" in sources(fig) and "sparsegen prepare" in sources(fig)
    assert figs.figure_sequence(runs, tmp_path, video="v9") is None


def test_pose_masks_one_pair_per_action_and_fallback(runs, tmp_path, capsys):
    fig = figs.figure_pose_masks(runs, tmp_path)
    assert (tmp_path / "fig7_pa_masks.png").is_file()
    axes = grid(fig, 2)
    assert [a.get_title() for a in axes[0]] == ["baseball_pitch (kernel 15)\nv1_f0",
                                                "squat (kernel 120)\nv0_f0"]
    ref = sample(runs, "ilat_pa", "inputs/v1_f0.png").astype(float)
    hole = sample(runs, "ilat_pa", "masks/v1_f0.png")[..., :1] > 127
    tinted = np.where(hole, ref * 0.55 + np.array([255, 0, 0]) * 0.45, ref)
    np.testing.assert_allclose(shown(axes[0, 0]), tinted, atol=0.51)
    # Without final.pt the actions are unknown: the first pairs, unlabelled.
    bare = tmp_path / "runs"
    (bare / "ilat_pa").mkdir(parents=True)
    (bare / "ilat_pa" / "samples").symlink_to(runs / "ilat_pa" / "samples")
    fig = figs.figure_pose_masks(bare, tmp_path, n=3)
    assert [a.get_title() for a in fig.axes[:3]] == ["v0_f0", "v0_f1", "v0_f2"]
    assert "final.pt not found" in capsys.readouterr().out
    assert figs.figure_sequence(bare, tmp_path) is None
    assert "the test videos are unknown" in capsys.readouterr().out


def test_sdf_names_the_background(runs, tmp_path):
    fig = figs.figure_sdf(runs, tmp_path, n=2)
    assert (tmp_path / "fig8_sdf.png").is_file()
    axes = grid(fig, 4)
    assert axes[1, 0].get_ylabel() == "i1_pose0\nscene_1"
    ref = sample(runs, "ilat_sdf", "inputs/i1_pose0.png")
    hole = sample(runs, "ilat_sdf", "masks/i1_pose0.png")[..., :1] > 127
    np.testing.assert_array_equal(shown(axes[1, 3]), np.where(hole, 128, ref))


def test_time_vs_masked_rate_plots_paper_ours_and_bench(runs, tmp_path, capsys):
    bench = tmp_path / "bench" / "ilat.csv"
    fig = figs.figure_time_vs_masked_rate(runs, tmp_path, CLAIMS, bench)
    assert (tmp_path / "table2_time_vs_masked_rate.png").is_file()
    assert "ilat.csv not found" in capsys.readouterr().out
    time, ratio = fig.axes[:2]
    points = {c.get_label(): c.get_offsets()[0].tolist() for c in time.collections}
    assert points["paper pa Taming"] == pytest.approx([0.3197, 8.551])
    assert points["paper ffhq iLAT"] == pytest.approx([0.0664, 1.180])
    assert points["ours pa iLAT (cpu)"] == pytest.approx([0.3, 0.02])
    assert points["ours pa Taming"] == pytest.approx([0.3, 0.05])
    ratios = {c.get_label(): c.get_offsets()[0].tolist() for c in ratio.collections}
    assert ratios["paper sdf"] == pytest.approx([0.2809, 3.898 / 8.372])
    assert ratios["ours pa"] == pytest.approx([0.3, 0.4])
    assert "ilat.yaml (Table 2)" in sources(fig) and "ilat_pa/metrics.json" in sources(fig)

    # As bench.ilat writes it: paper_mask rows of both methods, an iLAT sweep, total and AR
    # rows, summaries, a failed measurement.
    head = "kind,part,model,variant,metric,cache,masked_tokens,tokens,mean_ms,value,status"
    rows = [head,
            "inference,paper_mask,taming,taming_pa,total,cached,82,256,8000,,ok",
            "inference,paper_mask,taming,taming_pa,ar,cached,82,256,7000,,ok",
            "inference,paper_mask,ilat,ilat_pa,total,cached,82,256,3000,,ok",
            "inference,sweep,ilat,ilat_pa,total,cached,0,256,100,,ok",
            "inference,sweep,ilat,ilat_pa,total,cached,128,256,4000,,ok",
            "inference,paper_mask,taming,taming_ffhq,total,cached,17,256,7900,,ok",
            "inference,paper_mask,ilat,ilat_ffhq,total,cached,17,256,1000,,ok",
            "inference,paper_mask,ilat,ilat_ffhq,total,uncached,17,256,1200,,ok",
            "inference,paper_mask,taming,taming_ffhq,total,uncached,17,256,1,,out of memory",
            "summary,paper_mask,ilat,ilat_pa / taming_pa,time_ratio,cached,82,256,,0.4,ok"]
    write_text(bench, "\n".join(rows) + "\n")
    fig = figs.figure_time_vs_masked_rate(runs, tmp_path, CLAIMS, bench)
    time, ratio = fig.axes[:2]
    lines = {line.get_label(): line for line in time.get_lines()}
    assert set(lines) == {"bench ilat (pa, cached)", "bench ilat (ffhq, cached)",
                          "bench ilat (ffhq, uncached)", "bench taming (pa, cached)",
                          "bench taming (ffhq, cached)"}  # no out-of-memory row
    np.testing.assert_allclose(lines["bench ilat (pa, cached)"].get_xdata(),
                               [0, 82 / 256, 0.5])  # paper_mask and sweep, total rows only
    np.testing.assert_allclose(lines["bench ilat (pa, cached)"].get_ydata(), [0.1, 3.0, 4.0])
    np.testing.assert_allclose(lines["bench taming (pa, cached)"].get_ydata(), [8.0])
    lines = {line.get_label(): line for line in ratio.get_lines()}
    np.testing.assert_allclose(lines["bench (pa, cached)"].get_ydata(), [3000 / 8000])
    np.testing.assert_allclose(lines["bench (ffhq, cached)"].get_ydata(), [1000 / 7900])
    assert "bench (ffhq, uncached)" not in lines  # Taming's uncached edit ran out of memory
    assert "mean_ms / 1000 against masked_fraction" in sources(fig)
    assert "python -m sparsegen bench ilat" in sources(fig)
    write_text(bench, "side,value\n8,1\n")
    assert figs.figure_time_vs_masked_rate(tmp_path / "none", tmp_path / "out",
                                           tmp_path / "no.yaml", bench) is None
    assert "needs a method" in capsys.readouterr().out
    assert not (tmp_path / "out").exists()


def test_training_curves_split_by_stage_and_leave_out_the_showcase(runs, tmp_path):
    fig = figs.figure_training_curves(runs, tmp_path, "tokenizer")
    assert (tmp_path / "training_tokenizers.png").is_file()
    assert [a.get_title() for a in fig.axes[:5]] == ["rec", "codebook", "g", "lambda", "d"]
    assert {line.get_label() for line in fig.axes[0].get_lines()} == {"ts_pa", "vq_pa"}
    fig = figs.figure_training_curves(runs, tmp_path, "transformer")
    assert [a.get_title() for a in fig.axes[:2]] == ["ce", "masked_fraction"]
    ce = {line.get_label(): line for line in fig.axes[0].get_lines()}
    assert set(ce) == {"ilat_pa", "taming_pa"}
    log = pd.read_csv(runs / "ilat_pa" / "train_log.csv")
    np.testing.assert_allclose(ce["ilat_pa"].get_ydata(), log["ce"])
    assert "train_log.csv" in sources(fig) and "python -m sparsegen train" in sources(fig)


def test_tokenizer_grid_shows_plain_and_masked_reconstructions(runs, tmp_path, capsys):
    fig = figs.figure_tokenizers(runs, tmp_path, "pa", n=2)
    assert (tmp_path / "tokenizers_pa.png").is_file()
    assert "skipped vq_eq4_pa" in capsys.readouterr().out
    axes = grid(fig, 6)
    assert [a.get_title() for a in axes[0]] == [
        "Image", "Mask", "VQGAN (vq_pa)\nplain, PSNR -", "under the mask\nPSNR -",
        "TS-VQGAN (ts_pa)\nplain, PSNR 21.50", "under the mask\nPSNR 19.25"]
    np.testing.assert_array_equal(shown(axes[1, 4]), sample(runs, "ts_pa", "recon/v0_f1.png"))
    np.testing.assert_array_equal(shown(axes[1, 5]), sample(runs, "ts_pa", "outputs/v0_f1.png"))
    assert "ts_pa/metrics.json" in sources(fig)
    fig = figs.figure_tokenizers(runs, tmp_path, "ffhq", n=1)
    assert [a.get_title().split("\n")[0] for a in fig.axes] == [
        "Image", "Mask", "TS-VQGAN (ts_ffhq)", "under the mask", "sketch VQGAN",
        "sketch VQGAN (sketch_ffhq)", "under the mask"]
    np.testing.assert_array_equal(shown(fig.axes[4]),
                                  sample(runs, "sketch_ffhq", "truths/00000.png"))


def test_showcase_puts_untrained_beside_trained(runs, tmp_path):
    fig = figs.figure_showcase(runs, tmp_path, n=2)
    assert (tmp_path / "smoke_showcase.png").is_file()
    axes = grid(fig, 5)
    assert [a.get_title() for a in axes[0]] == ["Reference", "Mask", "Target",
                                                "Untrained edit", "Trained edit"]
    np.testing.assert_array_equal(shown(axes[1, 3]),
                                  sample(runs, "showcase", "untrained/outputs/v0_f1.png"))
    np.testing.assert_array_equal(shown(axes[1, 4]), sample(runs, "showcase",
                                                            "outputs/v0_f1.png"))
    assert fig.get_suptitle() == ("smoke showcase: iLAT (ilat_pa) 480 iterations at 32² "
                                  "(batch 8)\nhole tokens = target not evaluated; "
                                  "hole L1 ↓ 0.100 (untrained 0.400); "
                                  "outside L1 ↓ 0.010 (untrained 0.020)")
    assert "showcase/metrics.json" in sources(fig) and "showcase/final.pt" in sources(fig)


def test_every_run_figure_skips_an_empty_runs_folder(tmp_path, capsys):
    out, runs = tmp_path / "figures", tmp_path / "runs"
    for draw in (figs.figure_showcase, figs.figure_ablation, figs.figure_blend,
                 figs.figure_sequence, figs.figure_pose_masks, figs.figure_sdf,
                 figs.figure_training_curves):
        assert draw(runs, out) is None
    for dataset in figs.DATASETS:
        assert figs.figure_comparison(runs, out, dataset) is None
        assert figs.figure_more(runs, out, dataset) is None
        assert figs.figure_tokenizers(runs, out, dataset) is None
    assert not out.exists()
    printed = capsys.readouterr().out
    assert "Fig. 4 (Penn Action): skipped taming_pa" in printed
    assert "smoke showcase: not drawn (no smoke showcase under this preset)" in printed
    assert "training curves (transformer): not drawn" in printed


def _called(notebook) -> set[str]:
    import nbformat

    nb = nbformat.read(notebook, as_version=4)
    assert all(not c.get("outputs") for c in nb.cells if c.cell_type == "code")
    called = set()
    for cell in nb.cells:
        if cell.cell_type == "code":
            code = "\n".join(line for line in cell.source.splitlines() if not line.startswith("%"))
            called |= {node.attr for node in ast.walk(ast.parse(code))
                       if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name)
                       and node.value.id == "figures"}
    return called


def test_notebook_takes_paths_and_calls_existing_figures():
    import papermill

    notebook = REPO_ROOT / "notebooks" / "ilat.ipynb"
    params = papermill.inspect_notebook(str(notebook))
    # what pipeline/rules/figures.smk passes
    assert set(params) == {"runs_dir", "figures_dir", "claims"}
    assert all(p["inferred_type_name"] == "str" for p in params.values())
    called = _called(notebook)
    assert called == {"figure_showcase", "figure_attention_masks", "figure_leak_region",
                      "figure_comparison", "figure_ablation", "figure_sequence",
                      "figure_pose_masks", "figure_sdf", "figure_blend", "figure_more",
                      "figure_time_vs_masked_rate", "figure_tokenizers",
                      "figure_training_curves"}
    assert all(callable(getattr(figs, name)) for name in called)


def test_notebook_runs_on_the_fake_runs_and_writes_every_figure(runs, tmp_path):
    from sparsegen.notebooks import execute

    results = tmp_path / "results"
    write_text(results / "bench" / "ilat.csv",  # where the notebook looks for the benchmark
               "model,masked_fraction,total_s\ntaming,0.1,8.0\nilat,0.1,1.0\n")
    execute(REPO_ROOT / "notebooks" / "ilat.ipynb", results / "notebooks" / "ilat.ipynb",
            results / "notebooks" / "ilat.html",
            {"runs_dir": runs, "figures_dir": results / "figures" / "ilat", "claims": CLAIMS},
            cwd=tmp_path)
    assert sorted(p.name for p in (results / "figures" / "ilat").iterdir()) == [
        "fig10_faces_more.png", "fig11_pa_more.png", "fig1b_3b_attention_masks.png",
        "fig3a_leak_region.png", "fig4_ffhq.png", "fig4_pa.png", "fig5_ablation_sdf.png",
        "fig6_13_sequence.png", "fig7_pa_masks.png", "fig8_sdf.png", "fig9_blend.png",
        "smoke_showcase.png", "table2_time_vs_masked_rate.png", "tokenizers_ffhq.png",
        "tokenizers_pa.png", "training_tokenizers.png",
        "training_transformers.png"]
    assert (results / "notebooks" / "ilat.html").is_file()
