"""Datasets: the prepared on-disk format, real fetch + prepare, synthetic stand-ins, transforms."""
