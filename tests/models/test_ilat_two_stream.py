"""iLAT's two-stream layers (sparsegen.models.ilat.two_stream, Sec. 3.1 Eq. 2-3) against explicit
loops: the pooled mask, the leak region (zero and reflection padding, strides 1 and 2, taming's
asymmetric padding), the two-stream convolution, the masked norms and the masked attention,
and the property they exist for: outside-hole outputs do not depend on hole inputs."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from sparsegen.models.ilat.two_stream import (
    MaskedAttention,
    MaskedGroupNorm,
    TwoStreamConv2d,
    leak_region,
    pool_mask,
)


@pytest.fixture(autouse=True)
def _float64() -> Iterator[None]:
    """Every test of this file in float64; the default restored after it."""
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(previous)


def _mask(side: int, boxes: list[tuple[int, int, int, int]], batch: int = 1) -> torch.Tensor:
    m = torch.zeros(batch, 1, side, side)
    for b, (y0, y1, x0, x1) in enumerate(boxes):
        m[b, 0, y0:y1, x0:x1] = 1
    return m


def _pool_loop(m: np.ndarray, out: int) -> np.ndarray:
    step = m.shape[0] // out
    return np.array([[m[i * step:(i + 1) * step, j * step:(j + 1) * step].max()
                      for j in range(out)] for i in range(out)])


def _leak_loop(m: np.ndarray, k: int, s: int, sides: tuple[int, int, int, int],
               reflect: bool) -> np.ndarray:
    """Output positions whose receptive field holds a hole input, minus the output's pooled
    hole; receptive fields read off the padded coordinates one by one."""
    n = m.shape[0]
    left, right, top, bottom = sides
    rows, cols = (n + top + bottom - k) // s + 1, (n + left + right - k) // s + 1

    def at(i: int, j: int) -> float:
        if reflect:
            i = -i if i < 0 else (2 * (n - 1) - i if i >= n else i)
            j = -j if j < 0 else (2 * (n - 1) - j if j >= n else j)
        return m[i, j] if 0 <= i < n and 0 <= j < n else 0.0

    touched = np.array([[max(at(oy * s - top + a, ox * s - left + b)
                             for a in range(k) for b in range(k))
                         for ox in range(cols)] for oy in range(rows)])
    return touched * (1 - _pool_loop(m, rows))


def test_pool_mask_marks_every_cell_with_a_hole_pixel() -> None:
    m = _mask(16, [(0, 3, 5, 11)])
    for out in (16, 8, 4, 2):
        np.testing.assert_array_equal(pool_mask(m, out)[0, 0].numpy(),
                                      _pool_loop(m[0, 0].numpy(), out))


@pytest.mark.parametrize(("k", "s", "sides", "reflect"), [
    (3, 1, (1, 1, 1, 1), False), (4, 2, (1, 1, 1, 1), False), (3, 2, (0, 1, 0, 1), False),
    (1, 1, (0, 0, 0, 0), False), (5, 1, (2, 2, 2, 2), True)])
def test_leak_region_matches_explicit_receptive_fields(k: int, s: int,
                                                       sides: tuple[int, int, int, int],
                                                       reflect: bool) -> None:
    m = _mask(12, [(0, 4, 6, 12)])
    got = leak_region(m, k, s, sides, "reflect" if reflect else "zeros")[0, 0].numpy()
    want = _leak_loop(m[0, 0].numpy(), k, s, sides, reflect)
    np.testing.assert_array_equal(got, want)
    assert (got.sum() > 0) == (k > 1)  # a ring around the hole, empty for 1x1 (Eq. 2)


@pytest.mark.parametrize(("k", "s", "pad", "mode"), [
    (3, 1, 1, "zeros"), (4, 2, 1, "zeros"), (3, 2, (0, 1, 0, 1), "zeros"), (5, 1, 2, "reflect")])
def test_two_stream_conv_is_eq3_and_blind_to_the_hole(k: int, s: int, pad: int | tuple,
                                                      mode: str) -> None:
    torch.manual_seed(0)
    conv = TwoStreamConv2d(3, 4, k, stride=s, padding=pad, padding_mode=mode)
    x = torch.randn(2, 3, 12, 12)
    m = _mask(12, [(0, 4, 6, 12), (5, 12, 0, 3)], batch=2)
    sides = (pad,) * 4 if isinstance(pad, int) else pad

    def padded(t: torch.Tensor) -> torch.Tensor:
        return F.pad(t, sides, mode="reflect" if mode == "reflect" else "constant")

    full = F.conv2d(padded(x), conv.weight, conv.bias, stride=s)
    masked = F.conv2d(padded(x * (1 - m)), conv.weight, conv.bias, stride=s)
    leak = torch.stack([torch.from_numpy(_leak_loop(m[b, 0].numpy(), k, s, sides,
                                                    mode == "reflect")) for b in range(2)])[:, None]
    out = conv(x, m)
    torch.testing.assert_close(out, torch.where(leak > 0, masked, full), rtol=0, atol=1e-12)
    torch.testing.assert_close(conv(x), full, rtol=0, atol=1e-12)
    x2 = torch.where(m > 0, torch.randn_like(x) * 5, x)
    outside = pool_mask(m, out.shape[-2:]).expand_as(out) == 0
    assert torch.equal(conv(x2, m)[outside], out[outside])
    assert not torch.allclose(F.conv2d(padded(x2), conv.weight, conv.bias, stride=s)[outside],
                              full[outside])  # a plain convolution leaks


@pytest.mark.parametrize(("groups", "channels", "affine"), [(2, 4, True), (4, 4, False)])
def test_masked_norm_takes_outside_statistics_outside(groups: int, channels: int,
                                                      affine: bool) -> None:
    torch.manual_seed(1)
    norm = MaskedGroupNorm(groups, channels, eps=1e-5, affine=affine)
    if affine:
        torch.nn.init.normal_(norm.weight)
        torch.nn.init.normal_(norm.bias)
    x = torch.randn(2, channels, 8, 8)
    m = _mask(16, [(0, 5, 9, 16), (10, 16, 0, 3)], batch=2)  # pixel mask, pooled inside
    out = norm(x, m).detach().numpy()
    hole = pool_mask(m, 8)[:, 0].numpy() > 0
    xs, per = x.numpy(), channels // groups
    for b in range(2):
        for c in range(channels):
            grp = xs[b, (c // per) * per:(c // per + 1) * per]
            w = norm.weight[c].item() if affine else 1.0
            bias = norm.bias[c].item() if affine else 0.0
            for y in range(8):
                for x_ in range(8):
                    vals = grp if hole[b, y, x_] else grp[:, ~hole[b]]
                    want = (xs[b, c, y, x_] - vals.mean()) / np.sqrt(vals.var() + 1e-5)
                    assert abs(out[b, c, y, x_] - (want * w + bias)) < 1e-10
    plain = torch.nn.GroupNorm(groups, channels, eps=1e-5, affine=affine)
    plain.load_state_dict(norm.state_dict())
    torch.testing.assert_close(norm(x), plain(x))
    norm.stats = "whole"
    torch.testing.assert_close(norm(x, m), plain(x))


def _attention_loop(att: MaskedAttention, x: torch.Tensor, hole: np.ndarray) -> np.ndarray:
    """taming's attention with each query's key set written out: outside queries read outside
    keys, hole queries every key."""
    b_, c, h, w = x.shape
    hn = att.norm(x, torch.from_numpy(hole[:, None].astype(float)))
    q, k, v = (f(hn).reshape(b_, c, h * w).detach().numpy() for f in (att.q, att.k, att.v))
    out = np.zeros((b_, c, h * w))
    for b in range(b_):
        flat = hole[b].reshape(-1)
        for i in range(h * w):
            keys = np.arange(h * w) if flat[i] else np.flatnonzero(~flat)
            logits = q[b, :, i] @ k[b][:, keys] / np.sqrt(c)
            p = np.exp(logits - logits.max())
            out[b, :, i] = v[b][:, keys] @ (p / p.sum())
    proj = att.proj_out(torch.from_numpy(out.reshape(b_, c, h, w)))
    return (x + proj).detach().numpy()


def test_masked_attention_hides_hole_keys_from_outside_queries() -> None:
    torch.manual_seed(2)
    att = MaskedAttention(4, MaskedGroupNorm(2, 4, eps=1e-6, affine=True))
    x = torch.randn(2, 4, 4, 4)
    m = _mask(4, [(0, 2, 3, 4), (3, 4, 0, 1)], batch=2)
    out = att(x, m)
    np.testing.assert_allclose(out.detach().numpy(), _attention_loop(att, x, m[:, 0].numpy() > 0),
                               rtol=0, atol=1e-12)
    x2 = torch.where(m > 0, torch.randn_like(x) * 3, x)
    outside = (m == 0).expand_as(out)
    assert torch.equal(att(x2, m)[outside], out[outside])
    att.keys = "all"
    att.norm.stats = "whole"
    torch.testing.assert_close(att(x, m), att(x))  # open attention: the plain block
    assert not torch.allclose(att(x2, m)[outside], att(x, m)[outside])
