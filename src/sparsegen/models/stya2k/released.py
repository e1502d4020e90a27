"""StyA2K: the authors' released weights onto our network (`converted.pt`).

The official repository (LearningHx/StyA2K, `checkpoints/A2K/`) ships three state dicts,
`latest_net_<module>.pth`, one per official module (reference: official_checkpoints.md
"StyA2K"; official_repos.md §2.1, §2.5):

- `A2K`: the A2K module at relu3_1 (256 channels), whose output is the decoder's skip input;
- `transform`: the A2K modules at relu4_1 and relu5_1 (`attn_adain_4_1`, `attn_adain_5_1`, 512
  channels) and `merge_conv`, the reflection-padded 3x3 conv applied to F4 + up(F5), which is
  our decoder's F^5 conv (Table 3);
- `decoder`: the rest of the decoder, an `nn.Sequential` pair whose convs sit at fixed indices.

Facts this converter relies on (official_checkpoints.md "StyA2K", official_repos.md §2.2):

- one A2K module holds `sim_alpha` (1,) and `sim_beta` (1,), the alpha/beta of the aggregated
  DA weights sigmoid(beta + alpha <k_mean, k_j>); 1x1 convs `q`, `k`, `v` (distributed attention
  projections), `q2`, `k2`, `v2` (progressive attention projections), `fusion1` (the output conv
  after DA) and `fusion2` (after PA), each with weight and bias;
- decoder convs: `decoder_layer_1.1` (relu4 stage, 512->256), `decoder_layer_2.{1,4,7,10}`
  (relu3 stage, the first one reading [up(F^4), F_cs^3]), `.{14,17}` (relu2 stage),
  `.{21,24}` (relu1 stage, the last one to RGB); the encoder (AdaIN's `vgg_normalised.pth`) is
  not part of any file;
- the files are state dicts of the bare modules: the official `save_networks` saves the module
  inside its DataParallel wrapper, so no key carries a `module.` prefix (one would be stripped);
- our network computes the official one (agreement to rounding, measured) only under the
  setting `settings_problems` checks: aggregated DA, block sizes in pixels 8/8/4 at
  relu3_1/4_1/5_1, 8 heads, both branches with PA step 1, no ReLU after the F^5 conv.

74 tensors map one-to-one (3 x 18 per A2K module, 2 for merge_conv, 18 in the decoder); only
alpha and beta change layout ((1,) official, () ours).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from sparsegen import weights
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

# Weights-manifest name -> the official module its file holds (`latest_net_<module>.pth`).
OFFICIAL_FILES = {"stya2k_a2k": "A2K", "stya2k_transform": "transform",
                  "stya2k_decoder": "decoder"}

# Where each official A2K module lives: (official prefix, our transform key).
A2K_MODULES = (("A2K.", "relu3_1"), ("transform.attn_adain_4_1.", "relu4_1"),
               ("transform.attn_adain_5_1.", "relu5_1"))
# Official 1x1 convs of one A2K module -> (our branch, our conv): q/k/v project for distributed
# attention, q2/k2/v2 for progressive attention; fusion1/fusion2 are the Unblocking-Convs after
# DA and PA (Eq. 11).
A2K_CONVS = {"q": ("da", "q"), "k": ("da", "k"), "v": ("da", "v"), "fusion1": ("da", "fusion"),
             "q2": ("pa", "q"), "k2": ("pa", "k"), "v2": ("pa", "v"), "fusion2": ("pa", "fusion")}
# Official decoder convs -> our Decoder convs (Table 3). Our stages are Sequential(pad, conv,
# ReLU) blocks, so the conv of each is index 1.
DECODER_CONVS = {
    "transform.merge_conv": "decoder.stage5.1",     # F^5: F4 + up(F5) -> 512 (Transform's conv)
    "decoder.decoder_layer_1.1": "decoder.stage4.1",  # F^4: 512 -> 256, then up
    "decoder.decoder_layer_2.1": "decoder.stage3.0.1",   # F^3: [F^4, F_cs^3] 512 -> 256
    "decoder.decoder_layer_2.4": "decoder.stage3.1.1",   # 256 -> 256
    "decoder.decoder_layer_2.7": "decoder.stage3.2.1",   # 256 -> 256
    "decoder.decoder_layer_2.10": "decoder.stage3.3.1",  # 256 -> 128, then up
    "decoder.decoder_layer_2.14": "decoder.stage2.0.1",  # F^2: 128 -> 128
    "decoder.decoder_layer_2.17": "decoder.stage2.1.1",  # 128 -> 64, then up
    "decoder.decoder_layer_2.21": "decoder.stage1.0.1",  # F^1: 64 -> 64
    "decoder.decoder_layer_2.24": "decoder.stage1.1.1",  # 64 -> 3, no activation
}

# What the released weights were trained with (official_checkpoints.md "StyA2K"; the official
# A2K module hard-codes 8 heads and regions 8/8/4 at relu3_1/4_1/5_1): key -> (value, reason).
REQUIRED: dict[str, tuple[Any, str]] = {
    "model.encoder": ("vgg19_normalised", "the released modules were trained on AdaIN's "
                      "normalised VGG-19"),
    "model.transform": ("a2k", "the released transforms are A2K modules"),
    "model.da_form": ("aggregated", "the released DA summarises each block by its "
                      "sigmoid-weighted keys (sim_alpha, sim_beta)"),
    "model.block_mode": ("size", "the released A2K blocks are fixed sizes in pixels"),
    "model.heads": (8, "the released A2K modules split channels into 8 heads"),
    "model.block_sizes.relu3_1": (8, "the released relu3_1 module uses 8x8 blocks"),
    "model.block_sizes.relu4_1": (8, "the released relu4_1 module uses 8x8 blocks"),
    "model.block_sizes.relu5_1": (4, "the released relu5_1 module uses 4x4 blocks"),
    "model.distributed": (True, "the released modules have a DA branch"),
    "model.progressive": (True, "the released modules have a PA branch"),
    "model.pa_step1": (True, "the released PA matches blocks by argmax (step 1)"),
    "model.f5_relu": (False, "the released decoder has no ReLU after the F5 conv"),
}

# The keys that decide which tensors our transforms have (the others change only the maths).
STRUCTURAL = ("model.transform", "model.da_form", "model.distributed", "model.progressive")


def _scalar_to_ours(t: torch.Tensor) -> torch.Tensor:
    return t.reshape(())


def _scalar_to_official(t: torch.Tensor) -> torch.Tensor:
    return t.reshape(1)


def name_table(model: Mapping[str, Any]) -> list[Rename]:
    """Official name -> our name for every released tensor: official names carry the official
    module ("A2K.", "transform.", "decoder."), ours the checkpoint module ("transform.",
    "decoder."). `model` (the settings' model block) must give our transforms the official
    tensors: A2K modules with both branches and aggregated DA (STRUCTURAL)."""
    problems = _problems({"model": dict(model)}, STRUCTURAL)
    if problems:
        raise ConversionError("the released StyA2K weights do not fit model settings:\n  - "
                              + "\n  - ".join(problems))
    table = []
    for official, layer in A2K_MODULES:
        ours = f"transform.{layer}."
        # alpha, beta of the aggregated DA weights: (1,) parameters officially, scalars here.
        for o_name, our_name in (("sim_alpha", "alpha"), ("sim_beta", "beta")):
            table.append(Rename(official + o_name, ours + our_name,
                                _scalar_to_ours, _scalar_to_official))
        # 1x1 convs (C, C, 1, 1) and biases (C,), same layout on both sides.
        for conv, (branch, our_conv) in A2K_CONVS.items():
            for p in ("weight", "bias"):
                table.append(Rename(f"{official}{conv}.{p}", f"{ours}{branch}.{our_conv}.{p}"))
    # Decoder 3x3 convs (Cout, Cin, 3, 3) and biases, same layout on both sides.
    for official, ours in DECODER_CONVS.items():
        for p in ("weight", "bias"):
            table.append(Rename(f"{official}.{p}", f"{ours}.{p}"))
    return table


def _show(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return "missing" if value is None else str(value)


def _lookup(settings: Mapping[str, Any], key: str) -> Any:
    node: Any = settings
    for part in key.split("."):
        if not isinstance(node, Mapping) or part not in node:
            return None
        node = node[part]
    return node


def _problems(settings: Mapping[str, Any], keys: tuple[str, ...] = tuple(REQUIRED)
              ) -> list[str]:
    out = []
    for key in keys:
        want, why = REQUIRED[key]
        have = _lookup(settings, key)
        if have != want or type(have) is not type(want):
            out.append(f"{key}: {_show(have)}, {why} (set {_show(want)})")
    return out


def settings_problems(settings: Mapping[str, Any]) -> list[str]:
    """What in `settings` keeps our network from computing the released one: one message per
    key, naming it, its value, why, and the value to set ([] when none)."""
    return _problems(settings)


def _strip_wrapper(state: Mapping[str, Any]) -> dict[str, Any]:
    """A state dict saved from a DataParallel wrapper has every key under `module.`."""
    if state and all(k.startswith("module.") for k in state):
        return {k[len("module."):]: v for k, v in state.items()}
    return dict(state)


def read_official(paths: Mapping[str, Path]) -> dict[str, torch.Tensor]:
    """The official tensors of the released files (manifest name -> path, see
    OFFICIAL_FILES), each key prefixed by its official module ("A2K.q.weight", ...)."""
    out: dict[str, torch.Tensor] = {}
    for name, path in paths.items():
        if name not in OFFICIAL_FILES:
            raise ConversionError(f"{path}: {name!r} is not a released StyA2K file (expected "
                                  f"one of {', '.join(OFFICIAL_FILES)})")
        module = OFFICIAL_FILES[name]
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as e:  # missing, truncated, not a torch file, unexpected pickle
            raise ConversionError(f"{path}: unreadable released StyA2K file for {name} "
                                  f"({type(e).__name__}: {e})") from None
        if not isinstance(state, Mapping) or not all(
                isinstance(v, torch.Tensor) for v in state.values()):
            raise ConversionError(f"{path}: not a state dict of tensors ({name}, official "
                                  f"module {module}; got {type(state).__name__})")
        out.update({f"{module}.{k}": v for k, v in _strip_wrapper(state).items()})
    return out


def _our_state(net: torch.nn.Module) -> dict[str, torch.Tensor]:
    from sparsegen.models.stya2k.task import checkpointed_modules

    return {f"{m}.{k}": v for m, module in checkpointed_modules(net).items()
            for k, v in module.state_dict().items()}


def stand_in(settings: Mapping[str, Any]) -> dict[str, torch.Tensor]:
    """Our seeded network's transforms and decoder (build_network initialises them from
    settings["seed"]) written out in the official layout: what a released file would hold."""
    from sparsegen.models.stya2k.network import build_network

    net = build_network(dict(settings))
    return to_official(_our_state(net), name_table(settings["model"]))


def _sources(settings: Mapping[str, Any]) -> tuple[str, list[str]]:
    names = list(settings.get("released") or [])
    if sorted(names) != sorted(OFFICIAL_FILES):
        raise ConversionError(f"released: {names} must name the three StyA2K files "
                              f"{', '.join(OFFICIAL_FILES)}")
    kinds = {name: source_kind(settings, name) for name in names}
    if len(set(kinds.values())) > 1:
        present = [n for n, k in kinds.items() if k == FILE]
        missing = [n for n, k in kinds.items() if k == STAND_IN]
        folder = settings["paths"]["weights"]
        raise ConversionError(
            f"released StyA2K weights are converted together, but only {', '.join(present)} "
            f"is present in {folder}; missing: "
            + ", ".join(f"{n} ({weights.get_spec(n).filename})" for n in missing)
            + f". Fetch them (`python -m sparsegen fetch weights --name NAME --dest {folder}`)"
            " or remove the present ones.")
    return next(iter(kinds.values())), names


def convert(settings: dict[str, Any], out: Path, device: torch.device) -> None:
    """Write `out` (converted.pt): our transforms and decoder holding the released weights
    (or, as a stand-in, our seeded network through the official layout), checked one-to-one,
    loaded strictly and run once on `device`."""
    from sparsegen.models.stya2k.network import build_network
    from sparsegen.models.stya2k.task import checkpointed_modules

    problems = settings_problems(settings)
    if problems:
        raise ConversionError(f"{settings['paper']}.{settings['variant']}: the released StyA2K "
                              "weights need the official setting:\n  - " + "\n  - ".join(problems))
    kind, names = _sources(settings)
    if kind == FILE:
        files = {name: official_file(settings, name) for name in names}
        official = read_official({name: path for name, (path, _) in files.items()})
        digests = {name: sha for name, (_, sha) in files.items()}
        source = "released files " + ", ".join(str(path) for path, _ in files.values())
    else:
        official = stand_in(settings)
        digests = {name: STAND_IN for name in names}
        source = f"stand-in (our network at seed {settings['seed']} in the official layout)"
    print(f"stya2k released: {len(official)} official tensors from {source}")

    net = build_network(settings)
    modules = checkpointed_modules(net)
    state = convert_state(official, name_table(settings["model"]), _our_state(net), source)
    for m, module in modules.items():
        module.load_state_dict({k[len(m) + 1:]: v for k, v in state.items()
                                if k.startswith(m + ".")}, strict=True)

    # One forward on the device (64x64, the smallest size all block sizes divide): the
    # converted network runs and gives finite images.
    net.to(device).eval()
    with torch.no_grad():
        gen = torch.Generator().manual_seed(0)
        images = torch.rand(2, 1, 3, 64, 64, generator=gen).to(device)
        result = net.stylize(images[0], images[1])
    if not torch.isfinite(result).all():
        raise ConversionError(f"{source}: the converted network gives non-finite images")
    net.cpu()

    sources = {name: {"kind": kind, "sha256": digests[name], "url": weights.get_spec(name).url}
               for name in names}
    note = (f"{len(state)} official tensors of LearningHx/StyA2K latest_net_{{A2K,transform,"
            "decoder}.pth mapped one-to-one onto transform+decoder "
            "(sparsegen.models.stya2k.released.name_table; sim_alpha/sim_beta (1,) -> ())")
    if kind == STAND_IN:
        note = "stand-in: our seeded network written in the official layout; " + note
    facts = released_facts(settings, sources, step=None, note=note)
    write_converted(out, settings, modules, facts, extra={"encoder": net.encoder.fingerprint})
    print(f"stya2k released: wrote {out} ({kind})")
