"""LPIPS (v0.1) through the `lpips` package, offline: the Alex metric and the VGG network.

StyA2K Sec. 4.2 scores stylised images against their input content images with LPIPS-Alex;
taming's VQGAN (and iLAT's pose tokenizers) train with LPIPS-VGG as the perceptual loss.

The linear heads ship inside the lpips wheel and are checked against their known sha256. The
backbone (AlexNet, VGG-16) is loaded from the manifest's torchvision file; the package's own
`pretrained=True` path would download it, so the backbone is always built random
(`pnet_rand=True`) and then overwritten with the verified file, or left seeded-random.
"""

from __future__ import annotations

import importlib.util
import math
import warnings
from pathlib import Path
from typing import Any

import torch
from torch import nn

from sparsegen.metrics.inputs import aligned_pair
from sparsegen.metrics.records import Measurement
from sparsegen.metrics.registry import MetricContext, import_needing_torchvision, register
from sparsegen.provenance import sha256_file
from sparsegen.weights import RANDOM_INIT, ResolvedWeights

HEADS_SHA256 = {
    "alex": "df73285e35b22355a2df87cdb6b70b343713b667eddbda73e1977e0c860835c0",
    "vgg": "a78928a0af1e5f0fcb1f3b9e8f8c3a2a5a3de244d830ad5c1feddc79b8432868",
}
ALEX_HEADS_SHA256 = HEADS_SHA256["alex"]
RANDOM_SEED = 0


def heads_path(net: str = "alex") -> Path:
    """The v0.1 linear-head file of `net` inside the installed lpips package, verified."""
    spec = importlib.util.find_spec("lpips")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("the lpips package is not installed")
    path = Path(next(iter(spec.submodule_search_locations))) / "weights" / "v0.1" / f"{net}.pth"
    digest = sha256_file(path) if path.is_file() else "missing"
    if digest != HEADS_SHA256[net]:
        raise RuntimeError(f"{path}: LPIPS {net} v0.1 heads sha256 {digest}, expected "
                           f"{HEADS_SHA256[net]}")
    return path


def _load_backbone(net: nn.Module, path: Path, kind: str) -> None:
    """Copy torchvision `features.<i>.*` weights into lpips' slice modules (their children
    keep the torchvision indices as names)."""
    state = torch.load(path, map_location="cpu", weights_only=True)
    convs = {name.split(".")[-1]: m for name, m in net.named_modules()
             if isinstance(m, nn.Conv2d)}
    with torch.no_grad():
        for idx, conv in convs.items():
            try:
                conv.weight.copy_(state[f"features.{idx}.weight"])
                conv.bias.copy_(state[f"features.{idx}.bias"])
            except KeyError:
                raise ValueError(f"{path}: not a torchvision {kind} state dict "
                                 f"(no features.{idx}.*)") from None


def build_lpips(backbone: ResolvedWeights, net: str = "alex") -> nn.Module:
    """lpips.LPIPS(net=`net`, version='0.1') with verified heads and the given backbone
    (frozen, eval mode; gradients still flow to its inputs)."""
    lpips = import_needing_torchvision("lpips")
    heads = heads_path(net)
    with torch.random.fork_rng(devices=[]), warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=UserWarning, module="torchvision")
        torch.manual_seed(RANDOM_SEED)  # the random backbone, when no file is used
        model = lpips.LPIPS(net=net, version="0.1", pnet_rand=True, model_path=str(heads),
                            verbose=False)
    if backbone.path is not None:
        _load_backbone(model.net, backbone.path, {"alex": "AlexNet", "vgg": "VGG-16"}[net])
    return model.eval().requires_grad_(False)


def build_lpips_alex(backbone: ResolvedWeights) -> nn.Module:
    """lpips.LPIPS(net='alex', version='0.1') with verified heads and the given backbone."""
    return build_lpips(backbone, "alex")


def _backbone_fingerprint(w: ResolvedWeights) -> str:
    if w.sha256 == RANDOM_INIT:
        return f"{w.name}:{RANDOM_INIT}:torchvision-default-init-seed{RANDOM_SEED}"
    return f"{w.name}:sha256:{w.sha256}"


@register("lpips_alex", higher_is_better=False,
          description="LPIPS v0.1 with AlexNet backbone (lpips package), per image pair, "
          "mean over pairs; inputs RGB in [0, 1]")
def lpips_alex(a: Any, b: Any, ctx: MetricContext) -> Measurement:
    ta, tb = aligned_pair(a, b, ("images", "references"))
    backbone = ctx.resolve("alexnet_torchvision")
    model = build_lpips_alex(backbone).to(ctx.device)
    values: list[float] = []
    with torch.inference_mode():
        for i in range(0, ta.shape[0], ctx.batch_size):
            x = ta[i:i + ctx.batch_size].to(ctx.device, torch.float32)
            y = tb[i:i + ctx.batch_size].to(ctx.device, torch.float32)
            values += model(x, y, normalize=True).flatten().double().cpu().tolist()
    return Measurement(
        value=math.fsum(values) / len(values), n_samples=len(values), per_sample=values,
        extractor=backbone,
        protocol={"net": "alex", "version": "0.1", "backbone": _backbone_fingerprint(backbone),
                  "heads_sha256": ALEX_HEADS_SHA256, "input": "RGB [0, 1] mapped to [-1, 1]",
                  "spatial": False, "image_size": list(ta.shape[-2:]), "resize": "none"})
