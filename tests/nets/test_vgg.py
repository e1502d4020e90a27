"""Shared VGG-19 encoder: relu*_2 layers, deeper builds, and CoCosNet's Caffe `vgg19_conv.pth`."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from sparsegen.nets.vgg import LAYERS, RELUS, SECOND_LAYERS, VGGEncoder
from sparsegen.weights import RANDOM_INIT, ResolvedWeights

# VGG-19 conv names and widths, written out (configuration E).
_CONVS = [("conv1_1", 3, 64), ("conv1_2", 64, 64), ("conv2_1", 64, 128), ("conv2_2", 128, 128),
          ("conv3_1", 128, 256), ("conv3_2", 256, 256), ("conv3_3", 256, 256),
          ("conv3_4", 256, 256), ("conv4_1", 256, 512), ("conv4_2", 512, 512),
          ("conv4_3", 512, 512), ("conv4_4", 512, 512), ("conv5_1", 512, 512),
          ("conv5_2", 512, 512), ("conv5_3", 512, 512), ("conv5_4", 512, 512)]


def _random(name: str) -> ResolvedWeights:
    return ResolvedWeights(name, None, RANDOM_INIT)


def _cocosnet_file(path: Path) -> dict[str, torch.Tensor]:
    """A state dict in vgg19_conv.pth's key format, small random weights."""
    gen = torch.Generator().manual_seed(7)
    state = {}
    for name, cin, cout in _CONVS:
        std = (2 / (9 * cin)) ** 0.5
        state[f"{name}.weight"] = torch.randn(cout, cin, 3, 3, generator=gen) * std
        state[f"{name}.bias"] = torch.randn(cout, generator=gen) * 0.1
    torch.save(state, path)
    return state


def _cocosnet_reference(state: dict[str, torch.Tensor], x: torch.Tensor) -> dict[str, torch.Tensor]:
    """CoCosNet's VGG written out: RGB [0, 1] -> BGR, minus the Caffe mean, x255; 3x3 convs with
    zero padding 1, ReLU, 2x2 max-pool after each block."""
    mean_bgr = torch.tensor([0.40760392, 0.45795686, 0.48501961]).view(1, 3, 1, 1)
    h = (x[:, [2, 1, 0]] - mean_bgr) * 255
    out = {}
    for name, _, _ in _CONVS:
        block, idx = name[4], name[6]
        if idx == "1" and block != "1":
            h = F.max_pool2d(h, 2)
        h = F.relu(F.conv2d(h, state[f"{name}.weight"], state[f"{name}.bias"], padding=1))
        out[f"relu{block}_{idx}"] = h
    return out


def test_relu_1_api_is_unchanged_and_deeper_builds_agree():
    enc = VGGEncoder(_random("vgg19_normalised"))
    deep = VGGEncoder(_random("vgg19_normalised"), deepest="relu5_2")
    # AdaIN's Sequential indices: the relu5_1 encoder ends at module 43, relu5_2 at 46.
    assert max(int(k.split(".")[0]) for k in enc.layers.state_dict()) == 42
    assert len(enc.layers) == 44 and len(deep.layers) == 47
    x = torch.rand(2, 3, 40, 40)
    with torch.no_grad():
        a, b = enc(x), deep(x)
        assert list(a) == list(LAYERS) and list(enc(x, upto="relu3_1")) == list(LAYERS[:3])
        for k in LAYERS:  # the same seeded random convs, whatever the depth
            torch.testing.assert_close(a[k], b[k], rtol=0, atol=0)
        second = deep.extract(x, ["relu5_2", *SECOND_LAYERS[:4]])
        assert list(second) == ["relu5_2", *SECOND_LAYERS[:4]]  # order asked
        upto = deep(x, upto="relu5_2")
        assert list(upto) == list(SECOND_LAYERS) and list(deep(x, "relu2_2")) == list(
            SECOND_LAYERS[:2])
        for k in SECOND_LAYERS:
            torch.testing.assert_close(upto[k], second[k], rtol=0, atol=0)
    assert [tuple(second[k].shape[1:]) for k in SECOND_LAYERS] == [
        (64, 40, 40), (128, 20, 20), (256, 10, 10), (512, 5, 5), (512, 3, 3)]  # ceil pooling


def test_layer_errors_name_the_layer():
    enc = VGGEncoder(_random("vgg19_cocosnet"))
    with pytest.raises(ValueError, match=r"\['relu5_2'\] lie beyond relu5_1"):
        enc.extract(torch.rand(1, 3, 32, 32), ["relu1_2", "relu5_2"])
    with pytest.raises(ValueError, match="relu6_1"):
        enc.extract(torch.rand(1, 3, 32, 32), ["relu6_1"])
    with pytest.raises(ValueError, match="relu3_3"):
        enc(torch.rand(1, 3, 32, 32), upto="relu3_3")  # forward: relu<k>_1 or relu<k>_2 sets
    with pytest.raises(ValueError, match="relu9_9"):
        VGGEncoder(_random("vgg19_cocosnet"), deepest="relu9_9")


