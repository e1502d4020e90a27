"""LSUN church_outdoor, train split (fyu/lsun): StyleNAT's LSUN Church dataset.

Published as one zip holding an LMDB database (`data.mdb`, `lock.mdb`): keys are the images'
hex ids, values the encoded images, resized upstream to short side 256 (JPEG quality 75 per
the fyu/lsun README; its export script names them .webp, so any format PIL decodes is read).
LMDB needs a real file, so fetch extracts the database beside the zip; prepare reads it with
the `lmdb` package and applies torchvision Resize + CenterCrop (how StyleSwin/StyleNAT load
LSUN; at 256 only the crop acts). No checksum is published: the sha256 computed at the first
fetch is recorded and checked afterwards.
"""

from __future__ import annotations

import logging
import re
import shutil
import zipfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from functools import partial
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np

from sparsegen.data.archives import DatasetUnavailable, recorded_sha256, sidecar
from sparsegen.data.prepare import Item, resize_centre_crop
from sparsegen.download import DownloadError, check_file, download
from sparsegen.io import atomic_dir, atomic_path, read_image, write_text

log = logging.getLogger(__name__)

LMDB_PIN = "lmdb==3.0.0"
_KEY = re.compile(r"[0-9a-f]{1,64}")


def _lmdb() -> Any:
    try:
        import lmdb
    except ImportError:
        raise DatasetUnavailable(f"LSUN is an LMDB database: reading it needs the `lmdb` "
                                 f"package (pip install {LMDB_PIN})") from None
    return lmdb


def _open(folder: Path) -> Any:
    """The LMDB environment in `folder`, read-only and without a lock file (many readers)."""
    lmdb = _lmdb()
    try:
        return lmdb.open(str(folder), readonly=True, lock=False, readahead=False)
    except lmdb.Error as e:
        raise DatasetUnavailable(f"{folder}: not a readable LMDB database ({e})") from None


class _Reader:
    """Values by key from one LMDB environment, from any thread (one read txn per get)."""

    def __init__(self, folder: Path):
        self.folder = folder
        self.env = _open(folder)

    def keys(self) -> list[bytes]:
        with self.env.begin(write=False) as txn:
            return list(txn.cursor().iternext(keys=True, values=False))

    def read(self, key: bytes) -> bytes:
        with self.env.begin(write=False, buffers=False) as txn:
            value = txn.get(key)
        if value is None:
            raise DatasetUnavailable(f"{self.folder}: key {key!r} vanished from the database")
        return value

    def close(self) -> None:
        self.env.close()


def _load(reader: _Reader, key: bytes) -> np.ndarray:
    return read_image(reader.read(key), name=f"{reader.folder} key {key.decode()}")


