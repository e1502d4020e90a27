"""The iLAT authors' released FFHQ face-editing models as one sparsegen checkpoint.

Converts the three released files (ewrfcas/iLAT README, official_repos §3.6; manifest entries
`ilat_ffhq_sketch_vqgan`, `ilat_ffhq_tsvqgan`, `ilat_ffhq_transformer`) onto our sketch
tokenizer (`condition_tokenizer`), face TS-VQGAN (`tokenizer`) and GPT (`transformer`), through
the shared machinery of `sparsegen.released`: one `Rename` per official tensor, checked
one-to-one, shapes equal; `converted.pt` holds the three modules, `load_released` reads it.

Facts relied on (official_repos §3.2-3.3; the official src/plm_layers.py, layers.py,
sketch_layers.py, quantize.py, vqgan_models.py, skvqgan_models.py, transformer.py,
transformer_models.py, configs/*.yml):
- the training scripts save {'iteration', 'g_model' | 'model', 'g_opt' | 'opt'} with the bare
  module's state dict (no wrapper; a `module.` prefix is stripped if present); a file holding
  the state dict alone is read as well;
- InstanceNorm2d without affine or running statistics and Dropout store nothing, so every
  tensor is a convolution, the codebook or a transformer weight;
- TS-VQGAN (`VQCombineModel`, ch 64, ch_mult [1, 2, 4, 6, 8], 2 blocks per level): encoder
  levels 0..L-1 (L = len(model.tokenizer.widths)) are our encoder levels; the official last
  level (at the token grid, width `mid_width`, `blocks` blocks, no down-conv) and its two
  middle blocks are our `mid_blocks` = blocks + 2 middle blocks; the decoder is our face
  decoder at `layout: official` (`tokenizer._face_official_decoder`), official level i being
  our level L - i; `quant_conv` / `post_quant_conv` (1x1) are ours at `layout: official`;
- sketch VQGAN (`SKVQModel`): conv_in is Sequential(ReflectionPad2d(6), 13x13 conv), index 1;
  level i (down-conv, then blocks) is our level i; decoder level i is our level L - 1 - i;
- GPT: c_emb, z_emb, c_sp, z_sp (1, n_embd), pos_emb over [c_sp, c_1..c_N, z_sp, z_1..z_N]
  (our sequence with no pose tokens), pre-LN blocks with the same names, head `dec` (ln1,
  dense, ln2: our head.0, .1, .3) and z_bias; `z_dec.weight` and `c_dec.weight` are the tied
  embeddings registered again (checked equal and dropped); `c_bias` biases condition-token
  logits that nothing reads (`plm_in_cond: False`): checked for its shape and dropped.
The official encoder normalises over the whole map (`norm_stats: whole`), decodes every code
(`compose: official`) and builds the transformer mask with the official LA form; the variant
settings must say so (`settings_problems`).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from sparsegen.models.ilat.task import PAPER, build_transformer
from sparsegen.models.ilat.tokenizer import (
    OFFICIAL_MID_BLOCKS,
    Tokenizer,
    build_tokenizer,
    downsamplings,
)
from sparsegen.models.ilat.transformer import GPT
from sparsegen.released import (
    FILE,
    STAND_IN,
    ConversionError,
    Rename,
    convert_state,
    official_file,
    released_facts,
    source_kind,
    to_official,
    write_converted,
)
from sparsegen.train import checkpoint
from sparsegen.weights import get_spec

# Manifest name -> (our module, the key of the official save() dict holding its state).
OFFICIAL_FILES = {"ilat_ffhq_sketch_vqgan": ("condition_tokenizer", "g_model"),
                  "ilat_ffhq_tsvqgan": ("tokenizer", "g_model"),
                  "ilat_ffhq_transformer": ("transformer", "model")}
MODULES = ("tokenizer", "condition_tokenizer", "transformer")
GPT_ALIASES = {"z_dec.weight": "z_emb.weight", "c_dec.weight": "c_emb.weight"}
CONDITION_BIAS = "c_bias"
CONVERSION_NOTE = ("ewrfcas/iLAT FFHQ sketch VQGAN, TS-VQGAN and transformer -> sparsegen "
                   "condition_tokenizer, tokenizer, GPT (name tables in "
                   "sparsegen.models.ilat.released; tied z_dec/c_dec checked and dropped; "
                   "unused c_bias dropped)")

# What the released networks compute, per settings key: (value, why).
REQUIRED: dict[str, tuple[Any, str]] = {
    "model.joints": (0, "the face-editing transformer has no pose tokens"),
    "model.tokenizer.architecture": ("face", "the released image tokenizer is the TS-VQGAN"),
    "model.tokenizer.layout": ("official", "the released TS-VQGAN has the official decoder "
                               "and quant convs"),
    "model.tokenizer.channels": (3, "the TS-VQGAN encodes RGB"),
    "model.tokenizer.two_stream": (True, "the released TS-VQGAN encoder is two-stream"),
    "model.tokenizer.norm_stats": ("whole", "the official InstanceNorms use whole-map "
                                   "statistics"),
    "model.tokenizer.compose": ("official", "the official sampler decodes every code"),
    "model.condition_tokenizer.architecture": ("sketch", "the released condition tokenizer is "
                                               "the sketch VQGAN"),
    "model.condition_tokenizer.layout": ("official", "the released sketch VQGAN has quant "
                                         "convs"),
    "model.condition_tokenizer.channels": (1, "the sketch VQGAN encodes one channel"),
    "model.condition_tokenizer.mid_blocks": (OFFICIAL_MID_BLOCKS, "the official sketch VQGAN "
                                             "has two middle blocks"),
    "model.transformer.mask": ("la", "the released transformer was trained with the LA mask"),
    "model.transformer.la_form": ("official", "the released transformer was trained with the "
                                  "official LA mask"),
}


def _lookup(settings: Mapping[str, Any], key: str) -> Any:
    node: Any = settings
    for part in key.split("."):
        if not isinstance(node, Mapping) or part not in node:
            return None
        node = node[part]
    return node


def settings_problems(settings: Mapping[str, Any]) -> list[str]:
    """What in `settings` keeps our networks from computing the released ones: one message per
    key, naming it, its value, why, and what it must be ([] when none)."""
    out = []
    for key, (want, why) in REQUIRED.items():
        have = _lookup(settings, key)
        if have != want or type(have) is not type(want):
            out.append(f"{key}: {have!r}, {why} (set {want!r})")
    tok, sketch = (settings["model"].get(m) for m in ("tokenizer", "condition_tokenizer"))
    if not isinstance(tok, Mapping) or not isinstance(sketch, Mapping):
        return out
    relations = [
        ("model.tokenizer.mid_blocks", tok["mid_blocks"], tok["blocks"] + OFFICIAL_MID_BLOCKS,
         "the official encoder's last level (`blocks` blocks) and its two middle blocks"),
        ("model.tokenizer.decoder_blocks", tok["decoder_blocks"], tok["blocks"] + 1,
         "the official decoder has num_res_blocks + 1 blocks per level"),
        ("model.condition_tokenizer.decoder_blocks", sketch["decoder_blocks"],
         sketch["blocks"] + 1, "the official decoder has num_res_blocks + 1 blocks per level"),
        ("model.condition_tokenizer.mid_width", sketch["mid_width"], sketch["widths"][-1],
         "the official sketch middle keeps the last level's width"),
    ]
    out += [f"{key}: {have}, {why} (set {want})" for key, have, want, why in relations
            if have != want]
    return out


def _same(table: list[Rename], official: str, ours: str) -> None:
    table.extend(Rename(f"{official}.{p}", f"{ours}.{p}") for p in ("weight", "bias"))


def _block(table: list[Rename], official: str, ours: str, cin: int, cout: int) -> None:
    """A residual block: conv1, conv2 and, where the widths differ, the 1x1 nin_shortcut."""
    for conv in ("conv1", "conv2", *(("nin_shortcut",) if cin != cout else ())):
        _same(table, f"{official}.{conv}", f"{ours}.{conv}")


def _quantiser(table: list[Rename]) -> None:
    for conv in ("quant_conv", "post_quant_conv"):
        _same(table, conv, conv)
    table.append(Rename("quantize.embedding.weight", "quantize.embedding.weight"))


def face_table(cfg: Mapping[str, Any]) -> list[Rename]:
    """Official TS-VQGAN name -> ours for the face tokenizer at `cfg` (model.tokenizer)."""
    widths, mid, blocks = list(cfg["widths"]), cfg["mid_width"], cfg["blocks"]
    levels = len(widths)
    table: list[Rename] = []
    _same(table, "encoder.conv_in", "encoder.conv_in")
    for i, w in enumerate(widths):
        for j in range(blocks):
            cin = ([widths[0], *widths][i]) if j == 0 else w
            _block(table, f"encoder.down.{i}.block.{j}", f"encoder.levels.{i}.blocks.{j}", cin, w)
        _same(table, f"encoder.down.{i}.downsample.conv", f"encoder.levels.{i}.resample")
    for j in range(blocks):  # the official last level: our first middle blocks
        _block(table, f"encoder.down.{levels}.block.{j}", f"encoder.mid.{j}",
               widths[-1] if j == 0 else mid, mid)
    for k in range(OFFICIAL_MID_BLOCKS):
        _block(table, f"encoder.mid.block_{k + 1}", f"encoder.mid.{blocks + k}", mid, mid)
    _same(table, "encoder.conv_out", "encoder.conv_out")
    _quantiser(table)
    _same(table, "decoder.conv_in", "decoder.conv_in")
    for k in range(OFFICIAL_MID_BLOCKS):
        _block(table, f"decoder.mid.block_{k + 1}", f"decoder.mid.{k}", mid, mid)
    coarse = [mid, *widths[::-1]]
    for k, w in enumerate(coarse):  # ours coarse to fine; official level levels - k
        official = f"decoder.up.{levels - k}"
        for j in range(cfg["decoder_blocks"]):
            cin = ([mid, *coarse][k]) if j == 0 else w
            _block(table, f"{official}.block.{j}", f"decoder.levels.{k}.blocks.{j}", cin, w)
        if k < levels:
            _same(table, f"{official}.upsample.conv", f"decoder.levels.{k}.resample")
    _same(table, "decoder.conv_out", "decoder.conv_out")
    return table


def sketch_table(cfg: Mapping[str, Any]) -> list[Rename]:
    """Official sketch VQGAN name -> ours for the sketch tokenizer at `cfg`
    (model.condition_tokenizer)."""
    widths, mid = list(cfg["widths"]), cfg["mid_width"]
    levels = len(widths)
    table: list[Rename] = []
    _same(table, "encoder.conv_in.1", "encoder.conv_in")  # Sequential(ReflectionPad2d, conv)
    for i, w in enumerate(widths):
        _same(table, f"encoder.down.{i}.downsample.conv", f"encoder.levels.{i}.resample")
        for j in range(cfg["blocks"]):
            _block(table, f"encoder.down.{i}.block.{j}", f"encoder.levels.{i}.blocks.{j}", w, w)
    for k in range(OFFICIAL_MID_BLOCKS):
        _block(table, f"encoder.mid.block_{k + 1}", f"encoder.mid.{k}",
               widths[-1] if k == 0 else mid, mid)
    _same(table, "encoder.conv_out", "encoder.conv_out")
    _quantiser(table)
    _same(table, "decoder.conv_in", "decoder.conv_in")
    for k in range(OFFICIAL_MID_BLOCKS):
        _block(table, f"decoder.mid.block_{k + 1}", f"decoder.mid.{k}", mid, mid)
    current = [*widths[:-1], mid]
    for k in range(levels):  # ours coarse to fine; official level levels - 1 - k
        official, w = f"decoder.up.{levels - 1 - k}", current[levels - 1 - k]
        for j in range(cfg["decoder_blocks"]):
            _block(table, f"{official}.block.{j}", f"decoder.levels.{k}.blocks.{j}", w, w)
        _same(table, f"{official}.upsample.conv", f"decoder.levels.{k}.resample")
    _same(table, "decoder.conv_out", "decoder.conv_out")
    return table


def _row(t: torch.Tensor) -> torch.Tensor:
    return t.reshape(-1)


def _start(t: torch.Tensor) -> torch.Tensor:
    return t.reshape(1, -1)


def gpt_table(cfg: Mapping[str, Any]) -> list[Rename]:
    """Official GPT name -> ours for the transformer at `cfg` (model.transformer), except the
    tied aliases and c_bias (`extras`)."""
    table = [Rename("c_emb.weight", "cond_embed.weight"),
             Rename("z_emb.weight", "target_embed.weight"),
             Rename("c_sp", "cond_start", to_ours=_row, to_official=_start),
             Rename("z_sp", "target_start", to_ours=_row, to_official=_start),
             Rename("pos_emb.weight", "positions.weight"),
             Rename("z_bias", "head_bias")]
    for i in range(cfg["layers"]):
        for part in ("ln1", "ln2", "attn.query", "attn.key", "attn.value", "attn.proj",
                     "mlp.0", "mlp.2"):
            _same(table, f"blocks.{i}.{part}", f"blocks.{i}.{part}")
    for official, ours in (("ln1", "0"), ("dense", "1"), ("ln2", "3")):
        _same(table, f"dec.{official}", f"head.{ours}")
    return table


def name_table(settings: Mapping[str, Any], module: str) -> list[Rename]:
    """The name table of one of our modules (MODULES) at the variant's `settings`."""
    model = settings["model"]
    if module == "tokenizer":
        return face_table(model["tokenizer"])
    if module == "condition_tokenizer":
        return sketch_table(model["condition_tokenizer"])
    if module == "transformer":
        return gpt_table(model["transformer"])
    raise ConversionError(f"no released iLAT module {module!r} (one of {', '.join(MODULES)})")


