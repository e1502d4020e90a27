"""Neighbourhood, Hydra and window attention on a CUDA GPU: the compiled Flex backend (with the
relative positional bias) and NATTEN agree with the plain-PyTorch backend, forward and backward,
in float32 without TF32. Runs wherever a GPU is present (marker `gpu`)."""

from __future__ import annotations

import importlib.util

import pytest
import torch

from sparsegen.attention.hydra import HydraNeighborhoodAttention
from sparsegen.attention.neighborhood import (
    auto_backend,
    natten_compiles_flex,
    neighborhood_attention,
)
from sparsegen.attention.window import window_attention

pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]
CUDA = torch.device("cuda")
HAS_NATTEN = importlib.util.find_spec("natten") is not None

# (H, W, kernel, dilation, head_dim): partial Flex tiles (H*W not a multiple of 128), dilated
# sub-grids of unequal length, kernel == side (the 4x4 MHSA), the smoke preset's head_dim 4,
# a 64x64 level with the paper's kernel 7 at dilations 1 (tokens in 8x16 patches) and 8
# (sub-grids in the batch), and both layouts at once.
CASES = [(9, 13, 3, 1, 32), (24, 20, 3, 2, 32), (33, 47, 5, 3, 16), (4, 4, 4, 1, 32),
         (16, 16, 7, 2, 4), (64, 64, 7, 1, 32), (64, 64, 7, 8, 32), (64, 128, 7, 2, 16)]


def _inputs(h, w, kernel, head_dim, heads=4, batch=2, seed=0):
    gen = torch.Generator().manual_seed(seed)
    q, k, v = (torch.randn(batch, h, w, heads, head_dim, generator=gen) for _ in range(3))
    rpb = 0.5 * torch.randn(heads, 2 * kernel - 1, 2 * kernel - 1, generator=gen)
    return [t.to(CUDA).requires_grad_() for t in (q, k, v, rpb)]


def _run(backend, q, k, v, rpb, kernel, dilation):
    """Output and the gradients of a fixed random projection of it."""
    out = neighborhood_attention(q, k, v, kernel, dilation, rpb, backend=backend)
    weight = torch.randn(out.shape, generator=torch.Generator(CUDA).manual_seed(1), device=CUDA)
    leaves = [t for t in (q, k, v, rpb) if t is not None]
    return out.detach(), torch.autograd.grad((out * weight).sum(), leaves)


@pytest.mark.parametrize(("h", "w", "kernel", "dilation", "head_dim"), CASES)
@pytest.mark.parametrize("with_rpb", [True, False])
def test_flex_matches_torch_forward_and_backward(h, w, kernel, dilation, head_dim, with_rpb):
    q, k, v, rpb = _inputs(h, w, kernel, head_dim)
    rpb = rpb if with_rpb else None
    out, grads = _run("flex", q, k, v, rpb, kernel, dilation)
    ref_out, ref_grads = _run("torch", q, k, v, rpb, kernel, dilation)
    assert torch.allclose(out, ref_out, atol=2e-5, rtol=1e-4)
    for g, ref in zip(grads, ref_grads, strict=True):
        assert torch.allclose(g, ref, atol=1e-4, rtol=1e-3)


@pytest.mark.skipif(not HAS_NATTEN, reason="needs natten")
@pytest.mark.parametrize(("h", "w", "kernel", "dilation", "head_dim"),
                         [c for c in CASES if c[4] >= 8])
def test_natten_matches_torch_forward_and_backward(h, w, kernel, dilation, head_dim):
    q, k, v, _ = _inputs(h, w, kernel, head_dim)
    out, grads = _run("natten", q, k, v, None, kernel, dilation)
    ref_out, ref_grads = _run("torch", q, k, v, None, kernel, dilation)
    assert torch.allclose(out, ref_out, atol=2e-5, rtol=1e-4)
    for g, ref in zip(grads, ref_grads, strict=True):
        assert torch.allclose(g, ref, atol=1e-4, rtol=1e-3)


@pytest.mark.skipif(not HAS_NATTEN or bool(getattr(__import__("natten"), "HAS_LIBNATTEN", True)),
                    reason="needs natten without its compiled kernels (its Flex path)")
def test_natten_compiles_flex_only_for_half_precision():
    q32 = _inputs(8, 8, 3, 32)[0].detach()
    assert not natten_compiles_flex(q32, q32, q32)  # float32: eager Flex, every score formed
    q16 = q32.to(torch.bfloat16)
    assert natten_compiles_flex(q16, q16, q16)
    assert not natten_compiles_flex(q16.cpu(), q16.cpu(), q16.cpu())


def test_auto_backend_on_cuda():
    q, _, _, rpb = _inputs(8, 8, 3, 32)
    assert auto_backend(q, rpb, kernel_size=3) == auto_backend(q, kernel_size=3) == "fused"
    assert auto_backend(q, rpb, dropout=0.1) == "torch"
    assert auto_backend(q, rpb, kernel_size=15) == "flex"  # beyond the fused kernels
    has_kernels = HAS_NATTEN and bool(__import__("natten").HAS_LIBNATTEN)
    assert auto_backend(q, kernel_size=15) == ("natten" if has_kernels else "flex")


def test_hydra_flex_matches_torch():
    torch.manual_seed(0)
    m = HydraNeighborhoodAttention(64, 8, [7], [1, 4]).to(CUDA)
    x = torch.randn(2, 32, 32, 64, device=CUDA)
    outs, grads = [], []
    for backend in ("flex", "torch"):
        m.backend = backend
        out = m(x)
        outs.append(out)
        grads.append(torch.autograd.grad(out.square().sum(), list(m.rpb)))
    assert torch.allclose(outs[0], outs[1], atol=2e-5, rtol=1e-4)
    for g, ref in zip(*grads, strict=True):
        assert torch.allclose(g, ref, atol=1e-4, rtol=1e-3)


@pytest.mark.parametrize("shift", [0, 4])
def test_window_attention_on_cuda_matches_cpu(shift):
    gen = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(2, 16, 24, 4, 32, generator=gen) for _ in range(3))
    rpb = torch.randn(4, 15, 15, generator=gen)
    expected = window_attention(q, k, v, 8, shift, rpb)
    qc, kc, vc, rc = (t.to(CUDA) for t in (q, k, v, rpb))
    out = window_attention(qc, kc, vc, 8, shift, rc)
    assert torch.allclose(out.cpu(), expected, atol=1e-5)


@torch.no_grad()
def test_flex_runs_beyond_the_cuda_grid_limit():
    """FFHQ-1024's 512^2 level at sampling batch 8: 8 x 64^2 sub-grids (dilation 64) x 2 heads
    = 65,536 Flex programs, one more than CUDA's grid y limit ('invalid argument' before the
    batch was cut into chunks). Spot-checked against the torch backend on one image."""
    gen = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(8, 512, 512, 2, 16, generator=gen).to(CUDA) for _ in range(3))
    rpb = (0.5 * torch.randn(2, 13, 13, generator=gen)).to(CUDA)
    out = neighborhood_attention(q, k, v, 7, 64, rpb, backend="flex")
    expected = neighborhood_attention(q[:1], k[:1], v[:1], 7, 64, rpb, backend="torch")
    torch.testing.assert_close(out[:1], expected, atol=1e-4, rtol=1e-4)
