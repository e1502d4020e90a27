"""The released DynaST generator (Huage001/DynaST `DynaSTGenerator`, DeepFashion settings):
`model.architecture: official`, the network the authors' checkpoint loads into
(`sparsegen.models.dynast.released`). Same interface as the paper network (network.py).

Where it differs from the paper network (official_repos.md §1.2, from the official code):
- encoders: per level a 3x3 conv (stride 1 at the finest level, then 2; reflect padding,
  spectral norm), instance norm and a conv-BN-PReLU residual block; the query encoder reads
  S_tgt, the key/value encoder [I_ref, S_ref] (image channels first);
- every level re-embeds both streams with SPADE residual blocks (`embed_q`, `embed_kv`):
  the finer level takes Up(the coarser embedded stream) + the encoder's feature;
- blocks: features L2-normalised per position and concatenated with the positional map, then
  1x1 projections to C + P (alpha, beta: queries, keys), C (eta: values) and the prune width
  (omega, phi, from the same concatenations); dense logits scaled by 1/sqrt(C + P) and prune
  scores by 1/prune width, sparse logits by tau (the code's temperature 0.01);
  x = ResBlock(PONO(A~ eta(F_ref) + (1 - conf) SPADE(x, S_tgt) + x))   (cf. Eq. 7-9);
- positions: `pos_embed` (1, 8 P_0, size/8, size/8) at the coarsest level, then per level
  bilinear x2 (align corners), conv 3x3 (reflect), LeakyReLU(0.01) (cf. Eq. 17);
- decoder: x = SPADE-ResBlock(Up(x) + x_level, S_tgt), Up = bilinear x2 (align corners), conv
  3x3 (reflect), ReLU; then conv 3x3 (reflect) + tanh. At the finest level the official code
  runs the query embedding `embed_q1` there; its own `embed_1` (`fuse[0]` here) is built and
  never run, kept so that the state dict loads one-to-one.
SPADE layers are positional-normalised with hidden width = feature width (`model.spade_hidden`
does not apply). The next block's candidates are the top-k of the logits here, of the softmax
there: the same keys unless a float32 softmax underflows to equal values (the official pick
among such ties is the kernel's). Warps are computed whenever `warp` is set (the official
code: in training only); `model.warp_mask: inverted` is the warp the released weights were
trained with. Widths: widths[i] = 2^i widths[0] (the code's ngf, max_multi 8), positional
channels widths[i] / pos_ratio, prune widths widths[i] / prune_ratio (the code's 16 at ngf 64).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm

from sparsegen.attention.dynamic_sparse import (
    dense_dynamic_attention,
    inner_scale_candidates,
    inter_scale_candidates,
    sparse_dynamic_attention,
)
from sparsegen.attention.matching import Match
from sparsegen.models.dynast.checks import (
    LABEL_CHANNELS,
    OFFICIAL_LEVELS,
    levels,
)
from sparsegen.models.dynast.checks import official_problems as settings_problems
from sparsegen.models.dynast.network import BlockMatch, Generated, block_modes
from sparsegen.nets.norms import positional_norm
from sparsegen.nets.spade import SPADE, SPADEResBlock

LEVELS = OFFICIAL_LEVELS  # the official generator's scales: 1, 1/2, 1/4, 1/8 of the image side
L2_EPS = 1e-10            # the official feature_normalize: x / (||x||_2 + 1e-10) per position
POS_SLOPE = 0.01          # nn.LeakyReLU() default, the positional upsampling steps


def l2_normalize(x: torch.Tensor) -> torch.Tensor:
    """x / (||x||_2 + 1e-10) over channels at each position (official feature_normalize)."""
    return x / (x.norm(dim=1, keepdim=True) + L2_EPS)


def up_conv(in_ch: int, out_ch: int, activation: nn.Module) -> nn.Sequential:
    """Bilinear x2 (align corners), conv 3x3 (reflect), activation: one official up step."""
    return nn.Sequential(nn.Upsample(scale_factor=2, mode="bilinear", align_corners=True),
                         nn.Conv2d(in_ch, out_ch, 3, padding=1, padding_mode="reflect"),
                         activation)


def spade_resblock(channels: int, label_channels: int) -> SPADEResBlock:
    """The official SPADEResnetBlock: [SPADE (PONO, hidden = width) -> PReLU -> SN conv 3x3]
    x 2 + identity, then the same PReLU; reflect padding throughout."""
    return SPADEResBlock(channels, channels, label_channels, hidden=channels, norm="positional",
                         spectral=True, activation="prelu", final_activation=True,
                         padding_mode="reflect")


class ResidualBlock(nn.Module):
    """x -> PReLU(x + BN(conv(PReLU(BN(conv(x)))))), one PReLU (official ResidualBlock)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        conv = dict(kernel_size=3, padding=1, padding_mode="reflect")
        self.conv_0, self.bn_0 = nn.Conv2d(channels, channels, **conv), nn.BatchNorm2d(channels)
        self.conv_1, self.bn_1 = nn.Conv2d(channels, channels, **conv), nn.BatchNorm2d(channels)
        self.act = nn.PReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        dx = self.bn_1(self.conv_1(self.act(self.bn_0(self.conv_0(x)))))
        return self.act(x + dx)


