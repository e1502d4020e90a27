"""Efficiency benchmarks (time, memory, throughput) written to results/bench/ on a GPU."""
