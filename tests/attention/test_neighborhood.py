"""Neighbourhood attention (StyleNAT Sec. 2.1.2-2.1.3) against a per-query reference written from
NATTEN's definition, against `natten.na2d` itself, and the backends against each other."""

from __future__ import annotations

import warnings

import pytest
import torch

from sparsegen.attention.neighborhood import (
    auto_backend,
    available_backends,
    neighborhood_attention,
    neighborhood_indices,
    query_attention_map,
)

natten = pytest.importorskip("natten")

# (H, W, kernel, dilation): non-square, odd, even kernels, kernel * dilation == side, k == side.
SHAPES = [(9, 13, 3, 1), (9, 13, 3, 3), (9, 13, 4, 2), (7, 7, 7, 1), (8, 12, 4, 2),
          (10, 11, 2, 5), (6, 9, 3, 2), (5, 9, 5, 1)]


@pytest.fixture(autouse=True)
def _quiet_flex():
    """Eager Flex Attention (the CPU path) warns that it is not compiled; natten 0.21 calls a
    deprecated Flex argument."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*flex_attention.*")
        warnings.filterwarnings("ignore", message="return_lse is deprecated")  # inside natten
        yield


def window_1d(p: int, n: int, kernel: int, dilation: int) -> list[int]:
    """The k positions of p's window on an axis of length n: the positions sharing p's residue
    mod d form a line; the window is k consecutive of them with p at offset k//2 from its start,
    slid inwards at the ends of the line."""
    line = list(range(p % dilation, n, dilation))
    i = line.index(p)
    start = min(max(i - kernel // 2, 0), len(line) - kernel)
    return line[start:start + kernel]


def reference(q, k, v, kernel, dilation, rpb=None, scale=None):
    """One query at a time: logits over its k*k window (+ rpb at the key-minus-query offset in
    sub-grid steps, + k - 1), softmax, weighted sum of values."""
    h, w, dim = q.shape[1], q.shape[2], q.shape[4]
    scale = dim ** -0.5 if scale is None else scale
    out = torch.zeros(*q.shape[:-1], v.shape[-1], dtype=q.dtype)
    for y in range(h):
        for x in range(w):
            rows, cols = zip(*[(r, c) for r in window_1d(y, h, kernel, dilation)
                               for c in window_1d(x, w, kernel, dilation)], strict=True)
            rows, cols = torch.tensor(rows), torch.tensor(cols)
            logits = torch.einsum("bhd,bnhd->bhn", q[:, y, x] * scale, k[:, rows, cols])
            if rpb is not None:
                logits = logits + rpb[:, (rows - y) // dilation + kernel - 1,
                                      (cols - x) // dilation + kernel - 1]
            out[:, y, x] = torch.einsum("bhn,bnhd->bhd", logits.softmax(-1), v[:, rows, cols])
    return out


def _qkv(h, w, heads=2, dim=8, batch=2, dtype=torch.float32, seed=0):
    gen = torch.Generator().manual_seed(seed)
    return (torch.randn(batch, h, w, heads, dim, generator=gen, dtype=dtype) for _ in range(3))


def _rpb(heads, kernel, dtype=torch.float32, seed=1):
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(heads, 2 * kernel - 1, 2 * kernel - 1, generator=gen, dtype=dtype)


@pytest.mark.parametrize(("h", "w", "kernel", "dilation"), SHAPES)
def test_torch_backend_matches_reference(h, w, kernel, dilation):
    q, k, v = _qkv(h, w, dtype=torch.float64)
    rpb = _rpb(2, kernel, torch.float64)
    for bias in (None, rpb):
        out = neighborhood_attention(q, k, v, kernel, dilation, bias, backend="torch")
        assert torch.allclose(out, reference(q, k, v, kernel, dilation, bias), atol=1e-12)


@pytest.mark.parametrize(("h", "w", "kernel", "dilation"), SHAPES)
def test_natten_na2d_matches_reference_and_torch(h, w, kernel, dilation):
    """NATTEN itself (its CPU Flex path: float32, head_dim a power of two >= 8) fixes the border
    and even-kernel conventions."""
    q, k, v = _qkv(h, w, dim=8)
    expected = reference(q, k, v, kernel, dilation)
    assert torch.allclose(natten.na2d(q, k, v, kernel, dilation=dilation), expected, atol=1e-5)
    assert torch.allclose(neighborhood_attention(q, k, v, kernel, dilation, backend="natten"),
                          expected, atol=1e-5)
    assert torch.allclose(neighborhood_attention(q, k, v, kernel, dilation, backend="torch"),
                          expected, atol=1e-5)


@pytest.mark.parametrize(("h", "w", "kernel", "dilation"), [SHAPES[2], SHAPES[5]])
def test_flex_backend_matches_reference_on_cpu(h, w, kernel, dilation):
    """Eager Flex on the CPU (forward only) with and without the bias in score_mod."""
    q, k, v = _qkv(h, w, dim=4)
    rpb = _rpb(2, kernel)
    for bias in (None, rpb):
        out = neighborhood_attention(q, k, v, kernel, dilation, bias, backend="flex")
        assert torch.allclose(out, reference(q, k, v, kernel, dilation, bias), atol=1e-5)


@pytest.mark.parametrize(("h", "w", "kernel", "dilation"),
                         [(16, 32, 3, 2), (16, 32, 5, 1), (32, 48, 3, 2), (24, 16, 7, 1)])
def test_flex_token_layouts_match_torch(h, w, kernel, dilation):
    """Sides divisible by the dilation move the sub-grids into the batch; sub-grids of more
    than one Flex tile with sides divisible by the 8x16 patch go patch by patch."""
    q, k, v = _qkv(h, w, batch=1, dim=4)
    rpb = _rpb(2, kernel)
    assert torch.allclose(neighborhood_attention(q, k, v, kernel, dilation, rpb, backend="flex"),
                          neighborhood_attention(q, k, v, kernel, dilation, rpb, backend="torch"),
                          atol=1e-5)


def test_flex_cuts_the_batch_below_the_cuda_grid_limit(monkeypatch):
    """batch x d*d sub-grids x heads beyond CUDA's grid y limit (FFHQ-1024: 65,536 at 512^2)
    goes to Flex in chunks; with a limit of 3 programs (a chunk of one sub-grid for 2 heads)
    the output and the bias gradient equal the torch backend's."""
    import sparsegen.attention.neighborhood as na

    calls = []
    attend = na._flex_attend
    monkeypatch.setattr(na, "FLEX_MAX_BATCH_HEADS", 3)
    monkeypatch.setattr(na, "_flex_attend", lambda q, *a: calls.append(q.shape[0]) or
                        attend(q, *a))
    q, k, v = _qkv(16, 32, batch=2, dim=4)
    rpb = _rpb(2, 3).requires_grad_()
    out = neighborhood_attention(q, k, v, 3, 2, rpb, backend="flex")
    assert calls == [1] * 8  # 2 images x 4 sub-grids, one per call
    ref = _rpb(2, 3).requires_grad_()
    expected = neighborhood_attention(q, k, v, 3, 2, ref, backend="torch")
    assert torch.allclose(out, expected, atol=1e-5)
    grad, = torch.autograd.grad(out.sum(), rpb)
    assert torch.allclose(grad, torch.autograd.grad(expected.sum(), ref)[0], atol=1e-4)


