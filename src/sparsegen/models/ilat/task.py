"""iLAT's two training stages as `TrainTask`s for the shared loop, and loading what they train.

Tokenizer stage (Sec. 3.1, 4; official_repos §3.2): a VQGAN (plain or two-stream, Eq. 1-4)
against a single-scale PatchGAN, one G step then one D step per iteration.
  G: L1 + perceptual (LPIPS-VGG for the pose tokenizers, taming; 0.2 x VGG-19 L1 for faces) +
     codebook loss + lambda x hinge G loss, lambda taming's adaptive weight (pose) or fixed
     (faces, Sec. 3.3); official fine-tune: + masked_l1_weight x masked-region L1.
  D: d_weight x hinge. Adam (0.5, 0.9) for both; x0.5 every 50k (the loop's step schedule).
  From `train.mask_from` on, each image gets no / a partial / a full hole with the
  probabilities `train.mask_mix` (code: 0 / 0.7 / 0.3) and is decoded through Eq. 4.
Transformer stage (Sec. 3.2, 4): frozen tokenizers give condition tokens (the reference image,
plain; faces: the sketch tokenizer) and target tokens (the target under the mask, two-stream
where the tokenizer is); the GPT is trained with the LA mask (Eq. 7) or the vanilla causal mask
(Taming), cross-entropy on masked target tokens only (Eq. 6; Taming: every token), a
`lm_rate` share of each batch with a full hole; AdamW with warm-up then linear decay.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from functools import cached_property
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from sparsegen.attention.local_autoregressive import causal_mask, la_mask, token_mask
from sparsegen.data.manifest import Sample, read_manifest
from sparsegen.layout import dataset_dir
from sparsegen.models.ilat import data
from sparsegen.models.ilat.checks import perceptual_network
from sparsegen.models.ilat.tokenizer import Encoded, Tokenizer, build_tokenizer
from sparsegen.models.ilat.transformer import GPT, optimizer_groups
from sparsegen.models.ilat.transformer import loss as token_loss
from sparsegen.nets.gan_losses import adaptive_weight, d_hinge, g_hinge
from sparsegen.nets.patchgan import NLayerDiscriminator
from sparsegen.train import checkpoint, distributed
from sparsegen.weights import RANDOM_INIT
from sparsegen.weights import resolve as resolve_weights

PAPER = "ilat"
VGG_LAYERS = ("relu1_1", "relu2_1", "relu3_1", "relu4_1", "relu5_1")


def _perceptual(settings: Mapping[str, Any], device: torch.device
                ) -> tuple[Any, str]:
    """The perceptual loss as a function of two [-1, 1] batches, and its fingerprint."""
    name, kind = perceptual_network(settings), settings["loss"]["perceptual"]
    if name is None:
        return None, "none"
    weights = resolve_weights(name, settings["weights"], settings["paths"]["weights"])
    if kind == "lpips":
        from sparsegen.metrics.perceptual import build_lpips

        net = build_lpips(weights, "vgg").to(device)
        return (lambda x, y: net(x, y).mean()), f"lpips-vgg:{weights.sha256}"
    from sparsegen.nets.vgg import VGGEncoder

    vgg = VGGEncoder(weights, deepest="relu5_1").to(device).eval().requires_grad_(False)

    def vgg_l1(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        fx, fy = vgg((x + 1) / 2), vgg((y + 1) / 2)
        return sum(F.l1_loss(fx[k], fy[k]) for k in VGG_LAYERS)  # type: ignore[return-value]

    return vgg_l1, vgg.fingerprint


def _to_channels(image: torch.Tensor, channels: int) -> torch.Tensor:
    return image if image.shape[1] == channels else image.mean(1, keepdim=True)


class _Batches:
    """Draws training examples of a variant's dataset (and its mask dataset)."""

    def __init__(self, settings: Mapping[str, Any]) -> None:
        self.settings = settings
        self.examples = data.Examples(settings)

    @cached_property
    def masks(self) -> list[Sample] | None:
        if self.settings["data"].get("masks") is None:
            return None
        return [r for r in read_manifest(dataset_dir(self.settings, "masks"))
                if r.split == "train"]

    def draw(self, n: int, generator: torch.Generator) -> dict[str, torch.Tensor]:
        batch = data.stack([self.examples.training_example(generator, self.masks)
                            for _ in range(n)])
        return data.flip(batch, generator) if self.settings["train"]["hflip"] else batch


