"""Top-1 sampling of iLAT's transformer (Sec. 4, Eq. 5): the masked target tokens only, in raster
order, with or without a key/value cache.

LA mask, form "paper" (fixed by the input token mask): global rows never see causal positions,
so a cache is exact. Prefill the condition, the global positions and the causal positions up to
the first hole's predictor (all known tokens); for each further hole feed the causal positions
after the previous hole up to this hole's predictor, i.e. the sampled token and, when the hole
does not follow it directly, the known token before the hole. One forward per masked token.
mask "causal" (taming): every target token is generated; the same schedule with every token a
hole is an ordinary causal cache.
cache=False reruns the whole sequence per masked token (as both official samplers). Form
"official" rebuilds its mask after each step with the sampled tokens counted as known, as the
official sampler does; known rows then see later tokens, so it has no exact cache
(cache=True raises). Samples of a batch run one after another; `steps` counts forward passes.
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import pairwise

import torch

from sparsegen.attention.local_autoregressive import (
    FORMS,
    causal_mask,
    causal_positions,
    la_mask,
)
from sparsegen.models.ilat.transformer import GPT, KVCache

MASKS = ("la", "causal")


@dataclass
class Generated:
    ids: torch.Tensor     # (B, N) long: known tokens kept, holes filled top-1
    steps: int            # transformer forward passes, summed over the batch
    logits: torch.Tensor  # (B, N, V): the logits that chose each generated token, 0 elsewhere


@torch.no_grad()
def sample(model: GPT, cond_ids: torch.Tensor, pose: torch.Tensor | None,
           target_ids: torch.Tensor, masked: torch.Tensor | None, mask: str = "la",
           cache: bool = True, form: str = "paper") -> Generated:
    """Fill the masked tokens of target_ids (B, N) (mask "la": masked Bool (B, N), True =
    generate; "causal": every token, masked ignored) given cond_ids (B, Nc) and pose (B, J, 3)
    or None; form: the LA mask's form (`transformer.la_form`). Runs in eval mode."""
    if mask not in MASKS:
        raise ValueError(f"transformer.mask {mask!r} is not one of {MASKS}")
    if form not in FORMS:
        raise ValueError(f"transformer.la_form {form!r} is not one of {FORMS}")
    if mask == "la" and cache and form == "official":
        raise ValueError("la_form 'official' rebuilds its mask after every sampled token and has "
                         "no exact KV cache: sample it with cache=False")
    if mask == "causal":
        holes = torch.ones_like(target_ids, dtype=torch.bool)
    elif masked is None or masked.shape != target_ids.shape or masked.dtype != torch.bool:
        raise ValueError(f"masked must be Bool {tuple(target_ids.shape)} for mask 'la', got "
                         f"{None if masked is None else (masked.dtype, tuple(masked.shape))}")
    else:
        holes = masked
    ids = target_ids.clone()
    logits = target_ids.new_zeros(*target_ids.shape, model.head_bias.numel(),
                                  dtype=model.head_bias.dtype)
    run = _cached if cache else _uncached
    training = model.training
    model.eval()
    try:
        steps = sum(run(model, cond_ids[b:b + 1], None if pose is None else pose[b:b + 1],
                        ids[b:b + 1], holes[b:b + 1], mask, form, logits[b:b + 1])
                    for b in range(ids.shape[0]))
    finally:
        model.train(training)
    return Generated(ids=ids, steps=steps, logits=logits)


def _choose(model: GPT, h: torch.Tensor, hole: int, ids: torch.Tensor,
            logits: torch.Tensor) -> None:
    """Top-1 token for t_hole from its predictor's hidden state h (W,), written in place."""
    logits[0, hole] = model.predict(h)
    ids[0, hole] = logits[0, hole].argmax()


def _uncached(model: GPT, cond_ids: torch.Tensor, pose: torch.Tensor | None, ids: torch.Tensor,
              holes: torch.Tensor, mask: str, form: str, logits: torch.Tensor) -> int:
    """One whole-sequence forward per hole (one sample: ids (1, N), filled in place)."""
    c, n = model.condition_length, model.n_target
    pending = holes.clone()
    order = holes[0].nonzero().flatten().tolist()
    for hole in order:
        if mask == "causal":
            attend = causal_mask(c, n, ids.device)
        else:  # "official": sampled tokens count as known from the next step on
            attend = la_mask(pending if form == "official" else holes, c, form)
        h = model.transform(model.embed(cond_ids, ids, pose), attend)
        _choose(model, h[0, c + hole], hole, ids, logits)
        pending[0, hole] = False
    return len(order)


def _cached(model: GPT, cond_ids: torch.Tensor, pose: torch.Tensor | None, ids: torch.Tensor,
            holes: torch.Tensor, mask: str, form: str, logits: torch.Tensor) -> int:
    """Prefill, then one cached step per further hole (see the module docstring)."""
    order = holes[0].nonzero().flatten().tolist()
    if not order:
        return 0
    c, n = model.condition_length, model.n_target
    device = ids.device
    full = causal_mask(c, n, device) if mask == "causal" else la_mask(holes, c, form)[0]
    causal = causal_positions(holes)[0]
    target = torch.arange(n + 1, device=device)
    fed = torch.cat([torch.arange(c, device=device), c + target[~causal],
                     c + target[causal & (target <= order[0])]])
    kv = KVCache()
    h = model.transform(model.embed(cond_ids, ids, pose)[:, fed], full[fed][:, fed], kv)
    _choose(model, h[0, -1], order[0], ids, logits)
    for previous, hole in pairwise(order):
        chunk = target[causal & (target > previous) & (target <= hole)]  # all >= 1
        fed = torch.cat([fed, c + chunk])
        x = model.embed_target(ids[:, chunk - 1], chunk - 1)
        h = model.transform(x, full[c + chunk][:, fed], kv)
        _choose(model, h[0, -1], hole, ids, logits)
    return len(order)
