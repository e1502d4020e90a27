"""DynaST generator: every variant's block cascade, warps at every block (8 at full depth),
Ours-x / peers / ablation structure, pruning reaching Omega and Phi, settings checks, and the
epoch arithmetic of the training length."""

from __future__ import annotations

import copy

import pytest
import torch

from sparsegen import config
from sparsegen.claims import task_variant
from sparsegen.models.dynast.checks import LABEL_CHANNELS, attended_levels, problems
from sparsegen.models.dynast.network import build_generator
from sparsegen.train.schedules import by_epochs


@pytest.fixture(scope="module")
def params() -> dict:
    return config.load_params()


def model_of(params: dict, variant: str) -> dict:
    return config.resolve(params, "dynast", variant, check=False)["model"]


def run(model: dict, batch: int = 2, size: int | None = None):
    torch.manual_seed(0)
    g = build_generator(model)
    c, n = LABEL_CHANNELS[model["task"]], size or model["size"]
    out = g(torch.randn(batch, c, n, n), torch.rand(batch, 3, n, n) * 2 - 1,
            torch.randn(batch, c, n, n))
    return g, out


EXPECTED = {  # block names (side-Bj) and modes at the smoke size 32 (levels 32, 16, 8, 4)
    "df_full": ["4-B1:dense", "4-B2:dense", "8-B1:inter", "8-B2:inner", "16-B1:inter",
                "16-B2:inner", "32-B1:inter", "32-B2:inner"],
    "df_ours32": ["4-B1:dense", "4-B2:dense"],
    "df_ours64": ["4-B1:dense", "4-B2:dense", "8-B1:inter", "8-B2:inner"],
    "df_ours128": ["4-B1:dense", "4-B2:dense", "8-B1:inter", "8-B2:inner", "16-B1:inter",
                   "16-B2:inner"],
    "df_wo_inner": ["4-B1:dense", "4-B2:dense", "8-B1:inter", "8-B2:inter", "16-B1:inter",
                    "16-B2:inter", "32-B1:inter", "32-B2:inter"],
    "df_cocosnet": ["8-B1:dense", "8-B2:dense"],
    "df_cocosnet_v2": ["4-B1:dense", "4-B2:dense", "8-B1:patchmatch", "8-B2:patchmatch",
                       "16-B1:patchmatch", "16-B2:patchmatch", "32-B1:patchmatch",
                       "32-B2:patchmatch"],
}


@pytest.mark.parametrize("variant", sorted(EXPECTED))
def test_each_variant_builds_its_cascade_and_warps_at_every_block(params, variant):
    model = model_of(params, variant)
    _, out = run(model)
    assert [f"{m.name}:{m.mode}" for m in out.matches] == EXPECTED[variant]
    assert out.image.shape == (2, 3, 32, 32) and out.image.abs().max() <= 1
    for m in out.matches:
        assert m.match.warp.shape == (2, 3, m.side, m.side)
        assert torch.isfinite(m.match.warp).all()
    assert len(out.warps) == len(EXPECTED[variant])


def test_pruning_sets_confidence_and_wo_dyna_keeps_every_link(params):
    _, full = run(model_of(params, "df_full"))
    _, wo = run(model_of(params, "df_wo_dyna"))
    confs = torch.cat([m.match.conf.flatten() for m in full.matches])
    assert confs.min() >= 0 and confs.max() <= 1 + 1e-6 and confs.min() < 1
    for m in wo.matches:
        assert torch.allclose(m.match.conf, torch.ones_like(m.match.conf))
        assert (m.match.kept == m.match.formed).all()
    g, _ = run(model_of(params, "df_wo_dyna"))
    assert not any("omega" in n for n, _ in g.named_parameters())


def test_the_warp_loss_gradient_reaches_the_pruning_projections(params):
    g, out = run(model_of(params, "df_full"))
    sum(w.square().mean() for w in out.warps).backward()
    omega = [p for n, p in g.named_parameters() if ".omega." in n]
    assert omega and all(p.grad is not None and p.grad.abs().sum() > 0 for p in omega)


def test_style_at_twice_the_training_side_resizes_the_positions(params):
    model = model_of(params, "st_full")
    _, out = run(model, batch=1, size=2 * model["size"])
    assert out.image.shape == (1, 3, 64, 64)
    assert [m.side for m in out.matches][:2] == [8, 8]


def test_settings_checks_name_the_key(params):
    model = copy.deepcopy(model_of(params, "df_full"))
    assert problems({"model": model}) == []
    model["size"] = 36
    assert any("model.size 36 is not divisible by 2^(M-1) = 8" in p for p in problems(
        {"model": model}))
    model["size"], model["max_match_res"] = 32, 12
    assert any("model.max_match_res 12" in p for p in problems({"model": model}))


def test_attended_levels_keep_the_same_scales_at_another_side(params):
    model = model_of(params, "df_ours64")
    assert attended_levels(model, 32) == attended_levels(model, 256) == [3, 2]


def test_training_length_in_epochs():
    # DeepFashion: 80 + 20 epochs of ceil(n / 32) steps; 1000 pairs -> 32 steps per epoch.
    assert by_epochs({"epochs": 80, "decay_epochs": 20, "batch_size": 32}, 1000) == {
        "iterations": 3200, "decay_start": 2560}
    assert by_epochs({"epochs": 30, "decay_epochs": 30, "batch_size": 32}, 64) == {
        "iterations": 120, "decay_start": 60}


def test_claims_task_columns_take_the_rows_other_task_variant():
    assert task_variant("df_full", "celeba") == "celeba_full"
    assert task_variant("df_cocosnet_v2", "celeba") == "celeba_cocosnet_v2"
