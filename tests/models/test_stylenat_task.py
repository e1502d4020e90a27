"""StyleNAT training pieces: GAN losses, bCR augmentations, and the task's batches, optimizers
and step on the smoke model (CPU, torch attention backend, a tiny prepared face set)."""

from __future__ import annotations

import copy
import math
from pathlib import Path
from typing import Any

import pytest
import torch

from sparsegen.data import sources
from sparsegen.data.images import load_rgb
from sparsegen.models.stylenat import augment
from sparsegen.models.stylenat.layers import IMAGENET_MEAN, IMAGENET_STD
from sparsegen.models.stylenat.task import build_task, load_generator, training_images
from sparsegen.nets import gan_losses
from sparsegen.train import checkpoint, schedules

CPU = torch.device("cpu")


# ---------------------------------------------------------------------------- GAN losses


def _softplus(v: float) -> float:
    return math.log1p(math.exp(v))


def test_logistic_losses_match_hand_values() -> None:
    real, fake = torch.tensor([[2.0], [-1.0]]), torch.tensor([[0.5], [3.0]])
    d = (_softplus(-2.0) + _softplus(1.0)) / 2 + (_softplus(0.5) + _softplus(3.0)) / 2
    g = (_softplus(-0.5) + _softplus(-3.0)) / 2
    assert float(gan_losses.d_logistic(real, fake)) == pytest.approx(d, rel=1e-6)
    assert float(gan_losses.g_nonsaturating(fake)) == pytest.approx(g, rel=1e-6)
    # At D = 0 both classes cost log 2.
    zero = torch.zeros(3, 1)
    assert float(gan_losses.d_logistic(zero, zero)) == pytest.approx(2 * math.log(2))


def test_r1_of_a_linear_discriminator_is_the_squared_weight_norm() -> None:
    """D(x) = <w, x> + b has gradient w for every sample: R1 = ||w||^2, d R1 / dw = 2w."""
    gen = torch.Generator().manual_seed(0)
    w = torch.randn(3, 4, 4, generator=gen).requires_grad_(True)
    b = torch.tensor(0.7, requires_grad=True)
    x = torch.randn(5, 3, 4, 4, generator=gen).requires_grad_(True)
    logits = (x * w).flatten(1).sum(1, keepdim=True) + b
    r1 = gan_losses.r1_penalty(logits, x)
    assert float(r1.detach()) == pytest.approx(float(w.detach().pow(2).sum()), rel=1e-5)
    r1.backward()
    torch.testing.assert_close(w.grad, 2 * w.detach())
    assert b.grad is None


def test_r1_of_a_quadratic_discriminator_is_per_sample_mean() -> None:
    """D(x) = sum(x^2): gradient 2x, so R1 = mean_i 4 ||x_i||^2."""
    x = torch.randn(6, 3, 2, 2, generator=torch.Generator().manual_seed(1)).requires_grad_(True)
    logits = x.pow(2).flatten(1).sum(1, keepdim=True)
    expected = (4 * x.detach().pow(2).flatten(1).sum(1)).mean()
    torch.testing.assert_close(gan_losses.r1_penalty(logits, x), expected)


def test_consistency_is_mean_squared_difference_with_gradients_on_both_sides() -> None:
    a = torch.tensor([[1.0], [2.0]], requires_grad=True)
    b = torch.tensor([[0.0], [4.0]], requires_grad=True)
    loss = gan_losses.consistency(a, b)
    assert float(loss.detach()) == pytest.approx((1 + 4) / 2)
    loss.backward()
    assert a.grad.tolist() == [[1.0], [-2.0]] and b.grad.tolist() == [[-1.0], [2.0]]


# ------------------------------------------------------------------------ bCR augmentations


def _images(n: int = 3, side: int = 16) -> torch.Tensor:
    return torch.randn(n, 3, side, side, generator=torch.Generator().manual_seed(2))


def test_hflip_mirrors_exactly_the_chosen_samples() -> None:
    x = _images()
    out = augment.hflip(x, torch.tensor([True, False, True]))
    assert torch.equal(out[0], x[0].flip(-1)) and torch.equal(out[1], x[1])
    assert torch.equal(out[2], x[2].flip(-1))


def test_translate_moves_content_and_shifts_in_zeros() -> None:
    x = _images(2)
    out = augment.translate(x, torch.tensor([[1, -2], [0, 0]]))
    assert torch.equal(out[1], x[1])
    assert torch.equal(out[0, :, 1:, :-2], x[0, :, :-1, 2:])
    assert not out[0, :, :1].any() and not out[0, :, :, -2:].any()


