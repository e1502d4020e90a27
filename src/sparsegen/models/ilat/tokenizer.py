"""TS-VQGAN and its plain peers: the image tokenizers of iLAT (Sec. 3.1, Eq. 1-4, A.1 Table 3).

Settings (s["tokenizer"], the lead's plan): `architecture` picks one of three networks, all
encoder -> quantiser (Eq. 1) -> decoder, two-stream only in the encoder (Table 3):
- face (Table 3): conv_in to widths[0]; per level `blocks` residual blocks (IN + Swish + 3x3
  conv, twice; 1x1 shortcut where widths differ) and a 4x4 stride-2 down-conv; `mid_blocks`
  blocks of `mid_width` at the token grid; IN + Swish + conv to `z_channels`. Decoder: conv to
  `mid_width`, `mid_blocks` blocks, per level (coarse to fine) `decoder_blocks` blocks and a
  nearest x2 upsampling + 3x3 conv, IN + Swish + conv + tanh. No attention. InstanceNorm is
  torch's default (eps 1e-5, no affine), as the official code.
- pose: taming's f16 VQGAN (official_repos §5.4) with widths = ch * ch_mult; `blocks` blocks per
  level, attention after each where the feature side is in `attn_resolutions`, 3x3 stride-2
  down-convs padded (0, 1, 0, 1) between levels (len(widths) - 1 of them), mid block-attention-
  block, GroupNorm (eps 1e-6, affine) with gcd(32, C) groups (32 for every taming width, C for
  the tiny smoke widths 8 and 16), 1x1 quant_conv / post_quant_conv around the quantiser; the
  decoder (`decoder_blocks` per level, taming's 3) has no tanh, as taming's.
- sketch: the official sketch VQGAN (official_repos §3.2): 1 channel, reflection pad 6 + 13x13
  conv to `stem_width`; per level a 4x4 stride-2 down-conv to widths[i], then `blocks` blocks;
  mid and output as face. Decoder: mid, per level `decoder_blocks` blocks and an upsampling
  conv to the next finer width (`stem_width` last), IN + Swish + conv + tanh.
`two_stream` (encoder layers of two_stream.py), `norm_stats` (outside | whole) and `compose`
(Eq. 4: eq4 | none | official) set the leak-free encoding and the decoding of Eq. 4.
`layout` (optional; paper by default) official: the network of the authors' code, which their
released weights need (`sparsegen.models.ilat.released`): 1x1 quant_conv / post_quant_conv
around the quantiser (face, sketch; pose has them anyway, as taming) and, for face, the official
decoder (`_face_official_decoder`).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from sparsegen.models.ilat.quantize import Quantizer
from sparsegen.models.ilat.two_stream import (
    NORM_STATS,
    MaskedAttention,
    MaskedGroupNorm,
    TwoStreamConv2d,
    pool_mask,
)

ARCHITECTURES = ("face", "pose", "sketch")
COMPOSE = ("eq4", "none", "official")
LAYOUTS = ("paper", "official")
OFFICIAL_MID_BLOCKS = 2  # the official decoders' middle: `mid.block_1`, `mid.block_2`
KEYS = ("architecture", "channels", "widths", "mid_width", "mid_blocks", "blocks",
        "decoder_blocks", "attn_resolutions", "z_channels", "n_codes", "beta", "two_stream",
        "norm_stats", "compose", "size")
Norm = Callable[[int], MaskedGroupNorm]


@dataclass
class Encoded:
    """An encoded image: z_hat (continuous encoder output, B, C, h, w), z_q (its codes with the
    straight-through gradient), ids (B, h, w) long, the codebook loss, and the token mask
    (B, 1, h, w) float, 1 = a token with a hole pixel (M_q of Eq. 4), or None."""

    features: torch.Tensor
    quantized: torch.Tensor
    ids: torch.Tensor
    codebook_loss: torch.Tensor
    token_mask: torch.Tensor | None


class UpConv(TwoStreamConv2d):
    """Nearest x2 upsampling, then a 3x3 convolution (Table 3's UpBlock)."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__(in_channels, out_channels, 3, padding=1)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        return super().forward(F.interpolate(x, scale_factor=2.0, mode="nearest"), mask)


class ResBlock(nn.Module):
    """Norm + Swish + 3x3 conv, twice, plus the input (1x1 `nin_shortcut` where widths
    differ); taming's names."""

    def __init__(self, cin: int, cout: int, norm: Norm) -> None:
        super().__init__()
        self.norm1, self.conv1 = norm(cin), TwoStreamConv2d(cin, cout, 3, padding=1)
        self.norm2, self.conv2 = norm(cout), TwoStreamConv2d(cout, cout, 3, padding=1)
        self.nin_shortcut = TwoStreamConv2d(cin, cout, 1) if cin != cout else None

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x, mask)), mask)
        h = self.conv2(F.silu(self.norm2(h, mask)), mask)
        return (x if self.nin_shortcut is None else self.nin_shortcut(x, mask)) + h


