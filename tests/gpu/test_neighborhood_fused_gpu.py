"""The fused Triton neighbourhood attention on a CUDA GPU at the FFHQ-256 generator's real shapes:
forward and the four gradients against the plain-PyTorch backend in float32 (TF32 off), TF32 and
bfloat16, and a StyleNAT training step and generator backward with "fused" equal to "torch".
Marker `gpu`."""

from __future__ import annotations

import pytest
import torch

from sparsegen.attention.hydra import HydraNeighborhoodAttention
from sparsegen.attention.neighborhood import neighborhood_attention
from sparsegen.bench.common import precision
from sparsegen.bench.stylenat import host_batch, train_settings
from sparsegen.config import load_params, resolve
from sparsegen.models.stylenat.generator import build_generator

pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]
CUDA = torch.device("cuda")

# (side, heads of one Hydra partition, head_dim, kernel, dilation): FFHQ-256's levels 16-256 at
# dilation 1 and the level's largest, the 4x4 MHSA, and FFHQ-1024's kernel 13 is not used by
# the paper (kernel 7 throughout) but the kernels support it.
SHAPES = [(16, 8, 32, 7, 2), (64, 8, 32, 7, 1), (64, 8, 32, 7, 8), (128, 4, 32, 7, 16),
          (256, 2, 32, 7, 1), (256, 2, 32, 7, 32), (4, 8, 32, 4, 1), (48, 2, 64, 13, 3)]
# precision -> (input dtype, TF32 matmuls, tolerance relative to the reference's largest value)
PRECISIONS = {"fp32": (torch.float32, False, 2e-5), "tf32": (torch.float32, True, 5e-3),
              "bf16": (torch.bfloat16, False, 3e-2)}


def _inputs(side, heads, dim, kernel, dtype, batch=2):
    gen = torch.Generator(device=CUDA).manual_seed(side + dim)
    q, k, v = (torch.randn(batch, side, side, heads, dim, device=CUDA, generator=gen)
               for _ in range(3))
    rpb = 0.5 * torch.randn(heads, 2 * kernel - 1, 2 * kernel - 1, device=CUDA, generator=gen)
    return [t.to(dtype).requires_grad_() for t in (q, k, v)] + [rpb.requires_grad_()]


def _output_and_grads(backend, q, k, v, rpb, kernel, dilation):
    out = neighborhood_attention(q, k, v, kernel, dilation, rpb, backend=backend)
    weight = torch.randn(out.shape, device=CUDA,
                         generator=torch.Generator(device=CUDA).manual_seed(1))
    return [out, *torch.autograd.grad((out.float() * weight).sum(), [q, k, v, rpb])]


@pytest.mark.parametrize(("side", "heads", "dim", "kernel", "dilation"), SHAPES)
@pytest.mark.parametrize("name", list(PRECISIONS))
def test_fused_matches_torch_at_generator_shapes(name, side, heads, dim, kernel, dilation):
    dtype, tf32, tol = PRECISIONS[name]
    inputs = _inputs(side, heads, dim, kernel, dtype)
    with precision("tf32" if tf32 else "fp32"):
        got = _output_and_grads("fused", *inputs, kernel, dilation)
    # the reference: the same (rounded) inputs, float32 without TF32
    exact = [t.detach().float().requires_grad_() for t in inputs]
    with precision("fp32"):
        expected = _output_and_grads("torch", *exact, kernel, dilation)
    for label, g, ref in zip(["out", "dq", "dk", "dv", "drpb"], got, expected, strict=True):
        scale = ref.abs().max().item()
        err = (g.float() - ref).abs().max().item()
        assert err <= tol * scale, f"{name} {label}: max error {err:.3g} vs scale {scale:.3g}"


def test_stylenat_training_step_with_fused_equals_torch():
    """Two iterations of the smoke StyleNAT task (D step with bCR, R1 at step 0, G step, EMA)
    from the same initial weights and batches: the logged losses agree."""
    from sparsegen.models.stylenat.task import build_task

    logs = {}
    for backend in ("torch", "fused"):
        settings = train_settings("cuda", preset="smoke", backend=backend)
        torch.manual_seed(settings["seed"])
        with precision("fp32"):
            task = build_task(settings, CUDA)
            logs[backend] = [task.train_step(s, host_batch(settings, s)) for s in (0, 1)]
    for ref, got in zip(logs["torch"], logs["fused"], strict=True):
        assert ref.keys() == got.keys()
        for key in ref:
            assert got[key] == pytest.approx(ref[key], rel=1e-3, abs=1e-5), key


def test_paper_generator_backward_with_fused_equals_torch():
    """The FFHQ-256 generator (Hydra-NA at every level, RPB tables included): its images and
    the gradients of every parameter agree between the two backends."""
    params = load_params(overrides={"preset": "paper", "weights": "random"})
    model = resolve(params, "stylenat", "stylenat", check=False)["model"]
    torch.manual_seed(0)
    g = build_generator({**model, "backend": "torch"}).to(CUDA)
    z = torch.randn(2, model["style_dim"], device=CUDA)
    results = {}
    with precision("fp32"):
        for backend in ("torch", "fused"):
            for m in g.modules():
                if isinstance(m, HydraNeighborhoodAttention):
                    m.backend = backend
            img = g(z)
            grads = torch.autograd.grad(img.square().mean(), list(g.parameters()))
            results[backend] = (img.detach(), grads)
    (img_t, grads_t), (img_f, grads_f) = results["torch"], results["fused"]
    torch.testing.assert_close(img_f, img_t, atol=1e-4, rtol=1e-4)
    for gf, gt in zip(grads_f, grads_t, strict=True):
        torch.testing.assert_close(gf, gt, atol=1e-5 + 1e-3 * gt.abs().max().item(), rtol=1e-3)
