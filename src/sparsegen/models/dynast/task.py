"""DynaST as a `TrainTask` for the shared loop (G and D in one task, as StyleNAT), and loading
a trained generator.

One iteration (official `trainers/pix2pix_trainer.py`: one G step, then one D step):
1. G step: Î, warps = G(S_tgt, I_ref, S_ref); the supervised objective (Eq. 10, 14, 15 or the
   official recipe, `losses.py`) with D's features of (S_tgt, Î); style: Eq. 11 (no D).
2. D step on (S_tgt, I_tgt) vs (S_tgt, Î.detach()).
Optimisers (official code; the paper names none): Adam, G lr_g with eps 1e-3, D lr_d, betas
(0, 0.9). The loop's factor (constant, then linear to 0 over the decay) multiplies both;
`train.lr_reset: official` reproduces the code's reset of both rates to `lr_reset_value` after
the first epoch (the TTUR split then holds only for epoch 1, official_repos §1.3).
Every random draw of a step (pairs, crops, flips, the ground-truth exemplar coin) comes from
the loop's per-step generator, so a resumed run equals an uninterrupted one.
"""

from __future__ import annotations

import math
from functools import cached_property
from pathlib import Path
from typing import Any

import torch
from torch import nn

from sparsegen.data.manifest import Sample
from sparsegen.models.dynast import data
from sparsegen.models.dynast.checks import LABEL_CHANNELS
from sparsegen.models.dynast.losses import (
    Features,
    adversarial_d,
    style_g,
    supervised_g,
)
from sparsegen.models.dynast.network import build_generator
from sparsegen.nets.patchgan import MultiscalePatchGAN
from sparsegen.nets.vgg import VGGEncoder
from sparsegen.train import checkpoint, distributed
from sparsegen.weights import resolve as resolve_weights

PAPER = "dynast"


def loss_network(settings: dict[str, Any]) -> str:
    """The weights-manifest VGG the objective reads: CoCosNet's Caffe VGG-19 for the supervised
    tasks (relu1_2 ... relu5_2), AdaIN's normalised VGG for style (relu1_1 ... relu4_1)."""
    return "vgg19_normalised" if settings["model"]["task"] == "style" else "vgg19_cocosnet"


def loss_features(settings: dict[str, Any], device: torch.device) -> tuple[Features, str]:
    """The frozen loss VGG as a function of [0, 1] images, and its fingerprint."""
    name = loss_network(settings)
    deepest = "relu4_1" if name == "vgg19_normalised" else "relu5_2"
    encoder = VGGEncoder(resolve_weights(name, settings["weights"], settings["paths"]["weights"]),
                         deepest=deepest).to(device)
    return (lambda x: encoder(x, upto=deepest)), encoder.fingerprint


def build_networks(settings: dict[str, Any]) -> tuple[nn.Module, nn.Module | None]:
    """G and (supervised tasks) the multiscale PatchGAN on [S_tgt, image], seeded as training
    starts (`settings.seed`)."""
    torch.manual_seed(int(settings["seed"]))
    model = settings["model"]
    generator = build_generator(model)
    if model["task"] == "style":
        return generator, None
    return generator, MultiscalePatchGAN(LABEL_CHANNELS[model["task"]] + 3)


def epoch_steps(settings: dict[str, Any], n_train: int) -> int:
    """Steps per epoch: ceil(|train list| / batch) (the official loader keeps the last batch)."""
    return math.ceil(n_train / settings["train"]["batch_size"])


