"""iLAT's local-autoregressive (LA) attention mask (Sec. 3.2, Eq. 7, Fig. 3(b)), the vanilla AR
and AE masks it is compared with (Fig. 1), and the pixel-to-token mask.

Sequence: `n_cond` condition positions (start token, condition codes, pose tokens), then the
target start token t_s at target position 0 and target token t_i at target position i + 1, so
L = n_cond + 1 + N. Target position p predicts token t_p (labels shifted right by one). Masks are
boolean (..., L, L), rows = queries, True = may attend. Every mask has the four sub-masks of
Eq. 7: condition rows see all condition positions and no target (C2C = 1, C2T = 0), target rows
see all condition positions (T2C = 1); they differ in the target-to-target part (T2T):

- LA, form "paper" (Fig. 3(b)): target position p is *causal* if its token or the next one is
  masked (the start token included), else *global*. Row p sees q iff q is global, or p and q are
  both causal and q <= p: global rows never see a causal token (M_gs), causal rows see the
  global tokens and the causal ones up to themselves (M_cs), M_LA = M_gs + M_cs.
- LA, form "official" (official code, `GETransformer.build_mask`): known positions (t_s and
  unmasked tokens) are seen by every row; rows holding a masked token also see every earlier
  position. Its sampler rebuilds the mask after each sampled token (`generate.sample`).
- causal (vanilla AR, Fig. 1(b), the taming variant): T2T lower triangular.
- AE (Fig. 1(a)): every target row sees the known target positions, none holding a masked token.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

FORMS = ("paper", "official")


def token_mask(pixel_mask: torch.Tensor, grid: int) -> torch.Tensor:
    """Pixel hole mask (B, 1, H, W), 1 = hole, -> token mask Bool (B, grid * grid) in raster
    order: a token is masked when any pixel of its cell is a hole (max-pooling, as the code)."""
    if pixel_mask.ndim != 4 or pixel_mask.shape[1] != 1:
        raise ValueError(f"pixel_mask must be (B, 1, H, W), got {tuple(pixel_mask.shape)}")
    side = pixel_mask.shape[-1]
    if pixel_mask.shape[-2] != side or side % grid:
        raise ValueError(f"pixel_mask {tuple(pixel_mask.shape[-2:])} is not a square whose side "
                         f"divides into grid={grid} token cells")
    pooled = F.max_pool2d(pixel_mask.float(), side // grid)
    return (pooled > 0.5).flatten(1)


def causal_positions(masked: torch.Tensor) -> torch.Tensor:
    """Bool (B, N + 1): target position p is causal iff its token t_{p-1} or the token it
    predicts, t_p, is masked (Sec. 3.2: {t_m} and {t_{m-1}})."""
    no = masked.new_zeros(masked.shape[0], 1)
    return torch.cat([no, masked], 1) | torch.cat([masked, no], 1)


def la_mask(masked: torch.Tensor, n_cond: int, form: str = "paper") -> torch.Tensor:
    """Eq. 7 LA mask Bool (B, L, L) for token masks `masked` Bool (B, N) (True = masked);
    `n_cond` counts every condition position (start, codes, pose tokens)."""
    _check_masked(masked)
    n = masked.shape[1]
    q_le_p = torch.ones(n + 1, n + 1, dtype=torch.bool, device=masked.device).tril()
    if form == "paper":
        causal = causal_positions(masked)
        both = causal[:, :, None] & causal[:, None, :]
        t2t = ~causal[:, None, :] | (both & q_le_p)  # M_LA = M_gs + M_cs
    elif form == "official":
        known = _known_positions(masked)
        t2t = known[:, None, :] | (~known[:, :, None] & q_le_p)
    else:
        raise ValueError(f"la_form {form!r} is not one of {FORMS}")
    return _assemble(t2t, n_cond)


def causal_mask(n_cond: int, n: int, device: torch.device | str | None = None) -> torch.Tensor:
    """Vanilla AR mask Bool (L, L) (broadcasts over the batch): T2T lower triangular."""
    t2t = torch.ones(1, n + 1, n + 1, dtype=torch.bool, device=device).tril()
    return _assemble(t2t, n_cond)[0]


def ae_mask(masked: torch.Tensor, n_cond: int) -> torch.Tensor:
    """AE mask Bool (B, L, L) (Fig. 1(a)): target rows see every known target position."""
    _check_masked(masked)
    known = _known_positions(masked)
    return _assemble(known[:, None, :].expand(-1, known.shape[1], -1), n_cond)


def _known_positions(masked: torch.Tensor) -> torch.Tensor:
    """Bool (B, N + 1): the start token and the unmasked tokens."""
    return torch.cat([masked.new_ones(masked.shape[0], 1), ~masked], 1)


def _assemble(t2t: torch.Tensor, n_cond: int) -> torch.Tensor:
    """Eq. 7: [[1, 0], [1, T2T]] with n_cond condition positions; t2t Bool (B, T, T)."""
    b, t = t2t.shape[0], t2t.shape[-1]
    full = torch.zeros(b, n_cond + t, n_cond + t, dtype=torch.bool, device=t2t.device)
    full[:, :, :n_cond] = True
    full[:, n_cond:, n_cond:] = t2t
    return full


def _check_masked(masked: torch.Tensor) -> None:
    if masked.dtype != torch.bool or masked.ndim != 2:
        raise ValueError(f"masked must be a Bool (B, N) token mask, got {masked.dtype} "
                         f"{tuple(masked.shape)}")
