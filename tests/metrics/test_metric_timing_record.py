"""The shared inference-time record (StyA2K and DynaST evaluations)."""

from __future__ import annotations

import pytest
import torch

from sparsegen.metrics.records import ResultRecord, fingerprint, timing_record

TIMING = {"mean_s": 0.25, "median_s": 0.2, "std_s": 0.05, "repeats": 9, "warmup": 3,
          "synchronised": True, "size": 256, "batch": 4, "dtype": "float32",
          "device": "NVIDIA H200", "tf32": False}


def test_record_states_the_measurement():
    rec = timing_record(TIMING, torch.device("cpu"),
                        "mean seconds per batch of 4 (generator forward)")
    assert rec.metric == "inference_time_s" and not rec.higher_is_better
    assert rec.value == 0.25 and rec.n_samples == 9
    assert rec.protocol == {"size": 256, "batch": 4, "dtype": "float32", "warmup": 3,
                            "repeats": 9, "synchronised": True, "device": "NVIDIA H200",
                            "statistic": "mean seconds per batch of 4 (generator forward)"}
    assert rec.extra == {"median_s": 0.2, "std_s": 0.05}
    assert rec.device.startswith("cpu")  # callers replace it with TIMING["device"]
    assert rec.extractor_weights is None
    assert rec.fingerprint == fingerprint("inference_time_s", rec.protocol, None)
    assert ResultRecord.from_dict(rec.to_dict()).to_dict() == rec.to_dict()
    other = timing_record(TIMING, None, "mean seconds per stylisation")
    assert other.fingerprint != rec.fingerprint  # the statistic is part of the protocol


def test_missing_keys_are_named():
    broken = {k: v for k, v in TIMING.items() if k not in ("dtype", "median_s")}
    with pytest.raises(ValueError, match=r"lacks keys \['median_s', 'dtype'\]"):
        timing_record(broken, None, "mean seconds")
