"""Hinge losses and discriminator feature matching against hand-computed values, in the single
tensor and multiscale (per-discriminator list) forms; Eq. 10's log loss as `d_logistic`."""

from __future__ import annotations

import pytest
import torch

from sparsegen.nets.gan_losses import d_hinge, d_logistic, feature_matching, g_hinge


def _t(*values: float) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.float64)


def test_d_hinge_single_tensor() -> None:
    real = _t(2.0, 0.5, -1.0)    # relu(1 - r) = 0, 0.5, 2    -> mean 2.5 / 3
    fake = _t(-2.0, 0.0, 0.5)    # relu(1 + f) = 0, 1, 1.5    -> mean 2.5 / 3
    assert d_hinge(real, fake).item() == pytest.approx(5 / 3)


def test_g_hinge_single_tensor() -> None:
    assert g_hinge(_t(2.0, -1.0, 0.5, 0.5)).item() == pytest.approx(-0.5)


def test_multiscale_forms_average_per_discriminator_means() -> None:
    """Two discriminators of different sizes: the mean of the per-D means (not of all
    elements pooled); in the feature-list form only the last entry (logits) counts."""
    real = [_t(0.0, 0.0, 0.0, 3.0), _t(-1.0)]   # D0: (1+1+1+0)/4 = 0.75, D1: 2
    fake = [_t(1.0, -3.0, -3.0, -3.0), _t(0.0)]  # D0: (2+0+0+0)/4 = 0.5,  D1: 1
    expected = (0.75 + 2) / 2 + (0.5 + 1) / 2
    assert d_hinge(real, fake).item() == pytest.approx(expected)
    garbage = _t(100.0, -100.0)
    real_feats = [[garbage, r] for r in real]
    fake_feats = [[garbage, garbage, f] for f in fake]
    assert d_hinge(real_feats, fake_feats).item() == pytest.approx(expected)
    assert g_hinge(fake).item() == pytest.approx((2.0 + 0.0) / 2)
    assert g_hinge(fake_feats).item() == pytest.approx(1.0)


def test_feature_matching_excludes_logits_and_divides_by_num_d() -> None:
    ones = torch.ones(2, 3, dtype=torch.float64)
    fake = [[ones.clone().requires_grad_(), 2 * ones, 50 * ones],   # D0: |1-0| = 1, |2-.5| = 1.5
            [-ones, -9 * ones]]                                     # D1: |-1-2| = 3
    real = [[0 * ones, 0.5 * ones, -50 * ones],
            [2 * ones, 9 * ones]]
    real = [[r.requires_grad_() for r in feats] for feats in real]
    loss = feature_matching(fake, real)
    assert loss.item() == pytest.approx((1 + 1.5 + 3) / 2)
    loss.backward()
    assert all(r.grad is None for feats in real for r in feats)  # real side detached
    torch.testing.assert_close(fake[0][0].grad, torch.full_like(ones, 1 / 6 / 2))


def test_feature_matching_rejects_mismatched_outputs() -> None:
    a = torch.zeros(1)
    with pytest.raises(ValueError, match="2 fake vs 1 real"):
        feature_matching([[a, a], [a, a]], [[a, a]])
    with pytest.raises(ValueError, match="discriminator 0 has 3 fake vs 2 real"):
        feature_matching([[a, a, a]], [[a, a]])


def test_eq10_log_loss_is_d_logistic() -> None:
    """Eq. 10 maximises log D(x) + log(1 - D(G)) with D = sigmoid(logits); d_logistic is its
    negative (element means)."""
    real, fake = _t(1.5, -0.3, 0.2), _t(-2.0, 0.7, 0.1)
    objective = torch.log(torch.sigmoid(real)).mean() + torch.log(1 - torch.sigmoid(fake)).mean()
    torch.testing.assert_close(d_logistic(real, fake), -objective)


def test_adaptive_weight_is_the_ratio_of_gradient_norms_at_the_last_layer():
    """lambda = ||d rec / d W|| / (||d g / d W|| + 1e-4) x scale, from hand gradients of
    rec = sum((W x)^2) and g = -sum(3 W x)."""
    from sparsegen.nets.gan_losses import adaptive_weight

    w = torch.tensor([[1.5, -2.0]], requires_grad=True)
    x = torch.tensor([[0.5], [1.0]])
    y = w @ x                                   # scalar -1.25
    rec, g = (y ** 2).sum(), (-3 * y).sum()
    want_rec = 2 * y.detach() * x.T             # d rec / d W
    want_g = -3 * x.T
    want = want_rec.norm() / (want_g.norm() + 1e-4) * 0.8
    got = adaptive_weight(rec, g, w, scale=0.8)
    assert torch.allclose(got, want)
    assert not got.requires_grad
