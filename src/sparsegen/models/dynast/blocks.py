"""The Dense Attn Block and the DynaST Blocks (Sec. 3.2, Eq. 2-9), and the same-backbone peers'
blocks (CoCosNet-style dense attention without pruning, CoCosNet-v2-style PatchMatch).

One block, given the target stream F_tgt,j-1, the level's fixed reference features F_ref, the
positional map and the target semantics S_tgt:
  scores    C = tau q k^T / C_v, q = IN(alpha([F_tgt, pos])), k = IN(beta([F_ref, pos]))
            (Eq. 2-4, 16)
  pruning   D = 1[Omega(F_tgt) Phi(F_ref)^T > 0], sigmoid gradient                   (Eq. 5-6)
  aggregate F_out = (1 - sum A~) * SP(F_tgt, S_tgt) + A~ eta(F_ref)                   (Eq. 7-8)
  F'        = LN(F_out + F_tgt);  F = LN(F' + Conv(ReLU(Conv(F'))))                    (Eq. 8-9)
The 1/C_v: Eq. 2 multiplies the instance-normalised product by tau = 100 and says no more
about its scale; instance-normalised C_v-wide vectors have a squared norm of about C_v, so
without it the logits reach 100 * C_v and the softmax is an argmax whose gradient vanishes.
With it the score is a correlation in about [-1, 1], which tau = 100 sharpens as the official
code's temperature 0.01 sharpens its normalised features. `score_norm: official` is the code's
form: features L2-normalised per position before alpha and beta, logits tau * q k^T.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from sparsegen.attention.dynamic_sparse import (
    dense_dynamic_attention,
    sparse_dynamic_attention,
)
from sparsegen.attention.matching import Match
from sparsegen.attention.patch_match import PatchMatchAttention
from sparsegen.nets.norms import ChannelLayerNorm
from sparsegen.nets.spade import SPADE

MODES = ("dense", "inter", "inner", "patchmatch")


class MatchingBlock(nn.Module):
    """One Transformer block of DynaST (mode inter / inner), its Dense Attn Block (dense), or
    a peer's block (dense without pruning; patchmatch)."""

    def __init__(self, channels: int, pos_channels: int, label_channels: int, *, mode: str,
                 pruning: bool, prune_channels: int, score_norm: str, tau: float, top_k: int,
                 spade_hidden: int, spade_norm: str, warp_mask: str) -> None:
        super().__init__()
        if mode not in MODES:
            raise ValueError(f"block mode {mode!r} is not one of {MODES}")
        self.mode, self.score_norm, self.tau, self.top_k = mode, score_norm, tau, top_k
        self.warp_mask = warp_mask
        self.alpha = nn.Conv2d(channels + pos_channels, channels, 1)
        self.beta = nn.Conv2d(channels + pos_channels, channels, 1)
        self.eta = nn.Conv2d(channels, channels, 1)
        self.omega = nn.Conv2d(channels, prune_channels, 1) if pruning else None
        self.phi = nn.Conv2d(channels, prune_channels, 1) if pruning else None
        self.spade = SPADE(channels, label_channels, hidden=spade_hidden, norm=spade_norm)
        self.norm1, self.norm2 = ChannelLayerNorm(channels), ChannelLayerNorm(channels)
        self.ffn = nn.Sequential(nn.Conv2d(channels, channels, 3, padding=1), nn.ReLU(),
                                 nn.Conv2d(channels, channels, 3, padding=1))
        self.patch_match = PatchMatchAttention(channels) if mode == "patchmatch" else None

    def queries_keys(self, x: torch.Tensor, ref: torch.Tensor, pos_q: torch.Tensor,
                     pos_k: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, float]:
        """q, k and the logit scale of Eq. 2-4 (with Eq. 16's positions)."""
        if self.score_norm == "official":
            q = self.alpha(torch.cat([F.normalize(x, dim=1), pos_q], 1))
            k = self.beta(torch.cat([F.normalize(ref, dim=1), pos_k], 1))
            return q, k, self.tau
        q = F.instance_norm(self.alpha(torch.cat([x, pos_q], 1)))
        k = F.instance_norm(self.beta(torch.cat([ref, pos_k], 1)))
        return q, k, self.tau / q.shape[1]

    def forward(self, x: torch.Tensor, ref: torch.Tensor, pos_q: torch.Tensor,
                pos_k: torch.Tensor, label: torch.Tensor, candidates: torch.Tensor | None,
                image: torch.Tensor | None) -> tuple[torch.Tensor, Match]:
        """The block's output stream and its matching (candidates: the reference indices per
        query of Eq. 3-4, or PatchMatch's initial positions; None for dense)."""
        q, k, scale = self.queries_keys(x, ref, pos_q, pos_k)
        v = self.eta(ref)
        qp = self.omega(x) if self.omega is not None else None
        kp = self.phi(ref) if self.phi is not None else None
        if self.mode == "dense":
            match = dense_dynamic_attention(q, k, v, qp, kp, scale=scale, image=image,
                                            topk=self.top_k, warp_mask=self.warp_mask)
        elif self.mode == "patchmatch":
            assert self.patch_match is not None and candidates is not None
            match = self.patch_match(q, k, v, candidates, scale=scale, image=image)
        else:
            assert candidates is not None
            match = sparse_dynamic_attention(q, k, v, qp, kp, candidates, scale=scale,
                                             image=image, topk=self.top_k,
                                             warp_mask=self.warp_mask, kind=self.mode)
        out = (1 - match.conf) * self.spade(x, label) + match.out  # Eq. 8
        x = self.norm1(out + x)
        return self.norm2(x + self.ffn(x)), match  # Eq. 9
