"""GAN objectives: the non-saturating logistic loss, R1 and balanced consistency regularisation.

The logistic pair and R1 are StyleGAN2's (Karras et al. 2020), which StyleSwin and StyleNAT
train with (StyleNAT Sec. 4: "bCR, r1 regularization"); bCR is Zhao et al. 2021.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


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
