"""Small real photographs (from scikit-image's bundled data) and metric contexts."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from skimage import data

from sparsegen.metrics import MetricContext

_PHOTOS = ("astronaut", "chelsea", "coffee", "rocket", "immunohistochemistry", "colorwheel")


def photos_uint8(size: int, names: tuple[str, ...] = _PHOTOS) -> np.ndarray:
    """uint8 (N, 3, size, size) photographs, bicubic-resized (aspect not kept)."""
    out = []
    for name in names:
        img = Image.fromarray(getattr(data, name)()[..., :3]).resize((size, size),
                                                                      Image.BICUBIC)
        out.append(np.asarray(img).transpose(2, 0, 1))
    return np.stack(out)


@pytest.fixture(scope="session")
def photos64() -> torch.Tensor:
    """(6, 3, 64, 64) float in [0, 1]."""
    return torch.from_numpy(photos_uint8(64)).float() / 255


@pytest.fixture
def ctx_random(tmp_path) -> MetricContext:
    return MetricContext(weights_mode="random", weights_dir=tmp_path, batch_size=4)
