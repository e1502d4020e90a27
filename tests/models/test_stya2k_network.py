"""StyA2K network: shapes, Table 3 decoder, peers, interpolation and multi-style transfer."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from sparsegen.attention.all_to_all import AllToAllAttention
from sparsegen.attention.all_to_key import AllToKeyAttention
from sparsegen.models.stya2k.network import TRANSFER_LAYERS, Decoder, build_network
from sparsegen.models.stya2k.transforms import AdaAttN, AdaAttNDense, AdaIN


@pytest.fixture
def net(settings):
    torch.manual_seed(0)
    return build_network(settings).eval()


def _images(b: int, h: int, w: int | None = None) -> torch.Tensor:
    return torch.rand(b, 3, h, w or h)


def test_decoder_is_table_3():
    convs = [(m.in_channels, m.out_channels, m.kernel_size) for m in Decoder().modules()
             if isinstance(m, nn.Conv2d)]
    assert convs == [(512, 512, (3, 3)), (512, 256, (3, 3)),
                     (512, 256, (3, 3)), (256, 256, (3, 3)), (256, 256, (3, 3)),
                     (256, 128, (3, 3)), (128, 128, (3, 3)), (128, 64, (3, 3)),
                     (64, 64, (3, 3)), (64, 3, (3, 3))]
    layers = list(Decoder().modules())
    assert isinstance(layers[-1], nn.Conv2d)  # no output activation
    relus = sum(isinstance(m, nn.ReLU) for m in layers)
    assert relus == 9  # every conv but the last, the F^5 conv included (Table 3)
    feats = {"relu3_1": torch.randn(1, 256, 8, 8), "relu4_1": torch.randn(1, 512, 4, 4),
             "relu5_1": torch.randn(1, 512, 2, 2)}
    assert Decoder()(feats).shape == (1, 3, 32, 32)


def test_stylize_shapes_and_sizes(net):
    out = net.stylize(_images(2, 64), _images(2, 128, 64))
    assert out.shape == (2, 3, 64, 64)
    assert out.shape == net.stylize(_images(2, 64), _images(2, 64)).shape


def test_indivisible_size_names_the_layer(net):
    with pytest.raises(ValueError, match=r"relu3_1: content feature height 20 is not divisible "
                                         r"by the block size 8 pixels"):
        net.stylize(_images(1, 80, 64), _images(1, 64))


def test_encoder_frozen_and_not_part_of_checkpoint(net, settings):
    assert all(not p.requires_grad for p in net.encoder.parameters())
    assert set(net.transform) == set(TRANSFER_LAYERS)
    assert all(isinstance(m, AllToKeyAttention) for m in net.transform.values())
    # A2K modules: 8 convs of C x C per layer
    n = sum(p.numel() for p in net.transform.parameters())
    assert n == sum(8 * (c * c + c) for c in (256, 512, 512))
    again = build_network(settings)
    for a, b in zip(net.parameters(), again.parameters(), strict=True):
        assert torch.equal(a, b)  # initialisation is a function of settings["seed"]


@pytest.mark.parametrize(("transform", "cls"), [("adain", AdaIN), ("adaattn", AdaAttN),
                                                ("adaattn_dense", AdaAttNDense),
                                                ("all_to_all", AllToAllAttention)])
def test_peers_run_on_the_same_encoder_decoder(settings, transform, cls):
    s = copy.deepcopy(settings)
    s["model"]["transform"] = transform
    peer = build_network(s)
    assert all(isinstance(m, cls) for m in peer.transform.values())
    assert peer.stylize(_images(1, 64), _images(1, 64, 128)).shape == (1, 3, 64, 64)


def test_ablation_flags_reach_the_modules(settings):
    s = copy.deepcopy(settings)
    s["model"].update(distributed=False, heads=1, da_form="aggregated")
    m = build_network(s).transform["relu4_1"]
    assert m.da is None and m.pa is not None and m.spec.heads == 1
    assert m.spec.block == settings["model"]["block_sizes"]["relu4_1"]


def test_interpolation_and_multi_style(net):
    content, s1, s2 = _images(1, 64), _images(1, 64), _images(1, 64)
    with torch.no_grad():
        single = net.stylize(content, s1)
        assert torch.allclose(net.stylize_interpolated(content, [s1, s2], [1.0, 0.0]), single,
                              atol=1e-6)
        half = net.stylize_interpolated(content, [s1, s2], [0.5, 0.5])
        fc = net.encode(content)
        f1, f2 = net.transfer(fc, net.encode(s1)), net.transfer(fc, net.encode(s2))
        mixed = net.decode({k: 0.5 * f1[k] + 0.5 * f2[k] for k in f1})
        assert torch.allclose(half, mixed, atol=1e-6)

        ones = torch.ones(1, 1, 64, 64)
        assert torch.allclose(net.stylize_multi(content, [s1, s2], [ones, 0 * ones]), single,
                              atol=1e-6)
        left = torch.zeros(1, 1, 64, 64)
        left[..., :32] = 1
        split = net.decode({k: torch.cat([f1[k][..., : f1[k].shape[-1] // 2],
                                          f2[k][..., f2[k].shape[-1] // 2:]], -1) for k in f1})
        assert torch.allclose(net.stylize_multi(content, [s1, s2], [left, 1 - left]), split,
                              atol=1e-6)
    with pytest.raises(ValueError, match="2 styles and 1 weights"):
        net.stylize_interpolated(content, [s1, s2], [1.0])
    with pytest.raises(ValueError, match="masks must be"):
        net.stylize_multi(content, [s1], [torch.ones(1, 64, 64)])


def test_f5_relu_option_selects_the_official_decoder() -> None:
    """Table 3's ReLU after the F5 conv, or none (the official merge_conv): with the same
    weights the two decoders differ exactly where the F5 conv's output is negative."""
    import torch

    from sparsegen.models.stya2k.network import Decoder

    paper, official = Decoder(), Decoder(f5_relu=False)
    official.load_state_dict(paper.state_dict())
    assert isinstance(paper.stage5[-1], torch.nn.ReLU)
    assert not any(isinstance(m, torch.nn.ReLU) for m in official.stage5)
    torch.manual_seed(0)
    feats = {"relu3_1": torch.randn(1, 256, 8, 8), "relu4_1": torch.randn(1, 512, 4, 4),
             "relu5_1": torch.randn(1, 512, 2, 2)}
    with torch.no_grad():
        assert not torch.allclose(paper(feats), official(feats))
        x = paper.stage5[:-1](feats["relu4_1"] + torch.nn.functional.interpolate(
            feats["relu5_1"], size=(4, 4)))
        assert (x < 0).any()