@pytest.mark.parametrize(("h", "w", "kernel", "dilation"),
                         [(9, 13, 4, 2), (32, 48, 3, 2), (24, 16, 7, 1)])
def test_flex_bias_gradient_matches_torch(h, w, kernel, dilation):
    """The bias table's gradient, computed beside Flex one kernel offset at a time (q, k, v
    need no gradient here: PyTorch has no Flex backward on the CPU)."""
    q, k, v = _qkv(h, w, batch=2, dim=4)
    weight = torch.randn(2, h, w, 2, 4, generator=torch.Generator().manual_seed(2))
    grads = []
    for backend in ("flex", "torch"):
        rpb = _rpb(2, kernel).requires_grad_()
        out = neighborhood_attention(q, k, v, kernel, dilation, rpb, backend=backend)
        grads.append(torch.autograd.grad((out * weight).sum(), rpb)[0])
    assert torch.allclose(grads[0], grads[1], atol=1e-4)


def test_explicit_scale_is_used():
    q, k, v = _qkv(6, 7, dtype=torch.float64)
    out = neighborhood_attention(q, k, v, 3, 2, scale=0.3, backend="torch")
    assert torch.allclose(out, reference(q, k, v, 3, 2, scale=0.3), atol=1e-12)
    assert not torch.allclose(out, reference(q, k, v, 3, 2), atol=1e-3)


@pytest.mark.parametrize(("query", "rows", "cols"),
                         [((0, 0), slice(2, 5), slice(2, 5)),    # corner: window moved inwards
                          ((4, 6), slice(1, 4), slice(1, 4)),    # interior: centred
                          ((8, 12), slice(0, 3), slice(0, 3))])  # far corner
def test_rpb_is_indexed_by_offset_and_shifts_at_borders(query, rows, cols):
    """With q = 0 the weights are softmax(rpb) over the window: the table block that is used
    moves with the border clamp (a 9x13 map, k = 3)."""
    q, k, _ = _qkv(9, 13, batch=1)
    rpb = _rpb(2, 3)
    weights = query_attention_map(torch.zeros_like(q), k, query, 3, 1, rpb)[0]
    y, x = query
    ys, xs = window_1d(y, 9, 3, 1), window_1d(x, 13, 3, 1)
    expected = rpb[:, rows, cols].flatten(1).softmax(-1).view(2, 3, 3)
    assert torch.allclose(weights[:, ys[0]:ys[-1] + 1, xs[0]:xs[-1] + 1], expected, atol=1e-6)
    assert torch.allclose(weights.sum((1, 2)), torch.ones(2))


