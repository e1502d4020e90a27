"""Small archives in the upstream layouts of MS-COCO train2014 and WikiArt, built in tmp_path."""

from __future__ import annotations

import dataclasses
import io
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from sparsegen.data import coco, sources

# Six COCO-style members: four RGB colours, one grayscale JPEG, one CMYK JPEG.
COCO_COLOURS = {
    "train2014/COCO_train2014_000000000009.jpg": ("RGB", (220, 30, 30)),
    "train2014/COCO_train2014_000000000025.jpg": ("RGB", (30, 200, 40)),
    "train2014/COCO_train2014_000000000030.jpg": ("RGB", (20, 40, 210)),
    "train2014/COCO_train2014_000000000034.jpg": ("RGB", (240, 240, 60)),
    "train2014/COCO_train2014_000000000036.jpg": ("L", 128),
    "train2014/COCO_train2014_000000000042.jpg": ("CMYK", (0, 255, 255, 0)),
}


def _jpeg(mode: str, colour, size=(40, 28)) -> bytes:
    buf = io.BytesIO()
    Image.new(mode, size, colour).save(buf, format="JPEG", quality=95)
    return buf.getvalue()


def _write_zip(path: Path, members: dict[str, bytes]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return path


@pytest.fixture
def write_zip():
    """write_zip(path, {member: bytes}) -> path."""
    return _write_zip


@pytest.fixture
def coco_colours() -> dict:
    return COCO_COLOURS


@pytest.fixture
def coco_members() -> dict[str, bytes]:
    return {name: _jpeg(mode, colour) for name, (mode, colour) in COCO_COLOURS.items()}


@pytest.fixture
def wikiart_members() -> dict[str, bytes]:
    rng = np.random.default_rng(0)
    members = {}
    for style, names in (("Impressionism", ["claude-monet_a.jpg", "claude-monet_b.jpg",
                                            "pierre-auguste-renoir_café.jpg"]),
                         ("Cubism", ["pablo-picasso_c.jpg", "juan-gris_d.jpg", "x_e.jpg"])):
        for name in names:
            buf = io.BytesIO()
            Image.fromarray(rng.integers(0, 256, (30, 44, 3), dtype=np.uint8)).save(buf, "JPEG")
            members[f"wikiart/{style}/{name}"] = buf.getvalue()
    members["wikiart/README.txt"] = b"not an image"
    members["wikiart/stray.jpg"] = members["wikiart/Cubism/x_e.jpg"]  # wrong depth: ignored
    members["__MACOSX/wikiart/Cubism/._x_e.jpg"] = b"resource fork"
    return members


@pytest.fixture
def coco_raw(tmp_path: Path, coco_members: dict[str, bytes]) -> Path:
    raw = tmp_path / "raw" / "coco2014_train"
    _write_zip(raw / "train2014.zip", coco_members)
    return raw


@pytest.fixture
def wikiart_raw(tmp_path: Path, wikiart_members: dict[str, bytes]) -> Path:
    raw = tmp_path / "raw" / "wikiart"
    _write_zip(raw / "wikiart.zip", wikiart_members)
    return raw


@pytest.fixture
def fake_sizes(monkeypatch: pytest.MonkeyPatch) -> None:
    """The real COCO spec, except its published size/count, which the small fake cannot match."""
    monkeypatch.setitem(sources.SOURCES, "coco2014_train",
                        dataclasses.replace(coco.SOURCE, size=None, n_images=None))

