"""DynaST settings: the scale pyramid and the checks a JSON schema cannot express (no torch:
config validation runs them while Snakemake parses the workflow)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

# Label channels of the target map S_tgt per task (official_repos §1.4; metrics notes §B.2):
# pose = RGB skeleton + 17 limb distance maps, edge = edges + 13 part distance maps + part
# edges, style = the content image itself.
LABEL_CHANNELS = {"pose": 20, "edge": 15, "style": 3}
MATCHINGS = ("dynast", "dense", "patchmatch")
OFFICIAL_LEVELS = 4  # the released generator's scales (official_repos §1.2)


def levels(model: Mapping[str, Any]) -> int:
    """M, the number of scales (Sec. 4: 4 scales, 32 ... 256 at 256²)."""
    return len(model["widths"])


def level_sides(model: Mapping[str, Any], size: int) -> list[int]:
    """Feature side of each level i = 0 (finest, the image side) ... M-1 (size / 2^(M-1))."""
    return [size >> i for i in range(levels(model))]


def attended_levels(model: Mapping[str, Any], size: int) -> list[int]:
    """Levels that hold attention blocks, coarsest first.

    dynast: every level up to `max_match_res` (Ours-x: none above it); dense (CoCosNet peer):
    only the level at a quarter of the image side (64² at 256²); patchmatch (CoCosNet-v2 peer):
    every level, as dynast."""
    sides = level_sides(model, size)
    coarse_first = list(range(levels(model) - 1, -1, -1))
    if model["matching"] == "dense":
        return [i for i in coarse_first if sides[i] == size // 4]
    limit = model["max_match_res"] * size // model["size"]  # the same scale at other sides
    return [i for i in coarse_first if sides[i] <= limit]


def official_problems(model: Mapping[str, Any]) -> list[str]:
    """What in `model` the official generator cannot be (one message per key, naming it and
    the value to set; [] when none)."""
    out = []
    widths = list(model["widths"])
    if len(widths) != OFFICIAL_LEVELS or any(w != widths[0] << i for i, w in enumerate(widths)):
        out.append(f"model.widths: {widths}, the official generator has {OFFICIAL_LEVELS} "
                   f"levels of doubling widths (set [n, 2n, 4n, 8n], e.g. [64, 128, 256, 512])")
    for key, ratio in (("pos_ratio", model["pos_ratio"]), ("prune_ratio", model["prune_ratio"])):
        if widths and widths[0] % ratio:
            out.append(f"model.{key}: {ratio} does not divide widths[0] = {widths[0]}")
    required = {"matching": "dynast", "pruning": True, "inner_scale": True,
                "score_norm": "official", "spade_norm": "positional"}
    for key, want in required.items():
        if model[key] != want:
            out.append(f"model.{key}: {model[key]}, the official generator has {want} "
                       f"(set {str(want).lower() if isinstance(want, bool) else want})")
    if model["max_match_res"] != model["size"]:
        out.append(f"model.max_match_res: {model['max_match_res']}, the official generator "
                   f"attends at every level (set model.size, {model['size']})")
    if model["size"] % (1 << (OFFICIAL_LEVELS - 1)):
        out.append(f"model.size: {model['size']} is not divisible by {1 << (OFFICIAL_LEVELS - 1)}")
    return out


def problems(s: Mapping[str, Any]) -> list[str]:
    """Sizes the pyramid cannot divide, Ours-x limits that are not a level's side."""
    found = []
    model = s["model"]
    m = levels(model)
    step = 1 << (m - 1)
    sizes = [("model.size", model["size"])]
    if "eval" in s and "size" in s["eval"]:
        sizes.append(("eval.size", s["eval"]["size"]))
    for key, size in sizes:
        if size % step:
            found.append(f"{key} {size} is not divisible by 2^(M-1) = {step} (M = "
                         f"{m} scales from model.widths); use a multiple of {step}")
    sides = level_sides(model, model["size"])
    if model["max_match_res"] not in sides:
        found.append(f"model.max_match_res {model['max_match_res']} is not a level side at "
                     f"model.size {model['size']} (sides: {', '.join(map(str, sides))})")
    if model["matching"] == "dense" and model["size"] // 4 not in sides:
        found.append(f"model.matching dense attends at model.size / 4 = {model['size'] // 4}, "
                     f"which is not a level side ({', '.join(map(str, sides))})")
    if model["architecture"] == "official":
        found += official_problems(model)
    if model["task"] == "style" and model["matching"] != "dynast":
        found.append("model.matching: the style task has no peers; use dynast")
    return found
