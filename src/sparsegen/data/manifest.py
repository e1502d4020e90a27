"""The prepared-dataset format shared by real and synthetic data.

A prepared dataset is a folder holding `manifest.csv` and the files it lists. Required columns:
`id` (unique), `split` (train | test), `path` (relative to the folder), `sha256` (of the file).
Optional columns carry pair ids, the upstream file name, licences, labels. Nothing downstream
knows whether a dataset is real or synthetic.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sparsegen.io import write_text
from sparsegen.provenance import sha256_file

MANIFEST = "manifest.csv"
REQUIRED = ("id", "split", "path", "sha256")
SPLITS = ("train", "test")


class ManifestError(ValueError):
    """A manifest is missing, malformed, or disagrees with the files beside it."""


@dataclass(frozen=True)
class Sample:
    id: str
    split: str
    path: Path  # absolute
    sha256: str
    extra: Mapping[str, str] = field(default_factory=dict)


def read_manifest(dataset_dir: str | Path, verify: bool = False) -> list[Sample]:
    """Rows of `dataset_dir/manifest.csv`; `verify=True` also re-hashes every file."""
    dataset_dir = Path(dataset_dir)
    path = dataset_dir / MANIFEST
    if not path.exists():
        raise ManifestError(f"{path}: no manifest; is {dataset_dir} a prepared dataset? "
                            f"(run the prepare step for it)")
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        missing = [c for c in REQUIRED if c not in (reader.fieldnames or [])]
        if missing:
            raise ManifestError(f"{path}: missing column(s) {', '.join(missing)}")
        rows = list(reader)
    samples, seen = [], set()
    for line, row in enumerate(rows, start=2):
        if row["id"] in seen:
            raise ManifestError(f"{path}:{line}: duplicate id {row['id']!r}")
        if row["split"] not in SPLITS:
            raise ManifestError(f"{path}:{line}: split {row['split']!r} is not one of {SPLITS}")
        seen.add(row["id"])
        file = dataset_dir / row["path"]
        if verify:
            if not file.exists():
                raise ManifestError(f"{path}:{line}: listed file {file} does not exist")
            if sha256_file(file) != row["sha256"]:
                raise ManifestError(f"{file}: sha256 differs from {path}:{line}")
        extra = {k: v for k, v in row.items() if k not in REQUIRED}
        samples.append(Sample(row["id"], row["split"], file, row["sha256"], extra))
    return samples


def write_manifest(dataset_dir: str | Path, rows: Iterable[Mapping[str, Any]]) -> Path:
    """Write `manifest.csv` atomically; rows need the REQUIRED columns, paths relative."""
    rows = list(rows)
    fields = list(REQUIRED)
    for r in rows:
        fields += [k for k in r if k not in fields]
    for r in rows:
        missing = [c for c in REQUIRED if c not in r]
        if missing:
            raise ManifestError(f"manifest row {r.get('id', '?')!r} lacks {', '.join(missing)}")
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=fields, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    out = Path(dataset_dir) / MANIFEST
    write_text(out, buf.getvalue())
    return out


def split(samples: Iterable[Sample], name: str) -> list[Sample]:
    if name not in SPLITS:
        raise ValueError(f"split {name!r} is not one of {SPLITS}")
    return [s for s in samples if s.split == name]
