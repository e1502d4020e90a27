"""Set-up for the whole test run: without CUDA, Triton's interpreter (TRITON_INTERPRET=1) runs
Triton kernels on CPU tensors, so the fused neighbourhood-attention tests can run on tiny shapes.
Triton reads the variable when it is imported and when kernels run, so it is set here, before
any test module imports it; a GPU run keeps the compiled kernels."""

import os

import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")
