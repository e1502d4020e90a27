"""Exponential moving average of a network's weights (the generator that is evaluated)."""

from __future__ import annotations

import copy

import torch
from torch import nn

from sparsegen.train.distributed import unwrap


class EMA:
    """A frozen copy `module` of a network, moved towards it by `update` after each step:
    p_ema <- decay * p_ema + (1 - decay) * p for parameters; buffers are copied.

    `module` is a plain module (never DDP-wrapped), checkpointed like any other."""

    def __init__(self, model: nn.Module, decay: float) -> None:
        if not 0.0 <= decay <= 1.0:
            raise ValueError(f"EMA decay must lie in [0, 1], got {decay}")
        self.decay = decay
        self.module = copy.deepcopy(unwrap(model)).requires_grad_(False)

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        """Move the copy towards `model` (a DDP wrapper is looked through)."""
        source = unwrap(model)
        ema_params = dict(self.module.named_parameters())
        for name, p in source.named_parameters():
            ema_params[name].mul_(self.decay).add_(p.detach(), alpha=1.0 - self.decay)
        ema_buffers = dict(self.module.named_buffers())
        for name, b in source.named_buffers():
            ema_buffers[name].copy_(b)