class EncoderStage(nn.Module):
    """SN conv 3x3 (reflect) -> instance norm -> ResidualBlock (a FeatureGenerator layer)."""

    def __init__(self, in_ch: int, out_ch: int, stride: int) -> None:
        super().__init__()
        self.conv = spectral_norm(nn.Conv2d(in_ch, out_ch, 3, stride=stride, padding=1,
                                            padding_mode="reflect"))
        self.res = ResidualBlock(out_ch)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.res(F.instance_norm(self.conv(x)))


class FeatureEncoder(nn.Module):
    """The official FeatureGenerator: one stage per level, finest first."""

    def __init__(self, in_channels: int, widths: list[int]) -> None:
        super().__init__()
        ins = [in_channels, *widths[:-1]]
        self.stages = nn.ModuleList(EncoderStage(i, o, 1 if n == 0 else 2)
                                    for n, (i, o) in enumerate(zip(ins, widths, strict=True)))

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        out = []
        for stage in self.stages:
            x = stage(x)
            out.append(x)
        return out


class OfficialBlock(nn.Module):
    """The official DynamicTransformerBlock (mode dense) / DynamicSparseTransformerBlock
    (inter: its first block at a level, inner: the rest)."""

    def __init__(self, channels: int, pos_channels: int, prune_channels: int,
                 label_channels: int, *, mode: str, tau: float, top_k: int,
                 warp_mask: str) -> None:
        super().__init__()
        qk = channels + pos_channels
        self.mode, self.tau, self.top_k, self.warp_mask = mode, tau, top_k, warp_mask
        self.alpha = nn.Conv2d(qk, qk, 1)                 # queries (official f)
        self.beta = nn.Conv2d(qk, qk, 1)                  # keys (g)
        self.eta = nn.Conv2d(channels, channels, 1)       # values (h)
        self.omega = nn.Conv2d(qk, prune_channels, 1)     # prune queries (f_prune), Eq. 5
        self.phi = nn.Conv2d(qk, prune_channels, 1)       # prune keys (g_prune), Eq. 5
        self.spade = SPADE(channels, label_channels, hidden=channels, norm="positional",
                           padding_mode="reflect")
        self.res = ResidualBlock(channels)

    def forward(self, x: torch.Tensor, ref: torch.Tensor, pos: torch.Tensor,
                label: torch.Tensor, candidates: torch.Tensor | None,
                image: torch.Tensor | None) -> tuple[torch.Tensor, Match]:
        """The block's output stream and its matching (candidates: reference indices per query,
        Eq. 3-4; None for dense)."""
        pos = pos.expand(x.shape[0], -1, -1, -1)
        query = torch.cat([l2_normalize(x), pos], 1)
        key = torch.cat([l2_normalize(ref), pos], 1)
        q, k, v = self.alpha(query), self.beta(key), self.eta(ref)
        qp, kp = self.omega(query), self.phi(key)
        if self.mode == "dense":
            match = dense_dynamic_attention(q, k, v, qp, kp, scale=q.shape[1] ** -0.5,
                                            prune_scale=1 / qp.shape[1], image=image,
                                            topk=self.top_k, warp_mask=self.warp_mask)
        else:
            assert candidates is not None
            match = sparse_dynamic_attention(q, k, v, qp, kp, candidates, scale=self.tau,
                                             image=image, topk=self.top_k,
                                             warp_mask=self.warp_mask, kind=self.mode)
        y = positional_norm(match.out + (1 - match.conf) * self.spade(x, label) + x)  # Eq. 8
        return self.res(y), match


