"""What every exemplar-matching form returns (DynaST's dense and sparse dynamic attention, the
CoCosNet-v2-style PatchMatch peer), so a block and the warp loss treat them alike."""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class Match:
    """One matching step of target queries (B, ., Hq, Wq) against reference keys (Hk, Wk).

    out:    (B, Cv, Hq, Wq) aggregated values, sum_j A~_ij v_j (DynaST Eq. 7-8, not renormalised)
    conf:   (B, 1, Hq, Wq) sum_j A~_ij, in [0, 1] (1 without pruning)
    warp:   (B, 3, Hq, Wq) the exemplar warped by W (Eq. 12-13), None when no image was given
    topk:   (B, Hq*Wq, k) flat reference indices (row-major over Hk x Wk) of the k largest
            attention weights before pruning: the next block's candidates (Eq. 3-4)
    kept:   (B, Hq*Wq) links kept per query (D = 1), counted over the candidate list
    formed: candidate scores formed per query (Hk*Wk dense, 4k inter-scale, 5k inner-scale)
    """

    out: torch.Tensor
    conf: torch.Tensor
    warp: torch.Tensor | None
    topk: torch.Tensor
    kept: torch.Tensor
    formed: int
