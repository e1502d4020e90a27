"""CoCosNet-v2-style PatchMatch matching: the window and the propagation against hand-worked
examples, recovery of a known displacement field, the final attention against a per-query float64
loop, gradients, and the cost (no Hq*Wq x Hk*Wk tensor)."""

from __future__ import annotations

import pytest
import torch
from torch.profiler import ProfilerActivity, profile

from sparsegen.attention.all_to_all import count_scores
from sparsegen.attention.patch_match import (
    PatchMatchAttention,
    _surrogate,
    best_distinct,
    candidate_window,
    propagated_candidates,
)


def _flat(rows: list[int], cols: list[int], width: int) -> list[int]:
    return [r * width + c for r in rows for c in cols]


def test_candidate_window_hand_worked() -> None:
    """8 x 7 key grid, window 4, dilation 2: offsets {-2, 0, 2, 4} per axis, clamped."""
    top1 = torch.tensor([3 * 7 + 2, 0 * 7 + 6])  # (3, 2) inside, (0, 6) top-right corner
    got = candidate_window(top1, (8, 7), window=4, dilation=2)
    assert got.tolist() == [
        [7, 9, 11, 13, 21, 23, 25, 27, 35, 37, 39, 41, 49, 51, 53, 55],  # rows 1,3,5,7 x 0,2,4,6
        [4, 6, 6, 6, 4, 6, 6, 6, 18, 20, 20, 20, 32, 34, 34, 34]]  # rows 0,0,2,4 x 4,6,6,6
    # window 3, dilation 1 at the bottom-left corner (7, 0): rows 6,7,7 x cols 0,0,1
    assert candidate_window(torch.tensor([49]), (8, 7), 3, 1).tolist() == [
        [42, 42, 43, 49, 49, 50, 49, 49, 50]]


def test_propagation_hand_worked() -> None:
    """2 x 3 queries on a 4 x 5 key grid, one candidate each; pool = own, left, right, upper,
    lower neighbour's candidate moved one pixel towards the query (replicate-padded, clamped)."""
    yx = [(1, 4), (1, 2), (0, 4), (3, 0), (2, 2), (3, 4)]  # per query, row-major
    cands = torch.tensor([[[y * 5 + x] for y, x in yx]])
    pool = propagated_candidates(cands, (2, 3), (4, 5))
    assert pool.shape == (1, 6, 5)
    # query (0, 1): own (1,2); left (1,4)->(1,5) clamped (1,4); right (0,4)->(0,3);
    # upper = itself (1,2)->(2,2); lower (2,2)->(1,2)
    assert pool[0, 1].tolist() == [7, 9, 3, 12, 7]
    # query (1, 0): own (3,0); left = itself ->(3,1); right (2,2)->(2,1); upper (1,4)->(2,4);
    # lower = itself ->(2,0)
    assert pool[0, 3].tolist() == [15, 16, 11, 14, 10]
    # query (0, 2): own (0,4); left (1,2)->(1,3); right = itself ->(0,3); upper = itself
    # ->(1,4); lower (3,4)->(2,4)
    assert pool[0, 2].tolist() == [4, 8, 3, 9, 14]


def test_best_distinct_keeps_each_position_once() -> None:
    cands = torch.tensor([[[5, 3, 5, 7, 3, 9]]])
    logits = torch.tensor([[[6.0, 4.0, 6.0, 2.0, 4.0, 0.5]]])
    idx, best = best_distinct(cands, logits, 3)
    assert idx.tolist() == [[[5, 3, 7]]] and best.tolist() == [[[6.0, 4.0, 2.0]]]
    idx, best = best_distinct(torch.tensor([[[2, 2, 2]]]), torch.ones(1, 1, 3), 2)
    assert idx.tolist() == [[[2, 2]]] and best.tolist() == [[[1.0, 1.0]]]  # too few distinct


