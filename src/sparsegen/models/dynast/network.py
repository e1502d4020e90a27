"""The DynaST generator (Fig. 2): embedding (Eq. 1, 16-17), the cascade of matching blocks
from the coarsest scale up (Eq. 2-9), and the decoder; `build_generator` picks it from the
`model:` settings.

Scales i = 0 (the image side) ... M-1 (side / 2^(M-1)), widths[i] channels. The coarsest
attended level holds Dense Attn Blocks; each finer level one inter-scale block (Eq. 3, its
candidates from the previous level's last top-k) and inner-scale blocks (Eq. 4, from the
previous block's). Reference features are fixed per level; only the target stream is updated.
Decoder (official code, the paper gives none): x = SPADE-ResBlock(Up(x) + F^i, S_tgt) from
the coarsest level down, then conv 3x3 + tanh. Every block also warps the exemplar,
average-pooled to its level (Eq. 12-13), at training and test time.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from sparsegen.attention.dynamic_sparse import inner_scale_candidates, inter_scale_candidates
from sparsegen.attention.matching import Match
from sparsegen.models.dynast.blocks import MatchingBlock
from sparsegen.models.dynast.checks import LABEL_CHANNELS, attended_levels, levels
from sparsegen.models.dynast.embedding import PatchEmbedding, PositionalEmbedding
from sparsegen.nets.spade import SPADEResBlock


@dataclass
class BlockMatch:
    """One block's matching, named as Fig. 6 names them (e.g. 64-B1)."""

    level: int
    block: int
    side: int
    mode: str
    match: Match

    @property
    def name(self) -> str:
        return f"{self.side}-B{self.block + 1}"


@dataclass
class Generated:
    image: torch.Tensor               # (B, 3, H, W) in [-1, 1]
    matches: list[BlockMatch]         # every block, coarsest first

    @property
    def warps(self) -> list[torch.Tensor]:
        return [m.match.warp for m in self.matches if m.match.warp is not None]


def block_modes(model: Mapping[str, Any], level: int, first: bool) -> list[str]:
    """Modes of the blocks at `level` (`first`: the coarsest attended level)."""
    n = model["blocks_per_level"]
    if first or model["matching"] == "dense":
        return ["dense"] * n
    if model["matching"] == "patchmatch":
        return ["patchmatch"] * n
    return ["inter"] + (["inner"] if model["inner_scale"] else ["inter"]) * (n - 1)


class Upsample(nn.Sequential):
    """Bilinear x2, conv 3x3 to the finer level's width, ReLU (the official decoder step)."""

    def __init__(self, in_ch: int, out_ch: int) -> None:
        super().__init__(nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False),
                         nn.Conv2d(in_ch, out_ch, 3, padding=1), nn.ReLU())


class DynaSTGenerator(nn.Module):
    def __init__(self, model: Mapping[str, Any]) -> None:
        super().__init__()
        self.model = dict(model)
        widths = list(model["widths"])
        label = LABEL_CHANNELS[model["task"]]
        m = levels(model)
        self.embed_tgt = PatchEmbedding(label, widths)
        self.embed_ref = PatchEmbedding(label + 3, widths)
        ratio = model["pos_ratio"]
        self.positions = PositionalEmbedding(widths, model["size"] >> (m - 1), ratio)
        self.attended = attended_levels(model, model["size"])
        self.blocks = nn.ModuleDict()
        for n, level in enumerate(self.attended):
            pruning = model["pruning"] and model["matching"] == "dynast"
            self.blocks[str(level)] = nn.ModuleList(
                MatchingBlock(widths[level], widths[level] // ratio, label, mode=mode,
                              pruning=pruning, prune_channels=widths[level] // model["prune_ratio"],
                              score_norm=model["score_norm"], tau=model["tau"],
                              top_k=model["top_k"], spade_hidden=model["spade_hidden"],
                              spade_norm=model["spade_norm"], warp_mask=model["warp_mask"])
                for mode in block_modes(model, level, first=n == 0))
        self.up = nn.ModuleList(Upsample(widths[i + 1], widths[i]) for i in range(m - 1))
        self.fuse = nn.ModuleList(
            SPADEResBlock(widths[i], widths[i], label, hidden=model["spade_hidden"],
                          norm=model["spade_norm"]) for i in range(m - 1))
        self.to_rgb = nn.Conv2d(widths[0], 3, 3, padding=1)

    def forward(self, s_tgt: torch.Tensor, i_ref: torch.Tensor, s_ref: torch.Tensor,
                warp: bool = True) -> Generated:
        """Î_tgt from the target map and the exemplar (image in [-1, 1] and its map)."""
        f_tgt = self.embed_tgt(s_tgt)
        f_ref = self.embed_ref(torch.cat([s_ref, i_ref], 1))
        pos = [p.expand(s_tgt.shape[0], -1, -1, -1)
               for p in self.positions(tuple(f_tgt[-1].shape[-2:]))]
        streams = list(f_tgt)
        matches: list[BlockMatch] = []
        coarse_topk, coarse_q, coarse_k = None, (0, 0), (0, 0)
        for level in self.attended:
            x, ref = f_tgt[level], f_ref[level]
            q_hw, k_hw = tuple(x.shape[-2:]), tuple(ref.shape[-2:])
            image = F.avg_pool2d(i_ref, 2 ** level) if warp else None  # I'_ref (Eq. 13)
            topk = None
            for j, block in enumerate(self.blocks[str(level)]):
                candidates = None
                if block.mode == "inter" or (block.mode == "patchmatch" and j == 0):
                    assert coarse_topk is not None
                    source = coarse_topk if block.mode == "inter" else coarse_topk[..., :1]
                    candidates = inter_scale_candidates(source, coarse_q, coarse_k)
                elif block.mode in ("inner", "patchmatch"):
                    assert topk is not None
                    candidates = (inner_scale_candidates(topk, q_hw, k_hw)
                                  if block.mode == "inner" else topk)
                x, match = block(x, ref, pos[level], pos[level], s_tgt, candidates, image)
                topk = match.topk
                matches.append(BlockMatch(level, j, q_hw[0], block.mode, match))
            streams[level] = x
            coarse_topk, coarse_q, coarse_k = topk, q_hw, k_hw
        x = streams[-1]
        for i in range(len(streams) - 2, -1, -1):
            x = self.fuse[i](self.up[i](x) + streams[i], s_tgt)
        return Generated(torch.tanh(self.to_rgb(x)), matches)


def build_generator(model: Mapping[str, Any]) -> nn.Module:
    """The generator the `model:` settings name (`architecture: paper`; `official` is the
    released network, `sparsegen.models.dynast.official`)."""
    if model["architecture"] == "official":
        from sparsegen.models.dynast.official import OfficialGenerator

        return OfficialGenerator(model)
    return DynaSTGenerator(model)
