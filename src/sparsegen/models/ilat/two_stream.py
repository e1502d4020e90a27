"""Two-stream layers of the TS-VQGAN encoder (Sec. 3.1, Eq. 2-3) and the norms and attention
that keep the same promise: no feature outside the hole depends on a hole pixel.

The hole mask M (B, 1, H, W), 1 = hole, is max-pooled to each feature size (M', `pool_mask`:
any hole pixel under a feature position makes it a hole position). A convolution spreads hole
features to the positions whose receptive field touches M', the leak region M_l (Eq. 2,
`leak_region`); the two-stream convolution runs its shared weights on F and on F (1 - M') and
keeps the second at M_l (Eq. 3). For strided convolutions the leak region lives at the output
size: the positions whose receptive field touches the input's M', less the output's own M'.

The paper is silent on normalisation and attention, which leak as well (a statistic over the
whole map, a key inside the hole): outside the hole, GroupNorm / InstanceNorm statistics come
from outside-hole positions only and attention queries see outside-hole keys only
(`norm_stats: outside`); hole positions keep the whole map. Every module takes (x, mask) with
`mask` the pixel mask (or any coarser max-pooling of it) or None, and is then the plain layer.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

Padding = int | tuple[int, int, int, int]
NORM_STATS = ("outside", "whole")
ATTENTION_KEYS = ("outside", "all")


def pool_mask(mask: torch.Tensor, size: int | tuple[int, int]) -> torch.Tensor:
    """M' (B, 1, size, size): the hole mask max-pooled to a feature size (Sec. 3.1)."""
    return F.adaptive_max_pool2d(mask, size)


def _sides(padding: Padding) -> tuple[int, int, int, int]:
    """(left, right, top, bottom) of an int or 4-tuple padding."""
    return (padding,) * 4 if isinstance(padding, int) else tuple(padding)  # type: ignore[return-value]


def _pad(x: torch.Tensor, padding: Padding, mode: str) -> torch.Tensor:
    sides = _sides(padding)
    if not any(sides):
        return x
    return F.pad(x, sides, mode="reflect" if mode == "reflect" else "constant")


def leak_region(mask_pooled: torch.Tensor, kernel: int, stride: int = 1, padding: Padding = 0,
                padding_mode: str = "zeros") -> torch.Tensor:
    """M_l of Eq. 2 at the output size of a k x k convolution with this stride and padding:
    clip(conv_ones(M'), 0, 1) less the output's M' (M' at the input size in `mask_pooled`).
    Empty for 1 x 1 convolutions."""
    ones = mask_pooled.new_ones(1, 1, kernel, kernel)
    touched = F.conv2d(_pad(mask_pooled, padding, padding_mode), ones, stride=stride) > 0
    return touched.to(mask_pooled.dtype) * (1 - pool_mask(mask_pooled, touched.shape[-2:]))


class TwoStreamConv2d(nn.Conv2d):
    """A convolution run on F and on F (1 - M') with shared weights, combined by Eq. 3:
    F_c = conv(F) (1 - M_l) + conv(F (1 - M')) M_l. Without a mask, the plain convolution.
    `padding` is an int or (left, right, top, bottom) (taming's downsampling pads (0, 1, 0, 1)),
    `padding_mode` zeros or reflect (the sketch encoder's first convolution)."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int = 1,
                 padding: Padding = 0, padding_mode: str = "zeros") -> None:
        super().__init__(in_channels, out_channels, kernel_size, stride=stride)
        if padding_mode not in ("zeros", "reflect"):
            raise ValueError(f"padding_mode {padding_mode!r} is not zeros or reflect")
        self.sides, self.pad_mode = _sides(padding), padding_mode

    def plain(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(_pad(x, self.sides, self.pad_mode))

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        k, s = self.kernel_size[0], self.stride[0]
        if mask is None or (k == 1 and s == 1):
            return self.plain(x)
        m = pool_mask(mask, x.shape[-2:])
        leak = leak_region(m, k, s, self.sides, self.pad_mode)  # Eq. 2
        return self.plain(x) * (1 - leak) + self.plain(x * (1 - m)) * leak  # Eq. 3


class MaskedGroupNorm(nn.GroupNorm):
    """GroupNorm (taming: 32 groups, eps 1e-6, affine) or InstanceNorm (groups = channels, eps
    1e-5, no affine: TS-VQGAN's IN) whose statistics at outside-hole positions are taken over
    outside-hole positions only (`stats: outside`); hole positions, and every position with
    `stats: whole` or without a mask, use the whole map as the plain layer does. Statistics
    are taken in at least float32 (as GroupNorm under autocast)."""

    def __init__(self, num_groups: int, num_channels: int, eps: float, affine: bool,
                 stats: str = "outside") -> None:
        super().__init__(num_groups, num_channels, eps=eps, affine=affine)
        if stats not in NORM_STATS:
            raise ValueError(f"norm_stats {stats!r} is not one of {NORM_STATS}")
        self.stats = stats

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        if mask is None or self.stats == "whole":
            return super().forward(x)
        b, c, h, w = x.shape
        g = x.to(torch.promote_types(x.dtype, torch.float32)).reshape(b, self.num_groups, -1, h, w)
        keep = (1 - pool_mask(mask, (h, w)))[:, None]                       # (B, 1, 1, H, W)
        dims = (2, 3, 4)
        count = (keep.sum(dims, keepdim=True) * g.shape[2]).clamp(min=1)
        mean_out = (g * keep).sum(dims, keepdim=True) / count
        var_out = ((g - mean_out) ** 2 * keep).sum(dims, keepdim=True) / count
        mean = torch.where(keep > 0, mean_out, g.mean(dims, keepdim=True))
        var = torch.where(keep > 0, var_out, g.var(dims, unbiased=False, keepdim=True))
        y = ((g - mean) * torch.rsqrt(var + self.eps)).reshape(b, c, h, w).to(x.dtype)
        if self.weight is None:
            return y
        return y * self.weight[:, None, None] + self.bias[:, None, None]


class MaskedAttention(nn.Module):
    """taming's single-head spatial self-attention block (norm, 1x1 q, k, v, proj_out, residual;
    scale C^-1/2). With a mask and `keys: outside`, queries outside the hole attend to keys
    outside the hole only; hole queries attend everywhere. `keys: all` is the open attention."""

    def __init__(self, channels: int, norm: MaskedGroupNorm, keys: str = "outside") -> None:
        super().__init__()
        if keys not in ATTENTION_KEYS:
            raise ValueError(f"attention keys {keys!r} is not one of {ATTENTION_KEYS}")
        self.keys = keys
        self.norm = norm
        self.q, self.k, self.v, self.proj_out = (nn.Conv2d(channels, channels, 1)
                                                 for _ in range(4))

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        b, c, h, w = x.shape
        hn = self.norm(x, mask)
        q, k, v = (f(hn).reshape(b, 1, c, h * w).transpose(-1, -2)
                   for f in (self.q, self.k, self.v))
        allowed = None
        if mask is not None and self.keys == "outside":
            hole = pool_mask(mask, (h, w)).reshape(b, 1, h * w) > 0
            allowed = (hole.transpose(-1, -2) | ~hole)[:, None]           # (B, 1, N, N)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=allowed)
        return x + self.proj_out(out.transpose(-1, -2).reshape(b, c, h, w))