def test_cocosnet_file_matches_the_caffe_vgg_written_out(tmp_path):
    state = _cocosnet_file(tmp_path / "vgg19_conv.pth")
    w = ResolvedWeights("vgg19_cocosnet", tmp_path / "vgg19_conv.pth", "ab" * 32)
    enc = VGGEncoder(w, deepest="relu5_2")
    assert enc.fingerprint == "vgg19_cocosnet:sha256:" + "ab" * 32
    x = torch.rand(2, 3, 48, 48)
    with torch.no_grad():
        ours = enc.extract(x, [*LAYERS, *SECOND_LAYERS])
        ref = _cocosnet_reference(state, x)
    for k in (*LAYERS, *SECOND_LAYERS):
        torch.testing.assert_close(ours[k], ref[k], rtol=1e-4, atol=1e-3 * ref[k].abs().max())
    assert ours["relu5_2"].shape == (2, 512, 3, 3)  # floor pooling: 48 -> 24 -> 12 -> 6 -> 3


def test_cocosnet_file_with_a_missing_conv_is_refused(tmp_path):
    state = _cocosnet_file(tmp_path / "vgg19_conv.pth")
    del state["conv5_2.bias"]
    torch.save(state, tmp_path / "vgg19_conv.pth")
    w = ResolvedWeights("vgg19_cocosnet", tmp_path / "vgg19_conv.pth", "ab" * 32)
    VGGEncoder(w)  # up to relu5_1 conv5_2 is not read
    with pytest.raises(ValueError, match=r"vgg19_conv\.pth: not a CoCosNet .*'conv5_2\.bias'"):
        VGGEncoder(w, deepest="relu5_2")
    state["conv1_2.weight"] = state["conv1_2.weight"][:32]
    torch.save(state, tmp_path / "vgg19_conv.pth")
    with pytest.raises(ValueError, match=r"conv1_2\.weight has shape \(32, 64, 3, 3\)"):
        VGGEncoder(w)


def test_cocosnet_random_init_is_seeded_zero_padded_and_says_so():
    a = VGGEncoder(_random("vgg19_cocosnet"), deepest="relu5_2")
    b = VGGEncoder(_random("vgg19_cocosnet"), deepest="relu5_2")
    assert a.fingerprint == "vgg19_cocosnet:random-init:kaiming-normal-seed0"
    assert not a.weights.pretrained
    pads = [m for m in a.layers if isinstance(m, nn.ZeroPad2d | nn.ReflectionPad2d)]
    assert len(pads) == 14 and all(isinstance(m, nn.ZeroPad2d) for m in pads)
    assert all(not m.ceil_mode for m in a.layers if isinstance(m, nn.MaxPool2d))
    x = torch.rand(1, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(a.extract(x, ["relu4_2"]), b.extract(x, ["relu4_2"]),
                                   rtol=0, atol=0)


def test_torchvision_second_layers_map_onto_its_features(tmp_path):
    from torchvision.models import vgg

    torch.manual_seed(0)
    features = vgg.make_layers(vgg.cfgs["E"]).eval()  # torchvision VGG-19 `features`
    torch.save({f"features.{k}": v for k, v in features.state_dict().items()},
               tmp_path / "vgg19.pth")
    enc = VGGEncoder(ResolvedWeights("vgg19_torchvision", tmp_path / "vgg19.pth", "t"),
                     deepest="relu5_2")
    x = torch.rand(2, 3, 48, 48)
    xn = (x - torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)) / \
        torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    # torchvision features[] end index of relu1_2, relu2_2, relu3_2, relu4_2, relu5_2
    ends = dict(zip(SECOND_LAYERS, (4, 9, 14, 23, 32), strict=True))
    with torch.no_grad():
        ours = enc.extract(x, SECOND_LAYERS)
        for k, end in ends.items():
            torch.testing.assert_close(ours[k], features[:end](xn), rtol=1e-4, atol=1e-5)


def test_normalised_file_loads_deeper_layers(tmp_path):
    """AdaIN's vgg_normalised.pth holds the whole VGG (modules 0..52): relu5_2 loads from it."""
    full = VGGEncoder(_random("vgg19_normalised"), deepest=RELUS[-1])
    state = {k: v + 0.01 for k, v in full.layers.state_dict().items()}  # not the random init
    torch.save(state, tmp_path / "vgg_normalised.pth")
    enc = VGGEncoder(ResolvedWeights("vgg19_normalised", tmp_path / "vgg_normalised.pth", "n"),
                     deepest="relu5_2")
    for k, v in enc.layers.state_dict().items():
        assert torch.equal(v, state[k]), k
    short = {k: v for k, v in state.items() if int(k.split(".")[0]) < 44}
    torch.save(short, tmp_path / "vgg_normalised.pth")
    VGGEncoder(ResolvedWeights("vgg19_normalised", tmp_path / "vgg_normalised.pth", "n"))
    with pytest.raises(ValueError, match=r"up to relu5_2 \(missing \['45.weight'"):
        VGGEncoder(ResolvedWeights("vgg19_normalised", tmp_path / "vgg_normalised.pth", "n"),
                   deepest="relu5_2")
