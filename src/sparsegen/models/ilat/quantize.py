"""The vector quantiser of TS-VQGAN (Sec. 3.1, Eq. 1), in taming's legacy form as the official
code has it (official_repos §3.2, §5.4): K codes initialised U(-1/K, 1/K), nearest code by L2,
loss ||sg[z_q] - z||^2 + beta ||z_q - sg[z]||^2 (means over every element; beta 0.25 weighs the
codebook term), straight-through gradient z + sg[z_q - z]."""

from __future__ import annotations

import torch
from torch import nn


class Quantizer(nn.Module):
    """K codes of `dim` channels (`embedding.weight`, (K, dim), taming's `quantize.embedding`)."""

    def __init__(self, n_codes: int, dim: int, beta: float = 0.25) -> None:
        super().__init__()
        self.beta = beta
        self.embedding = nn.Embedding(n_codes, dim)
        nn.init.uniform_(self.embedding.weight, -1.0 / n_codes, 1.0 / n_codes)

    def nearest(self, z: torch.Tensor) -> torch.Tensor:
        """ids (B, h, w) of the codes nearest to z (B, dim, h, w) (Eq. 1)."""
        b, c, h, w = z.shape
        flat = z.permute(0, 2, 3, 1).reshape(-1, c)
        codes = self.embedding.weight
        dist = (flat.pow(2).sum(1, keepdim=True) + codes.pow(2).sum(1)
                - 2 * flat @ codes.t())
        return dist.argmin(1).reshape(b, h, w)

    def embed(self, ids: torch.Tensor) -> torch.Tensor:
        """The codes (B, dim, h, w) of ids (B, h, w)."""
        return self.embedding(ids).permute(0, 3, 1, 2)

    def forward(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(z_q with the straight-through gradient, codebook loss, ids (B, h, w))."""
        ids = self.nearest(z)
        z_q = self.embed(ids)
        loss = ((z_q.detach() - z) ** 2).mean() + self.beta * ((z_q - z.detach()) ** 2).mean()
        return z + (z_q - z).detach(), loss, ids