def drop_extras(official: Mapping[str, torch.Tensor], gpt: GPT, source: str
                ) -> dict[str, torch.Tensor]:
    """The official GPT tensors without the tied aliases (each checked equal to its
    embedding) and c_bias (checked to be one bias per condition code); absent ones are
    accepted (they carry no value of their own)."""
    params, problems = dict(official), []
    for alias, name in GPT_ALIASES.items():
        value = params.pop(alias, None)
        if value is not None and name in params and not torch.equal(value, params[name]):
            problems.append(f"{alias} differs from {name}, the embedding it is tied to")
    bias = params.pop(CONDITION_BIAS, None)
    if bias is not None and tuple(bias.shape) != (gpt.cond_embed.num_embeddings,):
        problems.append(f"{CONDITION_BIAS} {tuple(bias.shape)} should have shape "
                        f"({gpt.cond_embed.num_embeddings},), one per condition code")
    if problems:
        raise ConversionError(f"{source}: does not convert onto our network:\n  - "
                              + "\n  - ".join(problems))
    return params


def _count(official: Mapping[str, torch.Tensor], pattern: str) -> int | None:
    found = {m.group(1) for k in official if (m := re.match(pattern, k))}
    return len(found) or None


def _dim(official: Mapping[str, torch.Tensor], name: str, dim: int) -> int | None:
    t = official.get(name)
    return int(t.shape[dim]) if t is not None and t.dim() > dim else None


