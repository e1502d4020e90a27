"""Dataset sources by name and the three entry points the CLI calls: raw_files, fetch, prepare.

A dataset's settings are params.yaml `datasets.<name>`: `source` picks an entry of SOURCES,
`size`, `n_test`, `seed`, `exclude` apply to every source, `n_train` to synthetic ones only.
"""

from __future__ import annotations

from collections.abc import Mapping
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any, Protocol

from sparsegen.config import ParamsError
from sparsegen.data import (
    celebahq,
    coco,
    coco_masks,
    deepfashion,
    dpst,
    faces,
    ffhq,
    ffhq_ilat,
    lsun,
    penn_action,
    people,
    sdf,
    smoke,
    sticks,
    wikiart,
)
from sparsegen.data.archives import DatasetUnavailable
from sparsegen.data.prepare import Item, write_dataset

__all__ = ["SOURCES", "DatasetUnavailable", "Source", "fetch", "is_real", "prepare", "raw_files"]


class Source(Protocol):
    name: str
    synthetic: bool

    def raw_files(self, raw_dir: Path) -> list[Path]: ...

    def fetch(self, dataset: str, raw_dir: Path) -> None: ...

    def upstream(self, raw_dir: Path) -> dict[str, Any]: ...

    def items(self, dataset: str, settings: Mapping[str, Any],
              raw_dir: Path) -> AbstractContextManager[list[Item]]: ...


SOURCES: dict[str, Source] = {
    s.name: s for s in (coco.SOURCE, wikiart.SOURCE, ffhq.SOURCE, lsun.CHURCH_OUTDOOR,
                        smoke.CONTENT, smoke.STYLE, faces.FACES, faces.SCENES,
                        deepfashion.SOURCE, celebahq.SOURCE, dpst.SOURCE, people.PEOPLE,
                        faces.FACES_EDGE, sticks.PA, sticks.SDF, sticks.FACES, sticks.MASKS,
                        penn_action.SOURCE, sdf.SOURCE, ffhq_ilat.SOURCE, coco_masks.SOURCE)
}


def _source(name: str, settings: Mapping[str, Any]) -> Source:
    """The source that `settings` (or, without a `source` key, the dataset name) names."""
    key = settings.get("source", name)
    if key not in SOURCES:
        raise ParamsError(f"datasets.{name}.source: {key!r} is not one of "
                          f"{', '.join(sorted(SOURCES))}")
    return SOURCES[key]


def _check(name: str, source: Source, settings: Mapping[str, Any]) -> None:
    needed = ("size", "n_test", "seed") + (("n_train",) if source.synthetic else ())
    missing = [k for k in needed if k not in settings]
    if missing:
        raise ParamsError(f"datasets.{name}: missing {', '.join(missing)}")
    if not source.synthetic and "n_train" in settings:
        raise ParamsError(f"datasets.{name}.n_train: only synthetic sources take n_train "
                          f"({source.name} uses every image not held out as test)")


def reads(source: str) -> tuple[str, ...]:
    """Other sources whose fetched files `source` prepares from (a source's optional `reads`:
    SDF reads DeepFashion's download, iLAT's FFHQ reads FFHQ's), so each is fetched once."""
    return tuple(getattr(SOURCES[source], "reads", ()))


def is_real(source: str) -> bool:
    """Whether a source (a `datasets.<name>.source` value) is fetched rather than generated."""
    return not _source(source, {"source": source}).synthetic


def raw_files(name: str, settings: Mapping[str, Any], raw_dir: Path) -> list[Path]:
    """Files the fetch step produces for this dataset ([] for synthetic sources)."""
    return _source(name, settings).raw_files(Path(raw_dir))


def fetch(name: str, settings: Mapping[str, Any], raw_dir: Path) -> None:
    """Download and verify the upstream archive(s) into raw_dir; raises DatasetUnavailable."""
    _source(name, settings).fetch(name, Path(raw_dir))


def prepare(name: str, settings: Mapping[str, Any], raw_dir: Path | None, out_dir: Path,
            workers: int = 1) -> Path:
    """Write the prepared dataset (manifest.csv + size x size PNGs) into out_dir, atomically."""
    source = _source(name, settings)
    _check(name, source, settings)
    if raw_dir is None and not source.synthetic:
        raise DatasetUnavailable(f"dataset {name!r}: prepare needs the raw folder that holds "
                                 f"its fetched files (raw_dir)")
    raw = Path(raw_dir) if raw_dir is not None else None
    settings = {"source": source.name, **settings}
    with source.items(name, settings, raw) as items:
        return write_dataset(name, items, settings, Path(out_dir), workers,
                             upstream=source.upstream(raw))
