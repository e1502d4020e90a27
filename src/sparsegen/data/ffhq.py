"""FFHQ (NVlabs/ffhq-dataset): 70,000 aligned 1024x1024 PNGs, StyleNAT's face dataset.

Upstream layout (what the official `download_ffhq.py --json --images` leaves in its folder):
`ffhq-dataset-v2.json` (metadata: per image `image.file_path`, `file_url`, `file_size`,
`file_md5`, and the Flickr licence under `metadata`) and `images1024x1024/<group>/<index>.png`
(group = index rounded down to 1000, both 5 digits). Fetch downloads what is missing from
Google Drive, verifies every PNG's size and MD5 against the metadata, and records what it
verified in a sidecar (path, size, mtime, MD5), so a re-run only re-checks changed files.
Prepare uses only verified files, resized with PIL Lanczos (StyleSwin's FFHQ-256; 1024 as is).
The per-image licence, author and Flickr URL go into the manifest (CC BY needs attribution).
"""

from __future__ import annotations

import csv
import io
import json
import logging
import urllib.parse
from collections.abc import Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

from sparsegen.data.archives import DatasetUnavailable, recorded_sha256, sidecar
from sparsegen.data.prepare import Item, lanczos
from sparsegen.download import DownloadError, check_file, download
from sparsegen.io import atomic_path, read_image, write_text
from sparsegen.progress import Progress, format_size

log = logging.getLogger(__name__)

METADATA = "ffhq-dataset-v2.json"
IMAGES = "images1024x1024"
VERIFIED = "images1024x1024.verified.tsv"
DATASET_LICENCE = "dataset and metadata: CC BY-NC-SA 4.0 (NVIDIA)"
THREADS = 8          # concurrent downloads / checksum workers
SAVE_EVERY = 500     # verified files between sidecar writes (progress survives interruption)


class _Stop(DownloadError):
    """A failure every further download would repeat: no connection, or Google Drive sending
    a quota or confirmation page instead of the file."""


@dataclass(frozen=True)
class Entry:
    """One image of the metadata JSON, reduced to what fetch and prepare use."""

    key: str
    path: str      # relative to the raw folder: images1024x1024/xxxxx/yyyyy.png
    url: str
    size: int
    md5: str
    licence: str
    licence_url: str
    author: str
    photo_url: str
    category: str


def _entry(key: str, item: Mapping[str, Any], where: Path) -> Entry:
    try:
        image, meta = item["image"], item["metadata"]
        return Entry(key=key, path=image["file_path"], url=image["file_url"],
                     size=int(image["file_size"]), md5=image["file_md5"],
                     licence=meta["license"], licence_url=meta.get("license_url", ""),
                     author=meta.get("author", ""), photo_url=meta.get("photo_url", ""),
                     category=item.get("category", ""))
    except (KeyError, TypeError, ValueError) as e:
        raise DatasetUnavailable(f"{where}: entry {key!r} lacks the official fields "
                                 f"(image.file_path/file_url/file_size/file_md5, "
                                 f"metadata.license): {e!r}") from None


# Parts of an entry nothing here reads; dropped while parsing (the full JSON is ~270 MB).
_UNUSED = ("thumbnail", "in_the_wild", "face_landmarks", "face_quad", "face_rect")


def _slim(obj: dict[str, Any]) -> dict[str, Any]:
    for key in _UNUSED:
        obj.pop(key, None)
    return obj


def read_metadata(path: Path) -> list[Entry]:
    """Entries of the official metadata JSON, in index order."""
    try:
        data = json.loads(path.read_bytes(), object_hook=_slim)
    except json.JSONDecodeError as e:
        raise DatasetUnavailable(f"{path}: not valid JSON ({e})") from None
    if not isinstance(data, dict) or not data:
        raise DatasetUnavailable(f"{path}: expected an object of image entries")
    entries = [_entry(k, v, path) for k, v in data.items()]
    for e in entries:
        p = Path(e.path)
        if p.is_absolute() or ".." in p.parts or not e.path.startswith(IMAGES + "/"):
            raise DatasetUnavailable(f"{path}: entry {e.key!r} has file_path {e.path!r}, "
                                     f"expected {IMAGES}/<group>/<index>.png")
    return entries


def _drive_id(url: str) -> str | None:
    parsed = urllib.parse.urlparse(url)
    if "drive.google.com" not in parsed.netloc:
        return None
    return (urllib.parse.parse_qs(parsed.query).get("id") or [None])[0]


def _direct(url: str) -> str:
    """A Google Drive `uc?id=` link as a direct download that skips the virus-scan page."""
    file_id = _drive_id(url)
    return (f"https://drive.google.com/uc?export=download&confirm=t&id={file_id}"
            if file_id else url)


