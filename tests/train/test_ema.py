"""EMA of a network: the exact update formula, buffers copied, a DDP wrapper looked through."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from sparsegen.train.ema import EMA


def _net(seed: int) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4))


def test_update_is_the_ema_formula_on_parameters_and_copies_buffers() -> None:
    net = _net(0)
    ema = EMA(net, decay=0.9)
    start = {k: v.clone() for k, v in ema.module.state_dict().items()}
    assert all(torch.equal(start[k], v) for k, v in net.state_dict().items())
    with torch.no_grad():  # move the source: new weights, new running statistics
        for p in net.parameters():
            p.add_(torch.randn_like(p))
    net.train()(torch.randn(8, 3))
    ema.update(net)
    for name, p in net.named_parameters():
        expected = 0.9 * start[name] + 0.1 * p.detach()
        torch.testing.assert_close(ema.module.state_dict()[name], expected, rtol=0, atol=1e-6)
        assert not torch.allclose(ema.module.state_dict()[name], p)
    for name, b in net.named_buffers():
        assert torch.equal(ema.module.state_dict()[name], b), name
    assert int(ema.module[1].num_batches_tracked) == 1


def test_copy_is_independent_and_frozen() -> None:
    net = _net(1)
    ema = EMA(net, decay=0.5)
    assert all(not p.requires_grad for p in ema.module.parameters())
    assert all(p.requires_grad for p in net.parameters())
    with torch.no_grad():
        net[0].weight.zero_()
    assert not torch.equal(ema.module[0].weight, net[0].weight)


def test_decay_one_keeps_and_zero_copies() -> None:
    net = _net(2)
    keep, copy = EMA(net, 1.0), EMA(net, 0.0)
    before = keep.module[0].weight.clone()
    with torch.no_grad():
        net[0].weight.mul_(3)
    keep.update(net)
    copy.update(net)
    assert torch.equal(keep.module[0].weight, before)
    assert torch.equal(copy.module[0].weight, net[0].weight)


def test_decay_out_of_range_is_an_error() -> None:
    with pytest.raises(ValueError, match="decay"):
        EMA(_net(0), 1.5)
