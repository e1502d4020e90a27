"""Memoised index/mask tensors of attention patterns (shared by the attention modules).

A cached tensor first built under `torch.inference_mode` (sampling) would be an inference
tensor, which autograd refuses to save when a later training step reuses it; building with
inference mode switched off makes it an ordinary tensor, usable in both."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import TypeVar

import torch

T = TypeVar("T")


def tensor_cache(maxsize: int) -> Callable[[Callable[..., T]], Callable[..., T]]:
    """`functools.lru_cache(maxsize)` whose entries are built outside inference mode."""

    def decorate(build: Callable[..., T]) -> Callable[..., T]:
        @functools.wraps(build)
        def outside_inference(*args, **kwargs) -> T:
            with torch.inference_mode(False):
                return build(*args, **kwargs)

        return functools.lru_cache(maxsize=maxsize)(outside_inference)

    return decorate
