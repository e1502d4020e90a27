"""Loop-based reference implementations, written from the paper's definitions in pixel
coordinates (no blocking code shared with the implementation under test)."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch


def _pixels(h: int, w: int) -> list[tuple[int, int]]:
    return [(y, x) for y in range(h) for x in range(w)]


def _weighted(q: torch.Tensor, keys: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
    """softmax over keys (L, d) of q . k, applied to values (L, dv)."""
    return torch.softmax(keys @ q, dim=0) @ values


def dense(q, k, v, heads):
    """Every query pixel attends to every key pixel (Eq. 5), per head."""
    d, dv = q.shape[1] // heads, v.shape[1] // heads
    out = torch.zeros(q.shape[0], v.shape[1], *q.shape[-2:], dtype=q.dtype)
    for b in range(q.shape[0]):
        for h in range(heads):
            keys = k[b, h * d:(h + 1) * d].reshape(d, -1).T
            values = v[b, h * dv:(h + 1) * dv].reshape(dv, -1).T
            for y, x in _pixels(*q.shape[-2:]):
                out[b, h * dv:(h + 1) * dv, y, x] = _weighted(q[b, h * d:(h + 1) * d, y, x],
                                                              keys, values)
    return out


def dilated(q, k, v, s, heads):
    """Eq. 7: the query at in-block offset (y % s, x % s) attends to the style pixels with the
    same offset in every block."""
    d, dv = q.shape[1] // heads, v.shape[1] // heads
    hk, wk = k.shape[-2:]
    out = torch.zeros(q.shape[0], v.shape[1], *q.shape[-2:], dtype=q.dtype)
    for b in range(q.shape[0]):
        for h in range(heads):
            for y, x in _pixels(*q.shape[-2:]):
                pos = [(ky, kx) for ky in range(y % s, hk, s) for kx in range(x % s, wk, s)]
                keys = torch.stack([k[b, h * d:(h + 1) * d, ky, kx] for ky, kx in pos])
                values = torch.stack([v[b, h * dv:(h + 1) * dv, ky, kx] for ky, kx in pos])
                out[b, h * dv:(h + 1) * dv, y, x] = _weighted(q[b, h * d:(h + 1) * d, y, x],
                                                              keys, values)
    return out


def _blocks(h: int, w: int, s: int) -> list[tuple[int, int]]:
    return [(by * s, bx * s) for by in range(h // s) for bx in range(w // s)]


def chosen_blocks(q, k, s, heads):
    """Eq. 8: for each batch, head and query block, the top-left pixel of the key block with
    the highest position-aligned score (first maximum in row-major order)."""
    d = q.shape[1] // heads
    out = {}
    for b in range(q.shape[0]):
        for h in range(heads):
            for qy, qx in _blocks(*q.shape[-2:], s):
                qb = q[b, h * d:(h + 1) * d, qy:qy + s, qx:qx + s]
                scores = torch.stack([(qb * k[b, h * d:(h + 1) * d, ky:ky + s, kx:kx + s]).sum()
                                      for ky, kx in _blocks(*k.shape[-2:], s)])
                out[b, h, qy, qx] = _blocks(*k.shape[-2:], s)[int(scores.argmax())]
    return out


def progressive(q, k, v, s, heads, step1=True):
    """Eq. 8-10: each query attends to the s*s pixels of its block's matched key block (or of
    the same block without step 1)."""
    d, dv = q.shape[1] // heads, v.shape[1] // heads
    match = chosen_blocks(q, k, s, heads) if step1 else None
    out = torch.zeros(q.shape[0], v.shape[1], *q.shape[-2:], dtype=q.dtype)
    for b in range(q.shape[0]):
        for h in range(heads):
            for qy, qx in _blocks(*q.shape[-2:], s):
                ky, kx = match[b, h, qy, qx] if step1 else (qy, qx)
                keys = k[b, h * d:(h + 1) * d, ky:ky + s, kx:kx + s].reshape(d, -1).T
                values = v[b, h * dv:(h + 1) * dv, ky:ky + s, kx:kx + s].reshape(dv, -1).T
                for y, x in _pixels(s, s):
                    out[b, h * dv:(h + 1) * dv, qy + y, qx + x] = _weighted(
                        q[b, h * d:(h + 1) * d, qy + y, qx + x], keys, values)
    return out


def aggregated(q, k, v, s, heads, alpha=1.0, beta=0.0):
    """Official-code DA: per style block, centre k_mean, weights sigmoid(beta + alpha k_mean.k_j),
    summary (sum_j w_j k_j + k_mean) / (r + 1) (same for values); queries attend over summaries."""
    d, dv = q.shape[1] // heads, v.shape[1] // heads
    r = s * s
    out = torch.zeros(q.shape[0], v.shape[1], *q.shape[-2:], dtype=q.dtype)
    for b in range(q.shape[0]):
        for h in range(heads):
            ks, vs = [], []
            for ky, kx in _blocks(*k.shape[-2:], s):
                kb = k[b, h * d:(h + 1) * d, ky:ky + s, kx:kx + s].reshape(d, -1).T
                vb = v[b, h * dv:(h + 1) * dv, ky:ky + s, kx:kx + s].reshape(dv, -1).T
                centre = kb.mean(0)
                wts = torch.sigmoid(beta + alpha * (kb @ centre))
                ks.append(((wts[:, None] * kb).sum(0) + centre) / (r + 1))
                vs.append(((wts[:, None] * vb).sum(0) + vb.mean(0)) / (r + 1))
            keys, values = torch.stack(ks), torch.stack(vs)
            for y, x in _pixels(*q.shape[-2:]):
                out[b, h * dv:(h + 1) * dv, y, x] = _weighted(q[b, h * d:(h + 1) * d, y, x],
                                                              keys, values)
    return out


def stats(attention, q, k, v, *args, **kwargs):
    """Attention-weighted mean and std of v under `attention` (Eq. 18/19), with the 1e-5 under
    the square root that keeps its gradient finite."""
    mean = attention(q, k, v, *args, **kwargs)
    second = attention(q, k, v * v, *args, **kwargs)
    return mean, ((second - mean * mean).clamp_min(0) + 1e-5).sqrt()


def instance_norm(x, eps=1e-5):
    flat = x.flatten(2)
    mean = flat.mean(-1)[..., None, None]
    std = (flat.var(-1, unbiased=True) + eps).sqrt()[..., None, None]
    return (x - mean) / std


@pytest.fixture
def refs() -> SimpleNamespace:
    return SimpleNamespace(dense=dense, dilated=dilated, progressive=progressive,
                           aggregated=aggregated, chosen_blocks=chosen_blocks, stats=stats,
                           instance_norm=instance_norm)


@pytest.fixture(autouse=True)
def _seeded() -> None:
    torch.manual_seed(0)