def _displaced(hq: int, wq: int, hk: int, wk: int, channels: int, seed: int = 0):
    """Distinct unit key vectors; query (y, x) copies the key at (y + 1, x + 2) on the left half
    and (y + 2, x + 3) on the right half (plus a little noise). Returns q, kf, true indices."""
    gen = torch.Generator().manual_seed(seed)
    kf = torch.nn.functional.normalize(torch.randn(1, channels, hk, wk, generator=gen), dim=1)
    y, x = torch.meshgrid(torch.arange(hq), torch.arange(wq), indexing="ij")
    right = (x >= wq // 2).long()
    true = ((y + 1 + right) * wk + x + 2 + right).flatten()
    q = kf.flatten(2)[:, :, true].view(1, channels, hq, wq)
    return q + 0.05 * torch.randn(q.shape, generator=gen), kf, true


def _reflect(t: torch.Tensor, e: torch.Tensor, side: int) -> torch.Tensor:
    """t + e, or t - e where t + e leaves [0, side)."""
    moved = t + e
    return torch.where((moved >= 0) & (moved < side), moved, t - e)


def test_recovers_known_displacement_from_wrong_init() -> None:
    hq, wq, hk, wk = 12, 16, 14, 19
    q, kf, true = _displaced(hq, wq, hk, wk, channels=16)
    gen = torch.Generator().manual_seed(1)
    err = torch.randint(-3, 4, (hq * wq, 2), generator=gen)
    err[(err == 0).all(-1)] = torch.tensor([1, -1])  # every init is wrong
    init_y, init_x = (_reflect(t, e, side) for t, e, side in (
        (true.div(wk, rounding_mode="floor"), err[:, 0], hk), (true.remainder(wk), err[:, 1], wk)))
    init = (init_y * wk + init_x).view(1, -1, 1)
    assert (init[0, :, 0] != true).all()
    in_window = (candidate_window(init[0, :, 0], (hk, wk)) == true[:, None]).any(-1)
    assert in_window.float().mean() < 0.3  # the window alone misses most true matches

    module = PatchMatchAttention(16)
    match = module(q, kf, torch.randn(1, 4, hk, wk), init, scale=10.0)
    found = (match.topk[0, :, 0] == true).float().mean()
    assert found >= 0.98, f"only {found:.3f} of the queries found their true match"


@pytest.fixture
def moving_module() -> PatchMatchAttention:
    """A float64 module whose offset head is non-zero, so the GRU moves candidates."""
    module = PatchMatchAttention(6, k=8, iterations=3).double()
    torch.nn.init.normal_(module.refiner.head[-1].weight, std=0.5)
    torch.nn.init.normal_(module.refiner.head[-1].bias, std=1.0)
    return module


def test_attention_matches_per_query_loop(moving_module: PatchMatchAttention) -> None:
    b, c, cv, hq, wq, hk, wk, scale = 2, 6, 5, 5, 7, 6, 4, 2.5
    q, kf = torch.randn(b, c, hq, wq).double(), torch.randn(b, c, hk, wk).double()
    v, image = torch.randn(b, cv, hk, wk).double(), torch.randn(b, 3, hk, wk).double()
    init = torch.randint(0, hk * wk, (b, hq * wq, 4))
    match = moving_module(q, kf, v, init, scale=scale, image=image)

    assert match.out.shape == (b, cv, hq, wq) and match.warp.shape == (b, 3, hq, wq)
    assert match.topk.shape == (b, hq * wq, 8) and match.kept.shape == (b, hq * wq)
    assert torch.equal(match.conf, torch.ones(b, 1, hq, wq, dtype=q.dtype))
    assert (match.kept == 8).all()
    assert match.topk.min() >= 0 and match.topk.max() < hk * wk
    unmoved = PatchMatchAttention(6, k=8, iterations=3).double()(q, kf, v, init, scale=scale)
    assert not torch.equal(unmoved.topk.sort(-1).values, match.topk.sort(-1).values)

    keys, values, pixels = kf.flatten(2), v.flatten(2), image.flatten(2)
    for bi in range(b):
        for i in range(hq * wq):
            cands = match.topk[bi, i]
            logits = scale * (keys[bi][:, cands].T @ q[bi].flatten(1)[:, i])
            assert (logits[:-1] >= logits[1:]).all()  # ordered by score
            attn = torch.softmax(logits, dim=0)
            torch.testing.assert_close(match.out[bi].flatten(1)[:, i], values[bi][:, cands] @ attn)
            torch.testing.assert_close(match.warp[bi].flatten(1)[:, i], pixels[bi][:, cands] @ attn)


def test_gradients_reach_features_and_gru(moving_module: PatchMatchAttention) -> None:
    q = torch.randn(1, 6, 6, 5, dtype=torch.float64, requires_grad=True)
    kf = torch.randn(1, 6, 7, 8, dtype=torch.float64, requires_grad=True)
    v = torch.randn(1, 4, 7, 8, dtype=torch.float64, requires_grad=True)
    init = torch.randint(0, 56, (1, 30, 1))
    match = moving_module(q, kf, v, init, scale=2.0, image=torch.randn(1, 3, 7, 8).double())
    ((match.out * torch.randn_like(match.out)).sum() + match.warp.square().sum()).backward()
    for name, t in (("q", q), ("kf", kf), ("v", v)):
        assert t.grad is not None and t.grad.abs().sum() > 0, name
    for name, p in moving_module.refiner.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_untrained_head_gets_gradient() -> None:
    """At initialisation the offset head is zero (plain PatchMatch) yet receives a gradient
    through the straight-through term, so training can start moving candidates."""
    module = PatchMatchAttention(6, k=8, iterations=2)
    q, kf, v = torch.randn(1, 6, 6, 5), torch.randn(1, 6, 7, 8), torch.randn(1, 4, 7, 8)
    match = module(q, kf, v, torch.randint(0, 56, (1, 30, 1)), scale=2.0)
    (match.out * torch.randn_like(match.out)).sum().backward()
    assert module.refiner.head[-1].weight.grad.abs().sum() > 0


def test_cost_is_gathered_not_dense() -> None:
    b, c, cv, hq, wq, hk, wk = 1, 4, 4, 40, 36, 38, 42
    module = PatchMatchAttention(c)
    q, kf, v = torch.randn(b, c, hq, wq), torch.randn(b, c, hk, wk), torch.randn(b, cv, hk, wk)
    init = torch.randint(0, hk * wk, (b, hq * wq, 4))
    with count_scores() as counted, profile(activities=[ProfilerActivity.CPU],
                                            profile_memory=True) as prof:
        match = module(q, kf, v, init, scale=5.0, image=torch.randn(b, 3, hk, wk))
        match.out.sum().backward()
    assert match.formed == 5 * 16 + 4 * 5 * 16 + 16 == 416 < hk * wk
    nq = hq * wq
    assert counted.scores == {"patch_match": nq * 416, "patch_match_surrogate": nq * 64}
    assert counted.macs == {"patch_match": nq * (400 * c + 16 * (c + cv + 3)),
                            "patch_match_surrogate": nq * 64 * c}
    largest = max(event.cpu_memory_usage for event in prof.events())
    dense_bytes = hq * wq * hk * wk * 4
    assert 0 < largest < dense_bytes / 3, f"an op allocated {largest} bytes (dense: {dense_bytes})"


def test_no_surrogate_without_gradients() -> None:
    module = PatchMatchAttention(4, k=4, iterations=2)
    q, kf, v = torch.randn(1, 4, 3, 5), torch.randn(1, 4, 6, 4), torch.randn(1, 2, 6, 4)
    with torch.no_grad(), count_scores() as counted:
        match = module(q, kf, v, torch.randint(0, 24, (1, 15, 1)), scale=1.0)
    assert counted.scores == {"patch_match": 15 * match.formed}
    assert match.formed == 5 * 16 + 5 * 4 + 4


def test_surrogate_slope_is_bilinear() -> None:
    """The straight-through term is zero and its gradient is the score's slope across the key
    cell holding the position; at the right border the last cell is used."""
    hk, wk, c, scale = 3, 4, 5, 1.5
    qt, kt = torch.randn(1, 1, c, dtype=torch.float64), torch.randn(1, hk * wk, c).double()

    def s(y: int, x: int) -> torch.Tensor:
        return scale * kt[0, y * wk + x] @ qt[0, 0]

    moved = torch.tensor([[[[1.25, 1.5], [2.0, 3.0]]]], dtype=torch.float64, requires_grad=True)
    term = _surrogate(qt, kt, moved, (hk, wk), scale, chunk=2)
    assert term.abs().max() == 0
    term.sum().backward()
    expected = torch.stack([
        torch.stack([0.5 * (s(2, 1) - s(1, 1)) + 0.5 * (s(2, 2) - s(1, 2)),  # d/dy at (1.25, 1.5)
                     0.75 * (s(1, 2) - s(1, 1)) + 0.25 * (s(2, 2) - s(2, 1))]),  # d/dx
        torch.stack([s(2, 3) - s(1, 3), s(2, 3) - s(2, 2)])])  # corner (2, 3): last cells
    torch.testing.assert_close(moved.grad[0, 0], expected)


@pytest.mark.parametrize(("init", "message"), [
    (torch.full((1, 12, 1), 20), r"init must be int64 flat key indices in \[0, 20\)"),
    (torch.zeros(1, 11, 1, dtype=torch.long), r"init has shape \(1, 11, 1\)"),
])
def test_rejects_bad_init(init: torch.Tensor, message: str) -> None:
    module = PatchMatchAttention(2)
    with pytest.raises(ValueError, match=message):
        module(torch.randn(1, 2, 3, 4), torch.randn(1, 2, 4, 5), torch.randn(1, 1, 4, 5), init,
               scale=1.0)
