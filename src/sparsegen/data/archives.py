"""Real datasets published as one zip archive: fetch, verify, and read images straight from it.

The fetch step downloads the archive (or keeps a copy that verifies), checks its size where it is
published, checks that it opens and holds the expected images, and records the sha256 it computed
in a `<archive>.sha256` sidecar (`sha256sum -c` format) so a later fetch notices a changed file.
Prepare reads members from the zip without extracting it, or from an already-extracted folder.
"""

from __future__ import annotations

import hashlib
import logging
import re
import threading
import zipfile
import zlib
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from sparsegen.data.prepare import Item
from sparsegen.download import DownloadError, check_file, download
from sparsegen.io import ImageReadError, atomic_path, read_image, write_text

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


class DatasetUnavailable(RuntimeError):
    """A dataset's raw files are missing or fail verification; the message says how to get them."""


def sidecar(archive: Path) -> Path:
    return archive.with_name(archive.name + ".sha256")


def recorded_sha256(archive: Path) -> str | None:
    side = sidecar(archive)
    return side.read_text().split()[0] if side.is_file() else None


def _record_sha256(archive: Path, digest: str) -> None:
    write_text(sidecar(archive), f"{digest}  {archive.name}\n")


def sample_id(relative: str) -> str:
    """Filesystem-safe id of an image path below the archive's top folder.

    'COCO_train2014_000000000009.jpg' -> 'COCO_train2014_000000000009';
    'Impressionism/claude-monet_x.jpg' -> 'Impressionism__claude-monet_x'. Lossy or long names
    get 8 hex digits of the name's sha256 so ids stay unique."""
    plain = relative.rsplit(".", 1)[0].replace("/", "__")
    safe = _UNSAFE.sub("-", plain)
    if safe != plain or len(safe) > 100:
        safe = f"{safe[:80]}-{hashlib.sha256(relative.encode()).hexdigest()[:8]}"
    return safe


class _ZipMembers:
    """Read members of one zip from several threads (one handle per thread)."""

    def __init__(self, path: Path):
        self.path = path
        self._local = threading.local()
        self._handles: list[zipfile.ZipFile] = []
        self._lock = threading.Lock()

    def names(self) -> list[str]:
        with zipfile.ZipFile(self.path) as zf:
            return [info.filename for info in zf.infolist() if not info.is_dir()]

    def read(self, member: str) -> bytes:
        zf = getattr(self._local, "zf", None)
        if zf is None:
            zf = self._local.zf = zipfile.ZipFile(self.path)
            with self._lock:
                self._handles.append(zf)
        try:
            return zf.read(member)
        except (zipfile.BadZipFile, zlib.error, EOFError) as e:
            raise ImageReadError(f"{self.where(member)}: corrupt zip member ({e})") from None

    def where(self, member: str) -> str:
        return f"{self.path} member {member!r}"

    def close(self) -> None:
        for zf in self._handles:
            zf.close()


class _FolderMembers:
    """The same interface over an extracted archive: names relative to `root`, posix style."""

    def __init__(self, root: Path, folder: str):
        self.root, self.folder = root, folder

    def names(self) -> list[str]:
        return [p.relative_to(self.root).as_posix()
                for p in (self.root / self.folder).rglob("*") if p.is_file()]

    def read(self, member: str) -> bytes:
        return (self.root / member).read_bytes()

    def where(self, member: str) -> str:
        return str(self.root / member)

    def close(self) -> None:
        pass


