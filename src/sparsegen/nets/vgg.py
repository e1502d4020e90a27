"""VGG-19 feature encoder in the layout of AdaIN's normalised VGG (relu1_1, relu1_2, ... relu5_4).

One encoder for every paper that needs VGG features: the StyA2K encoder and losses, the StyTr2
content/style-loss metrics, DynaST's training losses and the CoCosNet semantic-consistency and
style-relevance metrics. The module indices match `vgg_normalised.pth`, so that file loads
directly; the other weight files are mapped onto the same layout, their input normalisation
becoming the leading 1x1 convolution:

- 'vgg19_normalised' (AdaIN): the file's own 1x1 conv; reflection padding, ceil-mode pooling;
- 'vgg19_torchvision': ImageNet mean/std; zero padding, floor pooling;
- 'vgg19_cocosnet' (CoCosNet/DynaST `vgg19_conv.pth`, Caffe weights): RGB -> BGR, minus
  (0.40760392, 0.45795686, 0.48501961), x255; zero padding, floor max-pooling.

Input: RGB in [0, 1], shape (B, 3, H, W). The network is built up to `deepest` (relu5_1 unless
asked for more), so state dicts and checkpoints of the relu*_1 encoder keep their keys.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
from torch import nn

from sparsegen.weights import RANDOM_INIT, ResolvedWeights

# Conv widths per block, VGG-19 (configuration E).
_BLOCKS = ((64, 64), (128, 128), (256,) * 4, (512,) * 4, (512,) * 4)
# Every ReLU in order: relu1_1, relu1_2, relu2_1, ... relu5_4.
RELUS = tuple(f"relu{b + 1}_{i + 1}" for b, widths in enumerate(_BLOCKS)
              for i in range(len(widths)))
LAYERS = ("relu1_1", "relu2_1", "relu3_1", "relu4_1", "relu5_1")  # AdaIN / StyTr2 / StyA2K
SECOND_LAYERS = ("relu1_2", "relu2_2", "relu3_2", "relu4_2", "relu5_2")  # CoCosNet / DynaST


def _slice_ends() -> dict[str, int]:
    """End index of each ReLU in the Sequential: [1x1 conv, (pool,) pad, conv, relu, ...]."""
    ends, pos = {}, 1
    for b, widths in enumerate(_BLOCKS):
        pos += b > 0  # the max-pool before each block but the first
        for i in range(len(widths)):
            pos += 3
            ends[f"relu{b + 1}_{i + 1}"] = pos
    return ends


def _torchvision_convs() -> tuple[int, ...]:
    """torchvision's `features[]` index of each conv, in order."""
    out, idx = [], 0
    for b, widths in enumerate(_BLOCKS):
        idx += b > 0
        for _ in widths:
            out.append(idx)
            idx += 2
    return tuple(out)


_SLICE_ENDS = _slice_ends()  # relu1_1: 4, relu1_2: 7, relu2_1: 11, ..., relu5_1: 44, relu5_2: 47
_TORCHVISION_CONVS = _torchvision_convs()
_IMAGENET_MEAN = (0.485, 0.456, 0.406)
_IMAGENET_STD = (0.229, 0.224, 0.225)
_CAFFE_MEAN_BGR = (0.40760392, 0.45795686, 0.48501961)  # CoCosNet/DynaST util.vgg_preprocess
RANDOM_SEED = 0


def _build_layers(deepest: str, padding: str, ceil_mode: bool) -> nn.Sequential:
    layers: list[nn.Module] = [nn.Conv2d(3, 3, 1)]
    in_ch = 3
    for b, widths in enumerate(_BLOCKS):
        if b > 0:
            layers.append(nn.MaxPool2d(2, 2, ceil_mode=ceil_mode))
        for w in widths:
            layers.append(nn.ReflectionPad2d(1) if padding == "reflect" else nn.ZeroPad2d(1))
            layers += [nn.Conv2d(in_ch, w, 3), nn.ReLU()]
            in_ch = w
    return nn.Sequential(*layers[: _SLICE_ENDS[deepest]])


