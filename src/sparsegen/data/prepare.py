"""Shared prepare machinery: seeded split, parallel decode + resize, atomic dataset folder.

Every source (real archive or synthetic generator) hands over a list of `Item`s; `write_dataset`
turns them into the prepared format of `sparsegen.data.manifest`: PNGs at size x size under
`<split>/<id>.png` plus `manifest.csv` and `dataset.json`, built in a temporary sibling folder
and renamed into place, so a crash never leaves a folder that looks complete.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from sparsegen.config import ParamsError
from sparsegen.data.images import resize, to_tensor, to_uint8
from sparsegen.data.manifest import write_manifest
from sparsegen.io import ImageReadError, atomic_dir, write_bytes, write_image, write_json
from sparsegen.progress import Progress
from sparsegen.provenance import sha256_file

log = logging.getLogger(__name__)

DATASET_INFO = "dataset.json"


@dataclass(frozen=True)
class Item:
    """One image to prepare.

    `name` is the upstream file name (archive member) or recipe name: it orders the split, is
    what `exclude` matches, and is what errors quote. `load` returns uint8 (H, W, 3). `fit`
    brings it to size x size (uint8 in, uint8 out); None: `stretch`, the default.

    `aux` holds auxiliary files written beside the image (keypoints, part masks, a paired
    image): manifest column -> (file suffix, loader of the file's bytes). Each is written to
    `<split>/<id><suffix>`; its column holds that relative path and `<column>_sha256` its hash.
    `split` fixes the item's split (official train/test lists): either every item of a dataset
    sets it, and `n_test` is not used, or none does, and the seeded split applies."""

    id: str
    name: str
    source: str
    licence: str
    load: Callable[[], np.ndarray]
    extra: Mapping[str, str] = field(default_factory=dict)
    fit: Callable[[np.ndarray, int], np.ndarray] | None = None
    aux: Mapping[str, tuple[str, Callable[[], bytes]]] = field(default_factory=dict)
    split: str | None = None  # fixed by the upstream lists (or an identity's group); None: seeded


def stretch(array: np.ndarray, size: int) -> np.ndarray:
    """Bilinear antialiased resize to size x size, aspect not kept (the default fit)."""
    return to_uint8(resize(to_tensor(array), size))


def lanczos(array: np.ndarray, size: int) -> np.ndarray:
    """PIL Lanczos resize to size x size; unchanged when already that size. StyleSwin made
    FFHQ-256 this way from the 1024 PNGs (microsoft/StyleSwin#14)."""
    if array.shape[:2] == (size, size):
        return array
    return np.asarray(Image.fromarray(array).resize((size, size), Image.Resampling.LANCZOS))


def resize_centre_crop(array: np.ndarray, size: int) -> np.ndarray:
    """torchvision Resize(size) + CenterCrop(size), as StyleSwin/StyleNAT load LSUN, with PIL
    Lanczos for the resize. LSUN's short side is already 256, so at 256 only the crop acts.
    Sizes and offsets are rounded as torchvision rounds them."""
    h, w = array.shape[:2]
    if min(h, w) != size:
        long = int(size * max(h, w) / min(h, w))
        nh, nw = (long, size) if w <= h else (size, long)
        array = np.asarray(Image.fromarray(array).resize((nw, nh), Image.Resampling.LANCZOS))
        h, w = nh, nw
    top, left = round((h - size) / 2.0), round((w - size) / 2.0)
    return array[top:top + size, left:left + size]


def assign_splits(names: Sequence[str], n_test: int, seed: int,
                  exclude: frozenset[str] = frozenset()) -> dict[str, str]:
    """Split of every kept name: sorted names, seeded permutation, first n_test kept are "test".

    Excluded names keep their place in the permutation, so excluding a train image never
    changes the test set, and excluding a test image only promotes the next one."""
    ordered = sorted(names)
    kept = [ordered[i] for i in np.random.default_rng(seed).permutation(len(ordered))
            if ordered[i] not in exclude]
    if n_test >= len(kept):
        raise ParamsError(f"n_test {n_test} leaves no train images: only {len(kept)} image(s) "
                          f"available after exclusions")
    test = set(kept[:n_test])
    return {name: "test" if name in test else "train" for name in kept}


def _prepare_one(item: Item, split: str, root: Path, size: int, dataset: str) -> dict[str, str]:
    try:
        array = item.load()
    except ImageReadError as e:
        raise ImageReadError(
            f"{e}\nIf this file is broken upstream, list {item.name!r} under "
            f"datasets.{dataset}.exclude in params.yaml to leave it out.") from None
    rel = f"{split}/{item.id}.png"
    write_image(root / rel, (item.fit or stretch)(array, size))
    row = {"id": item.id, "split": split, "path": rel, "sha256": sha256_file(root / rel),
           "source": item.source, "licence": item.licence, **item.extra}
    for column, (suffix, load) in item.aux.items():
        aux_rel = f"{split}/{item.id}{suffix}"
        write_bytes(root / aux_rel, load())
        row[column], row[f"{column}_sha256"] = aux_rel, sha256_file(root / aux_rel)
    return row


def write_dataset(dataset: str, items: Sequence[Item], settings: Mapping[str, Any],
                  out_dir: Path, workers: int = 1,
                  upstream: Mapping[str, Any] | None = None) -> Path:
    """Write `items` as a prepared dataset into `out_dir` (atomically); return `out_dir`."""
    size, n_test, seed = settings["size"], settings["n_test"], settings["seed"]
    exclude = frozenset(settings.get("exclude") or ())
    names = [it.name for it in items]
    ids = Counter(it.id for it in items if it.name not in exclude)
    clashes = sorted(it.name for it in items if it.name not in exclude and ids[it.id] > 1)
    if clashes:
        raise ValueError(f"dataset {dataset!r}: these files map to the same sample id (list all "
                         f"but one under datasets.{dataset}.exclude): {', '.join(clashes)}")
    missing = sorted(exclude - set(names))
    if missing:
        log.warning("%s: %d name(s) under datasets.%s.exclude are not in the data: %s",
                    dataset, len(missing), dataset, ", ".join(missing))
    fixed = {it.name: it.split for it in items if it.split is not None}
    if fixed and len(fixed) != len(items):
        raise ValueError(f"dataset {dataset!r}: some items fix their split and some do not")
    splits = ({n: s for n, s in fixed.items() if n not in exclude} if fixed
              else assign_splits(names, n_test, seed, exclude))
    todo = sorted((it for it in items if it.name in splits), key=lambda it: it.name)
    skipped = sorted(exclude & set(names))
    n_in_test = sum(splits[it.name] == "test" for it in todo)
    log.info("%s: %d image(s) (%d test), %d excluded%s", dataset, len(todo), n_in_test,
             len(skipped), f": {', '.join(skipped)}" if skipped else "")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # parallel over images instead; avoids oversubscribing the cores
    with atomic_dir(out_dir) as root:
        bar = Progress(len(todo), f"prepare {dataset}", unit="img")
        pool = ThreadPoolExecutor(workers) if workers > 1 else None
        try:
            rows = []
            mapper = pool.map if pool else map
            for row in mapper(lambda it: _prepare_one(it, splits[it.name], root, size, dataset),
                              todo):
                rows.append(row)
                bar.update(1)
        finally:
            bar.close()
            if pool:
                pool.shutdown(wait=True, cancel_futures=True)
            torch.set_num_threads(threads)
        write_manifest(root, rows)
        write_json(root / DATASET_INFO, {
            "name": dataset, "source": settings["source"], "size": size, "seed": seed,
            "n_test": n_test, "split": "fixed by the source" if fixed else "seeded",
            "counts": {s: sum(r["split"] == s for r in rows)
                                         for s in ("train", "test")},
            "excluded": skipped, "upstream": dict(upstream or {}),
        })
    return out_dir
