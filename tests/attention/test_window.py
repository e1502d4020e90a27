"""StyleSwin's window / shifted-window attention (the StyleNAT baseline, Sec. 2.2.2) against a
per-pixel reference, the shift mask, and the split-head module's layout."""

from __future__ import annotations

import pytest
import torch

from sparsegen.attention.window import SwinSplitAttention, window_attention


def region(p: int, side: int, window: int, shift: int) -> int:
    """Swin's region of a position of the rolled map: [0, side-w), [side-w, side-shift), rest."""
    return 0 if p < side - window else 1 if p < side - shift else 2


def reference(q, k, v, window, shift, rpb=None):
    """Per query pixel (original coordinates): roll the map by -shift, attend to the pixels of its
    window (rpb at key-minus-query + w-1; -100 on keys of another region when shifted)."""
    h, w, dim = q.shape[1], q.shape[2], q.shape[4]
    out = torch.zeros_like(v)
    for y in range(h):
        for x in range(w):
            ry, rx = (y - shift) % h, (x - shift) % w  # position on the rolled map
            ty, tx = ry // window * window, rx // window * window
            logits, values = [], []
            for ky in range(ty, ty + window):
                for kx in range(tx, tx + window):
                    oy, ox = (ky + shift) % h, (kx + shift) % w  # original position
                    logit = torch.einsum("bhd,bhd->bh", q[:, y, x] * dim ** -0.5, k[:, oy, ox])
                    if rpb is not None:
                        logit = logit + rpb[:, ky - ry + window - 1, kx - rx + window - 1]
                    if shift and (region(ky, h, window, shift), region(kx, w, window, shift)) != (
                            region(ry, h, window, shift), region(rx, w, window, shift)):
                        logit = logit - 100.0
                    logits.append(logit)
                    values.append(v[:, oy, ox])
            weights = torch.stack(logits, -1).softmax(-1)
            out[:, y, x] = torch.einsum("bhn,nbhd->bhd", weights, torch.stack(values))
    return out


def _qkv(h, w, heads=2, dim=4, seed=0):
    gen = torch.Generator().manual_seed(seed)
    return (torch.randn(2, h, w, heads, dim, generator=gen, dtype=torch.float64)
            for _ in range(3))


@pytest.mark.parametrize(("h", "w", "window", "shift"),
                         [(8, 8, 4, 0), (8, 8, 4, 2), (8, 12, 4, 2), (6, 6, 3, 1), (4, 4, 4, 0)])
def test_window_attention_matches_reference(h, w, window, shift):
    q, k, v = _qkv(h, w)
    rpb = torch.randn(2, 2 * window - 1, 2 * window - 1, dtype=torch.float64)
    for bias in (None, rpb):
        out = window_attention(q, k, v, window, shift, bias)
        assert torch.allclose(out, reference(q, k, v, window, shift, bias), atol=1e-12)


def test_shift_mask_blocks_attention_across_regions():
    """q = k = 0: uniform weights over the allowed keys. After the roll by -2 the pixels at the
    bottom-right corner (6..7) and those at the top-left (0..1) share a window but not a region,
    so neither attends to the other; v = one-hot positions reads the weights back."""
    q = k = torch.zeros(1, 8, 8, 1, 1, dtype=torch.float64)
    v = torch.eye(64, dtype=torch.float64).view(1, 8, 8, 1, 64)
    out = window_attention(q, k, v, 4, 2)[0, :, :, 0].view(8, 8, 8, 8)
    corner = torch.zeros(8, 8, dtype=torch.float64)
    corner[6:, 6:] = 0.25
    assert torch.allclose(out[7, 7], corner, atol=1e-30)
    wrapped = torch.zeros(8, 8, dtype=torch.float64)
    wrapped[:2, :2] = 0.25
    assert torch.allclose(out[0, 0], wrapped, atol=1e-30)
    middle = torch.zeros(8, 8, dtype=torch.float64)
    middle[2:6, 2:6] = 1 / 16  # a window of the rolled map that wraps nothing: no mask
    assert torch.allclose(out[3, 4], middle)


def test_split_module_halves_and_layout():
    torch.manual_seed(0)
    m = SwinSplitAttention(16, 4, 4).double()
    assert [tuple(t.shape) for t in m.rpb] == [(2, 7, 7), (2, 7, 7)]
    assert sum(p.numel() for p in m.parameters()) == 4 * 16 * 16 + 4 * 16 + 2 * 2 * 7 * 7
    x = torch.randn(2, 8, 8, 16, dtype=torch.float64)
    q, k, v = m.qkv(x).view(2, 8, 8, 3, 4, 4).unbind(3)
    first = reference(q[..., :2, :], k[..., :2, :], v[..., :2, :], 4, 0, m.rpb[0])
    second = reference(q[..., 2:, :], k[..., 2:, :], v[..., 2:, :], 4, 2, m.rpb[1])
    expected = m.proj(torch.cat([first, second], dim=3).reshape(2, 8, 8, 16))
    assert torch.allclose(m(x), expected, atol=1e-12)


def test_map_not_larger_than_the_window_is_one_unshifted_window():
    """StyleSwin: side <= window -> window = side, no shift (the table's centre is used)."""
    m = SwinSplitAttention(16, 4, 8).double()
    assert m.window_and_shift(8, 8) == (8, 0) and m.window_and_shift(4, 4) == (4, 0)
    assert m.window_and_shift(16, 16) == (8, 4)
    x = torch.randn(1, 4, 4, 16, dtype=torch.float64)
    q, k, v = m.qkv(x).view(1, 4, 4, 3, 4, 4).unbind(3)
    centre = [t[:, 4:11, 4:11] for t in m.rpb]
    halves = [reference(q[..., s, :], k[..., s, :], v[..., s, :], 4, 0, c)
              for s, c in zip((slice(0, 2), slice(2, 4)), centre, strict=True)]
    assert torch.allclose(m(x), m.proj(torch.cat(halves, dim=3).reshape(1, 4, 4, 16)),
                          atol=1e-12)


@pytest.mark.parametrize(("args", "message"), [
    ((16, 3, 4), r"num_heads 3 must be even and divide dim 16"),
    ((16, 4, 0), r"window_size 0 must be >= 1"),
])
def test_bad_module_arguments_are_named(args, message):
    with pytest.raises(ValueError, match=message):
        SwinSplitAttention(*args)


def test_bad_call_arguments_are_named():
    q, k, v = _qkv(8, 12)
    with pytest.raises(ValueError, match=r"window 5 does not tile the 8x12 map"):
        window_attention(q, k, v, 5)
    with pytest.raises(ValueError, match=r"shift 4 must lie in \[0, window 4\)"):
        window_attention(q, k, v, 4, 4)
    with pytest.raises(ValueError, match=r"rpb has shape \(2, 5, 5\), expected"):
        window_attention(q, k, v, 4, 2, torch.zeros(2, 5, 5, dtype=torch.float64))
