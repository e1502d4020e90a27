"""The StyA2K network (Fig. 3): frozen VGG encoder (Eq. 1), per-layer transforms at relu3_1,
relu4_1, relu5_1 (Eq. 2) and the multi-scale decoder of Table 3 (Eq. 3)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from sparsegen.models.stya2k.transforms import apply_transform, build_transform
from sparsegen.nets.vgg import VGGEncoder
from sparsegen.weights import resolve as resolve_weights

TRANSFER_LAYERS = ("relu3_1", "relu4_1", "relu5_1")
CHANNELS = {"relu1_1": 64, "relu2_1": 128, "relu3_1": 256, "relu4_1": 512, "relu5_1": 512}
INIT_STD = 0.02  # normal(0, 0.02) weights, zero biases (official code; the paper is silent)


def _conv(cin: int, cout: int, relu: bool = True) -> nn.Sequential:
    """Reflection-padded 3x3 convolution (padding as the official code; the paper is silent)."""
    layers: list[nn.Module] = [nn.ReflectionPad2d(1), nn.Conv2d(cin, cout, 3)]
    if relu:
        layers.append(nn.ReLU())
    return nn.Sequential(*layers)


def _up(x: torch.Tensor, like: torch.Tensor | None = None) -> torch.Tensor:
    """Nearest x2 upsampling (or to the size of `like`)."""
    if like is not None:
        return F.interpolate(x, size=like.shape[-2:], mode="nearest")
    return F.interpolate(x, scale_factor=2, mode="nearest")


class Decoder(nn.Module):
    """Table 3. F^5: up(F_cs^5) + F_cs^4, conv 512; F^4: conv 256, up; F^3: concat F_cs^3,
    conv 256 x3, conv 128, up; F^2: conv 128, conv 64, up; F^1: conv 64, conv 3 (no activation).

    Table 3 lists a ReLU after the F^5 conv (the default); the official code's transform applies
    that conv (`merge_conv`) without one: `f5_relu=False` (`model.f5_relu: false`)."""

    def __init__(self, f5_relu: bool = True) -> None:
        super().__init__()
        self.stage5 = _conv(512, 512, relu=f5_relu)
        self.stage4 = _conv(512, 256)
        self.stage3 = nn.Sequential(_conv(512, 256), _conv(256, 256), _conv(256, 256),
                                    _conv(256, 128))
        self.stage2 = nn.Sequential(_conv(128, 128), _conv(128, 64))
        self.stage1 = nn.Sequential(_conv(64, 64), _conv(64, 3, relu=False))

    def forward(self, feats: dict[str, torch.Tensor]) -> torch.Tensor:
        f3, f4, f5 = (feats[layer] for layer in TRANSFER_LAYERS)
        x = self.stage5(_up(f5, like=f4) + f4)
        x = _up(self.stage4(x))
        x = _up(self.stage3(torch.cat([x, f3], dim=1)))
        x = _up(self.stage2(x))
        return self.stage1(x)


class StyA2KNet(nn.Module):
    """Encoder -> per-layer transforms -> decoder. Images are (B, 3, H, W) RGB in [0, 1]."""

    def __init__(self, encoder: VGGEncoder, transform: nn.ModuleDict, decoder: Decoder) -> None:
        super().__init__()
        self.encoder = encoder
        self.transform = transform
        self.decoder = decoder

    def encode(self, image: torch.Tensor) -> dict[str, torch.Tensor]:
        """Eq. 1: relu1_1 ... relu5_1 features of the frozen encoder."""
        return self.encoder(image)

    def transfer(self, content: dict[str, torch.Tensor], style: dict[str, torch.Tensor]
                 ) -> dict[str, torch.Tensor]:
        """Eq. 2 at relu3_1, relu4_1, relu5_1 (AdaAttN also reads the shallower layers)."""
        return {layer: apply_transform(self.transform[layer], layer, content, style)
                for layer in TRANSFER_LAYERS}

    def decode(self, feats: dict[str, torch.Tensor]) -> torch.Tensor:
        """Eq. 3."""
        return self.decoder(feats)

    def stylize(self, content: torch.Tensor, style: torch.Tensor) -> torch.Tensor:
        """Stylised image (unclamped) of content and style batches of equal size."""
        return self.decode(self.transfer(self.encode(content), self.encode(style)))

    def _mix(self, content: torch.Tensor, styles: Sequence[torch.Tensor],
             weights: Sequence[float] | Sequence[torch.Tensor]) -> torch.Tensor:
        """Decode sum_i w_i * F_cs^l(content, style_i); tensor weights are nearest-resized."""
        fc = self.encode(content)
        mixed: dict[str, torch.Tensor] = {}
        for style, w in zip(styles, weights, strict=True):
            for layer, f in self.transfer(fc, self.encode(style)).items():
                if isinstance(w, torch.Tensor):
                    term = F.interpolate(w.to(f.dtype), size=f.shape[-2:], mode="nearest") * f
                else:
                    term = w * f
                mixed[layer] = mixed[layer] + term if layer in mixed else term
        return self.decode(mixed)

    def stylize_interpolated(self, content: torch.Tensor, styles: Sequence[torch.Tensor],
                             weights: Sequence[float]) -> torch.Tensor:
        """Style interpolation (Fig. 8): sum_i w_i F_cs^l(content, style_i) before decoding."""
        if not styles or len(styles) != len(weights):
            raise ValueError(f"stylize_interpolated: {len(styles)} styles and {len(weights)} "
                             f"weights; need one weight per style")
        return self._mix(content, styles, [float(w) for w in weights])

    def stylize_multi(self, content: torch.Tensor, styles: Sequence[torch.Tensor],
                      masks: Sequence[torch.Tensor]) -> torch.Tensor:
        """Multi-style transfer: masks (B, 1, H, W) in {0, 1} summing to 1 pick, per region,
        which style's transferred features are decoded (masks nearest-resized per layer)."""
        if not styles or len(styles) != len(masks):
            raise ValueError(f"stylize_multi: {len(styles)} styles and {len(masks)} masks; "
                             f"need one mask per style")
        for m in masks:
            if m.dim() != 4 or m.shape[1] != 1 or m.shape[-2:] != content.shape[-2:]:
                raise ValueError(f"stylize_multi: masks must be (B, 1, H, W) at the content "
                                 f"size {tuple(content.shape[-2:])}, got {tuple(m.shape)}")
        return self._mix(content, styles, list(masks))


def init_weights(module: nn.Module, generator: torch.Generator) -> None:
    """normal(0, INIT_STD) conv weights and zero biases, drawn from `generator`."""
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.normal_(m.weight, 0.0, INIT_STD, generator=generator)
            nn.init.zeros_(m.bias)


def build_network(settings: dict[str, Any]) -> StyA2KNet:
    """The network of resolved `settings` (model, weights, paths, seed), freshly initialised."""
    model = settings["model"]
    resolved = resolve_weights(model["encoder"], settings["weights"],
                               settings["paths"]["weights"])
    transform = nn.ModuleDict({layer: build_transform(model, layer, CHANNELS)
                               for layer in TRANSFER_LAYERS})
    decoder = Decoder(model.get("f5_relu", True))
    gen = torch.Generator().manual_seed(int(settings["seed"]))
    init_weights(transform, gen)
    init_weights(decoder, gen)
    return StyA2KNet(VGGEncoder(resolved), transform, decoder)