class DynaSTTask:
    def __init__(self, settings: dict[str, Any], device: torch.device) -> None:
        self.settings = settings
        self.device = device
        self.task = settings["model"]["task"]
        generator, discriminator = build_networks(settings)
        self.generator = generator.to(device)
        self.discriminator = discriminator.to(device) if discriminator is not None else None
        self.modules: dict[str, nn.Module] = {"generator": self.generator}
        t = settings["train"]
        b1, b2 = t["betas"]
        self.optimizers: dict[str, torch.optim.Optimizer] = {
            "g": torch.optim.Adam(self.generator.parameters(), lr=t["lr_g"], betas=(b1, b2),
                                  eps=t["eps_g"])}
        if self.discriminator is not None:
            self.modules["discriminator"] = self.discriminator
            self.optimizers["d"] = torch.optim.Adam(self.discriminator.parameters(),
                                                    lr=t["lr_d"], betas=(b1, b2))
        self.vgg, fingerprint = loss_features(settings, device)
        world = distributed.current()
        self.checkpoint_extra = {"loss_vgg": fingerprint, "world_size": world.world_size,
                                 "global_batch": world.world_size * t["batch_size"]}
        self.g = distributed.wrap(self.generator, device)
        self.d = distributed.wrap(self.discriminator, device) \
            if self.discriminator is not None else None

    # Datasets are read on first use, so the step itself can be benchmarked without data.
    @cached_property
    def pairs(self) -> tuple[Path, list[Sample], dict[str, Sample]]:
        directory, rows = data.samples(self.settings, "pairs", "train")
        return directory, rows, data.by_id(directory)

    @cached_property
    def style_sets(self) -> tuple[list[Sample], list[Sample]]:
        return (data.samples(self.settings, "content", "train")[1],
                data.samples(self.settings, "style", "train")[1])

    def train_size(self) -> int:
        """|train list|: the epochs of `train.epochs` count its pairs (style: content images)."""
        return len(self.style_sets[0] if self.task == "style" else self.pairs[1])

    def batch(self, step: int, generator: torch.Generator) -> dict[str, torch.Tensor]:
        n = self.settings["train"]["batch_size"]
        if self.task == "style":
            content, style = self.style_sets
            return data.style_batch(self.settings, content, style, n, generator)
        directory, rows, index = self.pairs
        pick = (torch.randperm(len(rows), generator=generator)[:n] if n <= len(rows)
                else torch.randint(len(rows), (n,), generator=generator))
        return data.pair_batch(self.settings, [rows[i] for i in pick.tolist()], index,
                               directory, generator)

    def _reset_lr(self, step: int) -> None:
        """`train.lr_reset: official`: after the first epoch both rates are lr_reset_value times
        the loop's factor (the factor is the current lr / the initial lr)."""
        t = self.settings["train"]
        if t["lr_reset"] != "official" or self.task == "style":
            return
        if step < epoch_steps(self.settings, len(self.pairs[1])):
            return
        for opt in self.optimizers.values():
            for group in opt.param_groups:
                group["lr"] = t["lr_reset_value"] * group["lr"] / group["initial_lr"]

    def train_step(self, step: int, batch: dict[str, torch.Tensor]) -> dict[str, float]:
        self._reset_lr(step)
        loss = self.settings["loss"]
        b = {k: v.to(self.device, non_blocking=True) for k, v in batch.items()}
        out = self.g(b["s_tgt"], b["i_ref"], b["s_ref"])
        opt_g = self.optimizers["g"]
        if self.d is None:
            terms = style_g(loss, out, b["s_tgt"], b["i_ref"], self.vgg)
            opt_g.zero_grad(set_to_none=True)
            terms["g"].backward()
            opt_g.step()
            return {k: float(v.detach()) for k, v in terms.items()} | self._kept(out)

        # G step: D frozen, features of the fake and (for feature matching) the real pair.
        assert self.discriminator is not None
        self.discriminator.requires_grad_(False)
        d_fake = self.d(torch.cat([b["s_tgt"], out.image], 1))
        with torch.no_grad():
            d_real = self.d(torch.cat([b["s_tgt"], b["i_tgt"]], 1))
        terms = supervised_g(loss, out, b["i_tgt"], b["weight"], self.vgg, d_fake, d_real)
        opt_g.zero_grad(set_to_none=True)
        terms["g"].backward()
        opt_g.step()

        # D step on the real pair and the detached fake.
        self.discriminator.requires_grad_(True)
        fake = out.image.detach()
        d_loss = loss["lambda_adv"] * adversarial_d(
            self.d(torch.cat([b["s_tgt"], b["i_tgt"]], 1)),
            self.d(torch.cat([b["s_tgt"], fake], 1)), loss["recipe"])
        opt_d = self.optimizers["d"]
        opt_d.zero_grad(set_to_none=True)
        d_loss.backward()
        opt_d.step()
        logged = {k: float(v.detach()) for k, v in terms.items()}
        logged["d"] = float(d_loss.detach())
        return logged | self._kept(out)

    @staticmethod
    def _kept(out: Any) -> dict[str, float]:
        """Fraction of candidate links kept (D = 1), over every pruned block of the step."""
        kept = formed = 0.0
        for m in out.matches:
            kept += float(m.match.kept.float().sum())
            formed += m.match.formed * m.match.kept.numel()
        return {"kept_fraction": kept / formed} if formed else {}


def build_task(settings: dict[str, Any], device: torch.device) -> DynaSTTask:
    """The training task of resolved DynaST `settings` on `device`."""
    return DynaSTTask(settings, device)


def load_generator(checkpoint_path: str | Path, device: torch.device
                   ) -> tuple[nn.Module, dict[str, Any]]:
    """The trained generator of a DynaST checkpoint (eval mode, frozen) and the checkpoint."""
    ckpt = checkpoint.load_trained(checkpoint_path, PAPER, ("generator",), "DynaST")
    generator = checkpoint.restore_module(ckpt, "generator",
                                          build_generator(ckpt["settings"]["model"]),
                                          checkpoint_path)
    return generator.to(device).eval().requires_grad_(False), ckpt
