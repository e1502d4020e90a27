"""Multiscale PatchGAN: feature shapes by hand-computed conv arithmetic, layer layout, the
pooling pyramid against a loop reference, and the too-small-input error."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn
from torch.nn.utils import parametrize

from sparsegen.nets.gan_losses import d_hinge, feature_matching, g_hinge
from sparsegen.nets.patchgan import MultiscalePatchGAN, downsample


@pytest.fixture(autouse=True)
def _seeded() -> None:
    torch.manual_seed(0)


def _sides(outputs: list[list[torch.Tensor]]) -> list[list[int]]:
    assert all(f.shape[-1] == f.shape[-2] for feats in outputs for f in feats)
    return [[f.shape[-1] for f in feats] for feats in outputs]


# k=4, padding 2: stride 2 -> floor(n/2)+1, stride 1 -> n+1. Second D sees ceil(n/2).
@pytest.mark.parametrize(("side", "ndf", "expected"), [
    (32, 64, [[17, 9, 5, 6, 7], [9, 5, 3, 4, 5]]),
    (256, 16, [[129, 65, 33, 34, 35], [65, 33, 17, 18, 19]]),
])
def test_feature_shapes_pix2pixhd_padding(side, ndf, expected) -> None:
    disc = MultiscalePatchGAN(5, ndf=ndf)
    outputs = disc(torch.randn(1, 5, side, side))
    assert len(outputs) == 2 and all(len(feats) == 5 for feats in outputs)
    assert _sides(outputs) == expected
    for feats in outputs:
        assert [f.shape[1] for f in feats] == [ndf, 2 * ndf, 4 * ndf, 8 * ndf, 1]


def test_official_dynast_padding_one() -> None:
    """padding 1 (DynaST/CoCosNet): stride 2 -> n/2 for even n, stride 1 -> n-1."""
    disc = MultiscalePatchGAN(3, ndf=8, padding=1)
    assert _sides(disc(torch.randn(1, 3, 64, 64))) == [[32, 16, 8, 7, 6], [16, 8, 4, 3, 2]]
    with pytest.raises(ValueError, match=r"\(32, 32\).*discriminator 1"):
        disc(torch.randn(1, 3, 32, 32))


def test_widths_cap_at_512_and_strides() -> None:
    disc = MultiscalePatchGAN(3, ndf=128, n_layers=5, num_d=1)
    convs = [m for m in disc.modules() if isinstance(m, nn.Conv2d)]
    assert [c.out_channels for c in convs] == [128, 256, 512, 512, 512, 1]
    assert [c.stride[0] for c in convs] == [2, 2, 2, 2, 1, 1]
    assert all(c.kernel_size == (4, 4) and c.padding == (2, 2) for c in convs)


def test_spectral_and_instance_norm_on_inner_convs_only() -> None:
    (d,) = MultiscalePatchGAN(3, num_d=1).discriminators
    first, *inner, last = d.blocks
    assert not parametrize.is_parametrized(first[0]) and first[0].bias is not None
    assert not parametrize.is_parametrized(last[0]) and len(last) == 1
    assert isinstance(first[1], nn.LeakyReLU) and first[1].negative_slope == 0.2
    assert len(inner) == 3
    for conv, norm, act in inner:
        assert parametrize.is_parametrized(conv, "weight") and conv.bias is None
        assert isinstance(norm, nn.InstanceNorm2d) and not norm.affine
        assert isinstance(act, nn.LeakyReLU) and act.negative_slope == 0.2


def _avg_pool_valid(x: np.ndarray) -> np.ndarray:
    """3x3 / stride 2 / padding 1 average over the in-image pixels only (loop reference)."""
    h, w = x.shape[-2:]
    out = np.zeros((*x.shape[:-2], (h - 1) // 2 + 1, (w - 1) // 2 + 1))
    for i in range(out.shape[-2]):
        for j in range(out.shape[-1]):
            rows = [r for r in range(2 * i - 1, 2 * i + 2) if 0 <= r < h]
            cols = [c for c in range(2 * j - 1, 2 * j + 2) if 0 <= c < w]
            out[..., i, j] = x[..., rows, :][..., cols].mean(axis=(-2, -1))
    return out


def test_second_discriminator_sees_the_border_correct_average_pool() -> None:
    x = torch.randn(2, 3, 33, 20, dtype=torch.float64)
    pooled = downsample(x)
    np.testing.assert_allclose(pooled.numpy(), _avg_pool_valid(x.numpy()), rtol=1e-12)
    disc = MultiscalePatchGAN(3, ndf=8, num_d=3).double().eval()
    outputs = disc(x)
    for d, feats in enumerate(outputs):
        expected = disc.discriminators[d](x)
        assert len(feats) == len(expected)
        for f, e in zip(feats, expected, strict=True):
            torch.testing.assert_close(f, e)
        x = torch.from_numpy(_avg_pool_valid(x.numpy()))


def test_output_side_matches_real_shapes_on_odd_sizes() -> None:
    disc = MultiscalePatchGAN(3, ndf=8, num_d=1, padding=1)
    logits = disc(torch.randn(1, 3, 37, 50))[0][-1]
    d = disc.discriminators[0]
    assert tuple(logits.shape[-2:]) == (d.output_side(37), d.output_side(50)) == (2, 4)


def test_losses_train_through_the_discriminator() -> None:
    disc = MultiscalePatchGAN(3, ndf=8)
    real = torch.randn(2, 3, 32, 32)
    fake = torch.randn(2, 3, 32, 32, requires_grad=True)
    real_out, fake_out = disc(real), disc(fake.detach())
    d_hinge(real_out, fake_out).backward()
    for name, p in disc.named_parameters():
        assert p.grad is not None, name
        if name.endswith("blocks.4.0.bias"):
            # every logit inside the margin: d/db = -1 (real term) + 1 (fake term) = 0
            assert all(o[-1].abs().max() < 1 for o in real_out + fake_out)
            assert p.grad.abs().max() < 1e-6, name
        else:
            assert p.grad.abs().sum() > 0, name
    (g_hinge(disc(fake)) + feature_matching(disc(fake), disc(real))).backward()
    assert fake.grad.abs().sum() > 0


def test_nlayer_discriminator_matches_the_pix2pix_arithmetic():
    """Three stride-2 convs, two stride-1 convs (k4, p1): 64 -> 32 -> 16 -> 8 -> 7 -> 6;
    widths 64, 128, 256, 512 then one logit channel; BatchNorm after every inner conv."""
    from sparsegen.nets.patchgan import NLayerDiscriminator

    d = NLayerDiscriminator(3, ndf=64, n_layers=3)
    convs = [m for m in d.modules() if isinstance(m, torch.nn.Conv2d)]
    assert [c.out_channels for c in convs] == [64, 128, 256, 512, 1]
    assert [c.stride[0] for c in convs] == [2, 2, 2, 1, 1]
    assert sum(isinstance(m, torch.nn.BatchNorm2d) for m in d.modules()) == 3
    assert d(torch.randn(2, 3, 64, 64)).shape == (2, 1, 6, 6)
