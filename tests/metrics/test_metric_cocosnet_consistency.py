"""CoCosNet semantic consistency and style relevance against a numpy re-derivation: features
nearest-upsampled to 256x256 explicitly, region means by boolean masks, cosines by hand."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from sparsegen import judge
from sparsegen.metrics import MetricContext, get
from sparsegen.metrics.cocosnet_consistency import (
    SEMANTIC_LAYERS,
    region_means,
    semantic_consistency,
    style_relevance,
)
from sparsegen.nets.vgg import VGGEncoder
from sparsegen.weights import RANDOM_INIT, ResolvedWeights

S = 256


def _np_upsample(f: np.ndarray) -> np.ndarray:
    """Nearest upsampling of (C, h, w) to (C, 256, 256): output pixel i reads floor(i * h / 256)."""
    _, h, w = f.shape
    return f[:, (np.arange(S) * h) // S][:, :, (np.arange(S) * w) // S]


def _np_region_means(f: np.ndarray, masks: list[np.ndarray]) -> list[np.ndarray]:
    """Mean of the upsampled features over each boolean (256, 256) mask."""
    onehot = np.stack([m.reshape(-1) for m in masks], axis=1).astype(np.float64)  # (S*S, K)
    sums = []
    for c0 in range(0, len(f), 64):  # channel chunks keep the upsampled maps small
        up = _np_upsample(f[c0:c0 + 64].astype(np.float64))
        sums.append(up.reshape(len(up), -1) @ onehot)
    total = np.concatenate(sums)  # (C, K)
    return [total[:, i] / m.sum() for i, m in enumerate(masks)]


def _np_cos(a: np.ndarray, b: np.ndarray) -> float:
    na, nb = np.linalg.norm(a), np.linalg.norm(b)
    return float((a / (na or 1)) @ (b / (nb or 1)))


def _np_semantic(fo: np.ndarray, fg: np.ndarray, labels: np.ndarray) -> float:
    masks = [labels == k for k in np.unique(labels)]
    pairs = zip(_np_region_means(fo, masks), _np_region_means(fg, masks), masks, strict=True)
    return sum(_np_cos(a, b) * m.sum() / S**2 for a, b, m in pairs)


def _np_style(fo: np.ndarray, fr: np.ndarray, lo: np.ndarray, lr: np.ndarray) -> float:
    shared = [k for k in np.unique(lo) if k > 0 and k in set(np.unique(lr))]
    if not shared:
        return 0.0
    area = sum(int((lo == k).sum()) for k in shared)
    m_out = _np_region_means(fo, [lo == k for k in shared])
    m_ref = _np_region_means(fr, [lr == k for k in shared])
    return sum(_np_cos(a, b) * (lo == k).sum() / area
               for a, b, k in zip(m_out, m_ref, shared, strict=True))


def _label_map(seed: int, values: list[int]) -> np.ndarray:
    """Blocky 256x256 label map with ragged borders (random 8x8 grid, 1% of pixels re-drawn)."""
    rng = np.random.default_rng(seed)
    grid = rng.choice(values, size=(8, 8))
    labels = np.kron(grid, np.ones((32, 32), dtype=np.int64))
    noise = rng.random((S, S)) < 0.01
    labels[noise] = rng.choice(values, size=int(noise.sum()))
    return labels


@pytest.mark.parametrize("hw", [(8, 8), (3, 5), (1, 1)])
def test_pure_semantic_consistency_matches_numpy(hw):
    rng = np.random.default_rng(0)
    fo = rng.random((6, *hw)).astype(np.float32)
    fg = (fo + rng.normal(0, 0.3, fo.shape)).clip(0).astype(np.float32)
    labels = _label_map(1, [0, 2, 5, 9])
    got = semantic_consistency(torch.from_numpy(fo), torch.from_numpy(fg),
                               torch.from_numpy(labels))
    assert got == pytest.approx(_np_semantic(fo, fg, labels), rel=1e-9, abs=1e-12)
    assert 0 < got < 1
    same = semantic_consistency(torch.from_numpy(fo), torch.from_numpy(fo),
                                torch.from_numpy(labels))
    assert same == pytest.approx(1.0, rel=1e-12)


def test_pure_style_relevance_matches_numpy_and_skips_background_and_unshared():
    rng = np.random.default_rng(1)
    fo, fr = (rng.random((5, 7, 6)).astype(np.float32) for _ in range(2))
    lo = _label_map(2, [0, 1, 3, 4])
    lr = _label_map(3, [0, 1, 4, 8])  # 3 (output only) and 8 (exemplar only) are not shared
    t = torch.from_numpy
    got = style_relevance(t(fo), t(fr), t(lo), t(lr))
    assert got == pytest.approx(_np_style(fo, fr, lo, lr), rel=1e-9)
    # only labels 1 and 4 count: relabelling the output's unshared 3 as background changes
    # nothing, and an output map with no shared label > 0 scores 0
    assert style_relevance(t(fo), t(fr), t(np.where(lo == 3, 0, lo)), t(lr)) == \
        pytest.approx(got, rel=1e-12)
    assert style_relevance(t(fo), t(fr), t(np.where(lo > 0, 3, 0)), t(lr)) == 0.0
    whole = [np.ones((S, S), dtype=bool)]
    assert style_relevance(t(fo), t(fr), None, None) == pytest.approx(
        _np_cos(_np_region_means(fo, whole)[0], _np_region_means(fr, whole)[0]), rel=1e-9)


def test_region_means_weight_cells_by_covered_pixels():
    """3 rows upsampled to 256: rows 0, 1, 2 cover 86, 85, 85 output rows (floor(i*3/256))."""
    f = torch.tensor([[[1.0], [2.0], [4.0]]])  # (C=1, h=3, w=1)
    labels = torch.zeros(S, S, dtype=torch.long)
    labels[:100] = 7  # rows 0..85 read cell 0, 86..99 read cell 1
    means, areas = region_means(f, labels, torch.tensor([0, 7]))
    assert areas.tolist() == [156 * S, 100 * S]
    assert means[1, 0].item() == pytest.approx((86 * 1 + 14 * 2) / 100)
    assert means[0, 0].item() == pytest.approx((71 * 2 + 85 * 4) / 156)
    zero = torch.zeros(2, 3, 1)  # a zero mean vector has cosine 0 (sklearn normalize)
    assert semantic_consistency(zero, torch.ones(2, 3, 1), labels) == 0.0


def _features(x: torch.Tensor, layers) -> dict[str, np.ndarray]:
    enc = VGGEncoder(ResolvedWeights("vgg19_cocosnet", None, RANDOM_INIT), deepest="relu5_2")
    with torch.no_grad():
        return {k: v.double().numpy() for k, v in enc.extract(x, layers).items()}


@pytest.fixture
def images32(photos64):
    small = torch.nn.functional.avg_pool2d(photos64, 2)  # (6, 3, 32, 32)
    outputs = (0.7 * small[:3] + 0.3 * small[3:]).clamp(0, 1)
    return outputs, small[:3], small[3:]


def test_semantic_consistency_metric_matches_numpy_on_vgg_features(images32, ctx_random):
    outputs, truths, _ = images32
    labels = np.stack([_label_map(10 + i, [0, 1, 2, 3]) for i in range(3)])
    rec = get("semantic_consistency_cocosnet")(outputs, truths, ctx_random, labels=labels)
    fo, fg = _features(outputs, SEMANTIC_LAYERS), _features(truths, SEMANTIC_LAYERS)
    per_layer = {k: np.mean([_np_semantic(fo[k][i], fg[k][i], labels[i]) for i in range(3)])
                 for k in SEMANTIC_LAYERS}
    for k in SEMANTIC_LAYERS:
        assert rec.extra["per_layer"][k] == pytest.approx(per_layer[k], rel=1e-6)
    assert rec.value == pytest.approx(np.mean(list(per_layer.values())), rel=1e-6)
    assert rec.value == pytest.approx(np.mean(rec.per_sample), rel=1e-12)
    assert rec.n_samples == 3 and rec.higher_is_better
    assert rec.extractor_weights == {"name": "vgg19_cocosnet", "sha256": RANDOM_INIT}
    assert "random-init" in rec.protocol["extractor"]
    assert rec.protocol["layers"] == list(SEMANTIC_LAYERS)
    assert "label map" in rec.protocol["regions"]
    assert "vgg19_cocosnet" in judge.reasons(rec, {}, {})[0]
    same = get("semantic_consistency_cocosnet")(truths, truths, ctx_random, labels=labels)
    assert same.value == pytest.approx(1.0, rel=1e-9)


def test_without_labels_the_whole_image_is_one_region(images32, ctx_random):
    outputs, truths, exemplars = images32
    rec = get("semantic_consistency_cocosnet")(outputs, truths, ctx_random)
    fo, fg = _features(outputs, SEMANTIC_LAYERS), _features(truths, SEMANTIC_LAYERS)
    # 32 px -> relu3_2 8x8, relu4_2 4x4, relu5_2 2x2: each divides 256, so the whole-image
    # region mean is the global average
    expected = np.mean([[_np_cos(fo[k][i].mean((1, 2)), fg[k][i].mean((1, 2)))
                         for k in SEMANTIC_LAYERS] for i in range(3)], axis=1)
    np.testing.assert_allclose(rec.per_sample, expected, rtol=1e-6)
    assert rec.protocol["regions"].startswith("whole image")
    col = get("style_relevance_color_cocosnet")(outputs, exemplars, ctx_random)
    f1o, f1r = _features(outputs, ["relu1_2"]), _features(exemplars, ["relu1_2"])
    np.testing.assert_allclose(
        col.per_sample, [_np_cos(f1o["relu1_2"][i].mean((1, 2)), f1r["relu1_2"][i].mean((1, 2)))
                         for i in range(3)], rtol=1e-6)
    assert col.protocol["regions"].startswith("whole image") and col.extra == {}


@pytest.mark.parametrize(("name", "layer"), [("style_relevance_color_cocosnet", "relu1_2"),
                                             ("style_relevance_texture_cocosnet", "relu2_2")])
def test_style_relevance_metric_matches_numpy_on_vgg_features(images32, ctx_random, name, layer):
    outputs, _, exemplars = images32
    lo = np.stack([_label_map(20 + i, [0, 1, 2, 3]) for i in range(3)])
    lr = np.stack([_label_map(30 + i, [0, 2, 3, 6]) for i in range(3)])
    lr[2] = np.where(lr[2] > 0, 6, 0)  # image 2 shares no label > 0: scores 0
    rec = get(name)(outputs, exemplars, ctx_random, labels=lo, exemplar_labels=lr)
    fo, fr = _features(outputs, [layer])[layer], _features(exemplars, [layer])[layer]
    expected = [_np_style(fo[i], fr[i], lo[i], lr[i]) for i in range(3)]
    assert expected[2] == 0
    np.testing.assert_allclose(rec.per_sample, expected, rtol=1e-6)
    assert rec.value == pytest.approx(np.mean(expected), rel=1e-6)
    assert rec.extra == {"images_without_shared_labels": 1}
    assert rec.protocol["layers"] == [layer] and "> 0" in rec.protocol["regions"]


def test_batch_size_does_not_change_the_values(images32, tmp_path):
    outputs, truths, exemplars = images32
    labels = np.stack([_label_map(40 + i, [0, 1, 2]) for i in range(3)])
    for name, ref, opts in (("semantic_consistency_cocosnet", truths, {"labels": labels}),
                            ("style_relevance_texture_cocosnet", exemplars,
                             {"labels": labels, "exemplar_labels": labels[::-1].copy()})):
        vals = [get(name)(outputs, ref, MetricContext(weights_mode="random", batch_size=bs,
                                                      weights_dir=tmp_path), **opts).per_sample
                for bs in (1, 2)]
        np.testing.assert_allclose(vals[0], vals[1], rtol=1e-6)


def test_bad_inputs_are_named(images32, ctx_random):
    outputs, truths, exemplars = images32
    with pytest.raises(ValueError, match=r"labels: expected label maps \(3, 256, 256\)"):
        get("semantic_consistency_cocosnet")(outputs, truths, ctx_random,
                                             labels=np.zeros((3, 32, 32), np.int64))
    with pytest.raises(ValueError, match="must hold integers"):
        get("semantic_consistency_cocosnet")(outputs, truths, ctx_random,
                                             labels=np.zeros((3, S, S), np.float32))
    with pytest.raises(ValueError, match="or for neither"):
        get("style_relevance_color_cocosnet")(outputs, exemplars, ctx_random,
                                              labels=np.zeros((3, S, S), np.int64))
    with pytest.raises(ValueError, match="relu5_2 needs at least 16 px"):
        get("semantic_consistency_cocosnet")(outputs[..., :8, :8], truths[..., :8, :8],
                                             ctx_random)