def _blocks(n: int, cin: int, cout: int, norm: Norm) -> list[nn.Module]:
    """n residual blocks, the first from cin to cout."""
    return [ResBlock(cin if j == 0 else cout, cout, norm) for j in range(n)]


class Level(nn.Module):
    """One resolution: residual blocks, each followed by attention where `attns` has it, and a
    resampling convolution (down or up) after them, or before them (`resample_first`)."""

    def __init__(self, blocks: list[nn.Module], attns: list[nn.Module],
                 resample: nn.Module | None, resample_first: bool = False) -> None:
        super().__init__()
        self.blocks, self.attns = nn.ModuleList(blocks), nn.ModuleList(attns)
        self.resample, self.resample_first = resample, resample_first

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        if self.resample is not None and self.resample_first:
            x = self.resample(x, mask)
        for j, block in enumerate(self.blocks):
            x = block(x, mask)
            if self.attns:
                x = self.attns[j](x, mask)
        if self.resample is not None and not self.resample_first:
            x = self.resample(x, mask)
        return x


class Coder(nn.Module):
    """An encoder or decoder: conv_in, the levels and the middle blocks (after the levels in an
    encoder, before them in a decoder), norm + Swish + conv_out (+ tanh). Every layer is
    two-stream; the tokenizer gives the decoder no mask, so there they are plain layers."""

    def __init__(self, conv_in: nn.Module, levels: Iterable[Level], mid: Iterable[nn.Module],
                 norm_out: nn.Module, conv_out: nn.Module, *, mid_first: bool,
                 tanh: bool) -> None:
        super().__init__()
        self.conv_in, self.levels, self.mid = conv_in, nn.ModuleList(levels), nn.ModuleList(mid)
        self.norm_out, self.conv_out = norm_out, conv_out
        self.mid_first, self.tanh = mid_first, tanh

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        h = self.conv_in(x, mask)
        stages = [*self.mid, *self.levels] if self.mid_first else [*self.levels, *self.mid]
        for stage in stages:
            h = stage(h, mask)
        h = self.conv_out(F.silu(self.norm_out(h, mask)), mask)
        return torch.tanh(h) if self.tanh else h


def _face(cfg: Mapping[str, Any], norm: Norm) -> tuple[Coder, Coder]:
    widths, mid, z, ch = list(cfg["widths"]), cfg["mid_width"], cfg["z_channels"], cfg["channels"]
    down = [Level(_blocks(cfg["blocks"], ([widths[0], *widths])[i], w, norm), [],
                  TwoStreamConv2d(w, w, 4, stride=2, padding=1)) for i, w in enumerate(widths)]
    encoder = Coder(TwoStreamConv2d(ch, widths[0], 3, padding=1), down,
                    _blocks(cfg["mid_blocks"], widths[-1], mid, norm), norm(mid),
                    TwoStreamConv2d(mid, z, 3, padding=1), mid_first=False, tanh=False)
    if cfg.get("layout", "paper") == "official":
        return encoder, _face_official_decoder(cfg, norm)
    coarse = widths[::-1]
    up = [Level(_blocks(cfg["decoder_blocks"], ([mid, *coarse])[i], w, norm), [], UpConv(w, w))
          for i, w in enumerate(coarse)]
    decoder = Coder(TwoStreamConv2d(z, mid, 3, padding=1), up,
                    _blocks(cfg["mid_blocks"], mid, mid, norm), norm(widths[0]),
                    TwoStreamConv2d(widths[0], ch, 3, padding=1), mid_first=True, tanh=True)
    return encoder, decoder