def _fetch_file(url: str, dest: Path, size: int | None, md5: str | None, *,
                progress: bool = False) -> str:
    """Download, verify size and MD5; return the sha256. Bad bytes raise DownloadError, a
    failed connection or an HTML page from Drive raise _Stop. No progress of its own unless
    asked: the image fetch reports one overall progress."""
    with atomic_path(dest) as tmp:
        try:
            download(_direct(url), tmp, progress=progress, desc=f"download {dest.name}")
        except DownloadError as e:
            raise _Stop(str(e)) from None
        try:
            return check_file(tmp, size=size, md5=md5)
        except DownloadError as e:
            head = tmp.read_bytes()[:65536] if tmp.stat().st_size < 65536 else b""
            if b"<html" in head.lower():
                title = "Quota exceeded" if b"Quota exceeded" in head else "an HTML page"
                raise _Stop(f"{url}: Google Drive sent {title} instead of {dest.name}") from None
            raise DownloadError(f"{url}: {e}".replace(str(tmp), str(dest))) from None


@dataclass(frozen=True)
class _Stamp:
    size: int
    mtime_ns: int
    md5: str


def _stamp(path: Path, md5: str) -> _Stamp:
    st = path.stat()
    return _Stamp(st.st_size, st.st_mtime_ns, md5)


def _read_verified(path: Path) -> dict[str, _Stamp]:
    if not path.is_file():
        return {}
    out = {}
    with open(path, newline="") as f:
        for row in csv.DictReader(f, delimiter="\t"):
            out[row["path"]] = _Stamp(int(row["size"]), int(row["mtime_ns"]), row["md5"])
    return out


def _write_verified(path: Path, stamps: Mapping[str, _Stamp]) -> None:
    buf = io.StringIO()
    buf.write("path\tsize\tmtime_ns\tmd5\n")
    for rel in sorted(stamps):
        s = stamps[rel]
        buf.write(f"{rel}\t{s.size}\t{s.mtime_ns}\t{s.md5}\n")
    write_text(path, buf.getvalue())


def _unchanged(stamp: _Stamp | None, path: Path, entry: Entry) -> bool:
    """Whether the sidecar shows `path` verified against `entry` and untouched since."""
    if stamp is None or (stamp.size, stamp.md5) != (entry.size, entry.md5):
        return False
    try:
        st = path.stat()
    except FileNotFoundError:
        return False
    return (st.st_size, st.st_mtime_ns) == (stamp.size, stamp.mtime_ns)


