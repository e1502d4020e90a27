"""The StyleNAT authors' released generators as sparsegen checkpoints.

Converts the EMA generator (`g_ema`) of the released files `FFHQ256_940k_flip.pt` and
`FFHQ1024_700k.pt` (https://shi-labs.com/projects/stylenat/checkpoints/; manifest entries
`stylenat_ffhq256`, `stylenat_ffhq1024`) onto our `Generator` (`build_generator`), through the
shared machinery of `sparsegen.released` (one `Rename` per official tensor, checked one-to-one).

Facts relied on (../shared/reference/official_checkpoints.md, "StyleNAT"; official_repos.md
§4.2 and §4.7):
- a released file is a pickled dict with `g`, `g_ema` and the training `args`; its generator
  predates 2023 and uses the LEGACY split-head attention: every neighbourhood-attention block
  has exactly two halves of the heads (the first half with dilation 1, the second with the
  level's large dilation; at 8x8 both have dilation 1), each with its own bias table `rpb0`,
  `rpb1` of shape (heads/2, 2k-1, 2k-1). Our Hydra-NA at `partitions: 2` has the same two
  head partitions in the same order (`attn.rpb.0`, `attn.rpb.1`), and NATTEN's bias index (key
  minus query in sub-grid steps, plus k-1) is ours, so the tables are copied unchanged;
- the 4x4 level is full self-attention with one (heads, 7, 7) table (`attn.rpb`) whose index is
  flipped from the Swin convention (query minus key) to NATTEN's (key minus query): that is our
  kernel-4 partition's index, so `attn.rpb` -> `attn.rpb.0` unchanged as well;
- mapping: PixelNorm is `style.0`, the EqualLinear layers `style.1..n_mlp` (lr multiplier
  `lr_mlp`); both codes store the weights divided by the multiplier and scale them by
  lr_mul / sqrt(fan_in) at run time, so they are copied unchanged;
- the constant input is (1, C, 4, 4) there and channels-last (1, 4, 4, C) here (transposed);
- names otherwise agree: `layers.{l}` -> `levels.{l}` (blocks, `upsample.{norm, reduction,
  alpha}`), `to_rgbs.{l}.{conv, bias}`;
- the official state dict also holds persistent buffers that are functions of the architecture
  (ours computes them and does not store them): the 4x4 level's `relative_position_index`, the
  ToRGB skip upsampler's blur `kernel`, and the position code's `_float_tensor` (an
  uninitialised placeholder of one element). They are checked against what they must be when
  present and dropped (`official_buffers`);
- images agree with the official code within 6.3e-7 (relative, FFHQ-256) with the float64
  position table and to rounding with `model.position_precision: float32` (the official
  float32 table), which the released variants set.
"""

from __future__ import annotations

import re
from argparse import Namespace
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from sparsegen.models.stylenat import architecture as arch
from sparsegen.models.stylenat.generator import BLOCKS_PER_LEVEL, build_generator
from sparsegen.models.stylenat.layers import blur_kernel
from sparsegen.released import (
    FILE,
    STAND_IN,
    ConversionError,
    Rename,
    convert_state,
    official_file,
    released_facts,
    single_release,
    source_kind,
    to_official,
    write_converted,
)
from sparsegen.weights import get_spec

# The official half / partition count of every neighbourhood-attention block (legacy layout).
LEGACY_HALVES = 2
SKIP_UP_GAIN = 4  # the ToRGB skip upsampler's blur kernel is scaled by factor**2 (x2 upsampling)
CONVERSION_NOTE = ("legacy split-head g_ema -> sparsegen Generator (name table in "
                   "sparsegen.models.stylenat.released)")


def _to_channels_last(t: torch.Tensor) -> torch.Tensor:
    return t.permute(0, 2, 3, 1).contiguous()


def _to_channels_first(t: torch.Tensor) -> torch.Tensor:
    return t.permute(0, 3, 1, 2).contiguous()


def legacy_problems(model: Mapping[str, Any]) -> list[str]:
    """Why our generator at `model` cannot hold the legacy layout (empty when it can): Hydra-NA
    with exactly two equal head halves at every neighbourhood-attention level."""
    if model["attention"] != "hydra_na":
        return [f"model.attention {model['attention']!r}: the released generators use "
                "neighbourhood attention (hydra_na)"]
    out = []
    for res in arch.levels(model)[1:]:
        parts, heads = arch.dilations(model, res), arch.heads(model, res)
        if len(parts) != LEGACY_HALVES or heads % LEGACY_HALVES:
            out.append(f"model.partitions / model.dilations: the legacy layout has two equal "
                       f"head halves per block; the settings give {len(parts)} partition(s) "
                       f"of {heads} heads at level {res}")
    return out


