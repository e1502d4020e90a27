"""Hydra neighbourhood attention (StyleNAT Sec. 3.2, Fig. 2, Appendix B): head partitions, their
biases, the forward pass against per-partition neighbourhood attention and against dense MHSA."""

from __future__ import annotations

import pytest
import torch

from sparsegen.attention.hydra import HydraNeighborhoodAttention, head_splits
from sparsegen.attention.neighborhood import neighborhood_attention


@pytest.mark.parametrize(("heads", "partitions", "expected"), [
    (10, 4, [2, 2, 3, 3]), (16, 2, [8, 8]), (8, 3, [2, 3, 3]), (4, 4, [1, 1, 1, 1]), (5, 1, [5])])
def test_head_splits_give_the_remainder_to_the_last_partitions(heads, partitions, expected):
    assert head_splits(heads, partitions) == expected


def test_more_partitions_than_heads_is_rejected():
    with pytest.raises(ValueError, match=r"5 partitions need 1 <= partitions <= num_heads \(4\)"):
        HydraNeighborhoodAttention(16, 4, [3] * 5, [1] * 5)


def test_parameters_and_bias_tables():
    m = HydraNeighborhoodAttention(40, 10, [3, 3, 5, 3], [1, 2, 1, 3])
    assert m.head_splits == [2, 2, 3, 3]
    assert [tuple(t.shape) for t in m.rpb] == [(2, 5, 5), (2, 5, 5), (3, 9, 9), (3, 5, 5)]
    assert (m.qkv.in_features, m.qkv.out_features, m.proj.in_features) == (40, 120, 40)
    assert m.scale == 4 ** -0.5
    tables = torch.cat([t.detach().flatten() for t in m.rpb])
    assert 0.01 < float(tables.std()) < 0.03 and float(tables.abs().max()) <= 2.0


def test_single_kernel_or_dilation_is_shared_by_all_partitions():
    m = HydraNeighborhoodAttention(16, 4, [5], [1, 2])
    assert m.kernel_sizes == [5, 5] and m.dilations == [1, 2]
    with pytest.raises(ValueError, match=r"kernel_sizes \[3, 5\] and dilations \[1, 2, 4\]"):
        HydraNeighborhoodAttention(16, 4, [3, 5], [1, 2, 4])


def test_natten_backend_is_rejected_for_its_missing_bias():
    with pytest.raises(ValueError, match="backend 'natten' is not one of"):
        HydraNeighborhoodAttention(16, 4, [3], [1], backend="natten")


def test_forward_is_per_partition_neighborhood_attention_through_proj():
    """Uneven partitions (7 heads in 3: [2, 2, 3]), each with its kernel, dilation and table."""
    torch.manual_seed(0)
    m = HydraNeighborhoodAttention(28, 7, [3, 5, 3], [1, 1, 3]).double().eval()
    x = torch.randn(2, 9, 10, 28, dtype=torch.float64)
    qkv = m.qkv(x).view(2, 9, 10, 3, 7, 4)
    parts, start = [], 0
    for n, kernel, dilation, rpb in zip([2, 2, 3], [3, 5, 3], [1, 1, 3], m.rpb, strict=True):
        q, k, v = (qkv[:, :, :, i, start:start + n] for i in range(3))
        parts.append(neighborhood_attention(q, k, v, kernel, dilation, rpb, backend="torch"))
        start += n
    expected = m.proj(torch.cat(parts, dim=3).reshape(2, 9, 10, 28))
    assert torch.allclose(m(x), expected, atol=1e-12)


def test_kernel_equal_to_side_is_full_attention_with_bias():
    """The 4x4 level: kernel 4 on a 4x4 map is MHSA with a (heads, 7, 7) key-minus-query table."""
    torch.manual_seed(0)
    m = HydraNeighborhoodAttention(16, 4, [4], [1]).double()
    assert tuple(m.rpb[0].shape) == (4, 7, 7)
    x = torch.randn(2, 4, 4, 16, dtype=torch.float64)
    q, k, v = m.qkv(x).view(2, 16, 3, 4, 4).unbind(2)  # [B, N, heads, D]
    ys, xs = torch.arange(16) // 4, torch.arange(16) % 4
    bias = m.rpb[0][:, ys[None, :] - ys[:, None] + 3, xs[None, :] - xs[:, None] + 3]
    logits = torch.einsum("bqhd,bkhd->bhqk", q * 0.5, k) + bias
    dense = torch.einsum("bhqk,bkhd->bqhd", logits.softmax(-1), v).reshape(2, 4, 4, 16)
    assert torch.allclose(m(x), m.proj(dense), atol=1e-12)


def test_gradients_reach_every_bias_table():
    m = HydraNeighborhoodAttention(16, 4, [3, 3], [1, 2])
    m(torch.randn(1, 8, 8, 16)).square().sum().backward()
    assert all(t.grad is not None and t.grad.abs().sum() > 0 for t in m.rpb)


def test_attention_dropout_acts_in_training_only():
    m = HydraNeighborhoodAttention(16, 4, [3], [1, 2], attn_drop=1.0)
    x = torch.randn(1, 8, 8, 16)
    assert torch.allclose(m.train()(x), m.proj.bias.expand(1, 8, 8, 16))
    assert not torch.allclose(m.eval()(x), m.proj.bias.expand(1, 8, 8, 16))


def test_attention_map_per_head():
    """Each head's map sums to 1 over its partition's k*k window (dilated for the second)."""
    torch.manual_seed(0)
    m = HydraNeighborhoodAttention(16, 4, [3], [1, 3])
    maps = m.attention_map(torch.randn(1, 9, 9, 16), (4, 4))
    assert maps.shape == (4, 9, 9)
    assert torch.allclose(maps.sum((1, 2)), torch.ones(4))
    local = torch.zeros(9, 9, dtype=torch.bool)
    local[3:6, 3:6] = True
    dilated = torch.zeros(9, 9, dtype=torch.bool)
    dilated[1::3, 1::3] = True
    assert torch.equal(maps[:2] > 0, local.expand(2, 9, 9))
    assert torch.equal(maps[2:] > 0, dilated.expand(2, 9, 9))
    with pytest.raises(ValueError, match=r"one map \[1, H, W, C\], got shape \(2, 9, 9, 16\)"):
        m.attention_map(torch.randn(2, 9, 9, 16), (4, 4))


def test_bad_input_width_is_named():
    m = HydraNeighborhoodAttention(16, 4, [3], [1])
    with pytest.raises(ValueError, match=r"x must be \[B, H, W, 16\], got shape \(1, 8, 8, 12\)"):
        m(torch.randn(1, 8, 8, 12))