class OfficialGenerator(nn.Module):
    """The released DynaST generator at `model` (raises ValueError naming the keys when the
    settings describe another network, `settings_problems`)."""

    def __init__(self, model: Mapping[str, Any]) -> None:
        super().__init__()
        problems = settings_problems(model)
        if problems:
            raise ValueError("model.architecture official:\n  - " + "\n  - ".join(problems))
        self.model = dict(model)
        widths = list(model["widths"])
        label = LABEL_CHANNELS[model["task"]]
        pos = [w // model["pos_ratio"] for w in widths]
        prune = [w // model["prune_ratio"] for w in widths]
        m = levels(model)
        self.encoder_q = FeatureEncoder(label, widths)
        self.encoder_kv = FeatureEncoder(3 + label, widths)
        side = model["size"] >> (m - 1)
        self.pos_embed = nn.Parameter(torch.randn(1, pos[-1], side, side))
        self.pos_up = nn.ModuleList(up_conv(pos[i + 1], pos[i], nn.LeakyReLU(POS_SLOPE))
                                    for i in range(m - 1))
        self.embed_q = nn.ModuleList(spade_resblock(w, label) for w in widths)
        self.embed_kv = nn.ModuleList(spade_resblock(w, 3 + label) for w in widths)
        self.up_q = nn.ModuleList(up_conv(widths[i + 1], widths[i], nn.ReLU())
                                  for i in range(m - 1))
        self.up_kv = nn.ModuleList(up_conv(widths[i + 1], widths[i], nn.ReLU())
                                   for i in range(m - 1))
        self.attended = list(range(m - 1, -1, -1))
        self.blocks = nn.ModuleDict(
            {str(level): nn.ModuleList(
                OfficialBlock(widths[level], pos[level], prune[level], label, mode=mode,
                              tau=model["tau"], top_k=model["top_k"],
                              warp_mask=model["warp_mask"])
                for mode in block_modes(model, level, first=level == m - 1))
             for level in self.attended})
        self.up = nn.ModuleList(up_conv(widths[i + 1], widths[i], nn.ReLU())
                                for i in range(m - 1))
        self.fuse = nn.ModuleList(spade_resblock(widths[i], label) for i in range(m - 1))
        self.to_rgb = nn.Conv2d(widths[0], 3, 3, padding=1, padding_mode="reflect")

    def forward(self, s_tgt: torch.Tensor, i_ref: torch.Tensor, s_ref: torch.Tensor,
                warp: bool = True) -> Generated:
        """Î_tgt from the target map and the exemplar (image in [-1, 1] and its map)."""
        ref_input = torch.cat([i_ref, s_ref], 1)
        f_q, f_kv = self.encoder_q(s_tgt), self.encoder_kv(ref_input)
        if f_q[-1].shape[-2:] != self.pos_embed.shape[-2:]:
            raise ValueError(f"input side {s_tgt.shape[-1]}: the official generator runs at "
                             f"model.size {self.model['size']} only (its pos_embed is fixed)")
        matches: list[BlockMatch] = []
        x = q = kv = pos = None
        topk = None
        hw = (0, 0)
        for level in self.attended:
            if pos is None:
                q = self.embed_q[level](f_q[level], s_tgt)
                kv = self.embed_kv[level](f_kv[level], ref_input)
                pos = self.pos_embed
            else:
                x = self.up[level](x)
                q = self.embed_q[level](self.up_q[level](q) + f_q[level], s_tgt)
                kv = self.embed_kv[level](self.up_kv[level](kv) + f_kv[level], ref_input)
                pos = self.pos_up[level](pos)
            stream = q
            image = F.avg_pool2d(i_ref, 2 ** level) if warp else None  # I'_ref (Eq. 13)
            coarse_hw, hw = hw, tuple(q.shape[-2:])
            for j, block in enumerate(self.blocks[str(level)]):
                candidates = (None if block.mode == "dense" else
                              inter_scale_candidates(topk, coarse_hw, coarse_hw)
                              if block.mode == "inter" else inner_scale_candidates(topk, hw, hw))
                stream, match = block(stream, kv, pos, s_tgt, candidates, image)
                topk = match.topk
                matches.append(BlockMatch(level, j, hw[0], block.mode, match))
            if x is None:
                x = stream
            else:  # official quirk: embed_q1, not embed_1 (fuse[0]), at the finest level
                fuse = self.fuse[level] if level > 0 else self.embed_q[0]
                x = fuse(x + stream, s_tgt)
        return Generated(torch.tanh(self.to_rgb(x)), matches)
