"""DeepFashion In-shop + CoCosNet poses and lists: a tiny raw folder in the upstream formats
(back-slashed CRLF list files, np.savetxt-style candidate/subset files) built in tmp_path."""

from __future__ import annotations

import hashlib
import io
import json
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from sparsegen.data import deepfashion, sources
from sparsegen.data.manifest import read_manifest

W, H = 8, 12   # not square, so the frame's [H, W] order is tested
A = "img/MEN/Denim/id_00000265/01_1_front.jpg"
B = "img/MEN/Denim/id_00000265/01_2_side.jpg"
C = "img/WOMEN/Dresses/id_00000244/02_1_front.jpg"
D = "img/WOMEN/Tees_Tanks/id_00007059/03_3_back.jpg"
E = "img/WOMEN/Dresses/id_00000203/03_1_front.jpg"
F = "img/MEN/Denim/id_00000265/01_7_additional.jpg"
TRAIN, TEST = [A, B, C, D], [E, F]
SELF_PAIRS = [[A, B, F], [F, A, B]]
REFS = [[A, D, C], [B, C, D], [C, D, A], [D, C, B]]
REFS_TEST = [[E, C, D], [F, D, C]]
# The rule, written out: self pair first, else the LAST ref entry (train and test alike).
EXPECTED = {A: (B, "1"), B: (D, "0"), C: (A, "0"), D: (B, "0"), E: (D, "0"), F: (A, "1")}
SETTINGS = {"source": "deepfashion", "size": 8, "n_test": 1, "seed": 0}


def _win(path: str) -> str:
    return path.replace("/", "\\")


def _write_list(path: Path, rows: list[list[str]]) -> None:
    """Windows-made list: back-slashes and CRLF line ends."""
    path.write_bytes("".join(",".join(_win(p) for p in r) + "\r\n" for r in rows).encode())


def _points(name: str) -> list[tuple[float, float] | None]:
    """18 keypoints per image, a few undetected, quarter-pixel coordinates (exact in text)."""
    rng = np.random.default_rng(int(hashlib.sha256(name.encode()).hexdigest()[:8], 16))
    pts = [(float(rng.integers(0, 4 * W)) / 4, float(rng.integers(0, 4 * H)) / 4)
           for _ in range(18)]
    return [None if k in (3, 10, rng.integers(11, 18)) else p for k, p in enumerate(pts)]


def _pose_text(points: list[tuple[float, float] | None]) -> tuple[str, str]:
    """candidate/subset file texts as pytorch-openpose + np.savetxt write them: candidates in
    shuffled order, plus a second (ignored) person with one joint of its own."""
    detected = [k for k, p in enumerate(points) if p is not None]
    order = np.random.default_rng(len(detected)).permutation(len(detected) + 1)
    rows, subset = [None] * (len(detected) + 1), [-1.0] * 18
    for slot, k in zip(order[:-1], detected, strict=True):
        rows[slot] = (*points[k], 0.9, slot)
        subset[k] = float(slot)
    other = int(order[-1])
    rows[other] = (1.0, 1.0, 0.5, other)
    second = [-1.0] * 18
    second[0] = float(other)
    fmt = "%.18e"
    cand = "".join(" ".join(fmt % v for v in r) + "\n" for r in rows)
    sub = "".join(" ".join(fmt % v for v in (*s, 12.5, n)) + "\n"
                  for s, n in ((subset, len(detected)), (second, 1)))
    return cand, sub


def _jpeg(seed: int) -> bytes:
    buf = io.BytesIO()
    img = np.random.default_rng(seed).integers(0, 256, (H, W, 3), dtype=np.uint8)
    Image.fromarray(img).save(buf, format="JPEG", quality=95)
    return buf.getvalue()


def _tree(root: Path) -> dict[str, bytes]:
    """Every upstream file of the fixture, by path relative to the raw folder."""
    files = {}
    for i, name in enumerate(TRAIN + TEST):
        files[name] = _jpeg(i)
        cand, sub = _pose_text(_points(name))
        stem = "pose/" + name[len("img/"):-len(".jpg")]
        files[f"{stem}_candidate.txt"] = cand.encode()
        files[f"{stem}_subset.txt"] = sub.encode()
    return files


@pytest.fixture
def raw(tmp_path: Path) -> Path:
    raw = tmp_path / "raw"
    for rel, data in _tree(raw).items():
        (raw / rel).parent.mkdir(parents=True, exist_ok=True)
        (raw / rel).write_bytes(data)
    _write_list(raw / "train.txt", [[p] for p in TRAIN])
    _write_list(raw / "val.txt", [[p] for p in TEST])
    _write_list(raw / "deepfashion_self_pair.txt", SELF_PAIRS)
    _write_list(raw / "deepfashion_ref.txt", REFS)
    _write_list(raw / "deepfashion_ref_test.txt", REFS_TEST)
    return raw


