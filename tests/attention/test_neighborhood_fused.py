"""The fused Triton backend of neighbourhood attention against the plain-PyTorch backend, forward
and the four gradients (q, k, v, RPB), float32 at tight tolerances: odd and even kernels,
dilation 1-3, non-square maps, kernel x dilation = side, with and without RPB, head_dim below 16,
strided (Hydra-split) inputs, batches cut for the CUDA grid. Plus the invariant that a key
outside a query's neighbourhood cannot change its output. Off CUDA the kernels run in Triton's
interpreter (TRITON_INTERPRET=1) on tiny shapes; skipped where Triton is missing."""

from __future__ import annotations

import pytest
import torch

from sparsegen.attention.neighborhood import auto_backend, neighborhood_attention

pytest.importorskip("triton")
DEVICE = torch.device("cuda" if torch.cuda.is_available() else "cpu")


@pytest.fixture(scope="module")
def fused():
    """The kernel module; off CUDA only under Triton's interpreter (tests/conftest.py sets
    TRITON_INTERPRET=1 before Triton is imported)."""
    import sparsegen.attention.neighborhood_fused as module

    if DEVICE.type != "cuda" and not module.interpreted():
        pytest.skip("no CUDA and TRITON_INTERPRET is not 1: the kernels cannot run here")
    return module


def _inputs(shape, kernel, rpb=True, dim_v=None, seed=0):
    gen = torch.Generator().manual_seed(seed)
    b, h, w, heads, dim = shape
    q, k = (torch.randn(shape, generator=gen) for _ in range(2))
    v = torch.randn(b, h, w, heads, dim_v or dim, generator=gen)
    table = 0.5 * torch.randn(heads, 2 * kernel - 1, 2 * kernel - 1, generator=gen)
    leaves = [q, k, v] + ([table] if rpb else [])
    return [t.to(DEVICE).requires_grad_() for t in leaves] + ([] if rpb else [None])


def _output_and_grads(backend, q, k, v, rpb, kernel, dilation):
    out = neighborhood_attention(q, k, v, kernel, dilation, rpb, backend=backend)
    weight = torch.randn(out.shape, generator=torch.Generator().manual_seed(1)).to(DEVICE)
    leaves = [t for t in (q, k, v, rpb) if t is not None]
    return [out.detach(), *torch.autograd.grad((out * weight).sum(), leaves)]


def _assert_matches_torch(q, k, v, rpb, kernel, dilation):
    fused_out = _output_and_grads("fused", q, k, v, rpb, kernel, dilation)
    expected = _output_and_grads("torch", q, k, v, rpb, kernel, dilation)
    names = ["out", "dq", "dk", "dv", "drpb"]
    for name, got, ref in zip(names, fused_out, expected, strict=False):
        torch.testing.assert_close(got, ref, atol=2e-5, rtol=1e-4,
                                   msg=lambda m, n=name: f"{n}: {m}")


# (B, H, W, heads, D), kernel, dilation, rpb
CASES = [
    ((1, 9, 11, 2, 16), 3, 1, True),     # odd kernel, non-square, partial tiles
    ((1, 10, 12, 2, 16), 4, 2, True),    # even kernel (one further left), dilation 2
    ((2, 12, 7, 1, 16), 5, 1, False),    # no RPB, batch 2
    ((1, 13, 13, 1, 16), 3, 3, True),    # dilation 3, sub-grids of unequal length
    ((1, 6, 12, 2, 16), 3, 2, True),     # kernel x dilation = side (6)
    ((1, 12, 40, 1, 16), 7, 1, True),    # wide map: a key tile's queries span > 16 columns
    ((1, 16, 16, 1, 16), 8, 2, True),    # even kernel x dilation = side
    ((1, 4, 4, 2, 16), 4, 1, True),      # kernel = side: the 4x4 level's full attention
]


@pytest.mark.parametrize(("shape", "kernel", "dilation", "rpb"), CASES)
def test_fused_matches_torch_forward_and_gradients(fused, shape, kernel, dilation, rpb):
    _assert_matches_torch(*_inputs(shape, kernel, rpb), kernel, dilation)


def test_small_heads_and_a_different_value_width(fused):
    # head_dim 4 (the smoke preset's) is masked up to the kernel's 16 lanes; v may be wider
    _assert_matches_torch(*_inputs((1, 8, 9, 2, 4), 3, dim_v=6), 3, 2)


def test_strided_views_as_hydra_splits_them(fused):
    # q, k, v as Hydra passes them: views of one qkv projection, heads split by partition
    gen = torch.Generator().manual_seed(3)
    qkv = torch.randn(1, 9, 10, 3, 4, 16, generator=gen).to(DEVICE)
    q, k, v = (t[:, :, :, :2] for t in qkv.unbind(3))
    rpb = torch.randn(2, 5, 5, generator=gen).to(DEVICE)
    strided = neighborhood_attention(q, k, v, 3, 2, rpb, backend="fused")
    dense = neighborhood_attention(q.contiguous(), k.contiguous(), v.contiguous(), 3, 2, rpb,
                                   backend="torch")
    torch.testing.assert_close(strided, dense, atol=2e-5, rtol=1e-4)


def test_batches_beyond_the_grid_limit_are_cut(fused, monkeypatch):
    monkeypatch.setattr(fused, "MAX_BATCH_HEADS", 2)  # 3 images x 2 heads: three launches
    fused._geometry.cache_clear()
    _assert_matches_torch(*_inputs((3, 7, 8, 2, 16), 3), 3, 1)


def test_keys_outside_a_neighbourhood_cannot_reach_its_query(fused):
    q, k, v, rpb = (t.detach() for t in _inputs((1, 11, 12, 1, 16), 3))
    query, kernel, dilation = (4, 5), 3, 2
    keys = {(y, x) for y in (2, 4, 6) for x in (3, 5, 7)}  # 4 -> window 1..3 of sub-grid 0
    before = neighborhood_attention(q, k, v, kernel, dilation, rpb, backend="fused")
    outside = torch.ones(11, 12, dtype=torch.bool)
    for y, x in keys:
        outside[y, x] = False
    k2, v2 = k.clone(), v.clone()
    k2[:, outside], v2[:, outside] = 100.0, -100.0
    after = neighborhood_attention(q, k2, v2, kernel, dilation, rpb, backend="fused")
    assert torch.equal(after[(0, *query)], before[(0, *query)])
    assert not torch.equal(after, before)  # the change does reach other queries


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"kernel": 15}, "kernel_size <= 13"),
    ({"dtype": torch.float64}, "float32, bfloat16 and float16"),
    ({"dim": 160}, "head_dim <= 128")])
def test_unsupported_inputs_are_named(fused, kwargs, message):
    kernel, dim = kwargs.get("kernel", 3), kwargs.get("dim", 16)
    q = torch.zeros(1, 16, 16, 1, dim, dtype=kwargs.get("dtype", torch.float32), device=DEVICE)
    with pytest.raises(ValueError, match=message):
        neighborhood_attention(q, q, q, kernel, backend="fused")
    if DEVICE.type == "cuda":
        assert auto_backend(q, kernel_size=kernel) != "fused"


def test_compiled_kernels_need_cuda(fused, monkeypatch):
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    q = torch.zeros(1, 8, 8, 1, 16)
    assert "needs a CUDA device (got cpu" in fused.unsupported(q, q, 3)
    assert auto_backend(q) == "torch"