def check_layout(official: Mapping[str, torch.Tensor], settings: Mapping[str, Any],
                 module: str) -> list[str]:
    """One message per architecture fact of the official tensors of `module` that differs
    from the settings, naming our key (facts whose tensors are absent are skipped:
    convert_state names missing tensors)."""
    model = settings["model"]
    facts: list[tuple[str, Any, Any]] = []
    if module in ("tokenizer", "condition_tokenizer"):
        cfg, key = model[module], f"model.{module}"
        levels = _count(official, r"encoder\.down\.(\d+)\.") or 0
        if module == "tokenizer":  # the last official level is at the token grid: mid_width
            theirs = [_dim(official, f"encoder.down.{i}.block.0.conv1.weight", 0)
                      for i in range(levels)]
            facts += [(f"{key}.widths", theirs[:-1] or None, list(cfg["widths"])),
                      (f"{key}.mid_width", theirs[-1] if theirs else None, cfg["mid_width"]),
                      (f"{key}.channels", _dim(official, "encoder.conv_in.weight", 1),
                       cfg["channels"])]
        else:
            theirs = [_dim(official, f"encoder.down.{i}.downsample.conv.weight", 0)
                      for i in range(levels)]
            facts += [(f"{key}.widths", theirs or None, list(cfg["widths"])),
                      (f"{key}.stem_width", _dim(official, "encoder.conv_in.1.weight", 0),
                       cfg["stem_width"]),
                      (f"{key}.channels", _dim(official, "encoder.conv_in.1.weight", 1),
                       cfg["channels"])]
        facts += [(f"{key}.blocks", _count(official, r"encoder\.down\.0\.block\.(\d+)\."),
                   cfg["blocks"]),
                  (f"{key}.decoder_blocks", _count(official, r"decoder\.up\.0\.block\.(\d+)\."),
                   cfg["decoder_blocks"]),
                  (f"{key}.z_channels", _dim(official, "encoder.conv_out.weight", 0),
                   cfg["z_channels"]),
                  (f"{key}.n_codes", _dim(official, "quantize.embedding.weight", 0),
                   cfg["n_codes"])]
    else:
        cfg = model["transformer"]
        grid = model["size"] >> downsamplings(model["tokenizer"])
        facts += [("model.transformer.width", _dim(official, "pos_emb.weight", 1), cfg["width"]),
                  ("model.transformer.layers", _count(official, r"blocks\.(\d+)\."),
                   cfg["layers"]),
                  ("model.size", _dim(official, "pos_emb.weight", 0), 2 * (grid * grid + 1))]
    out = []
    for key, theirs, mine in facts:
        if theirs is None or (isinstance(theirs, list) and None in theirs) or theirs == mine:
            continue
        what = "positions (2 x (tokens + 1))" if key == "model.size" else "value"
        out.append(f"{key}: the checkpoint's {what} is {theirs}, the settings give {mine}")
    return out


