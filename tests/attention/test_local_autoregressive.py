"""iLAT's attention masks (Eq. 7, Fig. 1, Fig. 3(b)) against per-token references built by
explicit loops from the rules, and the pixel-to-token mask."""

from __future__ import annotations

import pytest
import torch

from sparsegen.attention.local_autoregressive import (
    ae_mask,
    causal_mask,
    la_mask,
    token_mask,
)


def _reference(masked: list[bool], n_cond: int, form: str) -> torch.Tensor:
    """Entry by entry: condition rows see condition columns only; target rows see every
    condition column; target-to-target per the form's rule (target position p holds t_{p-1})."""
    n = len(masked)
    size = n_cond + 1 + n
    out = torch.zeros(size, size, dtype=torch.bool)

    def token_masked(p: int) -> bool:  # the token held at target position p (p = 0: t_s)
        return p >= 1 and masked[p - 1]

    def is_causal(p: int) -> bool:  # holds a masked token or predicts one
        return token_masked(p) or (p < n and masked[p])

    for i in range(size):
        for j in range(size):
            if i < n_cond or j < n_cond:
                out[i, j] = j < n_cond
                continue
            p, q = i - n_cond, j - n_cond
            if form == "paper":
                out[i, j] = not is_causal(q) or (is_causal(p) and is_causal(q) and q <= p)
            elif form == "official":
                out[i, j] = not token_masked(q) or (token_masked(p) and q <= p)
            elif form == "causal":
                out[i, j] = q <= p
            else:  # "ae"
                out[i, j] = not token_masked(q)
    return out


def _random_masks(batch: int, n: int, generator: torch.Generator) -> torch.Tensor:
    masked = torch.rand(batch, n, generator=generator) < torch.rand(batch, 1, generator=generator)
    masked[0], masked[1] = False, True  # empty and full holes
    masked[2] = torch.arange(n) == n - 1  # a hole at the last token only
    return masked


@pytest.mark.parametrize("form", ["paper", "official"])
@pytest.mark.parametrize(("n_cond", "n"), [(1, 4), (5, 9), (0, 16)])
def test_la_mask_matches_per_token_reference(form, n_cond, n):
    masked = _random_masks(6, n, torch.Generator().manual_seed(n))
    got = la_mask(masked, n_cond, form)
    assert got.shape == (6, n_cond + 1 + n, n_cond + 1 + n)
    for b in range(6):
        assert torch.equal(got[b], _reference(masked[b].tolist(), n_cond, form))


def test_la_mask_reproduces_fig_3b():
    """Fig. 3(b): 3x3 grid, t1, t2, t5, t7 masked -> t_s, t3, t8 global, t0..t7 others causal;
    global rows see the global tokens only, causal rows the global tokens and the causal ones
    up to themselves. Rows and columns t_s, t0..t8 (the T2T part), written out by hand."""
    masked = torch.zeros(1, 9, dtype=torch.bool)
    masked[0, [1, 2, 5, 7]] = True
    expected = torch.tensor([
        # t_s t0 t1 t2 t3 t4 t5 t6 t7 t8
        [1, 0, 0, 0, 1, 0, 0, 0, 0, 1],  # t_s (global)
        [1, 1, 0, 0, 1, 0, 0, 0, 0, 1],  # t0  (predicts t1)
        [1, 1, 1, 0, 1, 0, 0, 0, 0, 1],  # t1
        [1, 1, 1, 1, 1, 0, 0, 0, 0, 1],  # t2
        [1, 0, 0, 0, 1, 0, 0, 0, 0, 1],  # t3  (global)
        [1, 1, 1, 1, 1, 1, 0, 0, 0, 1],  # t4  (predicts t5)
        [1, 1, 1, 1, 1, 1, 1, 0, 0, 1],  # t5
        [1, 1, 1, 1, 1, 1, 1, 1, 0, 1],  # t6  (predicts t7)
        [1, 1, 1, 1, 1, 1, 1, 1, 1, 1],  # t7
        [1, 0, 0, 0, 1, 0, 0, 0, 0, 1],  # t8  (global)
    ], dtype=torch.bool)
    full = la_mask(masked, n_cond=3)[0]
    assert torch.equal(full[3:, 3:], expected)
    assert full[:3, :3].all() and not full[:3, 3:].any() and full[3:, :3].all()  # Eq. 7


def test_la_mask_never_lets_a_row_see_a_later_masked_token():
    masked = _random_masks(8, 16, torch.Generator().manual_seed(1))
    for form in ("paper", "official"):
        t2t = la_mask(masked, 2, form)[:, 2:, 2:]
        for b, p, q in torch.nonzero(t2t).tolist():
            assert not (q > p and masked[b, q - 1]), (form, b, p, q)


def test_full_hole_is_the_causal_mask_and_empty_hole_sees_everything():
    n_cond, n = 4, 6
    full = torch.ones(1, n, dtype=torch.bool)
    empty = torch.zeros(1, n, dtype=torch.bool)
    assert torch.equal(la_mask(full, n_cond)[0], causal_mask(n_cond, n))
    assert torch.equal(la_mask(full, n_cond, "official")[0], causal_mask(n_cond, n))
    assert la_mask(empty, n_cond)[0, n_cond:].all()
    assert torch.equal(causal_mask(n_cond, n), _reference([True] * n, n_cond, "causal"))


def test_ae_mask_matches_per_token_reference():
    masked = _random_masks(5, 7, torch.Generator().manual_seed(2))
    got = ae_mask(masked, 3)
    for b in range(5):
        assert torch.equal(got[b], _reference(masked[b].tolist(), 3, "ae"))


def test_la_mask_rejects_bad_input():
    with pytest.raises(ValueError, match="la_form 'fig3' is not one of"):
        la_mask(torch.zeros(1, 4, dtype=torch.bool), 1, "fig3")
    with pytest.raises(ValueError, match="masked must be a Bool"):
        la_mask(torch.zeros(1, 4), 1)


def test_token_mask_is_max_pooled_per_cell():
    pixels = torch.zeros(2, 1, 16, 16)
    pixels[0, 0, 5, 9] = 1  # one hole pixel -> cell (1, 2)
    pixels[1, 0, 8:, :4] = 1  # bottom-left block -> cells (2, 0), (3, 0)
    got = token_mask(pixels, 4)
    expected = torch.zeros(2, 16, dtype=torch.bool)
    for b in range(2):
        for cy in range(4):
            for cx in range(4):
                expected[b, cy * 4 + cx] = bool(pixels[b, 0, cy * 4:cy * 4 + 4,
                                                       cx * 4:cx * 4 + 4].max() > 0)
    assert torch.equal(got, expected)
    assert got[0].nonzero().flatten().tolist() == [6]
    with pytest.raises(ValueError, match="divides into grid=5"):
        token_mask(pixels, 5)
