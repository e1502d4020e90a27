"""One CPU dry run of each benchmark per test session, read back from the CSV it wrote."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from sparsegen.bench import stya2k, stylenat


def read_csv(path: Path) -> tuple[list[str], list[dict[str, str]]]:
    with path.open(newline="") as f:
        reader = csv.DictReader(f)
        return list(reader.fieldnames or []), list(reader)


@pytest.fixture(scope="session")
def stya2k_dry_run(tmp_path_factory) -> tuple[list[str], list[dict[str, str]]]:
    out = stya2k.run(tmp_path_factory.mktemp("bench") / "stya2k.csv", sizes=[64],
                     device_name="cpu")
    return read_csv(out)


@pytest.fixture(scope="session")
def stylenat_dry_run(tmp_path_factory) -> tuple[list[str], list[dict[str, str]]]:
    out = stylenat.run(tmp_path_factory.mktemp("bench") / "stylenat.csv", sizes=[8, 16],
                       device_name="cpu")
    return read_csv(out)