def test_colour_augmentations() -> None:
    x = _images(2)
    delta = torch.tensor([0.3, -0.5])
    torch.testing.assert_close(augment.brightness(x, delta).mean((1, 2, 3)),
                               x.mean((1, 2, 3)) + delta)
    grey = augment.saturation(x, torch.tensor([0.0, 1.0]))
    torch.testing.assert_close(grey[0], x[0].mean(0, keepdim=True).expand(3, -1, -1))
    torch.testing.assert_close(grey[1], x[1])
    flat = augment.contrast(x, torch.tensor([0.5, 1.5]))
    mean = x.mean((1, 2, 3), keepdim=True)
    torch.testing.assert_close(flat.mean((1, 2, 3), keepdim=True), mean)
    torch.testing.assert_close(flat - mean, (x - mean) * torch.tensor([0.5, 1.5]).view(2, 1, 1, 1))


def test_cutout_zeroes_a_half_size_square_clipped_at_the_border() -> None:
    x = _images(2).abs() + 1  # no zeros of its own
    out = augment.cutout(x, torch.tensor([[8, 6], [0, 16]]))
    zero = out == 0
    assert zero[0].all(0)[4:12, 2:10].all() and int(zero[0].all(0).sum()) == 8 * 8
    assert zero[0].any(0).sum() == zero[0].all(0).sum()  # all channels alike
    # Centred on the top-right corner: the quarter of the square inside the image.
    assert zero[1].all(0)[0:4, 12:16].all() and int(zero[1].all(0).sum()) == 4 * 4


def test_draw_is_seeded_per_sample_and_in_range() -> None:
    a = augment.draw(256, 32, 32, torch.Generator().manual_seed(0))
    b = augment.draw(256, 32, 32, torch.Generator().manual_seed(0))
    for field in ("flip", "shift", "brightness", "saturation", "contrast", "cutout"):
        assert torch.equal(getattr(a, field), getattr(b, field)), field
    assert 0.3 < a.flip.float().mean() < 0.7
    assert int(a.shift.abs().max()) == 4 and len(a.shift.unique()) == 9
    assert float(a.brightness.min()) >= -0.5 and float(a.brightness.max()) < 0.5
    assert float(a.saturation.min()) >= 0 and float(a.saturation.max()) < 2
    assert float(a.contrast.min()) >= 0.5 and float(a.contrast.max()) < 1.5
    assert int(a.cutout.min()) == 0 and int(a.cutout.max()) == 32
    assert augment.apply(_images(256, 32), a).shape == (256, 3, 32, 32)


# -------------------------------------------------------------------------------- the task


