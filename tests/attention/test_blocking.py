"""Feature blocking (StyA2K Alg. 2): layout, inverse, agreement with F.unfold."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from sparsegen.attention.blocking import block, unblock


@pytest.mark.parametrize(("shape", "size", "heads"), [
    ((2, 8, 8, 8), (4, 4), 1),
    ((1, 16, 12, 8), (4, 2), 4),
    ((3, 6, 6, 9), (3, 3), 2),
    ((1, 4, 5, 7), (5, 7), 1),
])
def test_unblock_inverts_block(shape, size, heads):
    x = torch.randn(shape)
    t = block(x, size, heads)
    b, c, h, w = shape
    assert t.shape == (b, heads, (h // size[0]) * (w // size[1]), size[0] * size[1], c // heads)
    assert torch.equal(unblock(t, size, (h, w)), x)


def test_block_index_and_offset_address_the_right_pixels():
    b, c, h, w, heads, (sh, sw) = 2, 6, 6, 8, 3, (3, 2)
    x = torch.randn(b, c, h, w)
    t = block(x, (sh, sw), heads)
    d, n_w = c // heads, w // sw
    for bi in range(b):
        for ch in range(c):
            for py in range(h):
                for px in range(w):
                    n = (py // sh) * n_w + px // sw  # row-major block index
                    r = (py % sh) * sw + px % sw  # row-major in-block offset
                    assert t[bi, ch // d, n, r, ch % d] == x[bi, ch, py, px]


@pytest.mark.parametrize("s", [2, 4])
def test_matches_algorithm_2_unfold(s):
    """Alg. 2: Y = unfold(X, kernel=s, stride=s).view(b, c, r, n).permute(0, 1, 3, 2)."""
    b, c, h, w = 2, 5, 8, 12
    x = torch.randn(b, c, h, w)
    alg2 = F.unfold(x, kernel_size=s, stride=s).view(b, c, s * s, -1).permute(0, 1, 3, 2)
    ours = block(x, (s, s), 1)[:, 0].permute(0, 3, 1, 2)  # (b, n, r, c) -> (b, c, n, r)
    assert torch.equal(ours, alg2)
    folded = F.fold(alg2.permute(0, 1, 3, 2).reshape(b, c * s * s, -1), (h, w), s, stride=s)
    assert torch.equal(unblock(block(x, (s, s), 1), (s, s), (h, w)), folded)


def test_bad_shapes_raise():
    with pytest.raises(ValueError, match="not divisible into blocks of 3x3"):
        block(torch.randn(1, 4, 8, 8), (3, 3))
    with pytest.raises(ValueError, match="4 channels cannot be split into 3 heads"):
        block(torch.randn(1, 4, 6, 6), (3, 3), heads=3)
    with pytest.raises(ValueError, match="do not tile"):
        unblock(torch.randn(1, 1, 4, 4, 2), (2, 2), (4, 6))
