"""Per-level layout of the StyleNAT / StyleSwin generator, computed from `stylenat.model` settings.

No torch import: config validation calls `problems` while checking params.yaml.

Levels are the feature-map sides 4, 8, ..., resolution. The 4x4 level attends over the whole map
(multi-head self-attention with a relative-position table, official code); every later level uses
Hydra neighbourhood attention (Sec. 3.2, Fig. 2) with `model.kernel_size` in every head partition
and the per-partition dilations chosen by `model.dilations` (Sec. 3.3, Tables 5 and 6).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

MHSA_SIDE = 4            # the first level: full attention (official MHSARPB), not DiNA (Table 5)
CHANNEL_BASE = 2 ** 14   # StyleGAN2 width table: 2^14 * channel_multiplier / side from 64 on
FULL_WIDTH_UP_TO = 32    # ... and max_channels at sides 4-32, whatever the multiplier
DILATION_SCHEMES = ("progressive", "pyramid", "local")
DILATION_SPACINGS = ("geometric", "powers_of_two")  # `progressive` with more than 2 partitions
ATTENTIONS = ("hydra_na", "swin")


def levels(model: Mapping[str, Any]) -> list[int]:
    """Feature-map sides 4, 8, ..., model.resolution."""
    sides, side = [], MHSA_SIDE
    while side <= model["resolution"]:
        sides.append(side)
        side *= 2
    return sides


def channels(model: Mapping[str, Any], res: int) -> int:
    """Width at side `res`. The official table is [512]*4 for sides 4-32, then 256*cm, 128*cm,
    64*cm, 32*cm, 16*cm for 64-1024, i.e. 2^14 * cm / side; capped at model.max_channels."""
    if res <= FULL_WIDTH_UP_TO:
        return model["max_channels"]
    return min(model["max_channels"], int(CHANNEL_BASE * model["channel_multiplier"] / res))


def heads(model: Mapping[str, Any], res: int) -> int:
    """max(channels // head_dim, min_heads): head_dim 32 and min_heads 4 officially (Table 4: 8)."""
    return max(channels(model, res) // model["head_dim"], model["min_heads"])


def max_dilation(kernel_size: int, res: int) -> int:
    """Largest power of 2 with kernel_size * d <= res (Table 5: 1, 2, 4, ..., res/8 for k = 7)."""
    d = 1
    while kernel_size * d * 2 <= res:
        d *= 2
    return d


def dilations(model: Mapping[str, Any], res: int) -> list[int]:
    """Dilation of each head partition at side `res` ([1] at the 4x4 MHSA level).

    progressive: `partitions` dilations from 1 (NA) to the largest dilation d_max ("+Prog Di",
    Sec. 4.3), spaced by `model.dilation_spacing` (see `progressive_dilations`; two partitions
    give Table 5's [1, d_max] under either spacing); pyramid: every power of 2 from 1 to d_max
    (Table 6); local: all 1 (+NA)."""
    if res == MHSA_SIDE:
        return [1]
    scheme, p = model["dilations"], model["partitions"]
    d_max = max_dilation(model["kernel_size"], res)
    if scheme == "local":
        return [1] * p
    if scheme == "pyramid":
        return [2 ** i for i in range(d_max.bit_length())]
    if scheme == "progressive":
        if p <= 2:
            return [1, d_max][:p]
        return progressive_dilations(d_max, p, model["dilation_spacing"])
    raise ValueError(f"model.dilations: unknown scheme {scheme!r} "
                     f"(expected one of {', '.join(DILATION_SCHEMES)})")


def progressive_dilations(d_max: int, partitions: int, spacing: str) -> list[int]:
    """`partitions` non-decreasing dilations from 1 to d_max (a power of 2), p = partitions.

    The paper fixes the ends and leaves the middle open: "the first partition with dilation 1
    (NA) and the last partition with maximum dilation according to feature map size, and the
    partitions in between adjusted accordingly" (Sec. 4.3); its examples are all powers of 2
    ("Dilation follows the pattern of using powers of 2", App. A, Table 5; Table 6's
    "progressive dilation ... referred to 'pyramid dilation'").

    geometric: d_i = round(d_max^(i/(p-1))), evenly spaced in log scale and rounded to the
    nearest integer (4 partitions at 256²: 1, 3, 10, 32).
    powers_of_two: d_i = 2^round(i * log2(d_max) / (p-1)), the same log-scale spacing with the
    exponent rounded, so every dilation is a power of 2 (4 partitions at 256²: 1, 4, 8, 32).
    Both round halves up. When p - 1 divides log2(d_max) the two agree (no rounding), e.g.
    p = log2(d_max) + 1 gives Table 6's row, every power of 2. Duplicates are kept: a partition is
    a share of the heads (Table 4 counts partitions, and 8 partitions at 256² exceed the six
    powers of 2 up to 32), and equal dilations in several partitions act as one larger
    partition ("two NA partitions with the same kernel and dilation ... is equivalent to using
    a single partition", Sec. 4.4)."""
    if partitions == 1:
        return [1]
    last = partitions - 1
    if spacing == "geometric":
        return [int(d_max ** (i / last) + 0.5) for i in range(partitions)]
    if spacing == "powers_of_two":
        e = d_max.bit_length() - 1  # d_max = 2^e
        return [2 ** ((2 * i * e + last) // (2 * last)) for i in range(partitions)]
    raise ValueError(f"model.dilation_spacing: unknown spacing {spacing!r} "
                     f"(expected one of {', '.join(DILATION_SPACINGS)})")


def kernel_sizes(model: Mapping[str, Any], res: int) -> list[int]:
    """Kernel of each head partition: the whole 4x4 map at the MHSA level, else kernel_size."""
    if res == MHSA_SIDE:
        return [MHSA_SIDE]
    return [model["kernel_size"]] * len(dilations(model, res))


def window_size(model: Mapping[str, Any], res: int) -> int:
    """StyleSwin's window at side `res`: the whole map when it is not larger than the window."""
    return min(res, model["window_size"])


def problems(model: Mapping[str, Any]) -> list[str]:
    """Impossible settings, each naming the key and the level; empty when G and D can be built."""
    found = generator_problems(model)
    return found if found else discriminator_problems(model)


def discriminator_problems(model: Mapping[str, Any]) -> list[str]:
    """The wavelet discriminator ends on a 4x4 map after at least one 2x reduction of the
    half-resolution wavelet input."""
    r = model["resolution"]
    if r < 16:
        return [f"model.resolution {r}: the wavelet discriminator needs a resolution >= 16"]
    return []


def generator_problems(model: Mapping[str, Any]) -> list[str]:
    """Settings the generator cannot be built with, each naming the key and the level."""
    r = model["resolution"]
    if not isinstance(r, int) or r < 8 or r & (r - 1):
        return [f"model.resolution {r!r}: must be a power of two >= 8"]
    if model["attention"] not in ATTENTIONS:
        return [f"model.attention {model['attention']!r}: expected one of {', '.join(ATTENTIONS)}"]
    if model["attention"] == "hydra_na":
        k = model["kernel_size"]
        if model["dilations"] not in DILATION_SCHEMES:
            return [f"model.dilations {model['dilations']!r}: expected one of "
                    f"{', '.join(DILATION_SCHEMES)}"]
        if (model["dilations"] == "progressive" and model["partitions"] > 2
                and model["dilation_spacing"] not in DILATION_SPACINGS):
            return [f"model.dilation_spacing {model['dilation_spacing']!r}: expected one of "
                    f"{', '.join(DILATION_SPACINGS)}"]
        if k < 3 or k % 2 == 0 or k > 8:
            return [f"model.kernel_size {k}: must be odd, >= 3 and <= 8 (the side of the 8x8 "
                    "level, the first neighbourhood-attention level)"]
    out: list[str] = []
    w = model["window_size"]
    for res in levels(model):
        c, h = channels(model, res), heads(model, res)
        where = f"at level {res} ({c} channels, {h} heads)"
        if c % h:
            out.append(f"model.head_dim {model['head_dim']} / model.min_heads "
                       f"{model['min_heads']}: {h} heads do not divide {c} channels {where}")
        if res > MHSA_SIDE and (c % 4 or c < 8):
            out.append(f"model.max_channels {model['max_channels']} / model.channel_multiplier "
                       f"{model['channel_multiplier']}: the 2-D sinusoidal position code needs a "
                       f"multiple of 4 channels, at least 8 {where}")
        if model["attention"] == "swin":
            if h % 2:
                out.append(f"model.head_dim / model.min_heads: StyleSwin splits the heads into two "
                           f"halves (window, shifted window), odd head count {where}")
            if res > w and res % w:
                out.append(f"model.window_size {w}: does not divide the side {where}")
        elif res > MHSA_SIDE and len(dilations(model, res)) > h:
            key = ("model.partitions" if model["dilations"] != "pyramid"
                   else "model.dilations pyramid")
            out.append(f"{key}: {len(dilations(model, res))} head partitions exceed the {h} "
                       f"heads {where}")
    return out
