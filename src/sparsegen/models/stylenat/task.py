"""StyleNAT as a `TrainTask` for the shared loop (Sec. 4: StyleSwin's recipe), and loading the
EMA generator that evaluation uses.

One iteration (official `src/train.py`, itself StyleSwin's `train_styleswin.py`):
1. D step: non-saturating logistic loss on reals and on G(z_d), plus bCR
   `bcr_real * MSE(D(aug(x)), D(x)) + bcr_fake * MSE(D(aug(G(z))), D(G(z)))`; D's gradient is
   clipped to global norm `train.d_clip`.
2. Every `loss.r1_every` steps (from step 0): lazy R1 on the same reals, weighted
   `r1 / 2 * r1_every`, a second D optimizer step.
3. G step on a fresh z_g: non-saturating loss.
4. `g_ema` <- EMA of G with `train.ema_decay`, every step.
TTUR learning rates `train.lr_g`, `train.lr_d`; with `train.lazy_reg_scaling` D's lr is scaled
by c = r1_every / (r1_every + 1) and its betas raised to c (StyleGAN2's lazy regularisation,
kept by the official code). The loop's schedule factor (constant, then linear to 0 from
`train.decay_start`) multiplies both learning rates.

Deliberate differences from the official code:
- The official script sets `generator.requires_grad = False` (a Python attribute, which
  freezes nothing), so every D step also back-propagates into G and every G step into D; those
  gradients are zeroed before use, so only compute is wasted. Here the parameters' own
  `requires_grad` is toggled and the D step's fakes are generated without a graph.
- During the decay the official code sets D's lr to 4 x G's, i.e. it drops the lazy
  factor 16/17 from D's lr from `decay_start` on; here both keep their initial ratio.
- Reals are drawn uniformly (without replacement within a batch) at every step from all
  images, instead of epochs of a shuffled loader; under DDP each rank draws its own.
Every random draw of a step (reals, flips, z, bCR augmentations) comes from the loop's
per-step generator, so a resumed run equals an uninterrupted one.
"""

from __future__ import annotations

from functools import cached_property
from pathlib import Path
from typing import Any

import torch
from torch import nn

from sparsegen.data.images import load_rgb
from sparsegen.data.manifest import Sample, read_manifest
from sparsegen.layout import dataset_dir
from sparsegen.models.stylenat import augment
from sparsegen.models.stylenat.discriminator import build_discriminator
from sparsegen.models.stylenat.generator import Generator, build_generator
from sparsegen.models.stylenat.layers import from_unit_range
from sparsegen.nets import gan_losses
from sparsegen.train import checkpoint, distributed
from sparsegen.train.ema import EMA

PAPER = "stylenat"


def training_images(settings: dict[str, Any]) -> list[Sample]:
    """Every image of the prepared dataset (all splits: unconditional training uses all)."""
    directory = dataset_dir(settings, "images")
    samples = read_manifest(directory)
    if not samples:
        raise ValueError(f"{directory}: the prepared dataset lists no images")
    return samples


def optimizers(generator: nn.Module, discriminator: nn.Module, settings: dict[str, Any]
               ) -> dict[str, torch.optim.Optimizer]:
    """Adam for G (lr_g, betas) and D (lr_d * c, betas ** c; c = 1 without lazy scaling)."""
    t, r1_every = settings["train"], settings["loss"]["r1_every"]
    c = r1_every / (r1_every + 1) if t["lazy_reg_scaling"] else 1.0
    b1, b2 = t["betas"]
    return {"g": torch.optim.Adam(generator.parameters(), lr=t["lr_g"], betas=(b1, b2)),
            "d": torch.optim.Adam(discriminator.parameters(), lr=t["lr_d"] * c,
                                  betas=(b1 ** c, b2 ** c))}


