"""Pixel metrics between aligned image pairs: SSIM (Wang et al. 2004), PSNR, L1.

SSIM and PSNR take an explicit `data_range` (1.0 for [0, 1] images, 255 for [0, 255]); a
guessed range is the classic way to get wrong SSIM numbers. Values are computed per image in
float64 and averaged over images.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F

from sparsegen.metrics.inputs import aligned_pair
from sparsegen.metrics.records import Measurement
from sparsegen.metrics.registry import MetricContext, register

SSIM_SIGMA = 1.5
SSIM_RADIUS = 5  # int(3.5 * 1.5 + 0.5): 11x11 window, as scipy's gaussian_filter truncate=3.5
SSIM_K1, SSIM_K2 = 0.01, 0.03


def _check_range(data_range: float) -> float:
    if not (isinstance(data_range, int | float) and data_range > 0):
        raise ValueError(f"data_range must be a positive number, got {data_range!r}")
    return float(data_range)


def _per_image(fn: Any, a: torch.Tensor, b: torch.Tensor, ctx: MetricContext) -> list[float]:
    out: list[float] = []
    with torch.inference_mode():
        for i in range(0, a.shape[0], ctx.batch_size):
            x = a[i:i + ctx.batch_size].to(ctx.device, torch.float64)
            y = b[i:i + ctx.batch_size].to(ctx.device, torch.float64)
            out += fn(x, y).cpu().tolist()
    return out


def _gaussian_window(device: torch.device) -> torch.Tensor:
    x = torch.arange(-SSIM_RADIUS, SSIM_RADIUS + 1, dtype=torch.float64, device=device)
    w = torch.exp(-0.5 * (x / SSIM_SIGMA) ** 2)
    return w / w.sum()


def ssim_per_image(x: torch.Tensor, y: torch.Tensor, data_range: float) -> torch.Tensor:
    """Mean SSIM map over valid window positions and RGB channels, for each image (B,)."""
    b, c, h, w = x.shape
    if min(h, w) < 2 * SSIM_RADIUS + 1:
        raise ValueError(f"SSIM needs images of at least {2 * SSIM_RADIUS + 1} px, got {h}x{w}")
    g = _gaussian_window(x.device)
    kernels = (g.view(1, 1, -1, 1), g.view(1, 1, 1, -1))

    def blur(t: torch.Tensor) -> torch.Tensor:  # separable Gaussian, valid positions only
        t = t.reshape(b * c, 1, *t.shape[-2:])
        return F.conv2d(F.conv2d(t, kernels[0]), kernels[1])

    c1, c2 = (SSIM_K1 * data_range) ** 2, (SSIM_K2 * data_range) ** 2
    mx, my = blur(x), blur(y)
    vx = blur(x * x) - mx * mx  # population (co)variances
    vy = blur(y * y) - my * my
    cxy = blur(x * y) - mx * my
    s = ((2 * mx * my + c1) * (2 * cxy + c2)) / ((mx * mx + my * my + c1) * (vx + vy + c2))
    return s.reshape(b, c, -1).mean(dim=2).mean(dim=1)


@register("ssim_gauss11", higher_is_better=True,
          description="SSIM (Wang et al. 2004): Gaussian 11x11 window, sigma 1.5, K1 0.01, "
          "K2 0.03, population covariances, valid window positions, mean over RGB channels")
def ssim_gauss11(a: Any, b: Any, ctx: MetricContext, *, data_range: float) -> Measurement:
    L = _check_range(data_range)
    ta, tb = aligned_pair(a, b, ("images", "references"), unit_range=False)
    values = _per_image(lambda x, y: ssim_per_image(x, y, L), ta, tb, ctx)
    return Measurement(
        value=math.fsum(values) / len(values), n_samples=len(values), per_sample=values,
        protocol={"data_range": L, "window": f"gaussian {2 * SSIM_RADIUS + 1}x"
                  f"{2 * SSIM_RADIUS + 1} sigma {SSIM_SIGMA}", "K1": SSIM_K1, "K2": SSIM_K2,
                  "covariance": "population", "border": "valid window positions only",
                  "channels": "RGB, mean of per-channel SSIM",
                  "image_size": list(ta.shape[-2:]), "resize": "none"})


@register("psnr", higher_is_better=True,
          description="PSNR 10 log10(MAX^2 / MSE) per image over RGB, then mean over images")
def psnr(a: Any, b: Any, ctx: MetricContext, *, data_range: float) -> Measurement:
    L = _check_range(data_range)
    ta, tb = aligned_pair(a, b, ("images", "references"), unit_range=False)

    def per_image(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        mse = ((x - y) ** 2).flatten(1).mean(1)
        return 10 * torch.log10(L * L / mse)  # identical images give +inf

    values = _per_image(per_image, ta, tb, ctx)
    return Measurement(
        value=math.fsum(values) / len(values), n_samples=len(values), per_sample=values,
        protocol={"data_range": L, "channels": "RGB", "reduction": "per image, mean over images",
                  "image_size": list(ta.shape[-2:]), "resize": "none"})


@register("l1", higher_is_better=False,
          description="mean absolute difference over pixels and RGB channels, images in [0, 1]")
def l1(a: Any, b: Any, ctx: MetricContext) -> Measurement:
    ta, tb = aligned_pair(a, b, ("images", "references"), unit_range=True)
    values = _per_image(lambda x, y: (x - y).abs().flatten(1).mean(1), ta, tb, ctx)
    return Measurement(
        value=math.fsum(values) / len(values), n_samples=len(values), per_sample=values,
        protocol={"range": "[0, 1]", "channels": "RGB", "image_size": list(ta.shape[-2:]),
                  "resize": "none"})


LUMA = (0.299, 0.587, 0.114)  # ITU-R BT.601, as PIL's "L" conversion


@register("ssim_gray_skimage", higher_is_better=True,
          description="SSIM of the BT.601 luma on 0-255 as scikit-image's structural_similarity "
          "computes it by default (7x7 uniform window, data_range 255), mean over images")
def ssim_gray_skimage(a: Any, b: Any, ctx: MetricContext) -> Measurement:
    """Structure kept from a reference (e.g. a stylised image against its content image)."""
    from skimage.metrics import structural_similarity

    ta, tb = aligned_pair(a, b, ("images", "references"), unit_range=True)
    luma = torch.tensor(LUMA, dtype=torch.float64).view(1, 3, 1, 1)

    def gray(x: torch.Tensor) -> torch.Tensor:
        return (x.to(torch.float64) * luma).sum(1) * 255

    values = [float(structural_similarity(x.numpy(), y.numpy(), data_range=255))
              for x, y in zip(gray(ta), gray(tb), strict=True)]
    return Measurement(
        value=math.fsum(values) / len(values), n_samples=len(values), per_sample=values,
        protocol={"data_range": 255, "channels": "BT.601 luma", "window": "7x7 uniform",
                  "implementation": "skimage.metrics.structural_similarity defaults",
                  "image_size": list(ta.shape[-2:]), "resize": "none"})
