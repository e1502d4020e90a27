"""Places365-Standard validation images (`val_256.tar`): the backgrounds of iLAT's SDF composites.

Upstream: http://data.csail.mit.edu/places/places365/val_256.tar, 36,500 JPEGs of 256x256 under
`val_256/` (`Places365_val_00000001.jpg` ...), published with an MD5 (torchvision's
`datasets/places365.py` lists it). Fetch downloads the tar into the raw folder (or keeps a copy
placed there by hand), checks its size, MD5 and member count, and records its sha256 in a
`val_256.tar.sha256` sidecar; later fetches compare against it. The tar is not compressed, so
members are read in place: an index of member offsets is built once, and each read is one
`os.pread`, safe from any thread.
"""

from __future__ import annotations

import logging
import os
import tarfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from sparsegen.data.archives import DatasetUnavailable, recorded_sha256, sidecar
from sparsegen.download import DownloadError, check_file, download
from sparsegen.io import ImageReadError, atomic_path, read_image, write_text

log = logging.getLogger(__name__)

LICENCE = ("Places365 (MIT CSAIL): non-commercial research and educational use only; images "
           "under their owners' copyright")


@dataclass(frozen=True)
class PlacesArchive:
    """The published tar: where it lives and what verifies it."""

    url: str = "http://data.csail.mit.edu/places/places365/val_256.tar"
    filename: str = "val_256.tar"
    folder: str = "val_256"
    md5: str | None = "e27b17d8d44f4af9a78502beb927f808"
    size: int | None = 525_158_400
    n_images: int | None = 36_500

    def path(self, raw_dir: Path) -> Path:
        return Path(raw_dir) / self.filename

    def unavailable(self, dataset: str, raw_dir: Path, reason: str) -> DatasetUnavailable:
        size = f"{self.size:,} bytes, " if self.size else ""
        return DatasetUnavailable(
            f"dataset {dataset!r}: the Places365 backgrounds are not available: {reason}\n"
            f"Download by hand\n  {self.url}\n  ({size}md5 {self.md5}; {self.n_images or 'the'} "
            f"256x256 JPEGs under {self.folder}/; places2.csail.mit.edu may ask for a form)\n"
            f"and save it, unextracted, as\n  {self.path(raw_dir).absolute()}\nthen run the "
            f"fetch step again: it checks the size, MD5 and image count and records the sha256 "
            f"in {sidecar(self.path(raw_dir)).name}.\nTerms: {LICENCE}")

    def _check(self, path: Path) -> str:
        """Verify the file at `path` (size, MD5, images); return its sha256."""
        digest = check_file(path, size=self.size, md5=self.md5)
        count = len(PlacesTar(path, self.folder).names())
        if count == 0 or (self.n_images is not None and count != self.n_images):
            raise DownloadError(f"{path}: {count} images under {self.folder}/, expected "
                                f"{self.n_images or 'some'}")
        return digest

    def fetch(self, dataset: str, raw_dir: Path) -> None:
        """Download (unless present) and verify the tar; pin its sha256 in the sidecar."""
        path = self.path(raw_dir)
        try:
            if path.exists():
                log.info("%s: verifying the present %s", dataset, path)
                digest = self._check(path)
            else:
                with atomic_path(path) as tmp:
                    download(self.url, tmp, size=self.size, md5=self.md5)
                    digest = self._check(tmp)
        except (DownloadError, ImageReadError) as e:
            raise self.unavailable(dataset, raw_dir, str(e)) from None
        recorded = recorded_sha256(path)
        if recorded is not None and recorded != digest:
            raise self.unavailable(dataset, raw_dir, f"{path}: sha256 {digest} differs from "
                                   f"{recorded} recorded in {sidecar(path)} (the file changed)")
        write_text(sidecar(path), f"{digest}  {path.name}\n")
        log.info("%s: %s verified (sha256 %s)", dataset, path, digest)

    def open(self, dataset: str, raw_dir: Path) -> PlacesTar:
        """The fetched tar for reading; fails when it is absent or changed in size."""
        path = self.path(raw_dir)
        if recorded_sha256(path) is None:
            raise self.unavailable(dataset, raw_dir, f"{path} was not fetched (no "
                                   f"{sidecar(path).name}; run the fetch step)")
        if self.size is not None and path.stat().st_size != self.size:
            raise self.unavailable(dataset, raw_dir, f"{path} is {path.stat().st_size:,} "
                                   f"bytes, expected {self.size:,}")
        return PlacesTar(path, self.folder)

    def upstream(self, raw_dir: Path) -> dict[str, Any]:
        return {"archive": self.filename, "md5": self.md5,
                "sha256": recorded_sha256(self.path(raw_dir))}


class PlacesTar:
    """The JPEGs directly below `folder/` in an uncompressed tar, by member name."""

    def __init__(self, path: Path, folder: str):
        self.path, self.folder = Path(path), folder
        self._index: dict[str, tuple[int, int]] | None = None

    def _members(self) -> dict[str, tuple[int, int]]:
        if self._index is None:
            index = {}
            try:
                with tarfile.open(self.path, mode="r:") as tf:
                    for info in tf:
                        name = info.name.removeprefix("./")
                        if (info.isfile() and name.startswith(self.folder + "/")
                                and name.count("/") == 1
                                and name.lower().endswith((".jpg", ".jpeg"))):
                            index[name] = (info.offset_data, info.size)
            except (tarfile.TarError, OSError) as e:
                raise DownloadError(f"{self.path}: not a readable uncompressed tar ({e})") from None
            self._index = index
        return self._index

    def names(self) -> list[str]:
        """Member names (`val_256/Places365_val_00000001.jpg`), sorted."""
        return sorted(self._members())

    def read(self, name: str) -> np.ndarray:
        """The member decoded to uint8 (H, W, 3); errors name the tar and the member."""
        where = f"{self.path} member {name!r}"
        try:
            offset, size = self._members()[name]
        except KeyError:
            raise ImageReadError(f"{where}: not in the archive") from None
        fd = os.open(self.path, os.O_RDONLY)
        try:
            data = os.pread(fd, size, offset)
        finally:
            os.close(fd)
        if len(data) != size:
            raise ImageReadError(f"{where}: truncated ({len(data)} of {size} bytes)")
        return read_image(data, name=where)


ARCHIVE = PlacesArchive()
