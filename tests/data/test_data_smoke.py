"""Offline stand-ins: deterministic, requested split sizes, real photos, reproducible recipes."""

from __future__ import annotations

import re

import numpy as np
import pytest
import skimage.data
from PIL import Image

from sparsegen.config import load_params
from sparsegen.data import procedural, smoke, sources
from sparsegen.data.images import resize, to_tensor, to_uint8
from sparsegen.data.manifest import read_manifest, split

SMALL = {"size": 48, "n_train": 10, "n_test": 4, "seed": 0}


def _array(path) -> np.ndarray:
    return np.asarray(Image.open(path))


@pytest.mark.parametrize("name", ["smoke_content", "smoke_style"])
def test_params_smoke_datasets_are_deterministic_and_split(tmp_path, name):
    settings = load_params()["datasets"][name]
    a = sources.prepare(name, settings, None, tmp_path / "a", workers=1)
    b = sources.prepare(name, settings, None, tmp_path / "b", workers=2)
    assert (a / "manifest.csv").read_bytes() == (b / "manifest.csv").read_bytes()
    assert (a / "dataset.json").read_bytes() == (b / "dataset.json").read_bytes()
    samples = read_manifest(b, verify=True)
    assert len(split(samples, "train")) == settings["n_train"]
    assert len(split(samples, "test")) == settings["n_test"]
    size = settings["size"]
    arrays = [_array(s.path) for s in samples]
    assert all(x.shape == (size, size, 3) and x.dtype == np.uint8 for x in arrays)
    assert all(x.std() > 10 for x in arrays)  # no blank images
    assert len({s.sha256 for s in samples}) == len(samples)  # no duplicates
    assert all(s.extra["source"] and s.extra["licence"] for s in samples)


def test_content_photos_are_the_bundled_skimage_photos(tmp_path):
    out = sources.prepare("smoke_content", {"source": "smoke_content", **SMALL}, None, tmp_path)
    by_id = {s.id: s for s in read_manifest(out)}
    assert {f"skimage_{k}" for k, _, _ in smoke.PHOTOS} <= set(by_id)
    assert sum(i.startswith("scene_") for i in by_id) == 14 - len(smoke.PHOTOS)
    assert by_id["skimage_astronaut"].extra["source"] == "skimage:astronaut (NASA, public domain)"
    # Independent reference: skimage's own loader, PIL's bilinear resize.
    for key, loader in (("astronaut", skimage.data.astronaut), ("rocket", skimage.data.rocket)):
        ref = np.asarray(Image.fromarray(loader()).resize((48, 48), Image.BILINEAR), float)
        got = _array(by_id[f"skimage_{key}"].path).astype(float)
        assert np.abs(got - ref).mean() < 3.0


def test_few_images_take_photos_first(tmp_path):
    settings = {"source": "smoke_content", "size": 32, "n_train": 3, "n_test": 1, "seed": 0}
    ids = [s.id for s in read_manifest(sources.prepare("smoke_content", settings, None, tmp_path))]
    assert sorted(ids) == sorted(f"skimage_{k}" for k, _, _ in smoke.PHOTOS[:4])


def test_style_seed_changes_the_generated_images_only(tmp_path):
    base = {"source": "smoke_style", **SMALL}
    a = read_manifest(sources.prepare("smoke_style", base, None, tmp_path / "a"))
    b = read_manifest(sources.prepare("smoke_style", {**base, "seed": 5}, None, tmp_path / "b"))
    assert {s.id for s in a} == {s.id for s in b}
    assert not {s.sha256 for s in a} & {s.sha256 for s in b}
    kinds = {s.id.rsplit("_", 1)[0] for s in a}
    assert kinds == {"texture", *procedural.PAINTINGS}
    for s in a:  # colourised textures and paintings are in colour, not gray
        x = _array(s.path).astype(int)
        assert np.abs(x[..., 0] - x[..., 1]).mean() + np.abs(x[..., 1] - x[..., 2]).mean() > 5


def test_source_column_is_a_complete_recipe(tmp_path):
    out = sources.prepare("smoke_style", {"source": "smoke_style", **SMALL}, None, tmp_path)
    checked = 0
    for s in read_manifest(out):
        m = re.fullmatch(r"procedural:(\w+) seed=(\d+) side=(\d+)", s.extra["source"])
        if m is None:
            continue
        kind, seed, side = m.group(1), int(m.group(2)), int(m.group(3))
        image = procedural.PAINTINGS[kind](side, np.random.default_rng(seed))
        assert np.array_equal(to_uint8(resize(to_tensor(image), 48)), _array(s.path))
        checked += 1
    assert checked == 14 - len(smoke.TEXTURES)


def test_gradient_map_interpolates_between_palette_stops():
    colours = np.array([[0.0, 0, 0], [1.0, 0, 0], [1.0, 1, 1]])
    out = procedural.gradient_map(np.array([0.0, 0.25, 0.5, 0.75, 1.0]), colours)
    np.testing.assert_allclose(out, [[0, 0, 0], [.5, 0, 0], [1, 0, 0], [1, .5, .5], [1, 1, 1]])


def test_palette_is_sorted_dark_to_light():
    for seed in range(5):
        pal = procedural.palette(np.random.default_rng(seed), 6)
        luma = pal @ np.array([0.299, 0.587, 0.114])
        assert pal.shape == (6, 3) and np.all(np.diff(luma) >= 0)
        assert pal.min() >= 0 and pal.max() <= 1
