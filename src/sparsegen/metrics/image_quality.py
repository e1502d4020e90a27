"""Pixel metrics between aligned image pairs: SSIM (Wang et al. 2004), PSNR, L1; iLAT's own
PSNR and SSIM; the masked rate of hole masks.

SSIM and PSNR take an explicit `data_range` (1.0 for [0, 1] images, 255 for [0, 255]); a
guessed range is the classic way to get wrong SSIM numbers. Values are computed per image in
float64 and averaged over images.

`psnr_ilat` and `ssim_ilat` reproduce iLAT's evaluation code (ewrfcas/iLAT `src/metrics.py`,
`get_inpainting_metrics`) with its quirks, so our numbers compare with the paper's Table 1:
PSNR is 1 - 10 log10(MSE + 1e-7), +1 dB over the standard definition for [0, 1] images; SSIM
is old scikit-image's `compare_ssim` defaults (7x7 uniform window, sample covariances, data
range 2 for float images) on `rgb2gray` of the cv2-loaded, i.e. BGR-ordered, image. That code
read uint8 PNGs: give [0, 1] images that are uint8 / 255 for exact parity.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from sparsegen.attention.local_autoregressive import token_mask
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


# --- iLAT's evaluation code ------------------------------------------------------------------

ILAT_PSNR_OFFSET = 1.0  # iLAT's `max_value`, added to -10 log10(MSE) instead of squared inside
ILAT_MSE_EPS = 1e-7
# skimage.color.rgb2gray: ITU-R BT.709 luma weights of the R, G, B channels.
RGB2GRAY_SKIMAGE = (0.2125, 0.7154, 0.0721)
ILAT_SSIM_WINDOW = 7          # compare_ssim default: uniform 7x7 window
ILAT_SSIM_DATA_RANGE = 2.0    # compare_ssim default for float images: dtype range (-1, 1)


@register("psnr_ilat", higher_is_better=True,
          description="iLAT's PSNR (ewrfcas/iLAT src/metrics.py): 1 - 10 log10(MSE + 1e-7) on "
          "[0, 1] images, +1 dB over the standard PSNR; per image, mean over images")
def psnr_ilat(a: Any, b: Any, ctx: MetricContext) -> Measurement:
    ta, tb = aligned_pair(a, b, ("images", "references"), unit_range=True)

    def per_image(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        mse = ((x - y) ** 2).flatten(1).mean(1)
        return ILAT_PSNR_OFFSET - 10 * torch.log10(mse + ILAT_MSE_EPS)

    values = _per_image(per_image, ta, tb, ctx)
    return Measurement(
        value=math.fsum(values) / len(values), n_samples=len(values), per_sample=values,
        protocol={"formula": "1 - 10 log10(MSE + 1e-7)", "range": "[0, 1]",
                  "channels": "RGB", "reduction": "per image, mean over images",
                  "implementation": "ewrfcas/iLAT src/metrics.py get_inpainting_metrics",
                  "image_size": list(ta.shape[-2:]), "resize": "none"})


def bgr_gray(x: torch.Tensor) -> torch.Tensor:
    """(N, 3, H, W) RGB -> (N, H, W): skimage's `rgb2gray` applied to the image in BGR order
    (as iLAT passed cv2-loaded arrays), i.e. 0.2125 B + 0.7154 G + 0.0721 R."""
    weights = torch.tensor(RGB2GRAY_SKIMAGE[::-1], dtype=torch.float64).view(1, 3, 1, 1)
    return (x.to(torch.float64) * weights).sum(1)


@register("ssim_ilat", higher_is_better=True,
          description="iLAT's SSIM (ewrfcas/iLAT src/metrics.py): old skimage compare_ssim "
          "defaults (7x7 uniform window, sample covariances, data_range 2) on rgb2gray of the "
          "BGR-ordered [0, 1] image; mean over images")
def ssim_ilat(a: Any, b: Any, ctx: MetricContext) -> Measurement:
    from skimage.metrics import structural_similarity

    ta, tb = aligned_pair(a, b, ("images", "references"), unit_range=True)
    side = ILAT_SSIM_WINDOW
    if min(ta.shape[-2:]) < side:
        raise ValueError(f"ssim_ilat needs images of at least {side} px, got "
                         f"{ta.shape[-2]}x{ta.shape[-1]}")
    values = [float(structural_similarity(x.numpy(), y.numpy(), win_size=side,
                                          gaussian_weights=False, use_sample_covariance=True,
                                          data_range=ILAT_SSIM_DATA_RANGE))
              for x, y in zip(bgr_gray(ta), bgr_gray(tb), strict=True)]
    return Measurement(
        value=math.fsum(values) / len(values), n_samples=len(values), per_sample=values,
        protocol={"data_range": ILAT_SSIM_DATA_RANGE, "window": f"{side}x{side} uniform",
                  "K1": SSIM_K1, "K2": SSIM_K2, "covariance": "sample (N-1)",
                  "border": "valid window positions only",
                  "channels": "skimage rgb2gray of the BGR-ordered image "
                  "(0.2125 B + 0.7154 G + 0.0721 R)", "range": "[0, 1]",
                  "implementation": "ewrfcas/iLAT src/metrics.py get_inpainting_metrics "
                  "(skimage<0.18 compare_ssim defaults)",
                  "image_size": list(ta.shape[-2:]), "resize": "none"})


# --- masked rate ---------------------------------------------------------------------------


def _mask_batch(mask: torch.Tensor | np.ndarray) -> torch.Tensor:
    """Hole masks (N, 1, H, W) or (N, H, W), 1/True = hole, as float64 (N, 1, H, W)."""
    t = torch.as_tensor(mask)
    if t.dim() == 3:
        t = t.unsqueeze(1)
    if t.dim() != 4 or t.shape[1] != 1 or t.shape[0] == 0:
        raise ValueError(f"masks: expected a non-empty batch (N, 1, H, W) or (N, H, W), got "
                         f"shape {tuple(t.shape)}")
    t = t.to(torch.float64)
    if not ((t == 0) | (t == 1)).all():
        bad = t[(t != 0) & (t != 1)]
        raise ValueError(f"masks: values must be 0 or 1 (1 = hole), found {float(bad[0])!r}")
    return t


def masked_rates(mask: torch.Tensor | np.ndarray, grid: int
                 ) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-mask (pixel rate, token rate), each (N,) float64: the fraction of hole pixels, and
    the fraction of the `grid` x `grid` tokens with any hole pixel in their cell (the token
    mask the transformer uses, `attention.local_autoregressive.token_mask`)."""
    m = _mask_batch(mask)
    h, w = m.shape[-2:]
    if not (isinstance(grid, int) and grid > 0 and h % grid == 0 and w % grid == 0):
        raise ValueError(f"grid {grid!r} must be a positive integer dividing the mask size "
                         f"{h}x{w}")
    return m.flatten(1).mean(1), token_mask(m, grid).to(torch.float64).mean(1)