class TokenizerTask:
    def __init__(self, settings: dict[str, Any], device: torch.device) -> None:
        self.settings = settings
        self.device = device
        torch.manual_seed(int(settings["seed"]))
        cfg = dict(settings["model"]["tokenizer"], size=settings["model"]["size"])
        self.tokenizer = build_tokenizer(cfg).to(device)
        self.discriminator = NLayerDiscriminator(
            cfg["channels"], ndf=settings["model"]["disc_width"]).to(device)
        init = self._initialise(cfg)
        t = settings["train"]
        betas = tuple(t["betas"])
        self.modules: dict[str, nn.Module] = {"tokenizer": self.tokenizer,
                                              "discriminator": self.discriminator}
        self.optimizers: dict[str, torch.optim.Optimizer] = {
            "g": torch.optim.Adam(self.tokenizer.parameters(), lr=t["lr"], betas=betas),
            "d": torch.optim.Adam(self.discriminator.parameters(), lr=t["lr"], betas=betas)}
        self.perceptual, fingerprint = _perceptual(settings, device)
        world = distributed.current()
        self.checkpoint_extra = {"perceptual": fingerprint, "init": init,
                                 "world_size": world.world_size,
                                 "global_batch": world.world_size * t["batch_size"]}
        self.g = distributed.wrap(self.tokenizer, device)
        self.d = distributed.wrap(self.discriminator, device)
        self.batches = _Batches(settings)

    def _initialise(self, cfg: Mapping[str, Any]) -> str:
        """taming's ImageNet f16-16384 weights (pose tokenizers, Sec. 3.3), or scratch; a
        random-init stand-in under `weights: auto` is recorded as such."""
        if cfg["init"] == "scratch":
            return "scratch"
        from sparsegen.models.ilat.taming import load_taming_state

        w = resolve_weights("taming_vqgan_f16_16384", self.settings["weights"],
                            self.settings["paths"]["weights"])
        if w.path is None:
            return f"taming_vqgan_f16_16384:{RANDOM_INIT}"
        state = torch.load(w.path, map_location="cpu", weights_only=False)
        load_taming_state(self.tokenizer, state.get("state_dict", state), str(w.path))
        return f"taming_vqgan_f16_16384:sha256:{w.sha256}"

    def train_size(self) -> int:
        return len(self.batches.examples.training_images())

    def _masks(self, step: int, drawn: torch.Tensor, generator: torch.Generator
               ) -> torch.Tensor | None:
        """None before `mask_from`; after, per image no / the drawn / a full hole by
        `mask_mix`."""
        t = self.settings["train"]
        if t["mask_from"] is None or step < t["mask_from"]:
            return None
        none, partial, _ = t["mask_mix"]
        u = torch.rand(drawn.shape[0], generator=generator).view(-1, 1, 1, 1)
        full = torch.ones_like(drawn)
        return torch.where(u < none, torch.zeros_like(drawn),
                           torch.where(u < none + partial, drawn, full))

    def batch(self, step: int, generator: torch.Generator) -> dict[str, torch.Tensor]:
        drawn = self.batches.draw(self.settings["train"]["batch_size"], generator)
        channels = self.settings["model"]["tokenizer"]["channels"]
        source = drawn["condition"] if self.batches.examples.kind == "faces" \
            and channels == 1 else drawn["target"]
        out = {"image": _to_channels(source, channels)}
        mask = self._masks(step, drawn["mask"], generator)
        if mask is not None:
            out["mask"] = mask
        return out

    def _finetune_lr(self, step: int) -> None:
        """`train.finetune_lr` (official): from `mask_from` the rates restart at this value
        (times the loop's factor)."""
        t = self.settings["train"]
        if t["finetune_lr"] is None or t["mask_from"] is None or step < t["mask_from"]:
            return
        for opt in self.optimizers.values():
            for group in opt.param_groups:
                group["lr"] = t["finetune_lr"] * group["lr"] / group["initial_lr"]

    def train_step(self, step: int, batch: dict[str, torch.Tensor]) -> dict[str, float]:
        self._finetune_lr(step)
        loss = self.settings["loss"]
        x = batch["image"].to(self.device)
        mask = batch["mask"].to(self.device) if "mask" in batch else None
        recon, enc = self.g(x, mask)

        rec = (x - recon).abs().mean()
        nll = rec
        if self.perceptual is not None:
            nll = nll + loss["perceptual_weight"] * self.perceptual(x, recon)
        if mask is not None and loss["masked_l1_weight"]:
            nll = nll + loss["masked_l1_weight"] * masked_l1(x, recon, mask)
        total = nll + loss["codebook_weight"] * enc.codebook_loss
        logged = {"rec": float(rec.detach()), "codebook": float(enc.codebook_loss.detach())}
        gan = step >= loss["disc_start"]  # taming's disc_start: neither GAN term before it
        if gan:
            self.discriminator.requires_grad_(False)
            g = g_hinge(self.d(recon))
            if loss["gan"] == "adaptive":
                lam = adaptive_weight(nll, g, self.tokenizer.last_layer, loss["gan_weight"])
            else:
                lam = torch.tensor(loss["gan_weight"], device=self.device)
            total = total + lam * g
            logged |= {"g": float(g.detach()), "lambda": float(lam)}
        opt_g = self.optimizers["g"]
        opt_g.zero_grad(set_to_none=True)
        total.backward()
        opt_g.step()
        if gan:
            self.discriminator.requires_grad_(True)
            d = loss["d_weight"] * d_hinge(self.d(x), self.d(recon.detach()))
            opt_d = self.optimizers["d"]
            opt_d.zero_grad(set_to_none=True)
            d.backward()
            opt_d.step()
            logged["d"] = float(d.detach())
        return logged