def _face_official_decoder(cfg: Mapping[str, Any], norm: Norm) -> Coder:
    """The face decoder of the authors' code (official_repos §3.2): conv to `mid_width`, two
    middle blocks, then per level coarse to fine (`mid_width` at the token grid, then the
    widths reversed) `decoder_blocks` blocks to the level's width and, except at full size, a
    nearest x2 upsampling + conv at that width. Table 3 instead changes the width before each
    upsampling and has no blocks at full size."""
    widths, mid, z, ch = list(cfg["widths"]), cfg["mid_width"], cfg["z_channels"], cfg["channels"]
    coarse = [mid, *widths[::-1]]
    up = [Level(_blocks(cfg["decoder_blocks"], ([mid, *coarse])[i], w, norm), [],
                UpConv(w, w) if i < len(coarse) - 1 else None) for i, w in enumerate(coarse)]
    return Coder(TwoStreamConv2d(z, mid, 3, padding=1), up,
                 _blocks(OFFICIAL_MID_BLOCKS, mid, mid, norm), norm(widths[0]),
                 TwoStreamConv2d(widths[0], ch, 3, padding=1), mid_first=True, tanh=True)


def _pose(cfg: Mapping[str, Any], norm: Norm) -> tuple[Coder, Coder]:
    widths, z, ch = list(cfg["widths"]), cfg["z_channels"], cfg["channels"]
    last = len(widths) - 1
    attn_sides = set(cfg["attn_resolutions"])

    def level(i: int, n: int, cin: int, resample: nn.Module | None) -> Level:
        attns = ([MaskedAttention(widths[i], norm(widths[i])) for _ in range(n)]
                 if cfg["size"] >> i in attn_sides else [])
        return Level(_blocks(n, cin, widths[i], norm), attns, resample)

    def mid() -> list[nn.Module]:
        w = widths[-1]
        return [ResBlock(w, w, norm), MaskedAttention(w, norm(w)), ResBlock(w, w, norm)]

    down = [level(i, cfg["blocks"], ([widths[0], *widths])[i],
                  TwoStreamConv2d(w, w, 3, stride=2, padding=(0, 1, 0, 1)) if i < last else None)
            for i, w in enumerate(widths)]
    encoder = Coder(TwoStreamConv2d(ch, widths[0], 3, padding=1), down, mid(), norm(widths[-1]),
                    TwoStreamConv2d(widths[-1], z, 3, padding=1), mid_first=False, tanh=False)
    up = [level(i, cfg["decoder_blocks"], widths[min(i + 1, last)],
                UpConv(widths[i], widths[i]) if i > 0 else None) for i in range(last, -1, -1)]
    decoder = Coder(TwoStreamConv2d(z, widths[-1], 3, padding=1), up, mid(), norm(widths[0]),
                    TwoStreamConv2d(widths[0], ch, 3, padding=1), mid_first=True, tanh=False)
    return encoder, decoder


def _sketch(cfg: Mapping[str, Any], norm: Norm) -> tuple[Coder, Coder]:
    widths, mid, z, ch = list(cfg["widths"]), cfg["mid_width"], cfg["z_channels"], cfg["channels"]
    stem = cfg["stem_width"]
    finer = [stem, *widths]                            # finer[i]: the width before level i
    down = [Level(_blocks(cfg["blocks"], w, w, norm), [],
                  TwoStreamConv2d(finer[i], w, 4, stride=2, padding=1), resample_first=True)
            for i, w in enumerate(widths)]
    encoder = Coder(TwoStreamConv2d(ch, stem, 13, padding=6, padding_mode="reflect"), down,
                    _blocks(cfg["mid_blocks"], widths[-1], mid, norm), norm(mid),
                    TwoStreamConv2d(mid, z, 3, padding=1), mid_first=False, tanh=False)
    current = [*widths[:-1], mid]                      # current[i]: the width entering level i
    up = [Level(_blocks(cfg["decoder_blocks"], current[i], current[i], norm), [],
                UpConv(current[i], finer[i])) for i in range(len(widths) - 1, -1, -1)]
    decoder = Coder(TwoStreamConv2d(z, mid, 3, padding=1), up,
                    _blocks(cfg["mid_blocks"], mid, mid, norm), norm(stem),
                    TwoStreamConv2d(stem, ch, 3, padding=1), mid_first=True, tanh=True)
    return encoder, decoder


BUILDERS = {"face": _face, "pose": _pose, "sketch": _sketch}


def _check(cfg: Mapping[str, Any]) -> None:
    """Raise ValueError naming the first tokenizer setting that cannot build a network."""
    missing = [k for k in KEYS if k not in cfg]
    if cfg.get("architecture") == "sketch" and "stem_width" not in cfg:
        missing.append("stem_width")
    if missing:
        raise ValueError(f"tokenizer settings lack {', '.join(missing)}")
    for key, allowed in (("architecture", ARCHITECTURES), ("compose", COMPOSE),
                         ("norm_stats", NORM_STATS), ("layout", LAYOUTS)):
        value = cfg.get(key, "paper")  # only `layout` is optional
        if value not in allowed:
            raise ValueError(f"tokenizer.{key}: {value!r} is not one of {allowed}")
    if not cfg["widths"] or (cfg["architecture"] == "pose" and len(cfg["widths"]) < 2):
        raise ValueError(f"tokenizer.widths: {cfg['widths']} has too few levels for "
                         f"{cfg['architecture']}")
    if cfg["size"] % (1 << downsamplings(cfg)):
        raise ValueError(f"tokenizer.size: {cfg['size']} is not divisible by "
                         f"2^{downsamplings(cfg)} (widths {cfg['widths']})")