@pytest.fixture(autouse=True)
def registered(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sources.SOURCES, "deepfashion", deepfashion.SOURCE)


def _prepare(raw: Path, out: Path, **settings) -> Path:
    sources.fetch("deepfashion", SETTINGS, raw)
    return sources.prepare("deepfashion", {**SETTINGS, **settings}, raw, out)


def _problem(raw: Path, tmp_path: Path, **settings) -> str:
    with pytest.raises(sources.DatasetUnavailable) as err:
        _prepare(raw, tmp_path / "out", **settings)
    assert not (tmp_path / "out").exists()
    return str(err.value)


def _sid(name: str) -> str:
    return name[len("img/"):-len(".jpg")].replace("/", "__")


# --- prepare ------------------------------------------------------------------------------------

def test_official_splits_ids_keypoints_and_exemplars(raw, tmp_path):
    out = _prepare(raw, tmp_path / "out")
    samples = {s.id: s for s in read_manifest(out, verify=True)}
    assert set(samples) == {_sid(n) for n in TRAIN + TEST}
    assert _sid(A) == "MEN__Denim__id_00000265__01_1_front"
    for name in TRAIN + TEST:
        s = samples[_sid(name)]
        assert s.split == ("train" if name in TRAIN else "test")
        assert s.extra["source"] == name and "non-commercial" in s.extra["licence"]
        exemplar, paired = EXPECTED[name]
        assert (s.extra["exemplar"], s.extra["self_pair"]) == (_sid(exemplar), paired)
        assert s.extra["exemplar"] in samples
        doc = json.loads((out / s.extra["keypoints"]).read_text())
        assert s.extra["keypoints"] == f"{s.split}/{s.id}_keypoints.json"
        assert doc["frame"] == [H, W]
        assert doc["points"] == [list(p) if p else None for p in _points(name)]
        assert doc["points"][3] is None and len(doc["points"]) == 18
        assert np.asarray(Image.open(s.path)).shape == (8, 8, 3)
    info = json.loads((out / "dataset.json").read_text())
    assert info["counts"] == {"train": 4, "test": 2} and info["split"] == "fixed by the source"


def test_items_aux_loaders_return_the_files_bytes(raw):
    deepfashion.SOURCE.fetch("deepfashion", raw)
    with deepfashion.SOURCE.items("deepfashion", SETTINGS, raw) as items:
        by_name = {it.name: it for it in items}
        assert sorted(by_name) == sorted(TRAIN + TEST)
        suffix, load = by_name[C].aux["keypoints"]
        cand, sub = deepfashion.pose_files(raw, C)
        assert suffix == "_keypoints.json"
        assert load() == deepfashion.keypoints_json(raw / C, cand, sub)
        assert json.loads(load())["points"] == [list(p) if p else None for p in _points(C)]
        assert by_name[C].load().shape == (H, W, 3)


def test_pick_exemplar_prefers_the_self_pair_then_the_last_retrieval():
    pairs = {"k": deepfashion.Pair(("s1", "s2"), "self:1")}
    ref = {"k": deepfashion.Pair(("r1", "r2"), "ref:1"), "j": deepfashion.Pair(("r3", "r4"),
                                                                             "ref:2")}
    assert deepfashion.pick_exemplar("k", pairs, ref) == ("s1", True, "self:1")
    assert deepfashion.pick_exemplar("j", pairs, ref) == ("r4", False, "ref:2")
    assert deepfashion.pick_exemplar("x", pairs, ref) is None


# --- bad input: every message names the file and line -------------------------------------------

def _pose(raw: Path, name: str) -> tuple[Path, Path]:
    return deepfashion.pose_files(raw, name)


@pytest.mark.parametrize("case", ["short_row", "not_a_number", "bad_index", "short_subset",
                                  "no_person", "missing"])