def _strip_wrapper(state: Mapping[str, Any]) -> dict[str, Any]:
    """A state dict saved from a DataParallel wrapper has every key under `module.`."""
    if state and all(str(k).startswith("module.") for k in state):
        return {k[len("module."):]: v for k, v in state.items()}
    return dict(state)


def read_official(path: Path, name: str) -> tuple[dict[str, torch.Tensor], int | None]:
    """The state dict of released file `name` (OFFICIAL_FILES) at `path` and the training
    iteration it records (None when absent). Raises ConversionError naming the file when it
    cannot be read or holds no state dict of tensors."""
    path = Path(path)
    if name not in OFFICIAL_FILES:
        raise ConversionError(f"{path}: {name!r} is not a released iLAT file (expected one of "
                              f"{', '.join(OFFICIAL_FILES)})")
    key = OFFICIAL_FILES[name][1]
    try:
        saved = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # missing, truncated, not a torch file, unexpected pickle
        raise ConversionError(f"{path}: cannot read the released iLAT file {name} "
                              f"({type(e).__name__}: {e})") from None
    if not isinstance(saved, Mapping):
        raise ConversionError(f"{path}: expected a dict with {key!r}, found a "
                              f"{type(saved).__name__}")
    state = saved.get(key, saved)
    if not isinstance(state, Mapping):
        raise ConversionError(f"{path}: {key!r} is a {type(state).__name__}, not a state dict")
    odd = [str(k) for k, v in state.items() if not isinstance(v, torch.Tensor)]
    if odd:
        raise ConversionError(f"{path}: no {key!r} state dict; entries that are not tensors: "
                              f"{', '.join(odd[:8])}")
    iteration = saved.get("iteration") if key in saved else None
    return _strip_wrapper(state), (int(iteration) if isinstance(iteration, int) else None)


