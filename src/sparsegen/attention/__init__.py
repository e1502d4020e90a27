"""Attention mechanisms, each testable alone: dense all-to-all attention and StyA2K's
all-to-key attention (distributed + progressive), with feature blocking (Alg. 2); StyleNAT's
neighborhood attention (NATTEN semantics, several backends), Hydra-NA, and StyleSwin's
window / shifted-window attention."""

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
from sparsegen.attention.hydra import HydraNeighborhoodAttention, head_splits
from sparsegen.attention.neighborhood import (
    BACKENDS,
    available_backends,
    neighborhood_attention,
    query_attention_map,
)
from sparsegen.attention.window import SwinSplitAttention, window_attention

__all__ = [
    "BACKENDS",
    "A2KSpec",
    "AllToAllAttention",
    "AllToKeyAttention",
    "HydraNeighborhoodAttention",
    "SwinSplitAttention",
    "a2k_star",
    "adaa2k_star",
    "attend",
    "attention_backend",
    "available_backends",
    "block",
    "count_scores",
    "head_splits",
    "inspect_query",
    "neighborhood_attention",
    "query_attention_map",
    "unblock",
    "window_attention",
]
