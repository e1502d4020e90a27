"""Plotting functions the notebooks call: `common` for shared pieces, one module per paper."""
