"""StyleNAT's offline stand-ins: procedural faces (FFHQ) and churches (LSUN church_outdoor)."""

from __future__ import annotations

import re

import numpy as np
import pytest
from PIL import Image
from skimage.color import rgb2hsv

from sparsegen.config import load_params
from sparsegen.data import faces, sources
from sparsegen.data.manifest import read_manifest
from sparsegen.data.prepare import stretch


def _array(path) -> np.ndarray:
    return np.asarray(Image.open(path))


@pytest.mark.parametrize("name", ["smoke_faces", "smoke_faces32", "smoke_church"])
def test_params_datasets_are_deterministic_and_all_train(tmp_path, name):
    settings = {**load_params()["datasets"][name], "n_train": 12}  # params: 200, same recipe
    assert settings["n_test"] == 0
    a = sources.prepare(name, settings, None, tmp_path / "a", workers=1)
    b = sources.prepare(name, settings, None, tmp_path / "b", workers=2)
    assert (a / "manifest.csv").read_bytes() == (b / "manifest.csv").read_bytes()
    assert (a / "dataset.json").read_bytes() == (b / "dataset.json").read_bytes()
    samples = read_manifest(b, verify=True)
    assert len(samples) == 12 and all(s.split == "train" for s in samples)
    size = settings["size"]
    arrays = [_array(s.path) for s in samples]
    assert all(x.shape == (size, size, 3) and x.dtype == np.uint8 for x in arrays)
    assert all(x.std() > 15 for x in arrays)  # no blank images
    assert len({s.sha256 for s in samples}) == len(samples)
    assert all(s.extra["licence"].startswith("procedural") for s in samples)
    assert not sources.is_real(settings["source"])


@pytest.mark.parametrize("kind", sorted(faces.GENERATORS))
def test_same_seed_same_bytes_other_seeds_differ(kind):
    generate = faces.GENERATORS[kind]
    first = generate(64, np.random.default_rng(7))
    assert np.array_equal(first, generate(64, np.random.default_rng(7)))
    others = [generate(64, np.random.default_rng(s)) for s in range(7)]
    assert len({x.tobytes() for x in [*others, first]}) == 8
    assert min(np.abs(x.astype(int) - first).mean() for x in others) > 5


@pytest.mark.parametrize(("source", "kind"), [("smoke_faces", "face"),
                                              ("smoke_scenes", "church")])
def test_source_column_is_a_complete_recipe_and_seed_matters(tmp_path, source, kind):
    settings = {"source": source, "size": 32, "n_train": 4, "n_test": 2, "seed": 5}
    rows = read_manifest(sources.prepare(source, settings, None, tmp_path / "a"))
    assert sum(r.split == "test" for r in rows) == 2
    for r in rows:
        m = re.fullmatch(r"procedural:(\w+) seed=(\d+) side=(\d+)", r.extra["source"])
        assert m is not None and m.group(1) == kind and int(m.group(3)) == 64
        image = faces.GENERATORS[kind](64, np.random.default_rng(int(m.group(2))))
        assert np.array_equal(stretch(image, 32), _array(r.path))
    other = read_manifest(sources.prepare(source, {**settings, "seed": 6}, None, tmp_path / "b"))
    assert {r.id for r in other} == {r.id for r in rows}
    assert not {r.sha256 for r in other} & {r.sha256 for r in rows}


def _skin(image: np.ndarray) -> np.ndarray:
    """A plain HSV skin detector: red-orange hue, moderate saturation, not dark."""
    h, s, v = np.moveaxis(rgb2hsv(image), -1, 0)
    return ((h < 0.12) | (h > 0.97)) & (s > 0.2) & (s < 0.7) & (v > 0.3)


def test_faces_are_centred_and_varied():
    images = [faces.face(64, np.random.default_rng(s)) for s in range(40)]
    yy, xx = (np.mgrid[0:64, 0:64] + 0.5) / 64
    centroids, colours = [], []
    for image in images:
        skin = _skin(image)
        centroids.append((yy[skin].mean(), xx[skin].mean()))
        inner = skin[16:48, 16:48].mean()
        ring = np.concatenate([skin[:8].ravel(), skin[-8:].ravel(), skin[:, :8].ravel(),
                               skin[:, -8:].ravel()]).mean()
        assert inner > 0.3 and inner > 3 * ring
        colours.append(image[skin].mean(axis=0))
    cy, cx = np.array(centroids).T
    assert np.all(np.abs(cx - 0.5) < 0.1) and np.all((cy > 0.45) & (cy < 0.72))
    assert abs(cx.mean() - 0.5) < 0.02 and 0.5 < cy.mean() < 0.65  # neck pulls it down a bit
    assert np.array(colours).std(axis=0).min() > 10  # skin tones vary


def test_churches_have_sky_over_ground():
    for s in range(20):
        image = faces.GENERATORS["church"](64, np.random.default_rng(s)).astype(float)
        top, bottom = image[:6].mean(axis=(0, 1)), image[-5:].mean(axis=(0, 1))
        assert np.abs(top - bottom).sum() > 20
