"""GPU tests compare backends in strict float32: TF32 off for matmuls and convolutions."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from sparsegen.timing import tf32


@pytest.fixture(autouse=True)
def _strict_fp32() -> Iterator[None]:
    with tf32(False):
        yield