def name_table(model: Mapping[str, Any]) -> list[Rename]:
    """Official name -> our name for every parameter of the generator at `model` (legacy
    split-head layout; official buffers: `official_buffers`). Raises ConversionError when our
    generator at `model` has no legacy layout (`legacy_problems`)."""
    problems = legacy_problems(model)
    if problems:
        raise ConversionError("the released StyleNAT layout does not fit the settings:\n  - "
                              + "\n  - ".join(problems))
    table: list[Rename] = []

    def same(official: str, ours: str, params: tuple[str, ...] = ("weight", "bias")) -> None:
        table.extend(Rename(f"{official}.{p}", f"{ours}.{p}") for p in params)

    # Mapping network: style.0 is PixelNorm; EqualLinear style.1..n_mlp, W stored / lr_mlp in both.
    for i in range(1, model["n_mlp"] + 1):
        same(f"style.{i}", f"style.{i}")
    # Learned constant: official ConstantInput (1, C, 4, 4) -> ours channels-last (1, 4, 4, C).
    table.append(Rename("input.input", "input", to_ours=_to_channels_last,
                        to_official=_to_channels_first))
    sides = arch.levels(model)
    for lv, res in enumerate(sides):
        for b in range(BLOCKS_PER_LEVEL):
            o, u = f"layers.{lv}.blocks.{b}", f"levels.{lv}.blocks.{b}"
            # AdaIN: EqualLinear w -> [gamma | beta] (2C), gamma first in both.
            same(f"{o}.norm1.style", f"{u}.norm1.style")
            same(f"{o}.norm2.style", f"{u}.norm2.style")
            # qkv: Linear C -> 3C laid out (3, heads, head_dim) in both; output projection.
            same(f"{o}.attn.qkv", f"{u}.attn.qkv")
            same(f"{o}.attn.proj", f"{u}.attn.proj")
            if res == arch.MHSA_SIDE:
                # 4x4 full attention: one (heads, 7, 7) table, key-minus-query index in both.
                table.append(Rename(f"{o}.attn.rpb", f"{u}.attn.rpb.0"))
            else:
                # Legacy halves: rpb0 = first heads/2 (dilation 1), rpb1 = the rest.
                table.extend(Rename(f"{o}.attn.rpb{h}", f"{u}.attn.rpb.{h}")
                             for h in range(LEGACY_HALVES))
            # MLP: Linear C -> ratio*C, GELU, Linear back.
            same(f"{o}.mlp.fc1", f"{u}.mlp.fc1")
            same(f"{o}.mlp.fc2", f"{u}.mlp.fc2")
        if res < model["resolution"]:
            # BilinearUpsample: LayerNorm, Linear without bias, scalar alpha of the position code.
            same(f"layers.{lv}.upsample.norm", f"levels.{lv}.upsample.norm")
            same(f"layers.{lv}.upsample.reduction", f"levels.{lv}.upsample.reduction",
                 ("weight",))
            table.append(Rename(f"layers.{lv}.upsample.alpha", f"levels.{lv}.upsample.alpha"))
        # ToRGB: 1x1 conv (with its bias) plus a separate (1, 3, 1, 1) bias.
        same(f"to_rgbs.{lv}.conv", f"to_rgbs.{lv}.conv")
        table.append(Rename(f"to_rgbs.{lv}.bias", f"to_rgbs.{lv}.bias"))
    return table


def mhsa_index(side: int) -> torch.Tensor:
    """The official 4x4 level's `relative_position_index` [side², side²] (int64): for query i
    and key j (row-major), (key row - query row + side-1) * (2 side - 1) + (key col - query col
    + side-1), i.e. the Swin index flipped to NATTEN's key-minus-query convention."""
    coords = torch.stack(torch.meshgrid(torch.arange(side), torch.arange(side), indexing="ij"))
    coords = coords.flatten(1)                              # [2, N]
    delta = coords[:, None, :] - coords[:, :, None] + side - 1   # [2, query, key]
    return delta[0] * (2 * side - 1) + delta[1]


def official_buffers(model: Mapping[str, Any]) -> dict[str, torch.Tensor]:
    """The persistent buffers of the official g_ema state dict at `model`: functions of the
    architecture that our generator recomputes (module docstring)."""
    out: dict[str, torch.Tensor] = {}
    for lv, res in enumerate(arch.levels(model)):
        if res == arch.MHSA_SIDE:
            for b in range(BLOCKS_PER_LEVEL):
                out[f"layers.{lv}.blocks.{b}.attn.relative_position_index"] = mhsa_index(res)
        if res < model["resolution"]:
            out[f"layers.{lv}.upsample.sin_pos_embed._float_tensor"] = torch.zeros(1)
            out[f"to_rgbs.{lv}.upsample.kernel"] = blur_kernel() * SKIP_UP_GAIN
    return out


def _placeholder(name: str) -> bool:
    return name.endswith("._float_tensor")  # uninitialised memory: only its shape is fixed


