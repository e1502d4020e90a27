import itertools

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from scipy.stats import wasserstein_distance

from sparsegen import judge
from sparsegen.io import write_image
from sparsegen.metrics import MetricContext, get, swd

from .conftest import photos_uint8

_K = torch.tensor([1.0, 4.0, 6.0, 4.0, 1.0], dtype=torch.float64)
_K = torch.outer(_K, _K) / 256


def _torch_blur(x: torch.Tensor, gain: float) -> torch.Tensor:
    """Reflect padding without edge repeat == scipy.ndimage mode='mirror'."""
    n, c, h, w = x.shape
    y = F.pad(x.reshape(n * c, 1, h, w), (2, 2, 2, 2), mode="reflect")
    return F.conv2d(y, (_K * gain)[None, None]).reshape(n, c, h, w)


def _torch_pyramid(images: np.ndarray, levels: int) -> list[np.ndarray]:
    g = [torch.from_numpy(images).double()]
    for _ in range(levels - 1):
        g.append(_torch_blur(g[-1], 1.0)[:, :, ::2, ::2])
    out = []
    for fine, coarse in itertools.pairwise(g):
        up = torch.zeros_like(fine)
        up[:, :, ::2, ::2] = coarse
        out.append(fine - _torch_blur(up, 4.0))
    return [t.numpy() for t in (*out, g[-1])]


def _reference_swd(a: np.ndarray, b: np.ndarray, plan: swd.SWDPlan) -> list[float]:
    """Patches by explicit loops, float64 statistics, scipy's 1-D Wasserstein per direction."""
    levels = len(plan.directions)
    pyrs = [_torch_pyramid(x, levels) for x in (a, b)]
    result = []
    for lod in range(levels):
        sets = []
        for k in range(2):
            ys, xs = plan.centres[k][lod]
            patches = np.array([pyrs[k][lod][i, :, y - 3:y + 4, x - 3:x + 4]
                                for i in range(len(ys)) for y, x in zip(ys[i], xs[i],
                                                                        strict=True)])
            mean = patches.mean(axis=(0, 2, 3), keepdims=True)
            std = patches.std(axis=(0, 2, 3), keepdims=True)
            sets.append(((patches - mean) / std).reshape(len(patches), -1))
        per_repeat = []
        for d in plan.directions[lod]:
            pa, pb = sets[0] @ d.astype(np.float64), sets[1] @ d.astype(np.float64)
            per_repeat.append(np.mean([wasserstein_distance(pa[:, j], pb[:, j])
                                       for j in range(d.shape[1])]))
        result.append(1e3 * np.mean(per_repeat))
    return result


@pytest.fixture(scope="module")
def sets() -> tuple[np.ndarray, np.ndarray]:
    imgs = photos_uint8(64)
    noisy = np.clip(imgs[[1, 2, 3, 0]].astype(int)
                    + np.random.default_rng(0).integers(-40, 40, (4, 3, 64, 64)), 0, 255)
    return imgs[:4], noisy.astype(np.uint8)


def test_pyramid_matches_independent_torch_version(sets):
    ours = swd.laplacian_pyramid(sets[0], 3)
    ref = _torch_pyramid(sets[0], 3)
    assert [p.shape[-1] for p in ours] == [64, 32, 16]
    for o, r in zip(ours, ref, strict=True):
        np.testing.assert_allclose(o, r, atol=2e-4)
    assert swd.level_count(256, 256) == 5 and swd.level_count(64, 64) == 3


def test_swd_matches_independent_numpy_scipy_reference(sets):
    a, b = sets
    rec = get("swd_pggan")(a, b, MetricContext(batch_size=3), seed=5)
    plan = swd.draw_plan(5, 4, [(64, 64), (32, 32), (16, 16)])
    ref = _reference_swd(a, b, plan)
    per_level = rec.extra["per_level"]
    assert list(per_level) == ["SWDx1e3_64", "SWDx1e3_32", "SWDx1e3_16"]
    np.testing.assert_allclose(list(per_level.values()), ref, rtol=1e-4)
    assert rec.value == pytest.approx(np.mean(ref), rel=1e-4)
    assert rec.seeds == [5] and rec.protocol["seed"] == 5 and rec.n_samples == 4
    assert not judge.reasons(rec, {}, {}) and rec.extractor_weights is None


def test_swd_deterministic_seeded_and_batch_size_independent(sets):
    a, b = sets
    vals = [get("swd_pggan")(a, b, MetricContext(batch_size=bs), seed=1).value
            for bs in (1, 4, 4)]
    assert vals[0] == pytest.approx(vals[1], rel=1e-6) and vals[1] == vals[2]
    assert get("swd_pggan")(a, b, MetricContext(), seed=2).value != vals[0]
    near = get("swd_pggan")(a, a[[1, 0, 3, 2]], MetricContext(), seed=1).value
    assert near < vals[0]  # same images, shuffled: only sampling noise remains


def test_swd_reads_folders_and_rejects_bad_sets(sets, tmp_path):
    a, b = sets
    for i, img in enumerate(a):
        write_image(tmp_path / f"{i}.png", np.ascontiguousarray(img.transpose(1, 2, 0)))
    from_folder = get("swd_pggan")(tmp_path, b, MetricContext(), seed=3)
    assert from_folder.value == get("swd_pggan")(a, b, MetricContext(), seed=3).value
    assert from_folder.protocol["file_format"] == {"a": "png", "b": "uint8-array"}
    with pytest.raises(ValueError, match=r"equal size; got 4 .* and 3"):
        get("swd_pggan")(a, b[:3], MetricContext())
    with pytest.raises(ValueError, match="at least 16 px"):
        get("swd_pggan")(a[:, :, :8, :8], b[:, :, :8, :8], MetricContext())
    with pytest.raises(ValueError, match=r"array\[0\]: image is \(32, 32\), expected \(64, 64\)"):
        get("swd_pggan")(a, b[:, :, :32, :32], MetricContext())