@dataclass(frozen=True)
class FfhqSource:
    """FFHQ 1024x1024 PNGs plus the official metadata JSON (hosted on Google Drive)."""

    name: str = "ffhq"
    metadata_url: str = "https://drive.google.com/uc?id=16N0RV4fHI6joBuKbQAoG34V_cQk7vxSA"
    metadata_size: int | None = 267_793_842   # download_ffhq.py json_spec
    metadata_md5: str | None = "425ae20f06a4da1d4dc0f46d40ba5fd6"
    n_images: int | None = 70_000
    synthetic = False

    # --- where things are -------------------------------------------------------------------

    def metadata(self, raw_dir: Path) -> Path:
        return raw_dir / METADATA

    def raw_files(self, raw_dir: Path) -> list[Path]:
        return [self.metadata(raw_dir), raw_dir / IMAGES, raw_dir / VERIFIED]

    def unavailable(self, dataset: str, raw_dir: Path, reason: str) -> DatasetUnavailable:
        raw = raw_dir.absolute()
        size = f"{self.metadata_size:,} bytes" if self.metadata_size else "size not published"
        return DatasetUnavailable(
            f"dataset {dataset!r}: FFHQ is not available: {reason}\n"
            f"FFHQ is hosted on Google Drive, whose download quota often blocks scripted "
            f"downloads for hours (\"Quota exceeded\"): run the fetch again later, or place the "
            f"files by hand and run it again (it then only verifies them):\n"
            f"  {raw / METADATA}\n"
            f"      the metadata JSON ({size}, md5 {self.metadata_md5}): {self.metadata_url}\n"
            f"  {raw / IMAGES}/00000/00000.png ... {IMAGES}/69000/69999.png\n"
            f"      the 70,000 aligned PNGs (89.1 GB), as the official download script writes "
            f"them (`python download_ffhq.py --json --images` run inside {raw}), or the "
            f"Drive folder {IMAGES} (also offered zipped under `zips`) unpacked there.\n"
            f"Copies from mirrors (e.g. Kaggle) work when laid out the same way: every PNG is "
            f"checked against the MD5 and size in the metadata JSON.\n"
            f"Terms: images under their Flickr licences (CC BY 2.0, CC BY-NC 2.0, PDM, CC0, "
            f"US Gov works; listed per image in the manifest); {DATASET_LICENCE}."
        )

    # --- fetch ------------------------------------------------------------------------------

    def _fetch_metadata(self, dataset: str, raw_dir: Path) -> list[Entry]:
        path = self.metadata(raw_dir)
        try:
            if path.exists():
                digest = check_file(path, size=self.metadata_size, md5=self.metadata_md5)
            else:
                log.info("%s: downloading %s", dataset, METADATA)
                digest = _fetch_file(self.metadata_url, path, self.metadata_size,
                                     self.metadata_md5, progress=True)
        except DownloadError as e:
            raise self.unavailable(dataset, raw_dir, str(e)) from None
        recorded = recorded_sha256(path)
        if recorded is not None and recorded != digest:
            raise self.unavailable(dataset, raw_dir, f"{path}: sha256 {digest} differs from "
                                   f"{recorded} recorded in {sidecar(path)} (the file changed)")
        write_text(sidecar(path), f"{digest}  {path.name}\n")
        entries = read_metadata(path)
        if self.n_images is not None and len(entries) != self.n_images:
            raise self.unavailable(dataset, raw_dir, f"{path} lists {len(entries):,} images, "
                                   f"expected {self.n_images:,}")
        return entries

    def fetch(self, dataset: str, raw_dir: Path) -> None:
        """Get the metadata and every PNG; verify each (size + MD5) unless the sidecar shows it
        verified and unchanged. Keeps going past bad files and lists them at the end."""
        raw_dir = Path(raw_dir)
        entries = self._fetch_metadata(dataset, raw_dir)
        verified_path = raw_dir / VERIFIED
        stamps = _read_verified(verified_path)
        todo = [e for e in entries if not _unchanged(stamps.get(e.path), raw_dir / e.path, e)]
        stamps = {e.path: stamps[e.path] for e in entries if e.path in stamps}
        log.info("%s: %d of %d images verified earlier; checking %d", dataset,
                 len(entries) - len(todo), len(entries), len(todo))

        def one(e: Entry) -> tuple[Entry, str | None]:
            dest = raw_dir / e.path
            if dest.exists():
                try:
                    check_file(dest, size=e.size, md5=e.md5)
                except DownloadError as err:
                    return e, f"{err}; delete it to download it again, or replace it"
                return e, None
            try:
                _fetch_file(e.url, dest, e.size, e.md5)
            except _Stop:
                raise
            except DownloadError as err:
                return e, str(err)
            return e, None

        failures: list[str] = []
        done = 0
        size_done, size_total = 0, format_size(sum(e.size for e in todo))
        pool = ThreadPoolExecutor(THREADS)
        try:
            # One progress for all files (the per-file downloads show none): images and bytes.
            with Progress(len(todo), f"fetch {dataset}", unit="img") as bar:
                for e, error in pool.map(one, todo):
                    if error is None:
                        stamps[e.path] = _stamp(raw_dir / e.path, e.md5)
                        done += 1
                        if done % SAVE_EVERY == 0:
                            _write_verified(verified_path, stamps)
                    else:
                        stamps.pop(e.path, None)
                        failures.append(error)
                    size_done += e.size
                    status: dict[str, object] = {
                        "data": f"{format_size(size_done)}/{size_total}"}
                    if failures:
                        status["failed"] = len(failures)
                    bar.set_postfix(status)
                    bar.update(1)
        except _Stop as q:
            raise self.unavailable(dataset, raw_dir, f"{q} ({done} file(s) verified before "
                                   f"that are kept and recorded)") from None
        finally:
            pool.shutdown(wait=True, cancel_futures=True)
            _write_verified(verified_path, stamps)
        if failures:
            shown = "\n  ".join(failures[:10])
            more = f"\n  ... and {len(failures) - 10} more" if len(failures) > 10 else ""
            raise self.unavailable(dataset, raw_dir, f"{len(failures)} image file(s) failed "
                                   f"verification:\n  {shown}{more}")
        log.info("%s: all %d images verified", dataset, len(entries))

    def upstream(self, raw_dir: Path) -> dict[str, Any]:
        path = self.metadata(Path(raw_dir))
        return {"metadata": METADATA, "metadata_sha256": recorded_sha256(path),
                "metadata_md5": self.metadata_md5, "images": IMAGES,
                "verified_by": "file size and MD5 from the metadata (download_ffhq.py fields)"}

    # --- prepare ----------------------------------------------------------------------------

    @contextmanager
    def items(self, dataset: str, settings: Mapping[str, Any],
              raw_dir: Path) -> Iterator[list[Item]]:
        """Every verified PNG; 'size' 1024 keeps the pixels, others use PIL Lanczos."""
        raw_dir = Path(raw_dir)
        path = self.metadata(raw_dir)
        if not path.is_file():
            raise self.unavailable(dataset, raw_dir, f"{path} not found (run the fetch step)")
        entries = read_metadata(path)
        stamps = _read_verified(raw_dir / VERIFIED)
        bad = [e.path for e in entries if not _unchanged(stamps.get(e.path), raw_dir / e.path, e)]
        if bad:
            raise self.unavailable(dataset, raw_dir, f"{len(bad)} image(s) missing, changed or "
                                   f"not verified since the fetch step (first: {bad[0]}); run "
                                   f"the fetch step again")
        yield [Item(id=e.key.zfill(5), name=e.path, source=e.path,
                    licence=f"{e.licence} ({e.licence_url})" if e.licence_url else e.licence,
                    load=partial(read_image, raw_dir / e.path), fit=lanczos,
                    extra={"author": e.author, "photo_url": e.photo_url,
                           "ffhq_category": e.category})
               for e in entries]


SOURCE = FfhqSource()
