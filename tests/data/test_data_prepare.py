"""Shared prepare machinery: seeded splits, settings checks, atomic output."""

from __future__ import annotations

import pytest

from sparsegen import progress
from sparsegen.config import ParamsError
from sparsegen.data import prepare, sources
from sparsegen.data.manifest import read_manifest

SMOKE = {"source": "smoke_style", "size": 48, "n_train": 5, "n_test": 3, "seed": 0}
NAMES = [f"img_{i:02d}.jpg" for i in range(20)]


def _tests(splits: dict[str, str]) -> set[str]:
    return {n for n, s in splits.items() if s == "test"}


def test_split_is_seeded_sized_and_independent_of_input_order():
    a = prepare.assign_splits(NAMES, 5, seed=0)
    assert len(_tests(a)) == 5 and len(a) == 20
    assert a == prepare.assign_splits(list(reversed(NAMES)), 5, seed=0)
    assert _tests(a) != _tests(prepare.assign_splits(NAMES, 5, seed=1))


def test_excluding_keeps_the_rest_of_the_split():
    base = prepare.assign_splits(NAMES, 5, seed=0)
    train_name = next(n for n, s in base.items() if s == "train")
    test_name = next(n for n, s in base.items() if s == "test")
    no_train = prepare.assign_splits(NAMES, 5, seed=0, exclude=frozenset({train_name}))
    assert train_name not in no_train and _tests(no_train) == _tests(base)
    no_test = prepare.assign_splits(NAMES, 5, seed=0, exclude=frozenset({test_name}))
    assert len(_tests(no_test)) == 5 and len(_tests(no_test) & _tests(base)) == 4


def test_n_test_must_leave_train_images():
    with pytest.raises(ParamsError, match="n_test 20 leaves no train images"):
        prepare.assign_splits(NAMES, 20, seed=0)


@pytest.mark.parametrize(("name", "settings", "match"), [
    ("coco2014_train", {"source": "coco2014_train", "size": 64, "n_test": 2, "seed": 0,
                        "n_train": 10}, "datasets.coco2014_train.n_train"),
    ("smoke_style", {"source": "smoke_style", "size": 64, "n_test": 2, "seed": 0},
     "datasets.smoke_style: missing n_train"),
    ("mine", {"source": "imagenet", "size": 64, "n_test": 2, "seed": 0},
     "datasets.mine.source: 'imagenet' is not one of"),
])
def test_bad_settings_name_the_key(tmp_path, name, settings, match):
    with pytest.raises(ParamsError, match=match):
        sources.prepare(name, settings, tmp_path, tmp_path / "out")


def test_failure_mid_prepare_leaves_no_dataset(tmp_path, monkeypatch):
    out = tmp_path / "prepared" / "smoke_style"
    real_write = prepare.write_image
    calls = []

    def failing_write(path, array, **kwargs):
        calls.append(path)
        if len(calls) == 4:
            raise OSError("No space left on device")
        real_write(path, array, **kwargs)

    monkeypatch.setattr(prepare, "write_image", failing_write)
    with pytest.raises(OSError, match="No space left"):
        sources.prepare("smoke_style", SMOKE, None, out)
    assert len(calls) == 4
    assert not out.exists() and list(out.parent.iterdir()) == []


def test_failed_rebuild_keeps_the_previous_dataset(tmp_path, monkeypatch):
    out = tmp_path / "smoke_style"
    sources.prepare("smoke_style", SMOKE, None, out)
    before = (out / "manifest.csv").read_bytes()

    def broken(*args, **kwargs):
        raise OSError("disk error")

    monkeypatch.setattr(prepare, "write_image", broken)
    with pytest.raises(OSError):
        sources.prepare("smoke_style", {**SMOKE, "seed": 9}, None, out)
    assert (out / "manifest.csv").read_bytes() == before
    read_manifest(out, verify=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["smoke_style"]


def test_rebuild_replaces_content_and_clears_stale_temporaries(tmp_path):
    out = tmp_path / "smoke_style"
    stale = tmp_path / ".smoke_style.tmp-crashed"
    (stale / "train").mkdir(parents=True)
    sources.prepare("smoke_style", SMOKE, None, out)
    first = read_manifest(out)
    sources.prepare("smoke_style", {**SMOKE, "n_train": 2}, None, out)
    assert len(read_manifest(out, verify=True)) == 5 < len(first)
    assert len(list(out.rglob("*.png"))) == 5  # nothing left from the first build
    assert sorted(p.name for p in tmp_path.iterdir()) == ["smoke_style"]


def test_synthetic_sources_fetch_nothing(tmp_path):
    assert sources.raw_files("smoke_content", {"source": "smoke_content"}, tmp_path) == []
    sources.fetch("smoke_content", {"source": "smoke_content"}, tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_real_and_synthetic_sources():
    assert sources.is_real("coco2014_train") and sources.is_real("wikiart")
    assert not sources.is_real("smoke_content") and not sources.is_real("smoke_style")
    with pytest.raises(ParamsError, match="'imagenet' is not one of"):
        sources.is_real("imagenet")


def test_prepare_reports_progress_lines_in_a_log(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv(progress.ENV_MODE, "lines")
    monkeypatch.setenv(progress.ENV_INTERVAL, "0")  # a line at every image
    capsys.readouterr()
    sources.prepare("smoke_style", SMOKE, None, tmp_path / "out")
    lines = [x for x in capsys.readouterr().err.splitlines() if x.startswith("prepare ")]
    n = SMOKE["n_train"] + SMOKE["n_test"]
    assert len(lines) == n + 1
    assert lines[-1].startswith(f"prepare smoke_style: {n}/{n} img (100.0%) · ")
    assert lines[-1].endswith(" · done")