def tokenizer_settings(settings: Mapping[str, Any], module: str) -> dict[str, Any]:
    """The settings of tokenizer `module` (tokenizer, condition_tokenizer) with the image
    side."""
    return dict(settings["model"][module], size=settings["model"]["size"])


def build_networks(settings: Mapping[str, Any]) -> dict[str, nn.Module]:
    """Our three networks at `settings`, initialised from the seed in MODULES order."""
    torch.manual_seed(int(settings["seed"]))
    tokenizer = build_tokenizer(tokenizer_settings(settings, "tokenizer"))
    condition = build_tokenizer(tokenizer_settings(settings, "condition_tokenizer"))
    gpt = build_transformer(settings, tokenizer, condition)
    return {"tokenizer": tokenizer, "condition_tokenizer": condition, "transformer": gpt}


def stand_in(settings: Mapping[str, Any]) -> dict[str, dict[str, torch.Tensor]]:
    """Our networks at the variant's settings initialised from its seed, as the three official
    state dicts (per module; the GPT's with its tied aliases and a zero c_bias)."""
    nets = build_networks(settings)
    out = {m: to_official(net.state_dict(), name_table(settings, m)) for m, net in nets.items()}
    gpt = out["transformer"]
    gpt.update({alias: gpt[name].clone() for alias, name in GPT_ALIASES.items()})
    gpt[CONDITION_BIAS] = torch.zeros(nets["transformer"].cond_embed.num_embeddings)
    return out


