import warnings

import numpy as np
import pytest
import torch

from sparsegen import judge
from sparsegen.metrics import MetricContext, get, perceptual
from sparsegen.metrics.registry import import_needing_torchvision
from sparsegen.provenance import sha256_file
from sparsegen.weights import ResolvedWeights, WeightsError

# torchvision AlexNet features[] indices of the five convolutions, in order.
_ALEX_CONVS = (0, 3, 6, 8, 10)


def _reference_lpips(alex_state: dict | None) -> torch.nn.Module:
    """The lpips package itself: heads from its wheel, backbone copied slice by slice."""
    lpips = import_needing_torchvision("lpips")
    torch.manual_seed(perceptual.RANDOM_SEED)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # torchvision: 'pretrained' is deprecated
        model = lpips.LPIPS(net="alex", version="0.1", pnet_rand=True, verbose=False).eval()
    if alex_state is not None:
        with torch.no_grad():
            for k, idx in enumerate(_ALEX_CONVS):
                conv = getattr(getattr(model.net, f"slice{k + 1}"), str(idx))
                conv.weight.copy_(alex_state[f"features.{idx}.weight"])
                conv.bias.copy_(alex_state[f"features.{idx}.bias"])
    return model


def _per_image(model, a, b) -> list[float]:
    with torch.no_grad():
        return [float(model(a[i:i + 1], b[i:i + 1], normalize=True)) for i in range(len(a))]


@pytest.mark.parametrize("net", ["alex", "vgg"])
def test_heads_file_is_the_verified_v01_file(monkeypatch, net):
    path = perceptual.heads_path(net)
    assert sha256_file(path) == perceptual.HEADS_SHA256[net]
    monkeypatch.setitem(perceptual.HEADS_SHA256, net, "0" * 64)
    with pytest.raises(RuntimeError, match=rf"{net}\.pth: LPIPS {net} v0\.1 heads sha256"):
        perceptual.heads_path(net)


def test_lpips_vgg_loads_a_torchvision_vgg16_backbone(tmp_path):
    """The VGG-16 `features.<i>` weights land in lpips' slices (taming's perceptual loss):
    the backbone's first conv equals the file's, and the loss is differentiable in its input."""
    import torchvision

    torch.manual_seed(3)
    state = torchvision.models.vgg16().state_dict()
    path = tmp_path / "vgg16.pth"
    torch.save(state, path)
    model = perceptual.build_lpips(ResolvedWeights("vgg16_torchvision", path, "x"), "vgg")
    assert torch.equal(getattr(model.net.slice1, "0").weight, state["features.0.weight"])
    assert torch.equal(getattr(model.net.slice5, "28").bias, state["features.28.bias"])
    x = torch.rand(1, 3, 32, 32, requires_grad=True)
    model(x * 2 - 1, torch.zeros(1, 3, 32, 32)).sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0


def test_pretrained_backbone_file_matches_lpips_package_per_image(photos64, tmp_path):
    from torchvision.models import alexnet

    torch.manual_seed(7)
    state = alexnet(weights=None).state_dict()  # upstream key format features.<i>.*
    path = tmp_path / "alexnet-owt-7be5be79.pth"
    torch.save(state, path)
    w = ResolvedWeights("alexnet_torchvision", path, "7be5be79" + "0" * 56)
    a, b = photos64[:4], photos64[[1, 2, 3, 0]]
    vals = []
    for bs in (1, 4):
        ctx = MetricContext(weights_mode="pretrained", weights_dir=tmp_path, batch_size=bs,
                            pretrained={w.name: w})
        rec = get("lpips_alex")(a, b, ctx)
        vals.append(rec.value)
    ref = _per_image(_reference_lpips(state), a, b)
    np.testing.assert_allclose(rec.per_sample, ref, rtol=1e-5)
    assert vals[0] == pytest.approx(vals[1], rel=1e-6)
    assert not judge.reasons(rec, {}, {}) and rec.extractor_weights["sha256"] == w.sha256
    assert rec.protocol["heads_sha256"] == perceptual.ALEX_HEADS_SHA256
    assert rec.protocol["backbone"] == f"alexnet_torchvision:sha256:{w.sha256}"
    same = get("lpips_alex")(a, a, ctx)
    assert same.value == pytest.approx(0, abs=1e-7)


def test_random_backbone_is_seeded_and_non_comparable(photos64, ctx_random, tmp_path):
    a, b = photos64[:3], photos64[3:6]
    before = torch.get_rng_state()
    rec = get("lpips_alex")(a, b, ctx_random)
    assert torch.equal(before, torch.get_rng_state())  # the global RNG is left alone
    np.testing.assert_allclose(rec.per_sample, _per_image(_reference_lpips(None), a, b),
                               rtol=1e-5)
    assert get("lpips_alex")(a, b, ctx_random).value == rec.value
    assert "alexnet_torchvision" in judge.reasons(rec, {}, {})[0]
    with pytest.raises(WeightsError, match=r"alexnet-owt-7be5be79\.pth"):
        get("lpips_alex")(a, b, MetricContext(weights_mode="pretrained", weights_dir=tmp_path))