@pytest.mark.parametrize(("h", "w", "kernel", "dilation"), SHAPES)
def test_every_query_sees_kernel_squared_distinct_keys_of_its_subgrid(h, w, kernel, dilation):
    keys, bias = neighborhood_indices(h, w, kernel, dilation)
    assert keys.shape == bias.shape == (h * w, kernel * kernel)
    for p in range(h * w):
        y, x = divmod(p, w)
        expected = {r * w + c for r in window_1d(y, h, kernel, dilation)
                    for c in window_1d(x, w, kernel, dilation)}
        assert set(keys[p].tolist()) == expected and len(expected) == kernel * kernel
    assert bias.min() >= 0 and bias.max() < (2 * kernel - 1) ** 2


def test_query_attention_map_matches_reference_weights():
    """The figure's map: softmax weights on the window (rpb included), zero elsewhere."""
    q, k, _ = _qkv(9, 13, batch=1, dtype=torch.float64)
    rpb = _rpb(2, 3, torch.float64)
    eye = torch.eye(9 * 13, dtype=torch.float64).view(1, 9, 13, 1, -1).expand(1, 9, 13, 2, -1)
    dense = reference(q, k, eye, 3, 3, rpb)  # row (y, x) = weights of that query
    weights = query_attention_map(q, k, (4, 7), 3, 3, rpb)
    assert torch.allclose(weights[0], dense[0, 4, 7].view(2, 9, 13), atol=1e-12)
    assert int((weights[0, 0] > 0).sum()) == 9


def test_gradcheck_torch_backend():
    """float64 gradients w.r.t. q, k, v and the bias, dilated and at borders."""
    q, k, v = (t.requires_grad_() for t in _qkv(4, 5, heads=2, dim=2, batch=1,
                                                  dtype=torch.float64))
    for kernel, dilation in ((2, 2), (3, 1)):
        rpb = _rpb(2, kernel, torch.float64).requires_grad_()
        assert torch.autograd.gradcheck(
            lambda q, k, v, rpb, kernel=kernel, dilation=dilation: neighborhood_attention(
                q, k, v, kernel, dilation, rpb, backend="torch"), (q, k, v, rpb))


def test_dropout_is_applied_to_the_weights():
    q, k, v = _qkv(6, 6)
    assert neighborhood_attention(q, k, v, 3, dropout=1.0).abs().max() == 0
    with pytest.raises(ValueError, match=r"dropout 0.1 needs backend 'torch'"):
        neighborhood_attention(q, k, v, 3, dropout=0.1, backend="flex")


def test_backend_choice_on_cpu():
    q, k, v = _qkv(6, 6)
    assert auto_backend(q) == auto_backend(q, _rpb(2, 3)) == "torch"
    assert {"torch", "flex", "natten"} <= set(available_backends("cpu"))
    assert torch.equal(neighborhood_attention(q, k, v, 3),
                       neighborhood_attention(q, k, v, 3, backend="torch"))


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"kernel_size": 7}, r"kernel_size 7 = 7 exceeds the 6x9 grid"),
    ({"kernel_size": 3, "dilation": 3}, r"kernel_size 3 x dilation 3 = 9 exceeds the 6x9 grid"),
    ({"kernel_size": 0}, r"kernel_size 0 and dilation 1 must be >= 1"),
    ({"kernel_size": 3, "backend": "cuda"}, r"unknown backend 'cuda'; choose one of \('auto'"),
    ({"kernel_size": 3, "rpb": torch.zeros(2, 3, 3)}, r"rpb has shape \(2, 3, 3\), expected"),
    ({"kernel_size": 3, "rpb": torch.zeros(2, 5, 5), "backend": "natten"},
     r"'natten' cannot add a relative positional bias .* 'torch' or 'flex'"),
])
def test_bad_arguments_are_named(kwargs, message):
    q, k, v = _qkv(6, 9)
    with pytest.raises(ValueError, match=message):
        neighborhood_attention(q, k, v, **kwargs)


def test_mismatched_shapes_are_named():
    q, k, v = _qkv(6, 9)
    with pytest.raises(ValueError, match=r"k \(2, 6, 8, 2, 8\) must match q \(2, 6, 9, 2, 8\)"):
        neighborhood_attention(q, k[:, :, :8], v, 3)
    with pytest.raises(ValueError, match=r"q must be \[B, H, W, heads, D\], got shape"):
        neighborhood_attention(q[0], k[0], v[0], 3)


def test_natten_head_dim_limit_is_explained():
    q, k, v = _qkv(6, 9, dim=4)
    with pytest.raises(ValueError, match=r"head_dim 4, .*power of two in \[8, 512\]"):
        neighborhood_attention(q, k, v, 3, backend="natten")


def test_patterns_cached_during_inference_serve_training() -> None:
    """Sampling (inference mode) may build a grid's index tensors first; a training step on the
    same grid must still be able to save them for backward."""
    q, k, v = (torch.randn(1, 11, 6, 2, 4) for _ in range(3))  # a grid no other test uses
    rpb = torch.zeros(2, 5, 5, requires_grad=True)
    with torch.inference_mode():
        neighborhood_attention(q, k, v, 3, 2, rpb.detach(), backend="torch")
    q.requires_grad_(True)
    neighborhood_attention(q, k, v, 3, 2, rpb, backend="torch").sum().backward()
    assert q.grad is not None and rpb.grad is not None and rpb.grad.abs().sum() > 0
