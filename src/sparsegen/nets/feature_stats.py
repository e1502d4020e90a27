"""Channel statistics of feature maps, shared by the attention modules, the style-transfer
losses and the StyTr2 metrics (one definition, so training and evaluation agree)."""

from __future__ import annotations

import torch

EPS = 1e-5  # added to the variance, as AdaIN and the StyA2K/StyTr2 code do


def mean_std(x: torch.Tensor, eps: float = EPS) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-sample, per-channel mean and std = sqrt(unbiased variance + eps), shapes (B, C, 1, 1)."""
    flat = x.flatten(2)
    mean = flat.mean(-1)[..., None, None]
    std = (flat.var(-1, unbiased=True) + eps).sqrt()[..., None, None]
    return mean, std


def mean_variance_norm(x: torch.Tensor) -> torch.Tensor:
    """N(.) of StyA2K Eq. 4/6: instance normalisation without affine parameters."""
    mean, std = mean_std(x)
    return (x - mean) / std