class VGGEncoder(nn.Module):
    """Frozen VGG-19 up to `deepest` (default relu5_1) returning ReLU feature maps.

    `weights` says what the weights are (see the module doc); without a file the network is a
    random initialisation (seeded Kaiming-normal, ImageNet normalisation first; the same random
    network in every process, so random-init metrics are at least consistent across runs, though
    not comparable with papers). The layout (padding, pooling) follows `weights.name` either way.
    """

    def __init__(self, weights: ResolvedWeights, deepest: str = "relu5_1") -> None:
        super().__init__()
        _check_layers([deepest])
        zero_padded = weights.name in ("vgg19_torchvision", "vgg19_cocosnet")
        self.layers = _build_layers(deepest, padding="zeros" if zero_padded else "reflect",
                                    ceil_mode=not zero_padded)
        self.deepest = deepest
        self.weights = weights
        if weights.path is None:
            self._random_init()
        elif weights.name == "vgg19_torchvision":
            self._load_torchvision(weights.path)
        elif weights.name == "vgg19_cocosnet":
            self._load_cocosnet(weights.path)
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

    def _convs(self) -> list[nn.Conv2d]:
        """The 3x3 convolutions in order (conv1_1, conv1_2, ...), without the 1x1 input conv."""
        return [m for m in self.layers[1:] if isinstance(m, nn.Conv2d)]

    def _random_init(self) -> None:
        gen = torch.Generator().manual_seed(RANDOM_SEED)
        self._set_imagenet_normalisation(self.layers[0])
        for m in self._convs():
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

    @staticmethod
    def _set_caffe_preprocessing(conv: nn.Conv2d) -> None:
        """1x1 conv computing 255 * (BGR - mean_bgr) from RGB in [0, 1]."""
        with torch.no_grad():
            conv.weight.zero_()
            for c in range(3):  # output channel c (B, G, R) reads input channel 2 - c
                conv.weight[c, 2 - c, 0, 0] = 255.0
                conv.bias[c] = -255.0 * _CAFFE_MEAN_BGR[c]

    def _load_normalised(self, path: Path) -> None:
        state = torch.load(path, map_location="cpu", weights_only=True)
        ours = self.layers.state_dict()
        missing = [k for k in ours if k not in state]
        if missing:
            raise ValueError(f"{path}: not an AdaIN normalised-VGG state dict up to "
                             f"{self.deepest} (missing {missing[:3]})")
        self.layers.load_state_dict({k: state[k] for k in ours})

    def _load_torchvision(self, path: Path) -> None:
        state = torch.load(path, map_location="cpu", weights_only=True)
        self._set_imagenet_normalisation(self.layers[0])
        self._copy_convs(state, [f"features.{i}" for i in _TORCHVISION_CONVS], path,
                         "a torchvision VGG-19")

    def _load_cocosnet(self, path: Path) -> None:
        state = torch.load(path, map_location="cpu", weights_only=True)
        self._set_caffe_preprocessing(self.layers[0])
        names = [f"conv{r[4:]}" for r in RELUS]  # conv1_1 ... conv5_4
        self._copy_convs(state, names, path, "a CoCosNet vgg19_conv.pth")

    def _copy_convs(self, state: dict[str, torch.Tensor], prefixes: list[str], path: Path,
                    what: str) -> None:
        with torch.no_grad():
            for conv, prefix in zip(self._convs(), prefixes, strict=False):
                for part in ("weight", "bias"):
                    key = f"{prefix}.{part}"
                    if key not in state:
                        raise ValueError(f"{path}: not {what} state dict (no key {key!r})")
                    ours = getattr(conv, part)
                    if state[key].shape != ours.shape:
                        raise ValueError(f"{path}: {key} has shape {tuple(state[key].shape)}, "
                                         f"{what} has {tuple(ours.shape)}")
                    ours.copy_(state[key])

    def extract(self, x: torch.Tensor, layers: Sequence[str]) -> dict[str, torch.Tensor]:
        """Features `layers` (any of RELUS up to `deepest`) of an RGB batch in [0, 1], in the
        order asked; the network runs only as deep as the deepest of them."""
        _check_layers(layers)
        too_deep = [k for k in layers if _SLICE_ENDS[k] > _SLICE_ENDS[self.deepest]]
        if too_deep:
            raise ValueError(f"VGG layers {too_deep} lie beyond {self.deepest}, the deepest "
                             f"this encoder was built with (VGGEncoder(..., deepest=...))")
        wanted = set(layers)
        feats: dict[str, torch.Tensor] = {}
        start = 0
        for name in RELUS:
            if not wanted - feats.keys():
                break
            if name in wanted:
                end = _SLICE_ENDS[name]
                x = self.layers[start:end](x)
                feats[name], start = x, end
        return {k: feats[k] for k in layers}

    def forward(self, x: torch.Tensor, upto: str = "relu5_1") -> dict[str, torch.Tensor]:
        """Features of an RGB batch in [0, 1] from block 1 to `upto`'s block, of `upto`'s kind:
        relu1_1 ... relu<k>_1 (AdaIN, StyTr2, StyA2K) or relu1_2 ... relu<k>_2 (CoCosNet,
        DynaST). Any other set of layers: `extract`."""
        for kind in (LAYERS, SECOND_LAYERS):
            if upto in kind:
                return self.extract(x, kind[: kind.index(upto) + 1])
        raise ValueError(f"VGGEncoder(upto={upto!r}): choose from {', '.join(LAYERS)}, "
                         f"{', '.join(SECOND_LAYERS)} (other layers: VGGEncoder.extract)")


def _check_layers(layers: Sequence[str]) -> None:
    unknown = [k for k in layers if k not in _SLICE_ENDS]
    if unknown or not layers:
        raise ValueError(f"unknown VGG layers {unknown or '(none given)'}; choose from "
                         f"{', '.join(RELUS)}")
