"""DynaST's training objectives (Sec. 3.3).

Supervised (`loss.recipe: paper`, Eq. 10, 14, 15):
  L = ||Î - I||² + sum_i lambda_i ||phi_i(Î) - phi_i(I)||² + lambda_adv GAN + lambda_m L_m,
  L_m = sum over blocks of ||Î_warp - I'_tgt||² (Eq. 14), I'_tgt = I average-pooled to the
  warp's side; GAN = Eq. 10's log loss (the non-saturating softplus form for G). ||.||² is
  read as the mean squared error. Per-sample weights w_b (1 for a sample whose exemplar shows
  the ground truth's person or face) select the samples the ground-truth and warp terms see.
`loss.recipe: official` (the released training code, official_repos §1.3): warp L1 x 1000,
  hinge x 10, discriminator feature matching x 10, VGG L1 feature matching x 10 with the layer
  weights, relu4_2 MSE x 0.001, no pixel term; the warp and VGG terms weighted by
  w_b / (sum w + 1e-5) inside an element mean, i.e. divided by the per-GPU batch once more.
Style (Eq. 11): l_c (relu4_1 MSE to the content) + lambda_s l_s (channel mean/std MSE over
  relu1_1..relu4_1 to the style); L_m = Eq. 11 on every warped style image, each upsampled
  to the output side for the VGG (our reading of "Eq. 14 is not adopted here").
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F

from sparsegen.models.dynast.network import Generated
from sparsegen.nets import gan_losses
from sparsegen.nets.feature_stats import mean_std

Features = Callable[[torch.Tensor], dict[str, torch.Tensor]]  # [0, 1] RGB -> VGG layers


def to_unit(x: torch.Tensor) -> torch.Tensor:
    """[-1, 1] -> [0, 1] (the VGGs' input range)."""
    return (x + 1) / 2


def weighted_mean(per_sample: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """sum_b w_b l_b / sum_b w_b; 0 when no sample is weighted."""
    return (per_sample * w).sum() / w.sum().clamp_min(1.0)


def per_sample(diff: torch.Tensor) -> torch.Tensor:
    return diff.flatten(1).mean(1)


def pooled_target(target: torch.Tensor, side: int) -> torch.Tensor:
    """I'_tgt: the ground truth average-pooled to a warp's side."""
    return F.avg_pool2d(target, target.shape[-1] // side) if target.shape[-1] != side else target


def discriminator_logits(features: Sequence[Sequence[torch.Tensor]]) -> list[torch.Tensor]:
    return [f[-1] for f in features]


def adversarial_g(fake: Sequence[Sequence[torch.Tensor]], recipe: str) -> torch.Tensor:
    logits = discriminator_logits(fake)
    if recipe == "official":
        return sum(gan_losses.g_hinge(x) for x in logits) / len(logits)
    return sum(gan_losses.g_nonsaturating(x) for x in logits) / len(logits)  # Eq. 10


def adversarial_d(real: Sequence[Sequence[torch.Tensor]], fake: Sequence[Sequence[torch.Tensor]],
                  recipe: str) -> torch.Tensor:
    pairs = list(zip(discriminator_logits(real), discriminator_logits(fake), strict=True))
    if recipe == "official":
        return sum(gan_losses.d_hinge(r, f) for r, f in pairs) / len(pairs)
    return sum(gan_losses.d_logistic(r, f) for r, f in pairs) / len(pairs)  # Eq. 10


def supervised_g(loss: Mapping[str, Any], out: Generated, target: torch.Tensor, w: torch.Tensor,
                 vgg: Features, d_fake: Sequence[Sequence[torch.Tensor]] | None,
                 d_real: Sequence[Sequence[torch.Tensor]] | None) -> dict[str, torch.Tensor]:
    """The generator's terms and their weighted sum `g`; `d_*`: D features of (S_tgt, image)."""
    recipe = loss["recipe"]
    fake_f, real_f = vgg(to_unit(out.image)), vgg(to_unit(target))
    layers, lambdas = loss["vgg_layers"], loss["vgg_weights"]
    terms: dict[str, torch.Tensor] = {}
    if recipe == "official":
        wb = w / (w.sum() + 1e-5)

        def scaled_l1(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
            return ((a - b).abs() * wb.view(-1, *[1] * (a.dim() - 1))).mean()

        terms["warp"] = sum((scaled_l1(x, pooled_target(target, x.shape[-1])) for x in out.warps),
                            target.new_zeros(()))
        terms["vgg"] = sum(lam * scaled_l1(fake_f[name], real_f[name].detach())
                           for name, lam in zip(layers, lambdas, strict=True))
        terms["perceptual"] = F.mse_loss(fake_f["relu4_2"], real_f["relu4_2"].detach())
        total = (loss["warp_weight"] * terms["warp"] + loss["vgg_weight"] * terms["vgg"]
                 + loss["perceptual_weight"] * terms["perceptual"])
        if d_fake is not None and d_real is not None:
            terms["gan"] = adversarial_g(d_fake, recipe)
            terms["feature_matching"] = gan_losses.feature_matching(d_fake, d_real)
            total = total + loss["lambda_adv"] * terms["gan"] \
                + loss["feature_matching_weight"] * terms["feature_matching"]
        terms["g"] = total
        return terms
    terms["pixel"] = weighted_mean(per_sample((out.image - target) ** 2), w)
    terms["vgg"] = sum(lam * weighted_mean(per_sample((fake_f[n] - real_f[n].detach()) ** 2), w)
                       for n, lam in zip(layers, lambdas, strict=True))
    terms["warp"] = sum((weighted_mean(per_sample((x - pooled_target(target, x.shape[-1])) ** 2), w)
                         for x in out.warps), target.new_zeros(()))  # Eq. 14
    total = loss["lambda_pixel"] * terms["pixel"] + terms["vgg"] + loss["lambda_m"] * terms["warp"]
    if d_fake is not None:
        terms["gan"] = adversarial_g(d_fake, recipe)
        total = total + loss["lambda_adv"] * terms["gan"]
    terms["g"] = total  # Eq. 15
    return terms


def style_terms(out: torch.Tensor, content: torch.Tensor, style_f: dict[str, torch.Tensor],
                vgg: Features, style_layers: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
    """Eq. 11's l_c and l_s of one image batch (all in [-1, 1])."""
    out_f = vgg(to_unit(out))
    content_f = vgg(to_unit(content))
    l_c = F.mse_loss(out_f["relu4_1"], content_f["relu4_1"].detach())
    l_s = out.new_zeros(())
    for layer in style_layers:
        mean_o, std_o = mean_std(out_f[layer])
        mean_s, std_s = mean_std(style_f[layer])
        l_s = l_s + F.mse_loss(mean_o, mean_s.detach()) + F.mse_loss(std_o, std_s.detach())
    return l_c, l_s


def style_g(loss: Mapping[str, Any], out: Generated, content: torch.Tensor, style: torch.Tensor,
            vgg: Features) -> dict[str, torch.Tensor]:
    """Eq. 11 on the output plus lambda_m x Eq. 11 on each warp (upsampled to the output side)."""
    style_f = vgg(to_unit(style))
    layers = loss["style_layers"]
    l_c, l_s = style_terms(out.image, content, style_f, vgg, layers)
    warp = out.image.new_zeros(())
    side = out.image.shape[-2:]
    for x in out.warps:
        up = x if x.shape[-2:] == side else F.interpolate(x, size=side, mode="bilinear",
                                                          align_corners=False)
        c, s = style_terms(up, content, style_f, vgg, layers)
        warp = warp + c + loss["lambda_s"] * s
    total = l_c + loss["lambda_s"] * l_s + loss["lambda_m"] * warp
    return {"content": l_c, "style": l_s, "warp": warp, "g": total}
