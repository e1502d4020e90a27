"""Procedural faces (FFHQ; with part maps, CelebA-HQ edges) and churches (LSUN church_outdoor)."""

from __future__ import annotations

import hashlib
import re

import numpy as np
import pytest
from PIL import Image
from skimage.color import rgb2hsv

from sparsegen.config import ParamsError, load_params
from sparsegen.data import faces, sources
from sparsegen.data.labels import PARTS, load_label
from sparsegen.data.manifest import read_manifest
from sparsegen.data.prepare import stretch, write_dataset
from sparsegen.data.smoke import recipe_seed


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


# --- part maps and smoke_faces_edge (DynaST) ---------------------------------------------------

def test_face_images_are_unchanged_by_the_part_maps():
    """StyleNAT's smoke data must stay bitwise the same: hashes recorded from faces.py before
    face_and_parts existed (commit c12983e)."""
    h = hashlib.sha256()
    for s in range(6):
        h.update(faces.face(64, np.random.default_rng(s)).tobytes())
    assert h.hexdigest() == "19a805daa537deb7e659aa39ea7edd5d7edf667fe044a7330caa757f5f6bae83"
    h = hashlib.sha256()
    for i in range(4):   # smoke_faces (params: seed 2, size 16 -> side 32)
        h.update(faces.face(32, np.random.default_rng(recipe_seed(2, i))).tobytes())
    assert h.hexdigest() == "1eecd6886f2e09de4123552648a28b124179660ad794f53794cb88548a4e3538"


def _part(name: str) -> int:
    return PARTS.index(name) + 1


def test_part_maps_follow_the_painted_face():
    for s in range(12):
        image, parts = faces.face_and_parts(128, np.random.default_rng(s))
        assert np.array_equal(image, faces.face(128, np.random.default_rng(s)))
        assert parts.shape == (128, 128) and parts.dtype == np.uint8 and parts.max() <= 13
        present = set(np.unique(parts).tolist())
        must = {"skin", "l_brow", "r_brow", "l_eye", "r_eye", "nose", "u_lip", "l_lip", "mouth",
                "hair"}
        assert {_part(n) for n in must} <= present, s
        assert parts[0, 0] == parts[0, -1] == parts[-1, 0] == parts[-1, -1] == 0
        assert _skin(image[parts == _part("skin")][None]).mean() > 0.8
        assert _skin(image[parts == 0][None]).mean() < 0.5          # background, neck, clothes
        cols = np.arange(128)[None, :] + 0 * parts
        for name in ("eye", "brow"):     # the subject's left is on the image's right
            left, right = (cols[parts == _part(side + name)].mean() for side in ("l_", "r_"))
            assert left > right
        rows = np.arange(128)[:, None] + 0 * parts
        order = [rows[parts == _part(n)].mean() for n in ("l_brow", "l_eye", "nose", "u_lip",
                                                          "l_lip")]
        assert order == sorted(order), s                           # brows ... chin
        white = image[parts == _part("l_eye")].astype(float).mean(axis=1)
        assert white.max() > 180 and white.min() < 80               # white and iris/pupil


def test_faces_edge_source(tmp_path):
    settings = {"source": "smoke_faces_edge", "size": 16, "n_train": 6, "n_test": 2, "seed": 1}
    def prepare(source, settings, out):
        return write_dataset(source.name, source.build(settings), settings, out, workers=2)

    out = prepare(faces.FACES_EDGE, settings, tmp_path / "a")
    rows = read_manifest(out, verify=True)
    by_id = {r.id: r for r in rows}
    assert len(rows) == 8 and sum(r.split == "test" for r in rows) == 2
    plain = read_manifest(prepare(faces.FACES, settings, tmp_path / "plain"))
    assert {(r.id, r.sha256) for r in plain} == {(r.id, r.sha256) for r in rows}  # same faces
    for r in rows:
        assert r.extra["self_pair"] == "0"
        exemplar = by_id[r.extra["exemplar"]]
        assert exemplar.id != r.id and exemplar.split == "train"   # retrieved from train
        assert r.extra["parts"] == f"{r.split}/{r.id}_parts.png"
        with Image.open(out / r.extra["parts"]) as im:
            assert im.mode == "L" and im.size == (32, 32)
            parts = np.asarray(im)
        seed = int(re.fullmatch(r"procedural:face seed=(\d+) side=32", r.extra["source"])[1])
        assert np.array_equal(parts, faces.face_and_parts(32, np.random.default_rng(seed))[1])
        label = load_label(r, "edge", 16)
        assert label.shape == (15, 16, 16) and label[14].any()
    again = write_dataset("smoke_faces_edge", faces.FACES_EDGE.build(settings), settings,
                          tmp_path / "b")
    assert (again / "manifest.csv").read_bytes() == (out / "manifest.csv").read_bytes()
    other = read_manifest(prepare(faces.FACES_EDGE, {**settings, "seed": 2}, tmp_path / "c"))
    assert not {r.sha256 for r in other} & {r.sha256 for r in rows}
    with pytest.raises(ParamsError, match="n_train must be >= 2"):
        faces.edge_items({**settings, "n_train": 1, "n_test": 1})
