"""Attention mechanisms, each testable alone: dense all-to-all attention and StyA2K's
all-to-key attention (distributed + progressive), with feature blocking (Alg. 2)."""

from sparsegen.attention.all_to_all import (
    AllToAllAttention,
    attend,
    attention_backend,
    count_scores,
)
from sparsegen.attention.all_to_key import (
    A2KSpec,
    AllToKeyAttention,
    a2k_star,
    adaa2k_star,
    inspect_query,
)
from sparsegen.attention.blocking import block, unblock

__all__ = [
    "A2KSpec",
    "AllToAllAttention",
    "AllToKeyAttention",
    "a2k_star",
    "adaa2k_star",
    "attend",
    "attention_backend",
    "block",
    "count_scores",
    "inspect_query",
    "unblock",
]
