"""Metrics behind a registry whose names say the protocol; each call returns a ResultRecord.

    from sparsegen.metrics import MetricContext, get
    record = get("ssim_gauss11")(outputs, targets, MetricContext(), data_range=1.0)
"""

from sparsegen.metrics import (
    cocosnet_consistency,
    fid,
    image_quality,
    perceptual,
    style_transfer,
    swd,
)
from sparsegen.metrics.records import Measurement, ResultRecord, read_records, write_records
from sparsegen.metrics.registry import Metric, MetricContext, get, names, register

__all__ = [
    "Measurement", "Metric", "MetricContext", "ResultRecord", "cocosnet_consistency", "fid",
    "get", "image_quality", "names", "perceptual", "read_records", "register", "style_transfer",
    "swd", "write_records",
]