def test_malformed_pose_files_are_named_with_line(raw, tmp_path, case):
    cand, sub = _pose(raw, E)
    lines = cand.read_text().splitlines()
    if case == "short_row":
        lines[1] = " ".join(lines[1].split()[:3])
        cand.write_text("\n".join(lines) + "\n")
        where = f"{cand}:2: 3 numbers, expected 4"
    elif case == "not_a_number":
        lines[2] = lines[2].replace(lines[2].split()[0], "nan?")
        cand.write_text("\n".join(lines) + "\n")
        where = f"{cand}:3: not numbers"
    elif case == "bad_index":
        row = sub.read_text().splitlines()
        values = row[0].split()
        values[0] = "4.2e+01"
        sub.write_text("\n".join([" ".join(values), row[1]]) + "\n")
        where = f"{sub}:1: keypoint 0 (nose) names candidate 42"
    elif case == "short_subset":
        sub.write_text(" ".join(["-1"] * 19) + "\n")
        where = f"{sub}:1: 19 numbers, expected 20"
    elif case == "no_person":
        sub.write_text("\n")
        where = f"{sub}: no person row"
    else:
        cand.unlink()
        where = f"{cand}: file not found"
    message = _problem(raw, tmp_path)
    assert where in message
    assert f"{raw / 'val.txt'}:1" in message and "datasets.deepfashion.exclude" in message
    out = _prepare(raw, tmp_path / "kept", exclude=[E])   # nobody's exemplar: can be left out
    assert _sid(E) not in {s.id for s in read_manifest(out)}


def test_list_line_naming_an_absent_image(raw, tmp_path):
    (raw / D).unlink()
    assert f"{raw / 'train.txt'}:4: names {D}, which is not in {raw / 'img'}" in \
        _problem(raw, tmp_path)


def test_list_line_that_is_not_an_image_path(raw, tmp_path):
    with open(raw / "val.txt", "ab") as f:
        f.write(b"pose\\MEN\\x.txt\r\n")
    assert f"{raw / 'val.txt'}:3: 'pose\\\\MEN\\\\x.txt' is not a path" in _problem(raw, tmp_path)


def test_image_listed_twice(raw, tmp_path):
    _write_list(raw / "val.txt", [[E], [F], [A]])
    assert f"{raw / 'val.txt'}:3: {A} is listed already at {raw / 'train.txt'}:1" in \
        _problem(raw, tmp_path)


def test_unknown_exemplar_names_the_pair_line(raw, tmp_path):
    ghost = "img/MEN/Denim/id_00000265/09_9_ghost.jpg"
    _write_list(raw / "deepfashion_ref.txt", [*REFS[:2], [C, D, ghost], REFS[3]])
    message = _problem(raw, tmp_path)
    assert f"{raw / 'deepfashion_ref.txt'}:3: exemplar {ghost} of {C} is not listed" in message


def test_key_missing_from_the_ref_list_is_named(raw, tmp_path):
    _write_list(raw / "deepfashion_ref_test.txt", REFS_TEST[1:])   # E has no line: a KeyError
    message = _problem(raw, tmp_path)
    assert f"{raw / 'val.txt'}:1: {E} has no line in {raw / 'deepfashion_self_pair.txt'} or " \
           f"{raw / 'deepfashion_ref_test.txt'}" in message


def test_malformed_pair_line(raw, tmp_path):
    with open(raw / "deepfashion_self_pair.txt", "ab") as f:
        f.write(_win(C).encode() + b"\r\n")
    assert f"{raw / 'deepfashion_self_pair.txt'}:3: expected 'key,exemplar" in \
        _problem(raw, tmp_path)


def test_an_excluded_exemplar_asks_to_exclude_its_users(raw, tmp_path):
    message = _problem(raw, tmp_path, exclude=[D])
    assert f"{raw / 'deepfashion_ref.txt'}:2: exemplar {D} of {B} is excluded" in message
    assert f"{raw / 'deepfashion_ref_test.txt'}:1: exemplar {D} of {E} is excluded" in message
    message = _problem(raw, tmp_path, exclude=[B, D, E])
    assert f"{raw / 'deepfashion_self_pair.txt'}:1: exemplar {B} of {A} is excluded" in message
    assert "1 problem(s)" in message


# --- fetch and the receipt ----------------------------------------------------------------------

def test_fetch_names_every_missing_file_where_it_goes_and_the_terms(tmp_path):
    raw = tmp_path / "empty"
    with pytest.raises(sources.DatasetUnavailable) as err:
        sources.fetch("deepfashion", SETTINGS, raw)
    message = str(err.value)
    assert "7 missing" in message
    for rel in ("img.zip", "pose.zip", "train.txt", "val.txt", "deepfashion_ref.txt",
                "deepfashion_ref_test.txt", "deepfashion_self_pair.txt"):
        assert str(raw.absolute() / rel) in message
    for drive_id in ("0B7EVK8r0v71pVDZFQXRsMDZCX1E", "1Vzpl3DpHZistiEjXXb0Blk4L12LsDluU",
                     "1kLOeRYZ1wUDzo3eg9ZihJj-yuyDQhp_T", "1FEMuwWZqk_cuzl7HSSbCrtl1ynIE0zIE"):
        assert drive_id in message
    assert "non-commercial" in message and "needs a browser" in message