def downsamplings(cfg: Mapping[str, Any]) -> int:
    """Stride-2 convolutions of the encoder: one per level (face, sketch), one between levels
    (pose, taming's ch_mult)."""
    return len(cfg["widths"]) - (cfg["architecture"] == "pose")


class Tokenizer(nn.Module):
    """Encoder, quantiser, decoder of one `architecture` (module doc); `grid` tokens per side
    at the settings' `size`."""

    def __init__(self, cfg: Mapping[str, Any]) -> None:
        super().__init__()
        _check(cfg)
        self.architecture, self.compose_mode = cfg["architecture"], cfg["compose"]
        self.two_stream = bool(cfg["two_stream"])
        self.grid = cfg["size"] >> downsamplings(cfg)
        self.n_codes, self.channels = int(cfg["n_codes"]), int(cfg["channels"])
        stats = cfg["norm_stats"]
        if self.architecture == "pose":
            def norm(c: int) -> MaskedGroupNorm:
                return MaskedGroupNorm(math.gcd(32, c), c, eps=1e-6, affine=True, stats=stats)
        else:
            def norm(c: int) -> MaskedGroupNorm:
                return MaskedGroupNorm(c, c, eps=1e-5, affine=False, stats=stats)
        self.encoder, self.decoder = BUILDERS[self.architecture](cfg, norm)
        z = cfg["z_channels"]
        self.quantize = Quantizer(cfg["n_codes"], z, cfg["beta"])
        convs = self.architecture == "pose" or cfg.get("layout", "paper") == "official"
        self.quant_conv = nn.Conv2d(z, z, 1) if convs else nn.Identity()
        self.post_quant_conv = nn.Conv2d(z, z, 1) if convs else nn.Identity()

    def encode(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> Encoded:
        """Encode x (B, C, H, W) in [-1, 1]; with `mask` (B, 1, H, W) float, 1 = hole, the
        encoder is two-stream (if `two_stream`) and the token mask M_q is set."""
        if mask is not None and (mask.shape[0] != x.shape[0] or mask.shape[1] != 1
                                 or mask.shape[-2:] != x.shape[-2:]):
            raise ValueError(f"mask of shape {tuple(mask.shape)} does not fit images of shape "
                             f"{tuple(x.shape)}: expected (B, 1, H, W)")
        z = self.quant_conv(self.encoder(x, mask if self.two_stream else None))
        quantized, loss, ids = self.quantize(z)
        token_mask = None if mask is None else pool_mask(mask.to(z.dtype), z.shape[-2:])
        return Encoded(z, quantized, ids, loss, token_mask)

    def compose(self, enc: Encoded) -> torch.Tensor:
        """The latent the decoder gets: eq4 with a mask z_q M_q + z_hat (1 - M_q) (Eq. 4);
        otherwise (no mask, none, official: all codes decoded) z_q."""
        if self.compose_mode == "eq4" and enc.token_mask is not None:
            m = enc.token_mask
            return enc.quantized * m + enc.features * (1 - m)  # Eq. 4
        return enc.quantized

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Image from a latent (B, z_channels, h, w) (face, sketch: tanh; pose: unbounded)."""
        return self.decoder(self.post_quant_conv(z))

    def embed(self, ids: torch.Tensor) -> torch.Tensor:
        """z_q (B, z_channels, h, w) of token ids (B, h, w)."""
        return self.quantize.embed(ids)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None
                ) -> tuple[torch.Tensor, Encoded]:
        """(reconstruction D(compose(E(x))), the encoding)."""
        enc = self.encode(x, mask)
        return self.decode(self.compose(enc)), enc

    @property
    def last_layer(self) -> torch.Tensor:
        """The decoder's last convolution weight (taming's adaptive GAN weight)."""
        return self.decoder.conv_out.weight


def build_tokenizer(cfg: Mapping[str, Any]) -> Tokenizer:
    """The tokenizer of settings s["tokenizer"]."""
    return Tokenizer(cfg)
