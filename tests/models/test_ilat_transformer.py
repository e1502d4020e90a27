"""iLAT's transformer and sampler on a tiny model (2 layers, width 32, 2 heads, 4x4 grid):
no information leak under the LA mask (perturbation, Jacobian), Eq. 6's loss, parameter groups
and exact KV-cached decoding."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from sparsegen.attention.local_autoregressive import causal_mask, la_mask
from sparsegen.models.ilat.generate import sample
from sparsegen.models.ilat.transformer import GPT, loss, optimizer_groups

CFG = {"layers": 2, "heads": 2, "width": 32, "dropout": 0.1, "pose_hidden": [8, 16]}
N_COND, N, JOINTS, COND_VOCAB, VOCAB = 16, 16, 3, 7, 11


def _model(dtype: torch.dtype = torch.float32, joints: int = JOINTS, lively: bool = True) -> GPT:
    """Eval mode; `lively`: weights perturbed beyond N(0, 0.02) so that every dependence shows
    (off for float32 decoding, whose logits then stay O(1))."""
    torch.manual_seed(0)
    model = GPT(CFG, COND_VOCAB, VOCAB, N_COND, N, joints).to(dtype).eval()
    if lively:
        with torch.no_grad():
            for p in model.parameters():
                p.add_(0.3 * torch.randn_like(p))
    return model


def _inputs(batch: int, dtype: torch.dtype = torch.float32, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    cond = torch.randint(COND_VOCAB, (batch, N_COND), generator=g)
    target = torch.randint(VOCAB, (batch, N), generator=g)
    pose = torch.rand(batch, JOINTS, 3, generator=g, dtype=dtype)
    pose[:, 0] = torch.tensor([-1.0, -1.0, 0.0], dtype=dtype)  # an invisible joint
    return cond, target, pose


def _masks(batch: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    masked = torch.rand(batch, N, generator=g) < torch.rand(batch, 1, generator=g)
    masked[0], masked[1] = False, True  # empty and full holes
    masked[2] = torch.arange(N) == N - 1  # a hole at the last token only
    masked[3] = torch.arange(N) >= N - 3  # holes ending at the last token
    return masked


def test_shapes_positions_and_tied_head():
    model = _model()
    cond, target, pose = _inputs(2)
    assert model.condition_length == 1 + N_COND + JOINTS
    assert model.positions.num_embeddings == model.sequence_length == 1 + N_COND + JOINTS + 1 + N
    attend = la_mask(_masks(4, 0)[2:], model.condition_length)
    logits = model(cond, target, pose, attend)
    assert logits.shape == (2, N, VOCAB)
    h = torch.randn(5, CFG["width"])
    tied = model.head(h) @ model.target_embed.weight.T + model.head_bias
    assert torch.allclose(model.predict(h), tied, atol=1e-6)
    with pytest.raises(ValueError, match=r"pose must be \(2, 3, 3\)"):
        model(cond, target, None, attend)
    with pytest.raises(ValueError, match="pose given to a transformer built with n_joints=0"):
        _model(joints=0)(cond, target, pose, attend)
    with pytest.raises(ValueError, match="attend must be Bool"):
        model(cond, target, pose, attend[:, 1:])


@pytest.mark.parametrize("form", ["paper", "official"])
def test_perturbing_masked_token_k_leaves_logits_up_to_k_unchanged(form):
    model = _model(torch.float64)
    cond, target, pose = _inputs(1, torch.float64, seed=1)
    masked = torch.zeros(1, N, dtype=torch.bool)
    holes = [1, 2, 5, 6, 7, 11, 15]
    masked[0, holes] = True
    attend = la_mask(masked, model.condition_length, form)
    base = model(cond, target, pose, attend)
    for k in holes:
        perturbed = target.clone()
        perturbed[0, k] = (perturbed[0, k] + 1) % VOCAB
        out = model(cond, perturbed, pose, attend)
        for m in holes:
            changed = not torch.equal(out[0, m], base[0, m])
            # later holes see t_k; official: not those predicted from a known token's row
            assert changed == (m > k and (form == "paper" or m - 1 in holes)), (form, k, m)


def test_perturbing_token_k_under_the_causal_mask():
    model = _model(torch.float64)
    cond, target, pose = _inputs(1, torch.float64, seed=2)
    attend = causal_mask(model.condition_length, N)
    base = model(cond, target, pose, attend)
    for k in (0, 7, N - 1):
        perturbed = target.clone()
        perturbed[0, k] = (perturbed[0, k] + 1) % VOCAB
        out = model(cond, perturbed, pose, attend)
        assert torch.equal(out[0, :k + 1], base[0, :k + 1])
        assert (out[0, k + 1:] != base[0, k + 1:]).any(-1).all()


@pytest.mark.parametrize("mask", ["paper", "official", "causal"])
def test_jacobian_is_zero_exactly_where_the_mask_is(mask):
    model = _model(torch.float64)
    cond, target, pose = _inputs(1, torch.float64, seed=3)
    masked = torch.zeros(1, N, dtype=torch.bool)
    masked[0, [0, 4, 5, 9, 15]] = True
    c = model.condition_length
    attend = causal_mask(c, N) if mask == "causal" else la_mask(masked, c, mask)[0]
    x = model.embed(cond, target, pose).detach()
    project = torch.randn(VOCAB, dtype=torch.float64)  # logits . r: zero iff the row's are

    def logits(e: torch.Tensor) -> torch.Tensor:
        return model.predict(model.transform(e, attend)) @ project  # (1, L)

    jac = torch.autograd.functional.jacobian(logits, x, vectorize=True)  # (1, L, 1, L, W)
    depends = jac[0, :, 0].abs().sum(-1) > 0  # (L rows, L inputs)
    assert torch.equal(depends, attend)  # zero where 0; nonzero where 1 (masks are closed)


def test_loss_counts_masked_tokens_only():
    g = torch.Generator().manual_seed(4)
    logits = torch.randn(3, N, VOCAB, generator=g)
    target = torch.randint(VOCAB, (3, N), generator=g)
    masked = torch.rand(3, N, generator=g) < 0.4
    terms = [-F.log_softmax(logits[b, i], -1)[target[b, i]]
             for b in range(3) for i in range(N) if masked[b, i]]
    assert math.isclose(loss(logits, target, masked).item(), torch.stack(terms).mean().item(),
                        rel_tol=1e-6)
    shuffled = logits.clone()
    shuffled[~masked] = torch.randn(int((~masked).sum()), VOCAB, generator=g)
    assert torch.equal(loss(shuffled, target, masked), loss(logits, target, masked))
    everything = torch.stack([-F.log_softmax(logits[b, i], -1)[target[b, i]]
                              for b in range(3) for i in range(N)]).mean()
    assert torch.allclose(loss(logits, target), everything)
    assert loss(logits, target, torch.zeros_like(masked)).item() == 0.0


def test_optimizer_groups_decay_linear_weights_only():
    model = _model()
    decay, no_decay = optimizer_groups(model, 0.01)
    assert decay["weight_decay"] == 0.01 and no_decay["weight_decay"] == 0.0
    assert {id(p) for p in decay["params"]} == {id(m.weight) for m in model.modules()
                                               if isinstance(m, nn.Linear)}
    assert len(decay["params"]) + len(no_decay["params"]) == len(list(model.parameters()))
    quiet = {id(p) for p in no_decay["params"]}
    assert {id(model.target_embed.weight), id(model.positions.weight), id(model.target_start),
            id(model.blocks[0].ln1.weight), id(model.head_bias)} <= quiet


@pytest.mark.parametrize("mask", ["la", "causal"])
def test_cached_decoding_equals_uncached(mask):
    model = _model(lively=False)
    model.train()
    batch = 6
    cond, target, pose = _inputs(batch, seed=5)
    masked = _masks(batch, seed=6)
    cached = sample(model, cond, pose, target, masked, mask, cache=True)
    uncached = sample(model, cond, pose, target, masked, mask, cache=False)
    assert model.training  # restored
    assert torch.equal(cached.ids, uncached.ids)
    assert (cached.logits - uncached.logits).abs().max() <= 1e-5
    holes = masked if mask == "la" else torch.ones_like(masked)
    assert cached.steps == uncached.steps == int(holes.sum())
    assert torch.equal(cached.ids[~holes], target[~holes])
    generated = cached.logits.abs().sum(-1) > 0
    assert torch.equal(generated, holes)
    assert torch.equal(cached.ids[holes], cached.logits.argmax(-1)[holes])


def test_uncached_la_decoding_is_greedy_under_the_fixed_mask():
    """Reference: one full forward per hole with the input mask, top-1 at the hole."""
    model = _model()
    cond, target, pose = _inputs(1, seed=7)
    masked = torch.zeros(1, N, dtype=torch.bool)
    masked[0, [3, 4, 10]] = True
    attend = la_mask(masked, model.condition_length)
    ids = target.clone()
    with torch.no_grad():
        for hole in (3, 4, 10):
            ids[0, hole] = model(cond, ids, pose, attend)[0, hole].argmax()
    assert torch.equal(sample(model, cond, pose, target, masked, cache=True).ids, ids)


def test_official_form_rebuilds_its_mask_and_has_no_cache():
    model = _model()
    cond, target, pose = _inputs(2, seed=8)
    masked = _masks(4, seed=9)[2:]
    out = sample(model, cond, pose, target, masked, "la", cache=False, form="official")
    assert out.steps == int(masked.sum())
    assert torch.equal(out.ids[~masked], target[~masked])
    with pytest.raises(ValueError, match="no exact KV cache"):
        sample(model, cond, pose, target, masked, "la", cache=True, form="official")
    with pytest.raises(ValueError, match="masked must be Bool"):
        sample(model, cond, pose, target, None, "la")
