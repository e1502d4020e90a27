"""Dense attention (Eq. 4-5, 18), the attention primitive, its backends and score counting."""

from __future__ import annotations

import pytest
import torch

from sparsegen.attention.all_to_all import (
    AllToAllAttention,
    attend,
    attend_stats,
    attention_backend,
    count_scores,
    dense_attention,
    dense_stats,
    record_kept,
)
from sparsegen.nets.feature_stats import mean_std, mean_variance_norm


@pytest.mark.parametrize("backend", ["sdpa", "explicit"])
def test_attend_is_unscaled_softmax_attention(backend):
    q, k, v = torch.randn(2, 3, 5, 4), torch.randn(2, 3, 7, 4), torch.randn(2, 3, 7, 6)
    expected = torch.softmax(torch.einsum("bhqd,bhkd->bhqk", q, k), -1) @ v  # no 1/sqrt(d)
    with attention_backend(backend):
        assert torch.allclose(attend(q, k, v), expected, atol=1e-5)


def test_attend_folds_any_leading_axes():
    q, k, v = torch.randn(2, 3, 4, 5, 8), torch.randn(2, 3, 4, 6, 8), torch.randn(2, 3, 4, 6, 2)
    with attention_backend("explicit"):
        expected = attend(q, k, v)
    assert torch.allclose(attend(q, k, v), expected, atol=1e-5)


def test_unknown_backend_raises():
    with pytest.raises(ValueError, match="'flash' is not one of"), attention_backend("flash"):
        pass


@pytest.mark.parametrize("heads", [1, 2])
def test_dense_attention_matches_reference(refs, heads):
    q, k, v = (torch.randn(2, 4, 3, 5, dtype=torch.float64), torch.randn(2, 4, 4, 2,
               dtype=torch.float64), torch.randn(2, 6, 4, 2, dtype=torch.float64))
    assert torch.allclose(dense_attention(q, k, v, heads), refs.dense(q, k, v, heads))
    mean, std = dense_stats(q, k, v, heads)
    ref_mean, ref_std = refs.stats(refs.dense, q, k, v, heads)
    assert torch.allclose(mean, ref_mean) and torch.allclose(std, ref_std)


def test_attend_stats_is_weighted_mean_and_std():
    q, k, v = torch.randn(1, 3, 4), torch.randn(1, 5, 4), torch.randn(1, 5, 2)
    w = torch.softmax(q @ k.transpose(1, 2), -1)[0]  # (3, 5)
    mean, std = attend_stats(q, k, v)
    ref_mean = w @ v[0]
    ref_var = torch.stack([(w[i, :, None] * (v[0] - ref_mean[i]) ** 2).sum(0) for i in range(3)])
    assert torch.allclose(mean[0], ref_mean, atol=1e-6)
    assert torch.allclose(std[0], (ref_var + 1e-5).sqrt(), atol=1e-5)


def test_mean_variance_norm(refs):
    x = torch.randn(2, 3, 5, 6) * 4 + 2
    mean, std = mean_std(x)
    assert torch.allclose(mean[..., 0, 0], x.mean((2, 3)))
    assert torch.allclose(std[..., 0, 0] ** 2, x.flatten(2).var(-1) + 1e-5)
    assert torch.allclose(mean_variance_norm(x), refs.instance_norm(x))


def test_count_scores_counts_logit_entries():
    q, k, v = torch.randn(2, 3, 5, 4), torch.randn(2, 3, 7, 4), torch.randn(2, 3, 7, 6)
    with count_scores() as outer:
        attend(q, k, v)
        with count_scores() as inner:
            attend_stats(q, k, v, kind="other")
    assert outer.scores == {"dense": 2 * 3 * 5 * 7, "other": 2 * 3 * 5 * 7}
    assert inner.scores == {"other": 2 * 3 * 5 * 7}
    assert outer.macs["dense"] == 2 * 3 * 5 * 7 * (4 + 6)
    assert inner.macs["other"] == 2 * 3 * 5 * 7 * (4 + 2 * 6)  # values and their squares
    attend(q, k, v)  # no active counter: nothing recorded, nothing raised
    assert outer.total_scores == 2 * 2 * 3 * 5 * 7


def test_all_to_all_module(refs):
    m = AllToAllAttention(8, heads=2).double()
    c, s = torch.randn(1, 8, 4, 4, dtype=torch.float64), torch.randn(1, 8, 6, 2,
                                                                     dtype=torch.float64)
    q = m.q(refs.instance_norm(c))
    k = m.k(refs.instance_norm(s))
    expected = m.fusion(refs.dense(q, k, m.v(s), 2)) + c
    assert torch.allclose(m(c, s), expected)
    assert sum(p.numel() for p in m.parameters()) == 4 * (8 * 8 + 8)


def test_attend_chunks_many_heads(monkeypatch):
    """Fused kernels cannot take more than 65535 heads; attend splits them into chunks."""
    import sparsegen.attention.all_to_all as a2a

    q, k, v = torch.randn(1, 7, 3, 4), torch.randn(1, 7, 5, 4), torch.randn(1, 7, 5, 2)
    whole = attend(q, k, v)
    monkeypatch.setattr(a2a, "MAX_GRID", 3)
    with count_scores() as counted:
        chunked = attend(q, k, v)
    assert torch.allclose(chunked, whole, atol=1e-6)
    assert counted.scores == {"dense": 7 * 3 * 5}


def test_count_scores_counts_kept_links():
    with count_scores() as outer:
        record_kept("pruned", 3)
        with count_scores() as inner:
            record_kept("pruned", torch.tensor(4))  # a tensor count is read as an int
    assert outer.kept == {"pruned": 7} and inner.kept == {"pruned": 4}
    assert isinstance(outer.kept["pruned"], int)
    record_kept("pruned", 5)  # no active counter: nothing recorded
    assert outer.kept == {"pruned": 7} and outer.scores == {}