@pytest.fixture(scope="module")
def prepared(smoke: dict[str, Any], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """16 procedural faces at the smoke resolution, 4 of them in the test split."""
    root = tmp_path_factory.mktemp("prepared")
    sources.prepare("faces", {"source": "smoke_faces", "size": smoke["model"]["resolution"],
                              "n_train": 12, "n_test": 4, "seed": 0}, None, root / "faces")
    return root


@pytest.fixture
def settings(smoke: dict[str, Any], prepared: Path) -> dict[str, Any]:
    s = copy.deepcopy(smoke)
    s["paths"] = {**s["paths"], "prepared": str(prepared)}
    s["datasets"] = {"images": {"name": "faces"}}
    s["train"]["batch_size"] = 2
    return s


def test_training_uses_every_split(settings: dict[str, Any]) -> None:
    images = training_images(settings)
    assert len(images) == 16 and {s.split for s in images} == {"train", "test"}


def test_optimizers_follow_ttur_and_lazy_regularisation(settings: dict[str, Any]) -> None:
    task = build_task(settings, CPU)
    g, d = task.optimizers["g"].param_groups[0], task.optimizers["d"].param_groups[0]
    c = 16 / 17
    assert g["lr"] == 5e-5 and g["betas"] == (0.0, 0.99)
    assert d["lr"] == pytest.approx(2e-4 * c) and d["betas"] == (0.0, pytest.approx(0.99 ** c))
    settings["train"]["lazy_reg_scaling"] = False
    d = build_task(settings, CPU).optimizers["d"].param_groups[0]
    assert d["lr"] == 2e-4 and d["betas"] == (0.0, 0.99)


def test_schedule_decays_linearly_to_zero(settings: dict[str, Any]) -> None:
    t = {**settings["train"], "iterations": 40, "decay_start": 30}
    assert "lr_schedule" not in t  # StyleNAT's settings name no schedule: linear
    factor = schedules.from_settings(t)
    assert [factor(s) for s in (0, 29, 30, 35, 40)] == [1.0, 1.0, 1.0, 0.5, 0.0]


def test_batch_is_a_pure_function_of_the_generator(settings: dict[str, Any]) -> None:
    task = build_task(settings, CPU)
    a = task.batch(0, torch.Generator().manual_seed(5))
    b = task.batch(0, torch.Generator().manual_seed(5))
    c = task.batch(0, torch.Generator().manual_seed(6))
    assert torch.equal(a["reals"], b["reals"]) and torch.equal(a["z_g"], b["z_g"])
    assert torch.equal(a["aug_fake"].shift, b["aug_fake"].shift)
    assert not torch.equal(a["reals"], c["reals"]) and not torch.equal(a["z_d"], c["z_d"])
    side, style_dim = settings["model"]["resolution"], settings["model"]["style_dim"]
    assert a["reals"].shape == (2, 3, side, side)
    assert a["z_d"].shape == a["z_g"].shape == (2, style_dim)
    assert not torch.equal(a["z_d"], a["z_g"])
    # ImageNet-normalised dataset images, some mirrored.
    mean, std = (torch.tensor(v).view(3, 1, 1) for v in (IMAGENET_MEAN, IMAGENET_STD))
    images = torch.stack([load_rgb(s.path) for s in training_images(settings)])
    for real in c["reals"]:
        unit = real * std + mean
        assert any(torch.allclose(unit, img, atol=1e-5) or torch.allclose(unit, img.flip(-1),
                                                                          atol=1e-5)
                   for img in images)


def _step(task, step: int, seed: int = 0) -> dict[str, float]:
    return task.train_step(step, task.batch(step, torch.Generator().manual_seed(seed)))


def test_step_losses_are_finite_and_r1_on_multiples_of_r1_every(settings) -> None:
    torch.manual_seed(0)
    task = build_task(settings, CPU)
    first = _step(task, 0)
    assert set(first) == {"d", "bcr_real", "bcr_fake", "r1", "g"}
    assert all(math.isfinite(v) for v in first.values()) and first["r1"] > 0
    assert set(_step(task, 1)) == {"d", "bcr_real", "bcr_fake", "g"}
    assert "r1" in _step(task, settings["loss"]["r1_every"])


def test_g_ema_follows_the_ema_formula(settings: dict[str, Any]) -> None:
    settings["train"].update(ema_decay=0.75, lr_g=1e-2)
    torch.manual_seed(0)
    task = build_task(settings, CPU)
    before = {k: v.clone() for k, v in task.ema.module.state_dict().items()}
    g0 = {k: v.clone() for k, v in task.generator.state_dict().items()}
    assert all(torch.equal(before[k], g0[k]) for k in g0)
    _step(task, 1)
    after, g1 = task.ema.module.state_dict(), task.generator.state_dict()
    params = {name for name, _ in task.generator.named_parameters()}
    for name in params:
        torch.testing.assert_close(after[name], 0.75 * before[name] + 0.25 * g1[name],
                                   rtol=0, atol=1e-6)
    assert any(not torch.equal(after[n], g1[n]) for n in params)
    assert any(not torch.equal(g0[n], g1[n]) for n in params)


def test_each_network_gets_gradients_only_from_its_own_step(settings) -> None:
    """The official attribute `requires_grad = False` froze nothing; here the D step leaves
    G without gradients and the G step leaves D without (one backward each per step)."""
    task = build_task(settings, CPU)
    calls = {"generator": 0, "discriminator": 0}
    for name in calls:
        for p in task.modules[name].parameters():
            p.register_hook(lambda grad, name=name: calls.__setitem__(name, calls[name] + 1))
    n_g = sum(1 for _ in task.generator.parameters())
    n_d = sum(1 for _ in task.discriminator.parameters())
    _step(task, 1)
    assert calls == {"generator": n_g, "discriminator": n_d}
    assert all(p.requires_grad for m in task.modules.values() if m is not task.ema.module
               for p in m.parameters())


def test_discriminator_gradient_is_clipped(settings: dict[str, Any]) -> None:
    settings["train"]["d_clip"] = 1e-4
    task = build_task(settings, CPU)
    _step(task, 1)  # no R1 at step 1: D's gradients are those of the clipped D step
    norm = torch.linalg.vector_norm(torch.stack(
        [torch.linalg.vector_norm(p.grad) for p in task.discriminator.parameters()]))
    assert float(norm) == pytest.approx(1e-4, rel=1e-3)


def test_load_generator_rejects_other_checkpoints(settings, tmp_path: Path) -> None:
    task = build_task(settings, CPU)
    path = tmp_path / "other.pt"
    checkpoint.save(path, step=1, modules={"decoder": task.generator}, optimizers={},
                    settings={"paper": "stya2k"})
    with pytest.raises(ValueError, match=f"{path}: not a StyleNAT checkpoint"):
        load_generator(path, CPU)
    wrong = copy.deepcopy(settings)
    wrong["model"]["style_dim"] = 16
    checkpoint.save(path, step=1, modules=task.modules, optimizers={}, settings=wrong)
    with pytest.raises(ValueError, match="g_ema does not match"):
        load_generator(path, CPU)

