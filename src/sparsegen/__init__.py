"""sparsegen: one reproducible pipeline for four sparse-attention image-generation papers."""

__version__ = "0.1.0"
