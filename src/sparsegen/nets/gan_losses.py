"""GAN objectives: the non-saturating logistic loss, R1 and balanced consistency regularisation;
the hinge loss and discriminator feature matching.

The logistic pair and R1 are StyleGAN2's (Karras et al. 2020), which StyleSwin and StyleNAT
train with (StyleNAT Sec. 4: "bCR, r1 regularization"); bCR is Zhao et al. 2021.

The log-likelihood GAN term of DynaST Eq. 10, max_D log D(x) + log(1 - D(G)), is `d_logistic`
with D = sigmoid(logits) (-log sigmoid(l) = softplus(-l), -log(1 - sigmoid(l)) = softplus(l));
`g_nonsaturating` is its usual non-saturating generator side. DynaST's official code trains
with the hinge loss instead (`d_hinge`, `g_hinge`) plus `feature_matching`, both pix2pixHD/SPADE
style: they take a multiscale discriminator's output (`patchgan.MultiscalePatchGAN`: per
discriminator a list of features, logits last) and average over discriminators.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F

# One discriminator's logits, or per discriminator its logits or its feature list (logits last).
Logits = torch.Tensor | Sequence[torch.Tensor] | Sequence[Sequence[torch.Tensor]]


def d_logistic(real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
    """Discriminator loss mean(softplus(-D(x))) + mean(softplus(D(G(z))))."""
    return F.softplus(-real_logits).mean() + F.softplus(fake_logits).mean()


def g_nonsaturating(fake_logits: torch.Tensor) -> torch.Tensor:
    """Generator loss mean(softplus(-D(G(z)))) (non-saturating)."""
    return F.softplus(-fake_logits).mean()


def r1_penalty(real_logits: torch.Tensor, real_images: torch.Tensor) -> torch.Tensor:
    """Mean over samples of ||d sum(D(x)) / dx||^2; the graph is kept so it can be trained on.

    `real_images` must require grad and be the input `real_logits` were computed from."""
    (grad,) = torch.autograd.grad(real_logits.sum(), real_images, create_graph=True)
    return grad.pow(2).flatten(1).sum(1).mean()


def consistency(augmented_logits: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
    """bCR term: MSE between D of augmented images and D of the same images (both sides keep
    their gradients, as StyleSwin's and StyleNAT's training code)."""
    return F.mse_loss(augmented_logits, logits)


def _per_discriminator(logits: Logits) -> list[torch.Tensor]:
    if isinstance(logits, torch.Tensor):
        return [logits]
    return [d if isinstance(d, torch.Tensor) else d[-1] for d in logits]


def _mean_over_discriminators(logits: Logits,
                              loss: Callable[[torch.Tensor], torch.Tensor]) -> torch.Tensor:
    per_d = _per_discriminator(logits)
    return sum(loss(d).mean() for d in per_d) / len(per_d)


def d_hinge(real_logits: Logits, fake_logits: Logits) -> torch.Tensor:
    """Discriminator hinge loss mean(relu(1 - D(x))) + mean(relu(1 + D(G))), each term
    averaged over discriminators."""
    return (_mean_over_discriminators(real_logits, lambda r: F.relu(1 - r))
            + _mean_over_discriminators(fake_logits, lambda f: F.relu(1 + f)))


def g_hinge(fake_logits: Logits) -> torch.Tensor:
    """Generator hinge loss -mean(D(G)), averaged over discriminators."""
    return _mean_over_discriminators(fake_logits, torch.neg)


def feature_matching(fake_features: Sequence[Sequence[torch.Tensor]],
                     real_features: Sequence[Sequence[torch.Tensor]]) -> torch.Tensor:
    """pix2pixHD's discriminator feature matching: sum over discriminators and their features
    except the logits (the last) of mean |fake - real|, real detached, divided by the number of
    discriminators."""
    if len(fake_features) != len(real_features):
        raise ValueError(f"feature_matching: {len(fake_features)} fake vs "
                         f"{len(real_features)} real discriminator outputs")
    total = fake_features[0][0].new_zeros(())
    for d, (fake, real) in enumerate(zip(fake_features, real_features, strict=True)):
        if len(fake) != len(real):
            raise ValueError(f"feature_matching: discriminator {d} has {len(fake)} fake vs "
                             f"{len(real)} real features")
        for f, r in zip(fake[:-1], real[:-1], strict=True):
            total = total + F.l1_loss(f, r.detach())
    return total / len(fake_features)


def adaptive_weight(reconstruction_loss: torch.Tensor, g_loss: torch.Tensor,
                    last_layer: torch.Tensor, scale: float = 1.0) -> torch.Tensor:
    """Taming-transformers' adaptive GAN weight (VQGAN, Esser et al. 2021, Eq. 7):
    lambda = ||grad_L L_rec|| / (||grad_L L_GAN|| + 1e-4) at the decoder's last layer L,
    clamped to [0, 1e4], detached, times `scale` (taming's disc_weight, 0.8 in its configs)."""
    rec_grad = torch.autograd.grad(reconstruction_loss, last_layer, retain_graph=True)[0]
    g_grad = torch.autograd.grad(g_loss, last_layer, retain_graph=True)[0]
    weight = torch.norm(rec_grad) / (torch.norm(g_grad) + 1e-4)
    return torch.clamp(weight, 0.0, 1e4).detach() * scale
