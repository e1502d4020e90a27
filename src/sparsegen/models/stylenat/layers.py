"""Building blocks shared by the StyleNAT generator and discriminator (StyleGAN2 / StyleSwin
lineage): equalised-lr linear layers, style-modulated instance norm, the 2-D sinusoidal position
code, blur up/down-sampling (pure PyTorch upfirdn2d) and the ImageNet normalisation of the data."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

# Images live in ImageNet-normalised space (StyleSwin's data pipeline, kept by StyleNAT).
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
BLUR_KERNEL = (1, 3, 3, 1)
LEAKY_SLOPE = 0.2
LEAKY_GAIN = math.sqrt(2)  # keeps the activation variance of a leaky ReLU about 1
IN_EPS = 1e-5              # InstanceNorm1d's default


def _channel_stats(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    shape = (-1, 1, 1)  # channel axis of [3, H, W] and [B, 3, H, W]
    return (torch.tensor(IMAGENET_MEAN, dtype=x.dtype, device=x.device).view(shape),
            torch.tensor(IMAGENET_STD, dtype=x.dtype, device=x.device).view(shape))


def to_unit_range(x: torch.Tensor) -> torch.Tensor:
    """ImageNet-normalised images -> [0, 1] (clamped, as the official image saving does)."""
    mean, std = _channel_stats(x)
    return (x * std + mean).clamp(0, 1)


def from_unit_range(x: torch.Tensor) -> torch.Tensor:
    """[0, 1] images -> ImageNet-normalised space (the generator's output space)."""
    mean, std = _channel_stats(x)
    return (x - mean) / std


def fused_leaky_relu(x: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """leaky_relu(x + bias, 0.2) * sqrt(2), the bias broadcast over the channel axis 1."""
    bias = bias.view(1, -1, *([1] * (x.ndim - 2)))
    return F.leaky_relu(x + bias, LEAKY_SLOPE) * LEAKY_GAIN


class FusedLeakyReLU(nn.Module):
    """Per-channel bias (init 0) followed by the scaled leaky ReLU."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.bias = nn.Parameter(torch.zeros(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return fused_leaky_relu(x, self.bias)


class PixelNorm(nn.Module):
    """x / sqrt(mean(x^2) + 1e-8) over the feature axis (normalises z before the mapping)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.rsqrt(x.pow(2).mean(dim=1, keepdim=True) + 1e-8)


class EqualLinear(nn.Module):
    """Equalised learning rate: weights stored as N(0, 1) / lr_mul and scaled at run time by
    lr_mul / sqrt(fan_in); the bias by lr_mul. `activation` adds the fused leaky ReLU."""

    def __init__(self, in_dim: int, out_dim: int, bias_init: float = 0.0, lr_mul: float = 1.0,
                 activation: bool = False) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(out_dim, in_dim).div_(lr_mul))
        self.bias = nn.Parameter(torch.full((out_dim,), float(bias_init)))
        self.scale = lr_mul / math.sqrt(in_dim)
        self.lr_mul = lr_mul
        self.activation = activation

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.activation:
            return fused_leaky_relu(F.linear(x, self.weight * self.scale), self.bias * self.lr_mul)
        return F.linear(x, self.weight * self.scale, self.bias * self.lr_mul)

    def extra_repr(self) -> str:
        return (f"{self.weight.shape[1]}, {self.weight.shape[0]}, lr_mul={self.lr_mul}, "
                f"activation={self.activation}")


class AdaIN(nn.Module):
    """Style-modulated instance norm over tokens: gamma(w) * x_hat + beta(w), x_hat normalised
    over the spatial positions of each channel; gamma and beta from one EqualLinear(w -> 2C)
    whose bias starts at 0 (official code: gamma is not offset by 1)."""

    def __init__(self, channels: int, style_dim: int) -> None:
        super().__init__()
        self.style = EqualLinear(style_dim, 2 * channels)

    def forward(self, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        """x [B, H, W, C], w [B, style_dim]."""
        var, mean = torch.var_mean(x, dim=(1, 2), keepdim=True, correction=0)
        x_hat = (x - mean) * torch.rsqrt(var + IN_EPS)
        gamma, beta = self.style(w)[:, None, None, :].chunk(2, dim=-1)
        return gamma * x_hat + beta


POSITION_PRECISIONS = {"float64": torch.float64, "float32": torch.float32}


def sinusoidal_code(length: int, dim: int, precision: str = "float64") -> torch.Tensor:
    """[length, dim] code of positions 1..length: sin of the first dim/2 entries, cos of the
    rest, frequencies 10000^(-i / (dim/2 - 1)) (tensor2tensor form, as StyleSwin's SPE),
    computed in `precision` (the official code: float32; up to 1.3e-5 from float64 at 256²)
    and returned as float32."""
    dtype = POSITION_PRECISIONS[precision]
    half = dim // 2
    freqs = torch.exp(torch.arange(half, dtype=dtype) * -(math.log(10000) / (half - 1)))
    angles = torch.arange(1, length + 1, dtype=dtype)[:, None] * freqs[None, :]
    return torch.cat([angles.sin(), angles.cos()], dim=1).float()


def sinusoidal_grid(height: int, width: int, channels: int, precision: str = "float64"
                    ) -> torch.Tensor:
    """SPE2d [height, width, channels]: the first half of the channels code the column, the
    second half the row."""
    half = channels // 2
    x = sinusoidal_code(width, half, precision)[None, :, :].expand(height, width, half)
    y = sinusoidal_code(height, half, precision)[:, None, :].expand(height, width, half)
    return torch.cat([x, y], dim=-1)


class BilinearUpsample(nn.Module):
    """Between levels: bilinear x2 -> LayerNorm -> Linear(C -> C_next, no bias) -> + alpha * SPE2d,
    alpha a learned scalar starting at 0. Works on [B, H, W, C] with H = W = `side` (input)."""

    def __init__(self, side: int, dim: int, out_dim: int, precision: str = "float64") -> None:
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.reduction = nn.Linear(dim, out_dim, bias=False)
        self.alpha = nn.Parameter(torch.zeros(1))
        self.register_buffer("position_code",
                             sinusoidal_grid(2 * side, 2 * side, out_dim, precision),
                             persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.interpolate(x.permute(0, 3, 1, 2), scale_factor=2, mode="bilinear",
                          align_corners=False).permute(0, 2, 3, 1)
        x = self.reduction(self.norm(x))
        return x + (self.alpha * self.position_code).to(x.dtype)


def blur_kernel(taps: Sequence[int] = BLUR_KERNEL) -> torch.Tensor:
    """Separable 2-D FIR kernel from 1-D taps, normalised to sum 1."""
    k = torch.tensor(taps, dtype=torch.float32)
    k = k[:, None] * k[None, :]
    return k / k.sum()


def upfirdn2d(x: torch.Tensor, kernel: torch.Tensor, up: int = 1, down: int = 1,
              pad: tuple[int, int] = (0, 0)) -> torch.Tensor:
    """Upsample by zero insertion, pad (before, after) on both axes (negative crops), convolve
    every channel with `kernel` (true convolution, i.e. flipped), keep every `down`-th sample."""
    b, c, h, w = x.shape
    if up > 1:
        x = x.reshape(b, c, h, 1, w, 1)
        x = F.pad(x, (0, up - 1, 0, 0, 0, up - 1)).reshape(b, c, h * up, w * up)
    x = F.pad(x, (pad[0], pad[1], pad[0], pad[1]))
    weight = kernel.flip(0, 1).to(x)[None, None].expand(c, 1, *kernel.shape)
    return F.conv2d(x, weight, stride=down, groups=c)


class BlurUpsample(nn.Module):
    """x2 upsampling with the [1, 3, 3, 1] blur (gain 4 to keep the mean)."""

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("kernel", blur_kernel() * 4, persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return upfirdn2d(x, self.kernel, up=2, pad=(2, 1))


class Blur(nn.Module):
    """[1, 3, 3, 1] blur with the given padding, optionally taking every `down`-th sample."""

    def __init__(self, pad: tuple[int, int], down: int = 1) -> None:
        super().__init__()
        self.pad, self.down = pad, down
        self.register_buffer("kernel", blur_kernel(), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return upfirdn2d(x, self.kernel, down=self.down, pad=self.pad)


class ToRGB(nn.Module):
    """Plain 1x1 conv (+ a separate bias, official layout; not modulated) adding to the running
    image, which is first upsampled with the blur when it comes from the previous level."""

    def __init__(self, channels: int, upsample_skip: bool) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, 3, kernel_size=1)
        self.bias = nn.Parameter(torch.zeros(1, 3, 1, 1))
        self.upsample = BlurUpsample() if upsample_skip else None

    def forward(self, x: torch.Tensor, skip: torch.Tensor | None) -> torch.Tensor:
        """x [B, H, W, C] -> image [B, 3, H, W] plus the (upsampled) skip."""
        out = self.conv(x.permute(0, 3, 1, 2)) + self.bias
        if skip is None:
            return out
        return out + (self.upsample(skip) if self.upsample is not None else skip)
