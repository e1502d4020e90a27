"""iLAT's decoder-only transformer (Sec. 3.2, Fig. 2, A.1): a GPT over
[c_s, c_1..c_Nc, pose_1..pose_J, t_s, t_1..t_N] with any attention mask (Eq. 7-8), its loss
(Eq. 6) and AdamW parameter groups.

GPT "base" (A.1): pre-LN blocks, multi-head self-attention through SDPA with a boolean mask
(Eq. 8: masked scores are -inf before the softmax), MLP 4x with exact (erf) GELU, dropout on
embeddings, attention weights and residual branches. Separate code embeddings for condition and
target tokens, learned start tokens c_s, t_s and learned absolute positions. Each pose joint
(x, y in [0, 1], visible; invisible joints come as (-1, -1, 0)) goes through an MLP
3 -> pose_hidden[0] -> pose_hidden[1] -> width with ReLU and becomes one condition token. Head
(official code): LN -> Linear -> GELU -> LN, then the target embedding (tied) plus a bias. Init
N(0, 0.02), zero biases. Target position p (t_s for p = 0) predicts target token t_p.

Attention runs with an optional key/value cache (`KVCache`) so that `generate.sample` can feed
positions in any order, each attending to the cached keys and to the new ones.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

INIT_STD = 0.02


@dataclass
class KVCache:
    """Keys and values (B, heads, T, d) of the positions fed so far, one pair per layer (empty
    until the first call fills it)."""

    layers: list[tuple[torch.Tensor, torch.Tensor]] = field(default_factory=list)

    @property
    def length(self) -> int:
        return self.layers[0][0].shape[2] if self.layers else 0


class SelfAttention(nn.Module):
    """Multi-head self-attention with a boolean mask (Eq. 8) and an optional cache."""

    def __init__(self, width: int, heads: int, dropout: float) -> None:
        super().__init__()
        self.heads, self.dropout = heads, dropout
        self.query, self.key, self.value = (nn.Linear(width, width) for _ in range(3))
        self.proj = nn.Linear(width, width)
        self.resid_drop = nn.Dropout(dropout)

    def _split(self, x: torch.Tensor) -> torch.Tensor:
        return x.unflatten(-1, (self.heads, -1)).transpose(1, 2)  # (B, heads, T, d)

    def forward(self, x: torch.Tensor, attend: torch.Tensor, cache: KVCache | None = None,
                layer: int = 0) -> torch.Tensor:
        """x (B, T, W); attend Bool (B, T, S + T) or (T, S + T) over the S cached positions and
        then the T new ones; the new keys and values are appended to `cache`."""
        q, k, v = self._split(self.query(x)), self._split(self.key(x)), self._split(self.value(x))
        if cache is not None:
            if layer < len(cache.layers):
                past_k, past_v = cache.layers[layer]
                k, v = torch.cat([past_k, k], 2), torch.cat([past_v, v], 2)
                cache.layers[layer] = (k, v)
            else:
                cache.layers.append((k, v))
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=attend.unsqueeze(-3),
                                           dropout_p=self.dropout if self.training else 0.0)
        return self.resid_drop(self.proj(y.transpose(1, 2).flatten(2)))


class Block(nn.Module):
    """Pre-LN transformer block: x + Attn(LN(x)), then x + MLP(LN(x))."""

    def __init__(self, width: int, heads: int, dropout: float) -> None:
        super().__init__()
        self.ln1, self.ln2 = nn.LayerNorm(width), nn.LayerNorm(width)
        self.attn = SelfAttention(width, heads, dropout)
        self.mlp = nn.Sequential(nn.Linear(width, 4 * width), nn.GELU(),
                                 nn.Linear(4 * width, width), nn.Dropout(dropout))

    def forward(self, x: torch.Tensor, attend: torch.Tensor, cache: KVCache | None,
                layer: int) -> torch.Tensor:
        x = x + self.attn(self.ln1(x), attend, cache, layer)
        return x + self.mlp(self.ln2(x))


class GPT(nn.Module):
    """The LA transformer. cfg: s["transformer"] (layers, heads, width, dropout, pose_hidden);
    n_cond condition codes, n_target target codes, n_joints pose tokens (0 = no pose)."""

    def __init__(self, cfg: Mapping[str, Any], cond_vocab: int, target_vocab: int, n_cond: int,
                 n_target: int, n_joints: int = 0) -> None:
        super().__init__()
        width, heads, dropout = cfg["width"], cfg["heads"], cfg["dropout"]
        if width % heads:
            raise ValueError(f"transformer.width={width} is not divisible by "
                             f"transformer.heads={heads}")
        self.n_cond, self.n_target, self.n_joints = n_cond, n_target, n_joints
        self.condition_length = 1 + n_cond + n_joints  # c_s, codes, pose tokens
        self.sequence_length = self.condition_length + 1 + n_target
        self.cond_embed = nn.Embedding(cond_vocab, width)
        self.target_embed = nn.Embedding(target_vocab, width)
        self.cond_start = nn.Parameter(torch.empty(width))
        self.target_start = nn.Parameter(torch.empty(width))
        self.positions = nn.Embedding(self.sequence_length, width)
        self.pose: nn.Module | None = None
        if n_joints:
            h0, h1 = cfg["pose_hidden"]
            self.pose = nn.Sequential(nn.Linear(3, h0), nn.ReLU(), nn.Linear(h0, h1), nn.ReLU(),
                                      nn.Linear(h1, width))
        self.drop = nn.Dropout(dropout)
        self.blocks = nn.ModuleList(Block(width, heads, dropout) for _ in range(cfg["layers"]))
        self.head = nn.Sequential(nn.LayerNorm(width), nn.Linear(width, width), nn.GELU(),
                                  nn.LayerNorm(width))
        self.head_bias = nn.Parameter(torch.zeros(target_vocab))
        self.apply(_init_weights)
        nn.init.normal_(self.cond_start, std=INIT_STD)
        nn.init.normal_(self.target_start, std=INIT_STD)

    def embed_target(self, ids: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        """Input embeddings (B, k, W) of target tokens ids (B, k) standing as t_index (index (k,)
        in 0..N-1): code embedding plus the position of t_index."""
        return self.target_embed(ids) + self.positions(self.condition_length + 1 + index)

    def embed(self, cond_ids: torch.Tensor, target_ids: torch.Tensor,
              pose: torch.Tensor | None) -> torch.Tensor:
        """Input embeddings (B, L, W) of the whole sequence (codes or start tokens or pose
        tokens, plus positions), before dropout."""
        b = target_ids.shape[0]
        self._check_inputs(cond_ids, target_ids, pose)
        parts = [self.cond_start.expand(b, 1, -1), self.cond_embed(cond_ids)]
        if self.pose is not None:
            parts.append(self.pose(pose))
        head = torch.cat(parts, 1) + self.positions.weight[:self.condition_length]
        start = self.target_start + self.positions.weight[self.condition_length]
        index = torch.arange(self.n_target, device=target_ids.device)
        return torch.cat([head, start.expand(b, 1, -1), self.embed_target(target_ids, index)], 1)

    def transform(self, x: torch.Tensor, attend: torch.Tensor,
                  cache: KVCache | None = None) -> torch.Tensor:
        """Hidden states (B, T, W) of input embeddings x (B, T, W) under attend Bool
        (B, T, S + T) or (T, S + T) (S = positions already in `cache`, 0 without one)."""
        expected = (x.shape[1], x.shape[1] + (cache.length if cache is not None else 0))
        if tuple(attend.shape[-2:]) != expected or attend.dtype != torch.bool:
            raise ValueError(f"attend must be Bool (..., {expected[0]}, {expected[1]}), got "
                             f"{attend.dtype} {tuple(attend.shape)}")
        x = self.drop(x)
        for layer, block in enumerate(self.blocks):
            x = block(x, attend, cache, layer)
        return x

    def predict(self, h: torch.Tensor) -> torch.Tensor:
        """Target-code logits (..., target_vocab) of hidden states h (..., W): head, tied
        target embedding, bias."""
        return F.linear(self.head(h), self.target_embed.weight, self.head_bias)

    def forward(self, cond_ids: torch.Tensor, target_ids: torch.Tensor,
                pose: torch.Tensor | None, attend: torch.Tensor) -> torch.Tensor:
        """Logits (B, N, target_vocab); logits[:, i] predicts t_i (from t_{i-1}'s position, t_s
        for i = 0). attend: Bool (B, L, L) or (L, L), e.g. `la_mask` or `causal_mask`."""
        h = self.transform(self.embed(cond_ids, target_ids, pose), attend)
        return self.predict(h[:, self.condition_length:self.condition_length + self.n_target])

    def _check_inputs(self, cond_ids: torch.Tensor, target_ids: torch.Tensor,
                      pose: torch.Tensor | None) -> None:
        b = target_ids.shape[0]
        if tuple(cond_ids.shape) != (b, self.n_cond):
            raise ValueError(f"cond_ids must be ({b}, {self.n_cond}), got {tuple(cond_ids.shape)}")
        if tuple(target_ids.shape) != (b, self.n_target):
            raise ValueError(f"target_ids must be (B, {self.n_target}), got "
                             f"{tuple(target_ids.shape)}")
        if self.pose is None and pose is not None:
            raise ValueError("pose given to a transformer built with n_joints=0")
        if self.pose is not None and (pose is None or tuple(pose.shape) != (b, self.n_joints, 3)):
            got = None if pose is None else tuple(pose.shape)
            raise ValueError(f"pose must be ({b}, {self.n_joints}, 3) [x, y, visible], got {got}")


def _init_weights(module: nn.Module) -> None:
    """N(0, 0.02) for linear and embedding weights, zero biases (LayerNorms keep 1, 0)."""
    if isinstance(module, (nn.Linear, nn.Embedding)):
        nn.init.normal_(module.weight, std=INIT_STD)
    if isinstance(module, nn.Linear) and module.bias is not None:
        nn.init.zeros_(module.bias)


def loss(logits: torch.Tensor, target_ids: torch.Tensor,
         masked: torch.Tensor | None = None) -> torch.Tensor:
    """Eq. 6: mean cross-entropy over the masked target tokens (every token when masked is
    None); logits (B, N, V), target_ids (B, N), masked Bool (B, N). No masked token -> 0."""
    if masked is None:
        return F.cross_entropy(logits.flatten(0, 1), target_ids.flatten())
    if not masked.any():
        return logits.sum() * 0.0
    return F.cross_entropy(logits[masked], target_ids[masked])


def optimizer_groups(model: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """AdamW parameter groups as minGPT: weight decay on linear weights only; biases,
    LayerNorms, embeddings (the tied head too), positions and start tokens get none."""
    decayed = {id(m.weight) for m in model.modules() if isinstance(m, nn.Linear)}
    params = list(model.parameters())
    return [{"params": [p for p in params if id(p) in decayed], "weight_decay": weight_decay},
            {"params": [p for p in params if id(p) not in decayed], "weight_decay": 0.0}]