def _sources(settings: Mapping[str, Any]) -> tuple[str, list[str]]:
    """The shared source kind of the three released files (all files or all stand-ins)."""
    names = list(settings.get("released") or [])
    if sorted(names) != sorted(OFFICIAL_FILES):
        raise ConversionError(f"ilat.{settings.get('variant')}: released {names} must name the "
                              f"three iLAT files {', '.join(OFFICIAL_FILES)}")
    kinds = {name: source_kind(settings, name) for name in names}
    if len(set(kinds.values())) > 1:
        folder = settings["paths"]["weights"]
        missing = [f"{n} ({get_spec(n).filename})" for n, k in kinds.items() if k == STAND_IN]
        raise ConversionError(
            f"the released iLAT files are converted together, but {', '.join(missing)} "
            f"is missing from {folder}. Fetch it (`python -m sparsegen fetch weights --name "
            f"NAME --dest {folder}`) or remove the others.")
    return next(iter(kinds.values())), names


def _non_finite(tensors: Mapping[str, torch.Tensor]) -> list[str]:
    return [name for name, t in tensors.items()
            if t.is_floating_point() and not bool(torch.isfinite(t).all())]


@torch.no_grad()
def _run_once(nets: Mapping[str, nn.Module], settings: Mapping[str, Any],
              device: torch.device, source: str) -> None:
    """One edit's forward on `device` (a hole in the middle, every target position attending
    everywhere): the converted networks run and give finite images and logits."""
    tokenizer, condition, gpt = (nets[m].to(device).eval() for m in MODULES)
    side = settings["model"]["size"]
    gen = torch.Generator().manual_seed(0)
    image = (torch.rand(1, 3, side, side, generator=gen) * 2 - 1).to(device)
    sketch = (torch.rand(1, 1, side, side, generator=gen) * 2 - 1).to(device)
    mask = torch.zeros(1, 1, side, side, device=device)
    mask[..., side // 4: side // 2, side // 4: side // 2] = 1
    enc = tokenizer.encode(image, mask)
    decoded = tokenizer.decode(tokenizer.compose(enc))
    cond_ids = condition.encode(sketch).ids.flatten(1)
    attend = torch.ones(gpt.sequence_length, gpt.sequence_length, dtype=torch.bool,
                        device=device)
    logits = gpt(cond_ids, enc.ids.flatten(1), None, attend)
    for what, t in (("images", decoded), ("logits", logits)):
        if not bool(torch.isfinite(t).all()):
            raise ConversionError(f"{source}: the converted networks give non-finite {what}")
    for net in nets.values():
        net.cpu()


def convert(settings: dict[str, Any], out: Path, device: torch.device) -> None:
    """Write `out` (converted.pt): the three released networks as our `tokenizer`,
    `condition_tokenizer` and `transformer`, from the verified files or, without them, the
    stand-in (`sparsegen.released.source_kind`); checked one-to-one, loaded strictly and run
    once on `device`."""
    problems = settings_problems(settings)
    if problems:
        raise ConversionError(f"ilat.{settings.get('variant')}: the released iLAT weights need "
                              "the official networks:\n  - " + "\n  - ".join(problems))
    kind, names = _sources(settings)
    by_module = {OFFICIAL_FILES[n][0]: n for n in names}
    steps: dict[str, int | None] = {n: None for n in names}
    if kind == FILE:
        files = {n: official_file(settings, n) for n in names}
        official, sources = {}, {}
        for module, name in by_module.items():
            path = files[name][0]
            print(f"ilat convert: reading {path} ({name})", flush=True)
            official[module], steps[name] = read_official(path, name)
            sources[module] = str(path)
            mismatches = check_layout(official[module], settings, module)
            if mismatches:
                raise ConversionError(f"{path}: the checkpoint's architecture disagrees with "
                                      "the settings:\n  - " + "\n  - ".join(mismatches))
        digests = {n: sha for n, (_, sha) in files.items()}
    else:
        official = stand_in(settings)
        sources = {m: f"stand-in for {n} (our network at seed {settings['seed']})"
                   for m, n in by_module.items()}
        digests = {n: STAND_IN for n in names}
        print(f"ilat convert: stand-ins for {', '.join(names)}, in the official layout",
              flush=True)

    nets = build_networks(settings)
    for module in MODULES:
        params, source = official[module], sources[module]
        bad = _non_finite(params)
        if bad:
            raise ConversionError(f"{source}: non-finite values in {', '.join(bad[:8])}")
        if module == "transformer":
            params = drop_extras(params, nets[module], source)  # type: ignore[arg-type]
        state = convert_state(params, name_table(settings, module), nets[module].state_dict(),
                              source)
        nets[module].load_state_dict(state, strict=True)
        print(f"ilat convert: mapped {len(state)} official tensors one-to-one onto our "
              f"{module}", flush=True)
    _run_once(nets, settings, device, ", ".join(sources.values()))

    facts_sources = {n: {"kind": kind, "sha256": digests[n], "url": get_spec(n).url,
                         "step": steps[n]} for n in names}
    note = CONVERSION_NOTE if kind == FILE else "stand-in: " + CONVERSION_NOTE
    facts = released_facts(settings, facts_sources, step=steps["ilat_ffhq_transformer"],
                           note=note)
    write_converted(out, settings, nets, facts)
    print(f"ilat convert: wrote {out} ({kind})", flush=True)


def load_released(path: str | Path, device: torch.device
                  ) -> tuple[Tokenizer, Tokenizer, GPT, dict[str, Any]]:
    """The converted released networks of `converted.pt` (eval mode, frozen): the face
    tokenizer, the sketch (condition) tokenizer, the GPT, and the checkpoint."""
    ckpt = checkpoint.load_trained(path, PAPER, MODULES, "converted iLAT release")
    if "released" not in ckpt.get("extra", {}):
        raise checkpoint.CheckpointError(f"{path}: not a converted release (no "
                                         "extra['released']); write it with the convert job")
    settings = ckpt["settings"]
    tokenizer = build_tokenizer(tokenizer_settings(settings, "tokenizer"))
    condition = build_tokenizer(tokenizer_settings(settings, "condition_tokenizer"))
    gpt = build_transformer(settings, tokenizer, condition)
    nets: Sequence[nn.Module] = [checkpoint.restore_module(ckpt, m, net, path) for m, net in
                                 zip(MODULES, (tokenizer, condition, gpt), strict=True)]
    for net in nets:
        net.to(device).eval().requires_grad_(False)
    return tokenizer, condition, gpt, ckpt
