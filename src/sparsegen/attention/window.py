"""StyleSwin's split-head window attention, the baseline of StyleNAT Sec. 2.2.2 and 3.2: half of the
heads run window attention (W-MSA), the other half shifted-window attention (SW-MSA: the map is
rolled by -window//2, attention inside windows with Swin's mask between regions that the cyclic
shift made adjacent, rolled back). Each half has its own relative-position-bias table.

Layout as in `neighborhood.py`: q, k, v heads-last [B, H, W, heads, D]; the bias table is
[heads, 2w-1, 2w-1] indexed by the key-minus-query offset + w-1 per axis (StyleSwin stores the
same numbers as a [(2w-1)^2, heads] table indexed by query minus key: a relabelling, with the
same parameter count)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from sparsegen.attention.tensor_cache import tensor_cache

SHIFT_MASK = -100.0  # StyleSwin's additive logit between cyclic-shift regions (not -inf)


def window_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, window: int,
                     shift: int = 0, rpb: torch.Tensor | None = None, *,
                     scale: float | None = None) -> torch.Tensor:
    """Attention inside non-overlapping window x window tiles of the map rolled by -shift
    (shift > 0: Swin's mask between regions; the output is rolled back): [B, H, W, heads, D].
    rpb: [heads, 2*window-1, 2*window-1] or None; scale defaults to D ** -0.5."""
    if q.dim() != 5 or k.shape != q.shape or v.shape[:-1] != q.shape[:-1]:
        raise ValueError(f"window_attention: q, k, v must be [B, H, W, heads, D] of one shape, "
                         f"got {tuple(q.shape)}, {tuple(k.shape)}, {tuple(v.shape)}")
    h, w, heads = q.shape[1:4]
    if window < 1 or h % window or w % window:
        raise ValueError(f"window_attention: window {window} does not tile the {h}x{w} map")
    if not 0 <= shift < window:
        raise ValueError(f"window_attention: shift {shift} must lie in [0, window {window})")
    if rpb is not None and tuple(rpb.shape) != (heads, 2 * window - 1, 2 * window - 1):
        raise ValueError(f"window_attention: rpb has shape {tuple(rpb.shape)}, expected "
                         f"[heads, 2w-1, 2w-1] = {[heads, 2 * window - 1, 2 * window - 1]}")
    if shift:
        q, k, v = (t.roll((-shift, -shift), dims=(1, 2)) for t in (q, k, v))
    tiles = (h // window) * (w // window)
    bias = None
    if rpb is not None:
        index = _relative_index(window, q.device)
        bias = rpb.flatten(1)[:, index].unsqueeze(0).expand(tiles, -1, -1, -1)  # [n, heads, L, L]
    if shift:
        mask = _shift_mask(h, w, window, shift, q.device).unsqueeze(1)
        bias = mask if bias is None else bias + mask
    if bias is not None:
        bias = bias.expand(tiles, heads, window * window, window * window).flatten(0, 1)
        bias = bias[None].to(q.dtype)
    out = F.scaled_dot_product_attention(_tiles(q, window), _tiles(k, window), _tiles(v, window),
                                         attn_mask=bias, scale=scale)
    out = _untiles(out, h, w, heads, window)
    return out.roll((shift, shift), dims=(1, 2)) if shift else out


def _tiles(t: torch.Tensor, window: int) -> torch.Tensor:
    """[B, H, W, heads, D] -> [B, tiles * heads, window^2, D] (tiles row-major, then heads)."""
    b, h, w, heads, dim = t.shape
    t = t.view(b, h // window, window, w // window, window, heads, dim)
    return t.permute(0, 1, 3, 5, 2, 4, 6).reshape(b, -1, window * window, dim)


def _untiles(t: torch.Tensor, h: int, w: int, heads: int, window: int) -> torch.Tensor:
    t = t.view(t.shape[0], h // window, w // window, heads, window, window, t.shape[-1])
    return t.permute(0, 1, 4, 2, 5, 3, 6).reshape(t.shape[0], h, w, heads, -1)


@tensor_cache(maxsize=64)
def _relative_index(window: int, device: torch.device) -> torch.Tensor:
    """[L, L] (L = window^2, row-major): flattened table entry of key j seen from query i."""
    y, x = torch.meshgrid(torch.arange(window), torch.arange(window), indexing="ij")
    y, x = y.flatten(), x.flatten()
    dy = y[None, :] - y[:, None] + window - 1
    dx = x[None, :] - x[:, None] + window - 1
    return (dy * (2 * window - 1) + dx).to(device)


@tensor_cache(maxsize=64)
def _shift_mask(h: int, w: int, window: int, shift: int, device: torch.device) -> torch.Tensor:
    """[tiles, L, L]: 0 within one region of the rolled map, SHIFT_MASK across regions. Regions
    per axis: [0, side-window), [side-window, side-shift), [side-shift, side)."""

    def regions(side: int) -> torch.Tensor:
        pos = torch.arange(side)
        return (pos >= side - window).long() + (pos >= side - shift).long()

    label = (regions(h)[:, None] * 3 + regions(w)[None, :])[..., None, None].float()
    label = _tiles(label[None], window)[0, :, :, 0]  # [tiles, L]
    mask = torch.zeros(label.shape[0], label.shape[1], label.shape[1])
    mask[label[:, :, None] != label[:, None, :]] = SHIFT_MASK
    return mask.to(device)


class SwinSplitAttention(nn.Module):
    """x [B, H, W, C] -> [B, H, W, C]: qkv, the first num_heads/2 heads window attention, the
    other half shifted-window attention (shift window//2), concat, proj (StyleSwin's double
    attention). A map whose side is at most the window is one window without shift (StyleSwin);
    if that side is below window_size, the centre of each bias table is used."""

    def __init__(self, dim: int, num_heads: int, window_size: int, qkv_bias: bool = True
                 ) -> None:
        super().__init__()
        if num_heads < 2 or num_heads % 2 or dim % num_heads:
            raise ValueError(f"SwinSplitAttention: num_heads {num_heads} must be even and divide "
                             f"dim {dim}")
        if window_size < 1:
            raise ValueError(f"SwinSplitAttention: window_size {window_size} must be >= 1")
        self.num_heads, self.head_dim, self.window_size = num_heads, dim // num_heads, window_size
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        side = 2 * window_size - 1
        self.rpb = nn.ParameterList(nn.Parameter(torch.empty(num_heads // 2, side, side))
                                    for _ in range(2))
        for table in self.rpb:
            nn.init.trunc_normal_(table, std=0.02, a=-2.0, b=2.0)
        self.proj = nn.Linear(dim, dim)

    def window_and_shift(self, h: int, w: int) -> tuple[int, int]:
        """(window, shift) used on an h x w map."""
        if min(h, w) <= self.window_size:
            return min(h, w), 0
        return self.window_size, self.window_size // 2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, h, w, c = x.shape
        if c != self.num_heads * self.head_dim:
            raise ValueError(f"SwinSplitAttention: x must be [B, H, W, "
                             f"{self.num_heads * self.head_dim}], got shape {tuple(x.shape)}")
        window, shift = self.window_and_shift(h, w)
        crop = self.window_size - window
        tables = [t[:, crop:t.shape[1] - crop, crop:t.shape[2] - crop] for t in self.rpb]
        q, k, v = self.qkv(x).unflatten(-1, (3, self.num_heads, self.head_dim)).unbind(3)
        halves = [t.chunk(2, dim=3) for t in (q, k, v)]
        out = [window_attention(*(t[i] for t in halves), window, s, tables[i])
               for i, s in enumerate((0, shift))]
        return self.proj(torch.cat(out, dim=3).reshape(b, h, w, c))
