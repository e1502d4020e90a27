"""iLAT settings checks a JSON schema cannot express, and the networks each job loads (no
torch: config validation runs these while Snakemake parses the workflow)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

JOINTS = (0, 13, 18)  # faces (no pose), Penn Action, SDF (COCO-18)


def downsamplings(tokenizer: Mapping[str, Any]) -> int:
    """Halvings from the image to the token grid: one per level (face, sketch: Table 3) or
    one between levels (pose: taming's ch_mult)."""
    n = len(tokenizer["widths"])
    return n - 1 if tokenizer["architecture"] == "pose" else n


def grid(settings: Mapping[str, Any]) -> int:
    """Tokens per side: 16 at 256² (Sec. 3.1)."""
    return int(settings["model"]["size"]) >> downsamplings(settings["model"]["tokenizer"])


def problems(settings: Mapping[str, Any]) -> list[str]:
    out = []
    model, tok = settings["model"], settings["model"]["tokenizer"]
    size, halvings = int(model["size"]), downsamplings(tok)
    if size % (1 << halvings):
        out.append(f"model.size: {size} is not divisible by 2^{halvings} (the tokenizer's "
                   f"{len(tok['widths'])} levels of model.tokenizer.widths)")
    if model["joints"] not in JOINTS:
        out.append(f"model.joints: {model['joints']}, expected one of {JOINTS}")
    if tok["architecture"] == "sketch" and tok["channels"] != 1:
        out.append("model.tokenizer.channels: the sketch tokenizer reads 1 channel")
    if tok["init"] != "scratch" and tok["architecture"] != "pose":
        out.append(f"model.tokenizer.init: {tok['init']!r} is taming's pose VQGAN; the "
                   f"{tok['architecture']} tokenizer trains from scratch (set scratch)")
    if settings["stage"] == "transformer" and not settings.get("released"):
        uses = settings.get("uses", {})
        if "tokenizer" not in uses:
            out.append("uses.tokenizer: a transformer names the tokenizer of its targets")
        unknown = set(uses) - {"tokenizer", "condition_tokenizer"}
        if unknown:
            out.append(f"uses: unknown role(s) {', '.join(sorted(unknown))} (tokenizer, "
                       "condition_tokenizer)")
        if model["joints"] == 0 and "condition_tokenizer" not in uses:
            out.append("uses.condition_tokenizer: face editing conditions on sketch tokens "
                       "(name the sketch tokenizer)")
    t = settings["train"]
    if settings["stage"] == "tokenizer" and t["mask_from"] is not None:
        mix = t["mask_mix"]
        if len(mix) != 3 or abs(sum(mix) - 1) > 1e-6 or min(mix) < 0:
            out.append(f"train.mask_mix: {mix} is not three probabilities (none, partial, "
                       "full) summing to 1")
    return out


def training_networks(settings: Mapping[str, Any]) -> list[str]:
    """Manifest names a train job loads: the perceptual backbone and taming's start."""
    if settings["stage"] != "tokenizer":
        return []
    names = [n for n in (perceptual_network(settings),) if n]
    if settings["model"]["tokenizer"]["init"] != "scratch":
        names.append("taming_vqgan_f16_16384")
    return names


def perceptual_network(settings: Mapping[str, Any]) -> str | None:
    """The weights-manifest backbone of the tokenizer's perceptual loss, if any."""
    return {"lpips": "vgg16_torchvision", "vgg19": "vgg19_torchvision"}.get(
        settings["loss"]["perceptual"])


def evaluation_networks(settings: Mapping[str, Any]) -> list[str]:
    """Pose transformers' FIDs: the iLAT code's ImageNet Inception and the two TF ports."""
    if settings["stage"] == "transformer" and settings["model"]["joints"]:
        return ["inception_v3_imagenet", "inception_fid_pytorch", "inception_fid_torchscript"]
    return []
