"""Feature blocking and unblocking (StyA2K Alg. 2), with the channels split into heads.

`block` cuts a (B, C, H, W) map into non-overlapping sh x sw blocks. The result is laid out as
(B, heads, n, r, d): n = (H/sh)(W/sw) blocks in row-major order (the first axis of Eq. 6),
r = sh*sw in-block offsets in row-major order (the second axis), d = C/heads channels, head
`h` holding channels h*d ... (h+1)*d-1. Block and offset order are those of
`F.unfold(kernel_size=size, stride=size)` in Alg. 2; only reshapes and one permute are used.
"""

from __future__ import annotations

import torch


def _check(x: torch.Tensor, size: tuple[int, int], heads: int) -> None:
    if x.dim() != 4:
        raise ValueError(f"block: expected a (B, C, H, W) tensor, got shape {tuple(x.shape)}")
    _, c, h, w = x.shape
    sh, sw = size
    if sh < 1 or sw < 1 or h % sh or w % sw:
        raise ValueError(f"block: feature map {h}x{w} is not divisible into blocks of {sh}x{sw}")
    if heads < 1 or c % heads:
        raise ValueError(f"block: {c} channels cannot be split into {heads} heads")


def block(x: torch.Tensor, size: tuple[int, int], heads: int = 1) -> torch.Tensor:
    """(B, C, H, W) -> (B, heads, n, r, C/heads); see the module docstring for the order."""
    _check(x, size, heads)
    b, c, h, w = x.shape
    sh, sw = size
    x = x.reshape(b, heads, c // heads, h // sh, sh, w // sw, sw)
    # (b, heads, d, nH, sh, nW, sw) -> (b, heads, nH, nW, sh, sw, d)
    x = x.permute(0, 1, 3, 5, 4, 6, 2)
    return x.reshape(b, heads, (h // sh) * (w // sw), sh * sw, c // heads)


def unblock(t: torch.Tensor, size: tuple[int, int], hw: tuple[int, int]) -> torch.Tensor:
    """Inverse of `block`: (B, heads, n, r, d) -> (B, heads*d, H, W)."""
    b, heads, n, r, d = t.shape
    h, w = hw
    sh, sw = size
    if h % sh or w % sw or n != (h // sh) * (w // sw) or r != sh * sw:
        raise ValueError(f"unblock: {n} blocks of {r} offsets do not tile {h}x{w} with "
                         f"{sh}x{sw} blocks")
    t = t.reshape(b, heads, h // sh, w // sw, sh, sw, d)
    # (b, heads, nH, nW, sh, sw, d) -> (b, heads, d, nH, sh, nW, sw)
    return t.permute(0, 1, 6, 2, 4, 3, 5).reshape(b, heads * d, h, w)
