"""VGG-19 feature encoder in the layout of AdaIN's normalised VGG (relu1_1 ... relu5_1).

One encoder for every paper that needs VGG features: the StyA2K encoder and losses, and the
StyTr2 content/style-loss metrics. The module indices match `vgg_normalised.pth`, so that file
loads directly; torchvision's VGG-19 is mapped onto the same layout (its ImageNet normalisation
becomes the leading 1x1 convolution). Input: RGB in [0, 1], shape (B, 3, H, W).
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from sparsegen.weights import RANDOM_INIT, ResolvedWeights

LAYERS = ("relu1_1", "relu2_1", "relu3_1", "relu4_1", "relu5_1")
# Index ranges of each slice in AdaIN's nn.Sequential (module i produces relu<x>_1 at end-1).
_SLICE_ENDS = {"relu1_1": 4, "relu2_1": 11, "relu3_1": 18, "relu4_1": 31, "relu5_1": 44}
# Conv widths per block (VGG-19 configuration E) up to relu5_1.
_BLOCKS = ((64, 64), (128, 128), (256, 256, 256, 256), (512, 512, 512, 512), (512,))
# torchvision's features[] index of each conv, in order, for conv layers up to relu5_1.
_TORCHVISION_CONVS = (0, 2, 5, 7, 10, 12, 14, 16, 19, 21, 23, 25, 28)
_IMAGENET_MEAN = (0.485, 0.456, 0.406)
_IMAGENET_STD = (0.229, 0.224, 0.225)
RANDOM_SEED = 0


def _build_layers(padding: str, ceil_mode: bool) -> nn.Sequential:
    layers: list[nn.Module] = [nn.Conv2d(3, 3, 1)]
    in_ch = 3
    for b, widths in enumerate(_BLOCKS):
        if b > 0:
            layers.append(nn.MaxPool2d(2, 2, ceil_mode=ceil_mode))
        for w in widths:
            layers.append(nn.ReflectionPad2d(1) if padding == "reflect" else nn.ZeroPad2d(1))
            layers += [nn.Conv2d(in_ch, w, 3), nn.ReLU()]
            in_ch = w
    assert len(layers) == _SLICE_ENDS["relu5_1"]
    return nn.Sequential(*layers)


class VGGEncoder(nn.Module):
    """Frozen VGG-19 up to relu5_1 returning the relu<k>_1 feature maps.

    `source` says what the weights are: 'vgg19_normalised' (AdaIN file: reflection padding,
    ceil-mode pooling), 'vgg19_torchvision' (zero padding, floor pooling, as torchvision) or
    random initialisation (seeded Kaiming-normal; the same random network in every process, so
    random-init metrics are at least consistent across runs, though not comparable with papers).
    """

    def __init__(self, weights: ResolvedWeights) -> None:
        super().__init__()
        torchvision_layout = weights.name == "vgg19_torchvision"
        self.layers = _build_layers(
            padding="zeros" if torchvision_layout else "reflect", ceil_mode=not torchvision_layout
        )
        self.weights = weights
        if weights.path is None:
            self._random_init()
        elif torchvision_layout:
            self._load_torchvision(weights.path)
        else:
            self._load_normalised(weights.path)
        self.requires_grad_(False)
        self.eval()

    @property
    def fingerprint(self) -> str:
        """Names the exact extractor for result records."""
        if self.weights.sha256 == RANDOM_INIT:
            return f"{self.weights.name}:{RANDOM_INIT}:kaiming-normal-seed{RANDOM_SEED}"
        return f"{self.weights.name}:sha256:{self.weights.sha256}"

    def _random_init(self) -> None:
        gen = torch.Generator().manual_seed(RANDOM_SEED)
        first = self.layers[0]
        self._set_imagenet_normalisation(first)
        for m in self.layers[1:]:
            if isinstance(m, nn.Conv2d):
                fan_in = m.in_channels * m.kernel_size[0] * m.kernel_size[1]
                with torch.no_grad():
                    std = (2.0 / fan_in) ** 0.5
                    m.weight.copy_(torch.randn(m.weight.shape, generator=gen) * std)
                    m.bias.zero_()

    @staticmethod
    def _set_imagenet_normalisation(conv: nn.Conv2d) -> None:
        """1x1 conv computing (x - mean) / std per RGB channel."""
        with torch.no_grad():
            conv.weight.zero_()
            for c in range(3):
                conv.weight[c, c, 0, 0] = 1.0 / _IMAGENET_STD[c]
                conv.bias[c] = -_IMAGENET_MEAN[c] / _IMAGENET_STD[c]

    def _load_normalised(self, path: Path) -> None:
        state = torch.load(path, map_location="cpu", weights_only=True)
        ours = self.layers.state_dict()
        missing = [k for k in ours if k not in state]
        if missing:
            raise ValueError(f"{path}: not an AdaIN normalised-VGG state dict "
                             f"(missing {missing[:3]})")
        self.layers.load_state_dict({k: state[k] for k in ours})

    def _load_torchvision(self, path: Path) -> None:
        state = torch.load(path, map_location="cpu", weights_only=True)
        self._set_imagenet_normalisation(self.layers[0])
        ours = [m for m in self.layers[1:] if isinstance(m, nn.Conv2d)]
        with torch.no_grad():
            for conv, idx in zip(ours, _TORCHVISION_CONVS, strict=True):
                try:
                    conv.weight.copy_(state[f"features.{idx}.weight"])
                    conv.bias.copy_(state[f"features.{idx}.bias"])
                except KeyError:
                    raise ValueError(f"{path}: not a torchvision VGG-19 state dict") from None

    def forward(self, x: torch.Tensor, upto: str = "relu5_1") -> dict[str, torch.Tensor]:
        """Features relu1_1 ... `upto` of an RGB batch in [0, 1]."""
        if upto not in _SLICE_ENDS:
            raise ValueError(f"unknown VGG layer {upto!r}; choose from {', '.join(LAYERS)}")
        feats: dict[str, torch.Tensor] = {}
        start = 0
        for name in LAYERS:
            end = _SLICE_ENDS[name]
            x = self.layers[start:end](x)
            feats[name] = x
            start = end
            if name == upto:
                break
        return feats