@dataclass(frozen=True)
class ArchiveSource:
    """One published zip: where it lives, how it is laid out, under which terms."""

    name: str
    title: str
    filename: str
    folder: str            # top folder inside the archive holding the images
    depth: int             # path components below `folder` (file only: 1; <Style>/file: 2)
    url: str
    contents: str          # what the archive holds, for the where-to-get-it message
    licence: str
    size: int | None = None        # bytes, where published
    n_images: int | None = None    # where published
    mirrors: tuple[str, ...] = ()  # Google Drive mirrors need a browser
    columns: Callable[[str], dict[str, str]] | None = None  # extra manifest columns per image
    synthetic = False

    def archive(self, raw_dir: Path) -> Path:
        return raw_dir / self.filename

    def extracted(self, raw_dir: Path) -> Path:
        return raw_dir / self.folder

    def raw_files(self, raw_dir: Path) -> list[Path]:
        """The archive; the extracted folder instead when only that is present."""
        archive, folder = self.archive(raw_dir), self.extracted(raw_dir)
        return [folder] if not archive.exists() and folder.is_dir() else [archive]

    def images(self, names: list[str]) -> list[str]:
        """Members laid out as `<folder>/<depth-1 dirs>/<file>.<image suffix>`, sorted."""
        return sorted(n for n in names
                      if n.startswith(self.folder + "/") and n.count("/") == self.depth
                      and n.lower().endswith(IMAGE_SUFFIXES))

    def unavailable(self, dataset: str, raw_dir: Path, reason: str) -> DatasetUnavailable:
        archive = self.archive(raw_dir).absolute()
        size = f"{self.size:,} bytes" if self.size else "size not published"
        mirrors = "".join(f"\n  mirror (needs a browser): {m}" for m in self.mirrors)
        checks = ", ".join(
            (["its size"] if self.size else []) + ["that it opens as a zip"]
            + [f"that it holds {self.n_images:,} images" if self.n_images else "its images"])
        return DatasetUnavailable(
            f"dataset {dataset!r}: {self.title} is not available: {reason}\n"
            f"Download it by hand:\n  {self.url}{mirrors}\n  ({size}; {self.contents})\n"
            f"and save it as\n  {archive}\n"
            f"(or extract it there so that {self.extracted(raw_dir).absolute()}/ holds the "
            f"images), then run the pipeline again: its fetch step checks {checks}, and "
            f"records the sha256 in {sidecar(archive).name}.\nTerms: {self.licence}"
        )

    def _check_archive(self, path: Path) -> int:
        """Number of images in the zip at `path`; raises DownloadError when it does not fit."""
        try:
            with zipfile.ZipFile(path) as zf:
                count = len(self.images(zf.namelist()))
        except (zipfile.BadZipFile, OSError) as e:
            raise DownloadError(f"{path}: not a readable zip archive ({e})") from None
        if count == 0 or (self.n_images is not None and count != self.n_images):
            expected = f"{self.n_images:,}" if self.n_images else "some"
            raise DownloadError(f"{path}: {count} images under {self.folder}/, "
                                f"expected {expected}")
        return count

    def fetch(self, dataset: str, raw_dir: Path) -> None:
        """Download and verify the archive; keep a present copy that verifies."""
        archive = self.archive(raw_dir)
        if not archive.exists() and self.extracted(raw_dir).is_dir():
            count = len(self.images(_FolderMembers(raw_dir, self.folder).names()))
            if count == 0:
                raise self.unavailable(dataset, raw_dir, f"{self.extracted(raw_dir)} holds no "
                                       f"images")
            log.info("%s: using the extracted folder %s (%d images)", dataset,
                     self.extracted(raw_dir), count)
            return
        if archive.exists():
            log.info("%s: verifying the present %s", dataset, archive)
            try:
                digest = check_file(archive, size=self.size)
                count = self._check_archive(archive)
            except DownloadError as e:
                raise self.unavailable(dataset, raw_dir, f"{e}; delete it and fetch again, "
                                       f"or replace it with a good copy") from None
            recorded = recorded_sha256(archive)
            if recorded is not None and recorded != digest:
                raise self.unavailable(
                    dataset, raw_dir, f"{archive}: sha256 {digest} differs from {recorded} "
                    f"recorded in {sidecar(archive)} when it was fetched (the file changed)")
            if recorded is None:
                _record_sha256(archive, digest)
            log.info("%s: %s verified (%d images, sha256 %s)", dataset, archive, count, digest)
            return
        errors = []
        for url in (self.url, *self.mirrors):
            if "drive.google.com" in url:
                continue
            try:
                with atomic_path(archive) as tmp:
                    digest = download(url, tmp, size=self.size)
                    count = self._check_archive(tmp)
            except DownloadError as e:
                errors.append(str(e))
                continue
            _record_sha256(archive, digest)
            log.info("%s: fetched %s (%d images, sha256 %s)", dataset, archive, count, digest)
            return
        raise self.unavailable(dataset, raw_dir, "; ".join(errors))

    def upstream(self, raw_dir: Path) -> dict[str, Any]:
        archive = self.archive(raw_dir)
        if archive.exists():
            return {"archive": self.filename, "bytes": archive.stat().st_size,
                    "sha256": recorded_sha256(archive)}
        return {"folder": self.folder}

    @contextmanager
    def items(self, dataset: str, settings: Mapping[str, Any],
              raw_dir: Path) -> Iterator[list[Item]]:
        """The archive's images as prepare items; members are read lazily, from any thread."""
        archive = self.archive(raw_dir)
        if archive.exists():
            if self.size is not None and (found := archive.stat().st_size) != self.size:
                raise self.unavailable(dataset, raw_dir, f"{archive} is {found:,} bytes, "
                                       f"expected {self.size:,} (truncated or wrong file)")
            try:
                members: _ZipMembers | _FolderMembers = _ZipMembers(archive)
                names = self.images(members.names())
            except zipfile.BadZipFile as e:
                raise self.unavailable(dataset, raw_dir, f"{archive}: not a readable zip "
                                       f"archive ({e})") from None
        elif self.extracted(raw_dir).is_dir():
            members = _FolderMembers(raw_dir, self.folder)
            names = self.images(members.names())
        else:
            raise self.unavailable(dataset, raw_dir, f"{archive} not found")
        if not names:
            layout = f"{self.folder}/" + "<folder>/" * (self.depth - 1) + "<image>.jpg"
            raise self.unavailable(dataset, raw_dir, f"no images laid out as {layout} in "
                                   f"{archive if archive.exists() else raw_dir}")

        def load(member: str) -> np.ndarray:
            return read_image(members.read(member), name=members.where(member))

        relative = [n[len(self.folder) + 1:] for n in names]
        ids = [sample_id(r) for r in relative]
        try:
            yield [Item(id=i, name=n, source=n, licence=self.licence, load=partial(load, n),
                        extra=self.columns(r) if self.columns else {})
                   for i, n, r in zip(ids, names, relative, strict=True)]
        finally:
            members.close()
