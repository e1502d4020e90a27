"""Result records: one JSON object per metric value, with everything that changes the number.

A metrics file is ``{"summary": {metric: value}, "records": [...]}`` (the summary is what
`dvc metrics show` reads). The fingerprint hashes the metric name, its protocol and the
extractor's weights hash, so two values with the same fingerprint were measured the same way.

A record states facts, not verdicts: `facts` says what the number was measured on (preset, data
real or synthetic, sample counts and sizes, the training recipe of the checkpoint). Whether it
compares with a paper's number is decided once, at table time, by `sparsegen.judge`.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sparsegen.io import read_json, write_json
from sparsegen.provenance import (
    device_description,
    git_commit,
    library_versions,
    stable_hash,
)
from sparsegen.weights import ResolvedWeights


@dataclass
class Measurement:
    """What a metric function computes; the registry turns it into a ResultRecord."""

    value: float
    n_samples: int
    protocol: dict[str, Any]
    extractor: ResolvedWeights | None = None
    per_sample: list[float] | None = None
    seeds: list[int] | None = None
    extra: dict[str, Any] = field(default_factory=dict)


def fingerprint(metric: str, protocol: dict[str, Any], extractor_sha256: str | None) -> str:
    """12-hex hash of what makes two values comparable."""
    return stable_hash({"metric": metric, "protocol": protocol,
                        "extractor_sha256": extractor_sha256})


@dataclass
class ResultRecord:
    metric: str
    value: float
    n_samples: int
    higher_is_better: bool
    protocol: dict[str, Any]
    extractor_weights: dict[str, str] | None
    seeds: list[int] | None
    fingerprint: str
    per_sample: list[float] | None
    versions: dict[str, str]
    git_commit: str
    created_at: str
    device: str
    source: dict[str, Any] = field(default_factory=dict)
    facts: dict[str, Any] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_measurement(cls, metric: str, higher_is_better: bool, m: Measurement,
                         device: Any = None) -> ResultRecord:
        weights = None
        if m.extractor is not None:
            weights = {"name": m.extractor.name, "sha256": m.extractor.sha256}
        return cls(
            metric=metric,
            value=float(m.value),
            n_samples=int(m.n_samples),
            higher_is_better=higher_is_better,
            protocol=m.protocol,
            extractor_weights=weights,
            seeds=m.seeds,
            fingerprint=fingerprint(metric, m.protocol, weights["sha256"] if weights else None),
            per_sample=m.per_sample,
            versions=library_versions(),
            git_commit=git_commit(),
            created_at=datetime.now(UTC).isoformat(timespec="seconds"),
            device=device_description(device),
            extra=m.extra,
        )

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ResultRecord:
        if not isinstance(data, dict):
            raise ValueError(f"a metric record must be a JSON object, got {type(data).__name__}")
        optional = {"source", "facts", "extra"}
        known = [f.name for f in fields(cls)]
        missing = [k for k in known if k not in data and k not in optional]
        if missing:
            raise ValueError(f"metric record {data.get('metric', '?')!r} lacks keys {missing}")
        unknown = sorted(set(data) - set(known))
        if unknown:
            raise ValueError(f"metric record {data['metric']!r} has unknown keys {unknown}")
        return cls(**data)


TIMING_PROTOCOL = ("size", "batch", "dtype", "warmup", "repeats", "synchronised", "device")


def timing_record(timing: dict[str, Any], device: Any, statistic: str) -> ResultRecord:
    """The `inference_time_s` record of a measured timing: `sparsegen.timing.time_callable`'s
    mean_s, median_s, std_s plus the TIMING_PROTOCOL keys the sampling step adds; `statistic`
    says what one timed call covers. The number is hardware-bound: callers reading a timing
    measured elsewhere set `record.device` to the device that measured it."""
    missing = [k for k in ("mean_s", "median_s", "std_s", *TIMING_PROTOCOL) if k not in timing]
    if missing:
        raise ValueError(f"timing measurement lacks keys {missing}")
    protocol = {k: timing[k] for k in TIMING_PROTOCOL}
    protocol["statistic"] = statistic
    return ResultRecord.from_measurement(
        "inference_time_s", False,
        Measurement(value=timing["mean_s"], n_samples=timing["repeats"], protocol=protocol,
                    extra={"median_s": timing["median_s"], "std_s": timing["std_s"]}),
        device)


def write_records(path: str | Path, records: list[ResultRecord]) -> None:
    """Write ``{"summary": {metric: value}, "records": [...]}`` atomically."""
    write_json(path, {"summary": {r.metric: r.value for r in records},
                      "records": [r.to_dict() for r in records]})


def read_records(path: str | Path) -> list[ResultRecord]:
    data = read_json(path)
    if not isinstance(data, dict) or not isinstance(data.get("records"), list):
        raise ValueError(f"{path}: expected a JSON object with a 'records' list")
    out = []
    for i, item in enumerate(data["records"]):
        try:
            out.append(ResultRecord.from_dict(item))
        except (TypeError, ValueError) as e:
            raise ValueError(f"{path}: records[{i}]: {e}") from None
    return out