class StyleNATTask:
    """G, D and the EMA generator trained with the official StyleSwin/StyleNAT objective."""

    def __init__(self, settings: dict[str, Any], device: torch.device) -> None:
        self.settings = settings
        self.device = device
        model = settings["model"]
        self.generator = build_generator(model).to(device)
        self.discriminator = build_discriminator(model).to(device)
        self.ema = EMA(self.generator, settings["train"]["ema_decay"])
        self.modules = {"generator": self.generator, "discriminator": self.discriminator,
                        "g_ema": self.ema.module}
        self.optimizers = optimizers(self.generator, self.discriminator, settings)
        world = distributed.current()
        self.checkpoint_extra = {"world_size": world.world_size,
                                 "global_batch": world.world_size
                                 * settings["train"]["batch_size"]}
        # Forward passes go through DDP wrappers when several ranks train (no-ops otherwise).
        # The official code lets DDP search G's graph for unused parameters; every parameter
        # of this G reaches the image (all params.yaml variants), so no search is needed.
        self.g = distributed.wrap(self.generator, device)
        self.d = distributed.wrap(self.discriminator, device)

    @cached_property
    def images(self) -> list[Sample]:
        return training_images(self.settings)

    def batch(self, step: int, generator: torch.Generator) -> dict[str, Any]:
        """Reals (uniform, distinct within the batch when the set allows; flipped with p 1/2
        when `train.hflip`), z for the D and the G step, and both bCR augmentations: all
        drawn from `generator` alone."""
        t, side = self.settings["train"], self.settings["model"]["resolution"]
        n, style_dim = t["batch_size"], self.settings["model"]["style_dim"]
        if n <= len(self.images):
            index = torch.randperm(len(self.images), generator=generator)[:n]
        else:
            index = torch.randint(len(self.images), (n,), generator=generator)
        reals = torch.stack([load_rgb(self.images[i].path, size=side) for i in index.tolist()])
        if t["hflip"]:
            reals = augment.hflip(reals, torch.rand(n, generator=generator) < 0.5)
        return {"reals": from_unit_range(reals),
                "z_d": torch.randn(n, style_dim, generator=generator),
                "z_g": torch.randn(n, style_dim, generator=generator),
                "aug_real": augment.draw(n, side, side, generator),
                "aug_fake": augment.draw(n, side, side, generator)}

    def train_step(self, step: int, batch: dict[str, Any]) -> dict[str, float]:
        loss, t = self.settings["loss"], self.settings["train"]
        reals = batch["reals"].to(self.device, non_blocking=True)
        z_d = batch["z_d"].to(self.device, non_blocking=True)
        z_g = batch["z_g"].to(self.device, non_blocking=True)
        opt_g, opt_d = self.optimizers["g"], self.optimizers["d"]
        out: dict[str, float] = {}

        # D step: logistic loss + bCR on reals and (graph-free) fakes, clipped gradient.
        self.generator.requires_grad_(False)
        self.discriminator.requires_grad_(True)
        with torch.no_grad():
            fakes = self.g(z_d)
        fake_logits, real_logits = self.d(fakes), self.d(reals)  # the official order
        d_loss = gan_losses.d_logistic(real_logits, fake_logits)
        bcr_fake = gan_losses.consistency(self.d(augment.apply(fakes, batch["aug_fake"])),
                                          fake_logits)
        bcr_real = gan_losses.consistency(self.d(augment.apply(reals, batch["aug_real"])),
                                          real_logits)
        opt_d.zero_grad(set_to_none=True)
        (d_loss + loss["bcr_real"] * bcr_real + loss["bcr_fake"] * bcr_fake).backward()
        nn.utils.clip_grad_norm_(self.discriminator.parameters(), t["d_clip"])
        opt_d.step()
        out.update(d=d_loss.item(), bcr_real=bcr_real.item(), bcr_fake=bcr_fake.item())

        # Lazy R1 on the same reals.
        if step % loss["r1_every"] == 0:
            reals = reals.detach().requires_grad_(True)
            logits = self.d(reals)
            r1 = gan_losses.r1_penalty(logits, reals)
            opt_d.zero_grad(set_to_none=True)
            # 0 * logits puts every D parameter in the graph (the final bias has no R1
            # gradient), so DDP's all-reduce sees all of them.
            (loss["r1"] / 2 * loss["r1_every"] * r1 + 0 * logits[0]).sum().backward()
            opt_d.step()
            out["r1"] = r1.item()

        # G step on fresh latents.
        self.discriminator.requires_grad_(False)
        self.generator.requires_grad_(True)
        g_loss = gan_losses.g_nonsaturating(self.d(self.g(z_g)))
        opt_g.zero_grad(set_to_none=True)
        g_loss.backward()
        opt_g.step()
        self.discriminator.requires_grad_(True)
        self.ema.update(self.generator)
        out["g"] = g_loss.item()
        return out


def build_task(settings: dict[str, Any], device: torch.device) -> StyleNATTask:
    """The training task of resolved StyleNAT `settings` on `device`."""
    return StyleNATTask(settings, device)


def load_generator_checkpoint(checkpoint_path: str | Path, device: torch.device
                              ) -> tuple[Generator, dict[str, Any]]:
    """The EMA generator of a StyleNAT checkpoint (eval mode, frozen) and the checkpoint."""
    ckpt = checkpoint.load_trained(checkpoint_path, PAPER, ("g_ema",), "StyleNAT")
    generator = checkpoint.restore_module(ckpt, "g_ema", build_generator(ckpt["settings"]["model"]),
                                          checkpoint_path)
    return generator.to(device).eval().requires_grad_(False), ckpt


def load_generator(checkpoint_path: str | Path, device: torch.device
                   ) -> tuple[Generator, dict[str, Any]]:
    """The EMA generator of a StyleNAT checkpoint (eval mode, frozen) and its settings."""
    generator, ckpt = load_generator_checkpoint(checkpoint_path, device)
    return generator, ckpt["settings"]