def _masked_rate(a: Any, b: Any, which: int, grid: int = 1) -> Measurement:
    if b is not None:
        raise ValueError("masked rates measure the masks alone: pass None as the reference")
    values = masked_rates(a, grid)[which].tolist()
    h, w = _mask_batch(a).shape[-2:]
    protocol = {"image_size": [h, w], "reduction": "per mask, mean over masks"}
    if which == 1:
        protocol |= {"grid": grid, "token": "masked if any pixel of its cell is a hole"}
    return Measurement(value=math.fsum(values) / len(values), n_samples=len(values),
                       per_sample=values, protocol=protocol)


# Masked rates describe the test masks; "lower is better" only says less is left to generate.
@register("masked_rate_pixel", higher_is_better=False,
          description="fraction of hole pixels of each mask (1 = hole), mean over masks")
def masked_rate_pixel(a: Any, b: Any, ctx: MetricContext) -> Measurement:
    return _masked_rate(a, b, 0)


@register("masked_rate_token", higher_is_better=False,
          description="fraction of the grid x grid tokens with any hole pixel (the mask "
          "max-pooled to the token grid, as iLAT), mean over masks")
def masked_rate_token(a: Any, b: Any, ctx: MetricContext, *, grid: int) -> Measurement:
    return _masked_rate(a, b, 1, grid)