def test_fetch_names_only_what_is_missing(raw):
    (raw / "deepfashion_ref_test.txt").unlink()
    with pytest.raises(sources.DatasetUnavailable, match=r"1 missing in .*: "
                       r"deepfashion_ref_test.txt\n"):
        sources.fetch("deepfashion", SETTINGS, raw)
    assert not (raw / "SHA256SUMS").exists()


def test_receipt_pins_the_lists_and_catches_a_changed_file(raw, tmp_path):
    sources.fetch("deepfashion", SETTINGS, raw)
    lists = ["deepfashion_ref.txt", "deepfashion_ref_test.txt", "deepfashion_self_pair.txt",
             "train.txt", "val.txt"]
    assert (raw / "SHA256SUMS").read_text() == "".join(
        f"{hashlib.sha256((raw / n).read_bytes()).hexdigest()}  {n}\n" for n in lists)
    assert sources.raw_files("deepfashion", SETTINGS, raw)[-1] == raw / "SHA256SUMS"
    sources.fetch("deepfashion", SETTINGS, raw)   # unchanged: verifies
    _write_list(raw / "train.txt", [[p] for p in TRAIN[:3]])
    with pytest.raises(sources.DatasetUnavailable, match="the file changed") as err:
        sources.fetch("deepfashion", SETTINGS, raw)
    assert str(raw / "train.txt") in str(err.value)
    with pytest.raises(sources.DatasetUnavailable, match="the file changed"):
        sources.prepare("deepfashion", SETTINGS, raw, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_prepare_before_fetch_says_so(raw, tmp_path):
    with pytest.raises(sources.DatasetUnavailable, match="run the fetch step"):
        sources.prepare("deepfashion", SETTINGS, raw, tmp_path / "out")


def test_zips_are_pinned_and_unpacked_to_the_same_dataset(raw, tmp_path):
    folders = _prepare(raw, tmp_path / "a")
    zipped = tmp_path / "zipped"
    zipped.mkdir()
    for name in ("train.txt", "val.txt", "deepfashion_ref.txt", "deepfashion_ref_test.txt",
                 "deepfashion_self_pair.txt"):
        (zipped / name).write_bytes((raw / name).read_bytes())
    tree = _tree(raw)
    with zipfile.ZipFile(zipped / "img.zip", "w") as zf:    # In-shop: top folder img/
        for rel, data in tree.items():
            if rel.startswith("img/"):
                zf.writestr(rel, data)
    with zipfile.ZipFile(zipped / "pose.zip", "w") as zf:   # nested: DeepFashion/pose/...
        zf.writestr("__MACOSX/pose/._x", b"")
        for rel, data in tree.items():
            if rel.startswith("pose/"):
                zf.writestr(f"DeepFashion/{rel}", data)
    out = _prepare(zipped, tmp_path / "b")
    assert (zipped / C).read_bytes() == (raw / C).read_bytes()
    assert (zipped / "pose/MEN/Denim/id_00000265/01_1_front_subset.txt").is_file()
    receipt = (zipped / "SHA256SUMS").read_text()
    for name in ("img.zip", "pose.zip"):
        assert f"{hashlib.sha256((zipped / name).read_bytes()).hexdigest()}  {name}\n" in receipt
    assert (out / "manifest.csv").read_bytes() == (folders / "manifest.csv").read_bytes()
    with zipfile.ZipFile(zipped / "pose.zip", "a") as zf:
        zf.writestr("DeepFashion/pose/extra.txt", b"changed")
    with pytest.raises(sources.DatasetUnavailable, match=r"pose\.zip: sha256 .*the file changed"):
        sources.fetch("deepfashion", SETTINGS, zipped)


def test_a_zip_without_the_folder_is_named(raw, tmp_path):
    zipped = tmp_path / "zipped"
    zipped.mkdir()
    for name in ("train.txt", "val.txt", "deepfashion_ref.txt", "deepfashion_ref_test.txt",
                 "deepfashion_self_pair.txt"):
        (zipped / name).write_bytes((raw / name).read_bytes())
    (zipped / "pose").mkdir()
    (zipped / "pose" / "x_subset.txt").write_text("-1\n")
    with zipfile.ZipFile(zipped / "img.zip", "w") as zf:
        zf.writestr("images/MEN/a.jpg", b"x")
    with pytest.raises(sources.DatasetUnavailable, match=r"img.zip: holds no folder img/ "
                       r"\(top entries: images\)"):
        sources.fetch("deepfashion", SETTINGS, zipped)