@dataclass(frozen=True)
class LsunSource:
    """One LSUN scene category's LMDB zip as published at dl.yf.io."""

    name: str
    category: str
    split: str = "train"
    n_images: int | None = None    # entries in the database where known
    base_url: str = "http://dl.yf.io/lsun/scenes/"   # fyu/lsun download.py
    licence: str = ("LSUN (Yu et al. 2015): images collected from the web, copyright of their "
                    "owners; no licence published, research use")
    synthetic = False

    @property
    def folder(self) -> str:
        return f"{self.category}_{self.split}_lmdb"

    @property
    def filename(self) -> str:
        return f"{self.folder}.zip"

    @property
    def url(self) -> str:
        return self.base_url + self.filename

    def archive(self, raw_dir: Path) -> Path:
        return raw_dir / self.filename

    def database(self, raw_dir: Path) -> Path:
        return raw_dir / self.folder

    def raw_files(self, raw_dir: Path) -> list[Path]:
        """The extracted database, and the zip it came from where present."""
        archive, db = self.archive(raw_dir), self.database(raw_dir)
        return [db] + ([archive] if archive.exists() or not db.is_dir() else [])

    def unavailable(self, dataset: str, raw_dir: Path, reason: str) -> DatasetUnavailable:
        count = f"{self.n_images:,} images" if self.n_images else "its images"
        return DatasetUnavailable(
            f"dataset {dataset!r}: LSUN {self.category} ({self.split}) is not available: "
            f"{reason}\nDownload it by hand:\n  {self.url}\n  (size not published; or with "
            f"`python download.py -c {self.category}` from github.com/fyu/lsun, which also "
            f"fetches the val zip, not needed here)\n"
            f"and save it as\n  {self.archive(raw_dir).absolute()}\n"
            f"or unzip it so that {self.database(raw_dir).absolute()}/data.mdb exists, then run "
            f"the pipeline again: its fetch step extracts the database, checks that it holds "
            f"{count}, and records the zip's sha256 in {sidecar(self.archive(raw_dir)).name}.\n"
            f"Terms: {self.licence}"
        )

    # --- fetch ------------------------------------------------------------------------------

    def _extract(self, archive: Path, raw_dir: Path) -> None:
        """Unpack the database files (the folder holding data.mdb) to `database(raw_dir)`."""
        try:
            with zipfile.ZipFile(archive) as zf:
                mdbs = [n for n in zf.namelist() if PurePosixPath(n).name == "data.mdb"]
                if len(mdbs) != 1:
                    raise DownloadError(f"{archive}: expected one data.mdb, found {len(mdbs)}")
                parent = PurePosixPath(mdbs[0]).parent
                members = [n for n in zf.namelist()
                           if PurePosixPath(n).parent == parent and not n.endswith("/")]
                with atomic_dir(self.database(raw_dir)) as tmp:
                    for member in members:
                        with zf.open(member) as src, open(tmp / PurePosixPath(member).name,
                                                          "wb") as dst:
                            shutil.copyfileobj(src, dst, 1 << 24)
        except (zipfile.BadZipFile, OSError) as e:
            raise DownloadError(f"{archive}: not a readable zip archive ({e})") from None

    def _check_database(self, db: Path) -> int:
        env = _open(db)
        try:
            entries = env.stat()["entries"]
        finally:
            env.close()
        if entries == 0 or (self.n_images is not None and entries != self.n_images):
            expected = f"{self.n_images:,}" if self.n_images else "some"
            raise DownloadError(f"{db}: {entries:,} images in the database, expected {expected}")
        return entries

    def fetch(self, dataset: str, raw_dir: Path) -> None:
        """Download the zip unless present, verify its recorded sha256, extract, count."""
        raw_dir = Path(raw_dir)
        _lmdb()
        archive, db = self.archive(raw_dir), self.database(raw_dir)
        try:
            if archive.exists():
                digest = check_file(archive)
                recorded = recorded_sha256(archive)
                if recorded is not None and recorded != digest:
                    raise DownloadError(f"{archive}: sha256 {digest} differs from {recorded} "
                                        f"recorded in {sidecar(archive)} when it was fetched "
                                        f"(the file changed)")
            elif not (db / "data.mdb").is_file():
                log.info("%s: downloading %s", dataset, self.url)
                with atomic_path(archive) as tmp:
                    digest = download(self.url, tmp)
                    with zipfile.ZipFile(tmp):
                        pass
            else:
                digest = None
            if digest is not None:
                write_text(sidecar(archive), f"{digest}  {archive.name}\n")
                if not (db / "data.mdb").is_file():
                    log.info("%s: extracting %s", dataset, db)
                    self._extract(archive, raw_dir)
            count = self._check_database(db)
        except (DownloadError, zipfile.BadZipFile) as e:
            raise self.unavailable(dataset, raw_dir, str(e)) from None
        log.info("%s: %s holds %d images", dataset, db, count)

    def upstream(self, raw_dir: Path) -> dict[str, Any]:
        archive = self.archive(Path(raw_dir))
        return {"archive": self.filename, "url": self.url, "sha256": recorded_sha256(archive),
                "database": self.folder}

    # --- prepare ----------------------------------------------------------------------------

    @contextmanager
    def items(self, dataset: str, settings: Mapping[str, Any],
              raw_dir: Path) -> Iterator[list[Item]]:
        """Every database entry, decoded lazily from any thread; short side to size, centre
        crop."""
        db = self.database(Path(raw_dir))
        if not (db / "data.mdb").is_file():
            raise self.unavailable(dataset, Path(raw_dir), f"{db}/data.mdb not found (run the "
                                   f"fetch step)")
        reader = _Reader(db)
        try:
            keys = reader.keys()
            bad = [k for k in keys if not _KEY.fullmatch(k.decode("ascii", "replace"))]
            if bad:
                raise DatasetUnavailable(f"{db}: key {bad[0]!r} is not a hex image id "
                                         f"(not an LSUN database?)")
            yield [Item(id=k.decode(), name=k.decode(), source=f"{self.folder}:{k.decode()}",
                        licence=self.licence, load=partial(_load, reader, k),
                        fit=resize_centre_crop)
                   for k in keys]
        finally:
            reader.close()


# 126,227 train images: clean-fid's LSUN church "trainfull" count.
CHURCH_OUTDOOR = LsunSource(name="lsun_church_outdoor", category="church_outdoor",
                            n_images=126_227)