def drop_buffers(official: Mapping[str, torch.Tensor], model: Mapping[str, Any], source: str
                 ) -> tuple[dict[str, torch.Tensor], int]:
    """`official` without its buffers (and how many there were), each checked against what it
    must be at `model`; absent buffers are accepted (they carry no learned value)."""
    params, checked, problems = dict(official), 0, []
    for name, expected in official_buffers(model).items():
        if name not in params:
            continue
        value = params.pop(name)
        checked += 1
        if tuple(value.shape) != tuple(expected.shape):
            problems.append(f"{name} {tuple(value.shape)} should have shape "
                            f"{tuple(expected.shape)}")
        elif not _placeholder(name) and not torch.equal(value.to(expected.dtype), expected):
            problems.append(f"{name} differs from the buffer the official code computes "
                            "for this architecture")
    if problems:
        raise ConversionError(f"{source}: does not convert onto our network:\n  - "
                              + "\n  - ".join(problems))
    return params, checked


def _plain(value: Any) -> Any:
    """argparse Namespace / OmegaConf containers / mappings -> plain dicts and lists."""
    if isinstance(value, Namespace):
        value = vars(value)
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, Sequence) and not isinstance(value, (str, bytes)):
        return [_plain(v) for v in value]
    return value


def read_official(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """The `g_ema` state dict of a released file and its training `args` as a plain dict
    (empty when absent). Raises ConversionError naming the file when it cannot be read or
    holds no `g_ema`."""
    path = Path(path)
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as e:  # torch raises several types for missing/corrupt/unpicklable files
        raise ConversionError(f"{path}: cannot read the released checkpoint "
                              f"({type(e).__name__}: {e})") from None
    if not isinstance(ckpt, Mapping):
        raise ConversionError(f"{path}: expected a dict with g_ema, found a "
                              f"{type(ckpt).__name__}")
    state = ckpt.get("g_ema")
    if state is None and isinstance(ckpt.get("state_dicts"), Mapping):  # newer Hydra saves
        state = ckpt["state_dicts"].get("g_ema")
    if not isinstance(state, Mapping):
        raise ConversionError(f"{path}: no g_ema state dict (keys found: "
                              f"{', '.join(map(str, ckpt)) or 'none'})")
    odd = [str(k) for k, v in state.items() if not isinstance(v, torch.Tensor)]
    if odd:
        raise ConversionError(f"{path}: g_ema entries that are not tensors: {', '.join(odd[:8])}")
    args = ckpt.get("args")
    args = _plain(args) if args is not None else {}
    return dict(state), (args if isinstance(args, dict) else {})


def _architecture_args(args: Mapping[str, Any]) -> dict[str, Any]:
    """The generator's args, flat: the argparse form (`size`, `style_dim`, ...) or the Hydra
    form (`runs.size`, `runs.generator.*`)."""
    flat = {k: v for k, v in args.items() if k != "runs"}
    runs = args.get("runs")
    if isinstance(runs, Mapping):
        generator = runs.get("generator")
        flat.update(generator if isinstance(generator, Mapping) else {})
        if "size" in runs:
            flat["size"] = runs["size"]
    return flat


def _per_level(value: Any, side: int) -> list[int] | None:
    """The official per-level list entry for feature side `side` (index log2(side) - 2)."""
    index = side.bit_length() - 1 - (arch.MHSA_SIDE.bit_length() - 1)
    if not isinstance(value, list) or index >= len(value):
        return None
    entry = value[index]
    return [int(x) for x in entry] if isinstance(entry, list) else [int(entry)]


def check_args(args: Mapping[str, Any], model: Mapping[str, Any]) -> list[str]:
    """One message per architecture fact of the checkpoint's training `args` that differs from
    our `model` settings, naming our params key; keys it does not know are skipped."""
    a = _architecture_args(args)
    out: list[str] = []

    def scalar(keys: tuple[str, ...], ours: str, what: str) -> None:
        for key in keys:
            theirs = a.get(key)
            if theirs is None:
                continue
            mine = model[ours]
            try:
                differs = abs(float(theirs) - float(mine)) > 1e-9 * max(1.0, abs(float(mine)))
            except (TypeError, ValueError):
                differs = theirs != mine
            if differs:
                out.append(f"model.{ours}: {mine} in the settings, the checkpoint was "
                           f"{what} {theirs}")
            return

    scalar(("size",), "resolution", "trained at")
    scalar(("style_dim",), "style_dim", "trained with")
    scalar(("n_mlp",), "n_mlp", "trained with")
    scalar(("lr_mlp",), "lr_mlp", "trained with")
    scalar(("channel_multiplier", "G_channel_multiplier"), "channel_multiplier", "trained with")
    scalar(("mlp_ratio",), "mlp_ratio", "trained with")
    scalar(("min_heads",), "min_heads", "trained with")
    block = a.get("block_type")
    if block is not None and str(block).lower() != {"hydra_na": "nat"}.get(model["attention"],
                                                                          model["attention"]):
        out.append(f"model.attention: {model['attention']} in the settings, the checkpoint's "
                   f"block_type is {block}")
    if a.get("qkv_bias") is False:
        out.append("qkv_bias: the checkpoint was trained without qkv biases; our generator "
                   "always has them (no setting)")
    if a.get("qk_scale") is not None:
        out.append(f"qk_scale: the checkpoint scales q by {a['qk_scale']}; our generator uses "
                   "head_dim ** -0.5 (no setting)")
    kernels, dilations = a.get("kernels"), a.get("dilations")
    # The 4x4 level's official entries are ignored there (full attention), as here.
    for res in arch.levels(model)[1:]:
        if kernels is not None and model["attention"] == "hydra_na":
            k = _per_level(kernels, res)
            if k is None:
                out.append(f"model.resolution: the checkpoint's kernels {kernels} have no entry "
                           f"for level {res}")
            elif set(k) != {model["kernel_size"]}:
                out.append(f"model.kernel_size: {model['kernel_size']} in the settings, the "
                           f"checkpoint's kernels at level {res} are {k}")
        if dilations is not None and model["attention"] == "hydra_na":
            d = _per_level(dilations, res)
            if d is None:
                out.append(f"model.resolution: the checkpoint's dilations {dilations} have no "
                           f"entry for level {res}")
                continue
            legacy = d * LEGACY_HALVES if len(d) == 1 else d  # one entry serves both halves
            mine = arch.dilations(model, res)
            if legacy != mine:
                out.append(f"model.dilations / model.partitions: {mine} in the settings at "
                           f"level {res}, the checkpoint has {d}")
    return out


def stand_in(model: Mapping[str, Any], seed: int) -> dict[str, torch.Tensor]:
    """Our generator at `model` initialised from `seed`, as an official-layout g_ema state dict
    (parameters by `name_table`, plus the official buffers)."""
    torch.manual_seed(seed)
    generator = build_generator(model)
    return {**to_official(generator.state_dict(), name_table(model)), **official_buffers(model)}


def training_step(filename: str) -> int | None:
    """The authors' training step from a released file name (`FFHQ256_940k_flip.pt` -> 940000),
    None when the name does not state it."""
    match = re.search(r"(?:^|_)(\d+)k(?:_|$)", Path(filename).stem)
    return int(match.group(1)) * 1000 if match else None


def _finite_problems(tensors: Mapping[str, torch.Tensor]) -> list[str]:
    return [name for name, t in tensors.items()
            if t.is_floating_point() and not bool(torch.isfinite(t).all())]


def convert(settings: dict[str, Any], out: Path, device: torch.device) -> None:
    """Write `out` (converted.pt): the released generator of `settings["released"]` (one
    manifest name) as our `g_ema`, from the verified file or, without it, the stand-in
    (`sparsegen.released.source_kind`)."""
    name, model = single_release(settings), settings["model"]
    kind = source_kind(settings, name)
    if kind == FILE:
        path, sha256 = official_file(settings, name)
        print(f"stylenat convert: reading {path} ({name})", flush=True)
        official, args = read_official(path)
        mismatches = check_args(args, model)
        if mismatches:
            raise ConversionError(f"{path}: the checkpoint's training args disagree with the "
                                  f"settings:\n  - " + "\n  - ".join(mismatches))
        if model.get("position_precision") != "float32":
            print("stylenat convert: note: model.position_precision is not float32, the "
                  "official position table's precision (images differ up to ~1e-6)", flush=True)
        source, step = str(path), training_step(path.name)
    else:
        sha256, step = STAND_IN, None
        source = f"stand-in for {name} (our generator at seed {settings['seed']})"
        print(f"stylenat convert: {source}, in the official layout", flush=True)
        official = stand_in(model, settings["seed"])
    bad = _finite_problems(official)
    if bad:
        raise ConversionError(f"{source}: non-finite values in {', '.join(bad[:8])}")
    params, n_buffers = drop_buffers(official, model, source)
    generator = build_generator(model)
    state = convert_state(params, name_table(model), generator.state_dict(), source)
    generator.load_state_dict(state, strict=True)
    generator.to(device).eval()
    print(f"stylenat convert: mapped {len(state)} official tensors one-to-one onto our "
          f"generator ({n_buffers} official buffers checked and dropped)", flush=True)
    sources = {name: {"kind": kind, "sha256": sha256, "url": get_spec(name).url}}
    write_converted(out, settings, {"g_ema": generator},
                    released_facts(settings, sources, step=step, note=CONVERSION_NOTE))
    print(f"stylenat convert: wrote {out}", flush=True)