def masked_l1(x: torch.Tensor, recon: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """The official fine-tune term: L1 between the area-downsampled image and the composite
    x (1 - m) + recon m over the hole, at 128, 64, 32 and 16 px (those below the side)."""
    composite = x * (1 - mask) + recon * mask
    side = x.shape[-1]
    total = x.new_zeros(())
    for s in (128, 64, 32, 16):
        if s <= side:
            m = F.interpolate(mask, size=(s, s), mode="area")
            a = F.interpolate(x, size=(s, s), mode="area")
            b = F.interpolate(composite, size=(s, s), mode="area")
            total = total + ((a - b).abs() * m).sum() / m.sum().clamp_min(1) / a.shape[1]
    return total


def load_tokenizer(path: str | Path, device: torch.device) -> tuple[Tokenizer, dict[str, Any]]:
    """A trained tokenizer (eval mode, frozen) and its checkpoint."""
    ckpt = checkpoint.load_trained(path, PAPER, ("tokenizer",), "iLAT tokenizer")
    s = ckpt["settings"]
    cfg = dict(s["model"]["tokenizer"], size=s["model"]["size"])
    tok = checkpoint.restore_module(ckpt, "tokenizer", build_tokenizer(cfg), path)
    return tok.to(device).eval().requires_grad_(False), ckpt


def build_transformer(settings: Mapping[str, Any], tokenizer: Tokenizer,
                      condition: Tokenizer) -> GPT:
    """The GPT of a transformer variant for its tokenizers' vocabularies and grids."""
    cfg = settings["model"]["transformer"]
    n_target = tokenizer.grid ** 2
    return GPT(cfg, cond_vocab=condition.n_codes, target_vocab=tokenizer.n_codes,
               n_cond=condition.grid ** 2, n_target=n_target,
               n_joints=int(settings["model"]["joints"]))


def attention_mask(kind: str, masked: torch.Tensor, n_cond: int, form: str) -> torch.Tensor:
    """The boolean attention mask of a batch: Eq. 7 (la) or the vanilla causal one."""
    if kind == "la":
        return la_mask(masked, n_cond, form)
    n = masked.shape[1]
    return causal_mask(n_cond, n).expand(masked.shape[0], -1, -1)


def condition_positions(settings: Mapping[str, Any], condition: Tokenizer) -> int:
    """Condition positions of the sequence: c_s, the condition tokens, the pose tokens."""
    return 1 + condition.grid ** 2 + int(settings["model"]["joints"])


class Tokens:
    """A transformer's frozen tokenizers (target, condition) and what they make of a batch."""

    def __init__(self, tokenizer: Tokenizer, condition: Tokenizer, device: torch.device
                 ) -> None:
        self.tokenizer, self.condition, self.device = tokenizer, condition, device

    @classmethod
    def of_variant(cls, settings: Mapping[str, Any], device: torch.device
                   ) -> tuple[Tokens, dict[str, dict[str, Any]]]:
        """The tokenizers a transformer variant `uses` (the condition: its own tokenizer when
        it names none) and their checkpoints by role."""
        uses = settings["uses"]
        tokenizer, ckpt = load_tokenizer(uses["tokenizer"]["checkpoint"], device)
        ckpts = {"tokenizer": ckpt}
        condition = tokenizer
        if "condition_tokenizer" in uses:
            condition, ckpts["condition_tokenizer"] = load_tokenizer(
                uses["condition_tokenizer"]["checkpoint"], device)
        problems = []
        if tokenizer.channels != 3:
            problems.append(f"uses.tokenizer: {uses['tokenizer']['variant']!r} encodes "
                            f"{tokenizer.channels}-channel images; the targets are RGB")
        if not settings["model"]["joints"] and condition.channels != 1:
            problems.append("uses.condition_tokenizer: face editing conditions on sketches; "
                            f"{uses.get('condition_tokenizer', uses['tokenizer'])['variant']!r}"
                            f" encodes {condition.channels}-channel images")
        for role, c in ckpts.items():
            if c["settings"]["model"]["size"] != settings["model"]["size"]:
                problems.append(f"uses.{role}: {uses[role]['variant']!r} was trained at "
                                f"{c['settings']['model']['size']}², this variant's "
                                f"model.size is {settings['model']['size']}")
        if problems:
            raise ValueError(f"ilat.{settings['variant']}: " + "; ".join(problems))
        return cls(tokenizer, condition, device), ckpts

    @torch.no_grad()
    def encode(self, batch: Mapping[str, torch.Tensor]
               ) -> tuple[dict[str, torch.Tensor], Encoded]:
        """Condition ids (plain encoding), target ids under the mask, the masked tokens; and
        the target's encoding (its continuous features feed Eq. 4 at decoding)."""
        dev = self.device
        cond = _to_channels(batch["condition"].to(dev), self.condition.channels)
        mask = batch["mask"].to(dev)
        target = self.tokenizer.encode(batch["target"].to(dev), mask)
        masked = token_mask(mask, self.tokenizer.grid)
        return {"cond_ids": self.condition.encode(cond).ids.flatten(1),
                "target_ids": target.ids.flatten(1), "masked": masked}, target


class TransformerTask:
    def __init__(self, settings: dict[str, Any], device: torch.device) -> None:
        self.settings = settings
        self.device = device
        self.tokens, _ = Tokens.of_variant(settings, device)
        torch.manual_seed(int(settings["seed"]))
        self.transformer = build_transformer(settings, self.tokens.tokenizer,
                                             self.tokens.condition).to(device)
        t = settings["train"]
        self.modules: dict[str, nn.Module] = {"transformer": self.transformer}
        self.optimizers: dict[str, torch.optim.Optimizer] = {"gpt": torch.optim.AdamW(
            optimizer_groups(self.transformer, t["weight_decay"]), lr=t["lr"],
            betas=tuple(t["betas"]))}
        world = distributed.current()
        self.checkpoint_extra = {"world_size": world.world_size,
                                 "global_batch": world.world_size * t["batch_size"]}
        self.gpt = distributed.wrap(self.transformer, device)
        self.batches = _Batches(settings)
        self.n_cond = condition_positions(settings, self.tokens.condition)

    def train_size(self) -> int:
        return len(self.batches.examples.training_images())

    def batch(self, step: int, generator: torch.Generator) -> dict[str, torch.Tensor]:
        return self.batches.draw(self.settings["train"]["batch_size"], generator)

    def train_step(self, step: int, batch: dict[str, torch.Tensor]) -> dict[str, float]:
        cfg = self.settings["model"]["transformer"]
        b, _ = self.tokens.encode(batch)
        masked = b["masked"]
        if cfg["mask"] == "causal":
            masked = torch.ones_like(masked)  # Taming: every target token, from c + pose
        else:
            full = math.floor(cfg["lm_rate"] * masked.shape[0])  # the code's lm_rate
            masked = masked.clone()
            masked[:full] = True
        attend = attention_mask(cfg["mask"], masked, self.n_cond, cfg["la_form"])
        pose = batch["pose"].to(self.device) if "pose" in batch else None
        logits = self.gpt(b["cond_ids"], b["target_ids"], pose, attend)
        ce = token_loss(logits, b["target_ids"], masked)
        opt = self.optimizers["gpt"]
        opt.zero_grad(set_to_none=True)
        ce.backward()
        opt.step()
        return {"ce": float(ce.detach()), "masked_fraction": float(masked.float().mean())}


def build_task(settings: dict[str, Any], device: torch.device) -> TokenizerTask | TransformerTask:
    """The training task of a resolved iLAT variant (its stage's model) on `device`."""
    if settings["stage"] == "tokenizer":
        return TokenizerTask(settings, device)
    return TransformerTask(settings, device)


def load_transformer(path: str | Path, tokens: Tokens, device: torch.device
                     ) -> tuple[GPT, dict[str, Any]]:
    """A trained transformer (eval mode) on the tokenizers it was trained with."""
    ckpt = checkpoint.load_trained(path, PAPER, ("transformer",), "iLAT transformer")
    trained = ckpt["modules"]["transformer"]
    for key, tok, role in (("target_embed.weight", tokens.tokenizer, "tokenizer"),
                           ("cond_embed.weight", tokens.condition, "condition_tokenizer")):
        if key in trained and trained[key].shape[0] != tok.n_codes:
            raise checkpoint.CheckpointError(
                f"{path}: trained on a vocabulary of {trained[key].shape[0]} codes, but the "
                f"{role} it uses now has model.tokenizer.n_codes {tok.n_codes} (retrain it or "
                "restore the tokenizer it was trained with)")
    gpt = build_transformer(ckpt["settings"], tokens.tokenizer, tokens.condition)
    gpt = checkpoint.restore_module(ckpt, "transformer", gpt, path)
    return gpt.to(device).eval().requires_grad_(False), ckpt
