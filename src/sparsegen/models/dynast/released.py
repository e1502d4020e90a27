"""The DynaST authors' released DeepFashion generator as a sparsegen checkpoint.

Converts `latest_net_G.pth` (Huage001/DynaST, `checkpoints/deepfashion/`; manifest entry
`dynast_deepfashion`) onto our `OfficialGenerator` (`model.architecture: official`,
`sparsegen.models.dynast.official`) through the shared machinery of `sparsegen.released`: one
`Rename` per official tensor, checked one-to-one, shapes equal.

Facts relied on (official_repos.md §1.2; the official generator.py, architecture.py,
dynast_transformer.py, util/util.py::save_network):
- the file is `netG.state_dict()` of the bare `DynaSTGenerator` (save_network is called on the
  model inside the DataParallel wrapper), so keys carry no `module.` prefix; one is stripped
  if present;
- convs wrapped in `torch.nn.utils.spectral_norm` (encoder stage convs, both convs of every
  SPADEResnetBlock) store `weight_orig`, `weight_u` (out,) and `weight_v` (in*k*k,); ours use
  the parametrization, whose `parametrizations.weight.original`, `.0._u`, `.0._v` hold the
  same tensors and give the same weight in eval mode (weight_orig / u^T W v);
- `SynchronizedBatchNorm2d` is a `_BatchNorm`: weight, bias, running_mean, running_var,
  num_batches_tracked map onto `nn.BatchNorm2d` unchanged;
- the official ResidualBlock registers its PReLU as `relu` and again as `model.2` inside its
  Sequential, so the state dict holds the same tensor twice; ours has it once (`act`): the
  alias is checked equal to `relu.weight` and dropped (`aliases`);
- levels: official n = 4 (1/8 of the side) ... 1 (full side) is our level n - 1; official
  `pos_{n+1}{n}`, `decoder{,_q,_kv}_{n+1}{n}` are our `pos_up`, `up`, `up_q`, `up_kv` at
  level n - 1; `embed_n` (n = 3, 2, 1) is our `fuse[n - 1]` (`embed_1` is never run, in
  either network); block projections f, g, h, f_prune, g_prune are our alpha, beta, eta,
  omega, phi; SPADE's mlp_shared.0 / mlp_gamma / mlp_beta are our shared.0 / gamma / beta.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from sparsegen.models.dynast.checks import LABEL_CHANNELS
from sparsegen.models.dynast.official import LEVELS, OfficialGenerator, settings_problems
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

CONVERSION_NOTE = ("Huage001/DynaST latest_net_G.pth (DeepFashion) -> sparsegen OfficialGenerator "
                   "(name table in sparsegen.models.dynast.released; ResidualBlock PReLU aliases "
                   "checked and dropped)")
SN_PARTS = {"weight_orig": "parametrizations.weight.original",
            "weight_u": "parametrizations.weight.0._u",
            "weight_v": "parametrizations.weight.0._v", "bias": "bias"}
BN_PARTS = ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")
PRELU_ALIAS = "model.2.weight"  # the ResidualBlock's PReLU, registered again in its Sequential


def _same(table: list[Rename], official: str, ours: str,
          parts: tuple[str, ...] = ("weight", "bias")) -> None:
    table.extend(Rename(f"{official}.{p}", f"{ours}.{p}") for p in parts)


def _spectral(table: list[Rename], official: str, ours: str) -> None:
    table.extend(Rename(f"{official}.{o}", f"{ours}.{u}") for o, u in SN_PARTS.items())


def _spade(table: list[Rename], official: str, ours: str) -> None:
    _same(table, f"{official}.mlp_shared.0", f"{ours}.shared.0")
    _same(table, f"{official}.mlp_gamma", f"{ours}.gamma")
    _same(table, f"{official}.mlp_beta", f"{ours}.beta")


def _spade_resblock(table: list[Rename], official: str, ours: str) -> None:
    for i in (0, 1):
        _spectral(table, f"{official}.conv_{i}", f"{ours}.conv_{i}")
        _spade(table, f"{official}.norm_{i}", f"{ours}.norm_{i}")
    table.append(Rename(f"{official}.relu.weight", f"{ours}.act.weight"))


def _residual(table: list[Rename], official: str, ours: str) -> None:
    # Sequential(conv 0, BN 1, PReLU 2 (= relu), conv 3, BN 4); PReLU alias: `aliases`.
    _same(table, f"{official}.model.0", f"{ours}.conv_0")
    _same(table, f"{official}.model.1", f"{ours}.bn_0", BN_PARTS)
    _same(table, f"{official}.model.3", f"{ours}.conv_1")
    _same(table, f"{official}.model.4", f"{ours}.bn_1", BN_PARTS)
    table.append(Rename(f"{official}.relu.weight", f"{ours}.act.weight"))


def _residual_prefixes(model: Mapping[str, Any]) -> list[str]:
    """Official prefixes of every ResidualBlock (encoder stages, transformer blocks)."""
    out = [f"{enc}.layer{n}.2" for enc in ("encoder_q", "encoder_kv")
           for n in range(1, LEVELS + 1)]
    out += [f"transformer_{n}.{j}.res_block" for n in range(1, LEVELS + 1)
            for j in range(model["blocks_per_level"])]
    return out


def name_table(model: Mapping[str, Any]) -> list[Rename]:
    """Official name -> our name for every tensor of the released generator at `model`, except
    the PReLU aliases (`aliases`). Raises ConversionError when `model` is not the official
    network (`official.settings_problems`)."""
    problems = settings_problems(model)
    if problems:
        raise ConversionError("the released DynaST generator does not fit the settings:\n  - "
                              + "\n  - ".join(problems))
    table: list[Rename] = []
    for enc in ("encoder_q", "encoder_kv"):  # FeatureGenerator: layer{n} = (SN conv, IN, ResBlock)
        for level in range(LEVELS):
            _spectral(table, f"{enc}.layer{level + 1}.0", f"{enc}.stages.{level}.conv")
            _residual(table, f"{enc}.layer{level + 1}.2", f"{enc}.stages.{level}.res")
    table.append(Rename("pos_embed", "pos_embed"))
    for level in range(LEVELS):
        n = level + 1
        _spade_resblock(table, f"embed_q{n}", f"embed_q.{level}")
        _spade_resblock(table, f"embed_kv{n}", f"embed_kv.{level}")
        for j in range(model["blocks_per_level"]):
            o, u = f"transformer_{n}.{j}", f"blocks.{level}.{j}"
            for official, ours in (("f", "alpha"), ("g", "beta"), ("h", "eta"),
                                   ("f_prune", "omega"), ("g_prune", "phi")):
                _same(table, f"{o}.{official}", f"{u}.{ours}")
            _spade(table, f"{o}.spade", f"{u}.spade")
            _residual(table, f"{o}.res_block", f"{u}.res")
        if level < LEVELS - 1:  # steps from level n + 1 to n: Sequential(Upsample, conv, act)
            step = f"{n + 1}{n}"
            _same(table, f"pos_{step}.1", f"pos_up.{level}.1")
            _same(table, f"decoder_{step}.1", f"up.{level}.1")
            _same(table, f"decoder_q{step}.1", f"up_q.{level}.1")
            _same(table, f"decoder_kv{step}.1", f"up_kv.{level}.1")
            _spade_resblock(table, f"embed_{n}", f"fuse.{level}")
    _same(table, "decoder_10.0", "to_rgb")
    return table


def aliases(model: Mapping[str, Any]) -> dict[str, str]:
    """Official alias name -> the official name of the same tensor (the ResidualBlock PReLUs)."""
    return {f"{p}.{PRELU_ALIAS}": f"{p}.relu.weight" for p in _residual_prefixes(model)}


def drop_aliases(official: Mapping[str, torch.Tensor], model: Mapping[str, Any], source: str
                 ) -> tuple[dict[str, torch.Tensor], int]:
    """`official` without its PReLU aliases (and how many there were), each checked equal to
    the tensor it aliases; absent aliases are accepted (they carry no value of their own)."""
    params, checked, problems = dict(official), 0, []
    for alias, name in aliases(model).items():
        if alias not in params:
            continue
        value = params.pop(alias)
        checked += 1
        if name in params and not torch.equal(value, params[name]):
            problems.append(f"{alias} differs from {name}, the PReLU it aliases")
    if problems:
        raise ConversionError(f"{source}: does not convert onto our network:\n  - "
                              + "\n  - ".join(problems))
    return params, checked


def check_layout(official: Mapping[str, torch.Tensor], model: Mapping[str, Any]) -> list[str]:
    """One message per architecture fact of the official tensors that differs from `model`,
    naming our params key (facts whose tensors are absent are skipped: convert_state names
    missing tensors)."""
    out = []

    def shape(name: str, dim: int) -> int | None:
        t = official.get(name)
        return int(t.shape[dim]) if t is not None and t.dim() > dim else None

    widths = list(model["widths"])
    first = "encoder_q.layer1.0.weight_orig"
    facts = [
        ("model.task", shape(first, 1), LABEL_CHANNELS[model["task"]], "label channels"),
        ("model.widths", shape(first, 0), widths[0], "ngf (widths[0])"),
        ("model.size", None if shape("pos_embed", 3) is None else 8 * shape("pos_embed", 3),
         model["size"], "crop size (8 x pos_embed side)"),
        ("model.pos_ratio", shape("pos_embed", 1), widths[-1] // model["pos_ratio"],
         "positional channels at 1/8"),
        ("model.prune_ratio", shape("transformer_4.0.f_prune.weight", 0),
         widths[-1] // model["prune_ratio"], "prune width at 1/8"),
    ]
    for key, theirs, mine, what in facts:
        if theirs is not None and theirs != mine:
            out.append(f"{key}: the checkpoint's {what} is {theirs}, the settings give {mine}")
    blocks = {int(m.group(1)) for k in official
              if (m := re.match(r"transformer_4\.(\d+)\.", k))}
    if blocks and len(blocks) != model["blocks_per_level"]:
        out.append(f"model.blocks_per_level: the checkpoint has {len(blocks)} blocks per level "
                   f"(n_layers), the settings give {model['blocks_per_level']}")
    return out


def _strip_wrapper(state: Mapping[str, Any]) -> dict[str, Any]:
    """A state dict saved from a DataParallel wrapper has every key under `module.`."""
    if state and all(k.startswith("module.") for k in state):
        return {k[len("module."):]: v for k, v in state.items()}
    return dict(state)


def read_official(path: Path) -> dict[str, torch.Tensor]:
    """The generator state dict of a released `latest_net_G.pth` (without a `module.` prefix).
    Raises ConversionError naming the file when it cannot be read or is not a state dict."""
    path = Path(path)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # missing, truncated, not a torch file, unexpected pickle
        raise ConversionError(f"{path}: cannot read the released DynaST generator "
                              f"({type(e).__name__}: {e})") from None
    if not isinstance(state, Mapping):
        raise ConversionError(f"{path}: expected the generator's state dict, found a "
                              f"{type(state).__name__}")
    odd = [str(k) for k, v in state.items() if not isinstance(v, torch.Tensor)]
    if odd:
        raise ConversionError(f"{path}: entries that are not tensors: {', '.join(odd[:8])}")
    return _strip_wrapper(state)


def stand_in(model: Mapping[str, Any], seed: int) -> dict[str, torch.Tensor]:
    """Our official generator at `model` initialised from `seed`, as the official state dict
    (tensors by `name_table`, plus the PReLU aliases)."""
    torch.manual_seed(seed)
    official = to_official(OfficialGenerator(model).state_dict(), name_table(model))
    return {**official, **{a: official[n].clone() for a, n in aliases(model).items()}}


def _non_finite(tensors: Mapping[str, torch.Tensor]) -> list[str]:
    return [name for name, t in tensors.items()
            if t.is_floating_point() and not bool(torch.isfinite(t).all())]


def convert(settings: dict[str, Any], out: Path, device: torch.device) -> None:
    """Write `out` (converted.pt): the released generator of `settings["released"]` (one
    manifest name) as our `generator`, from the verified file or, without it, the stand-in
    (`sparsegen.released.source_kind`); checked one-to-one, loaded strictly and run once on
    `device`."""
    name, model = single_release(settings), settings["model"]
    problems = settings_problems(model)
    if model["architecture"] != "official":
        problems.insert(0, f"model.architecture: {model['architecture']}, the released "
                        "weights load into the official generator (set official)")
    if problems:
        raise ConversionError(f"dynast.{settings.get('variant')}: the released DynaST weights "
                              "need the official network:\n  - " + "\n  - ".join(problems))
    kind = source_kind(settings, name)
    if kind == FILE:
        path, sha256 = official_file(settings, name)
        print(f"dynast convert: reading {path} ({name})", flush=True)
        official, source = read_official(path), str(path)
        mismatches = check_layout(official, model)
        if mismatches:
            raise ConversionError(f"{path}: the checkpoint's architecture disagrees with the "
                                  "settings:\n  - " + "\n  - ".join(mismatches))
    else:
        sha256 = STAND_IN
        source = f"stand-in for {name} (our official generator at seed {settings['seed']})"
        print(f"dynast convert: {source}, in the official layout", flush=True)
        official = stand_in(model, settings["seed"])
    bad = _non_finite(official)
    if bad:
        raise ConversionError(f"{source}: non-finite values in {', '.join(bad[:8])}")
    params, n_aliases = drop_aliases(official, model, source)
    generator = OfficialGenerator(model)
    state = convert_state(params, name_table(model), generator.state_dict(), source)
    generator.load_state_dict(state, strict=True)
    print(f"dynast convert: mapped {len(state)} official tensors one-to-one onto our "
          f"generator ({n_aliases} PReLU aliases checked and dropped)", flush=True)

    # One forward on the device at model.size (the only side the official network runs at).
    generator.to(device).eval()
    label, side = LABEL_CHANNELS[model["task"]], model["size"]
    gen = torch.Generator().manual_seed(0)
    s_tgt, s_ref = (torch.rand(1, label, side, side, generator=gen).to(device) for _ in range(2))
    i_ref = (torch.rand(1, 3, side, side, generator=gen) * 2 - 1).to(device)
    with torch.no_grad():
        image = generator(s_tgt, i_ref, s_ref, warp=False).image
    if not bool(torch.isfinite(image).all()):
        raise ConversionError(f"{source}: the converted generator gives non-finite images")
    generator.cpu()

    sources = {name: {"kind": kind, "sha256": sha256, "url": get_spec(name).url}}
    note = CONVERSION_NOTE if kind == FILE else "stand-in: " + CONVERSION_NOTE
    write_converted(out, settings, {"generator": generator},
                    released_facts(settings, sources, step=None, note=note))
    print(f"dynast convert: wrote {out} ({kind})", flush=True)
