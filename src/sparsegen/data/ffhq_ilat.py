"""FFHQ as iLAT's face-editing data: faces at `size`, XDoG sketches, fixed test edits.

No download of its own: it reads the raw folder of the `ffhq` source (a sibling of its own raw
folder, `<raw root>/ffhq`, fetched and verified by `sparsegen.data.ffhq`), so FFHQ is fetched
once for StyleNAT and iLAT. Fetch checks that folder (every PNG verified and unchanged since).

Rows (id = FFHQ index, `00000`): ids below `n_train_ids` (68,000) are train; `n_test` (68)
seeded test faces are drawn from the rest (the others are not used). Images are shrunk with
pixel-area averaging (cv2 INTER_AREA, iLAT's resize). Each row has aux `sketch`
(`<id>_sketch.png`, L): XDoG (iLAT's parameters) of the uint8 grayscale 1024 x 1024 image,
then area-resized to size x size. Test rows also have aux `mask` (`<id>_mask.png`, L, 255 =
hole): free-form strokes covering about `mask_fraction` of a `mask_grid` x `mask_grid` token
grid (6.64% = 17 of 256 tokens in the paper), seeded per face; and `pair`: another test face
whose sketch is drawn inside the mask (the test faces in a seeded cycle, so every face is
some face's partner and none its own). The manifest also carries FFHQ's per-image licence,
author and Flickr URL.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Iterator, Mapping
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from sparsegen.config import ParamsError
from sparsegen.data import ffhq
from sparsegen.data.archives import DatasetUnavailable
from sparsegen.data.coco_masks import gray_png, mask_png
from sparsegen.data.prepare import Item
from sparsegen.data.sketches import area_resize, xdog
from sparsegen.data.strokes import edit_mask
from sparsegen.io import read_image

log = logging.getLogger(__name__)

SETTINGS = ("mask_fraction", "mask_grid")


def area(array: np.ndarray, size: int) -> np.ndarray:
    """Item.fit: pixel-area shrink to size x size (unchanged when already that size)."""
    if array.shape[:2] == (size, size):
        return array
    return np.rint(area_resize(array, size)).astype(np.uint8)


def sketch_png(image: Path, size: int) -> bytes:
    """The `sketch` aux file: XDoG of the full-resolution uint8 gray image, area-resized."""
    return gray_png(xdog(read_image(image, mode="L"), size=size))


def edit_png(size: int, grid: int, fraction: float, seed: int, face: str) -> bytes:
    """The `mask` aux file of a test face: `edit_mask` seeded by (seed, face index)."""
    rng = np.random.default_rng([seed, int(face)])
    return mask_png(edit_mask(size, grid, fraction, rng))


def partners(faces: list[str], seed: int) -> dict[str, str]:
    """face -> another face, a seeded cycle through all (no face is its own partner)."""
    if len(faces) == 1:
        raise ParamsError("n_test 1: a test face needs another test face's sketch (n_test 0 "
                          "or at least 2)")
    order = [faces[i] for i in np.random.default_rng(seed).permutation(len(faces))]
    return {face: order[(k + 1) % len(order)] for k, face in enumerate(order)}


def _check(settings: Mapping[str, Any], dataset: str) -> None:
    missing = [k for k in SETTINGS if k not in settings]
    if missing:
        raise ParamsError(f"datasets.{dataset}: missing {', '.join(missing)}")
    if not 0 < settings["mask_fraction"] <= 1:
        raise ParamsError(f"datasets.{dataset}.mask_fraction: {settings['mask_fraction']!r}; "
                          f"expected a fraction of the tokens in (0, 1]")
    if settings["size"] % settings["mask_grid"]:
        raise ParamsError(f"datasets.{dataset}.mask_grid: {settings['mask_grid']} does not "
                          f"divide size {settings['size']}")


@dataclass(frozen=True)
class FfhqIlatSource:
    """FFHQ's verified PNGs (the `ffhq` source's raw folder) prepared for iLAT."""

    name: str = "ffhq_ilat"
    ffhq: ffhq.FfhqSource = ffhq.SOURCE
    n_train_ids: int = 68_000
    synthetic = False

    @property
    def reads(self) -> tuple[str, ...]:
        """Sources whose fetched files this one prepares from (`sources.reads`)."""
        return (self.ffhq.name,)

    def ffhq_dir(self, raw_dir: Path) -> Path:
        """The raw folder of the `ffhq` source: raw folders are `<raw root>/<source>`."""
        return Path(raw_dir).parent / self.ffhq.name

    def raw_files(self, raw_dir: Path) -> list[Path]:
        return self.ffhq.raw_files(self.ffhq_dir(raw_dir))

    def _unavailable(self, dataset: str, raw_dir: Path, e: DatasetUnavailable
                     ) -> DatasetUnavailable:
        return DatasetUnavailable(
            f"dataset {dataset!r} reads FFHQ from the raw folder of the source "
            f"{self.ffhq.name!r}, {self.ffhq_dir(raw_dir).absolute()}; fetch that source first "
            f"(python -m sparsegen fetch dataset --source {self.ffhq.name} --raw-dir "
            f"{self.ffhq_dir(raw_dir)} --receipt <file>):\n{e}")

    def fetch(self, dataset: str, raw_dir: Path) -> None:
        """Check that the `ffhq` raw folder is fetched and verified; download nothing."""
        try:
            with self.ffhq.items(dataset, {}, self.ffhq_dir(raw_dir)) as items:
                log.info("%s: %d verified FFHQ images in %s", dataset, len(items),
                         self.ffhq_dir(raw_dir))
        except DatasetUnavailable as e:
            raise self._unavailable(dataset, raw_dir, e) from None

    def upstream(self, raw_dir: Path) -> dict[str, Any]:
        return {"ffhq": self.ffhq.upstream(self.ffhq_dir(raw_dir)),
                "raw_folder": self.ffhq.name, "train_ids": f"< {self.n_train_ids}"}

    @contextmanager
    def items(self, dataset: str, settings: Mapping[str, Any],
              raw_dir: Path) -> Iterator[list[Item]]:
        """Train faces, the seeded test faces with their edits, sketches for all."""
        _check(settings, dataset)
        size, seed, n_test = settings["size"], settings["seed"], settings["n_test"]
        exclude = frozenset(settings.get("exclude") or ())
        with ExitStack() as stack:
            try:
                base = stack.enter_context(self.ffhq.items(dataset, settings,
                                                           self.ffhq_dir(raw_dir)))
            except DatasetUnavailable as e:
                raise self._unavailable(dataset, raw_dir, e) from None
            rest = sorted(it.id for it in base
                          if int(it.id) >= self.n_train_ids and it.name not in exclude)
            if n_test > len(rest):
                raise ParamsError(f"datasets.{dataset}.n_test: {n_test}, but only {len(rest)} "
                                  f"faces from id {self.n_train_ids} on are available")
            chosen = np.random.default_rng(seed).choice(len(rest), n_test, replace=False)
            test = sorted(rest[i] for i in chosen)
            pair = partners(test, seed) if test else {}
            root = self.ffhq_dir(raw_dir)
            items = []
            for it in base:
                if (int(it.id) >= self.n_train_ids and it.id not in pair
                        and it.name not in exclude):   # excluded ones: reported by prepare
                    continue
                aux = {"sketch": ("_sketch.png", partial(sketch_png, root / it.name, size))}
                if it.id in pair:
                    aux["mask"] = ("_mask.png", partial(
                        edit_png, size, settings["mask_grid"], settings["mask_fraction"], seed,
                        it.id))
                items.append(dataclasses.replace(
                    it, fit=area, split="test" if it.id in pair else "train",
                    extra={**it.extra, "pair": pair.get(it.id, "")}, aux=aux))
            log.info("%s: %d train and %d test face(s)", dataset,
                     sum(it.split == "train" for it in items), len(test))
            yield items

SOURCE = FfhqIlatSource()
