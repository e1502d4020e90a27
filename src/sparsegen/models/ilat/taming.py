"""taming-transformers' VQGAN (ImageNet f16-16384, official_repos §3.6, §5.4) onto the pose
Tokenizer: one `Rename` per tensor, checked one-to-one by `sparsegen.released.convert_state`.

taming's VQModel state dict (`state_dict` of its Lightning checkpoint) holds encoder.*,
decoder.*, quantize.embedding.weight, quant_conv.*, post_quant_conv.* and the training loss's
loss.* (LPIPS, discriminator), which a tokenizer does not hold and is dropped. Names differ only
in the containers (ours -> taming's):
  {en,de}coder.levels.i.blocks.j.*      encoder.down.i.block.j.*, decoder.up.(L-1-i).block.j.*
  {en,de}coder.levels.i.attns.j.*       encoder.down.i.attn.j.*,  decoder.up.(L-1-i).attn.j.*
  encoder.levels.i.resample.*           encoder.down.i.downsample.conv.*
  decoder.levels.i.resample.*           decoder.up.(L-1-i).upsample.conv.*
  {en,de}coder.mid.0 / 1 / 2.*          {en,de}coder.mid.block_1 / attn_1 / block_2.*
(our decoder runs its levels coarse to fine, taming indexes them fine to coarse, L levels);
everything else (conv_in, norm_out, conv_out, ResnetBlock and AttnBlock parts) keeps its name.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

import torch

from sparsegen.models.ilat.tokenizer import Tokenizer
from sparsegen.released import ConversionError, Rename, convert_state

DROPPED_PREFIX = "loss."
MID = {"0": "block_1", "1": "attn_1", "2": "block_2"}
LEVEL = re.compile(r"^(encoder|decoder)\.levels\.(\d+)\.(blocks|attns|resample)\.(.*)$")
MIDDLE = re.compile(r"^(encoder|decoder)\.mid\.(\d)\.(.*)$")


def taming_name(ours: str, levels: int) -> str:
    """taming's name of our pose tensor `ours` (module doc); `levels` = len(widths)."""
    if (m := LEVEL.match(ours)) is not None:
        coder, i, part, rest = m.groups()
        index = int(i) if coder == "encoder" else levels - 1 - int(i)
        container = "down" if coder == "encoder" else "up"
        if part == "resample":
            sample = "downsample" if coder == "encoder" else "upsample"
            return f"{coder}.{container}.{index}.{sample}.conv.{rest}"
        return f"{coder}.{container}.{index}.{part[:-1]}.{rest}"
    if (m := MIDDLE.match(ours)) is not None:
        coder, i, rest = m.groups()
        return f"{coder}.mid.{MID[i]}.{rest}"
    return ours


def taming_renames(tokenizer: Tokenizer) -> list[Rename]:
    """The name table of a pose tokenizer: taming's name -> ours for every tensor of ours."""
    if tokenizer.architecture != "pose":
        raise ConversionError(f"taming's VQGAN loads into a pose tokenizer, not "
                              f"{tokenizer.architecture!r}")
    levels = len(tokenizer.encoder.levels)
    return [Rename(taming_name(name, levels), name) for name in tokenizer.state_dict()]


def load_taming_state(tokenizer: Tokenizer, state_dict: Mapping[str, torch.Tensor],
                      source: str) -> None:
    """Load taming's VQGAN state dict (or its Lightning checkpoint holding `state_dict`) into
    `tokenizer`; raises ConversionError naming every missing, unexpected or misshapen tensor
    and `source` (the checkpoint file)."""
    inner = state_dict.get("state_dict")
    state = inner if isinstance(inner, Mapping) else state_dict
    official = {k: v for k, v in state.items() if not k.startswith(DROPPED_PREFIX)}
    ours = convert_state(official, taming_renames(tokenizer), tokenizer.state_dict(), source)
    tokenizer.load_state_dict(ours)
