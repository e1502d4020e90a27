"""Fetch one URL to a file: streamed, with progress, verified, moved into place atomically.

Shared by dataset and weights fetching. Nothing in the pipeline calls this implicitly."""

from __future__ import annotations

import hashlib
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path, PurePosixPath

from sparsegen.io import atomic_path
from sparsegen.progress import Progress


class DownloadError(RuntimeError):
    """A download failed or its bytes do not match what was published."""


def file_digest(path: str | Path, algorithm: str = "sha256", chunk: int = 1 << 20) -> str:
    h = hashlib.new(algorithm)
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def check_file(path: str | Path, *, size: int | None = None, sha256: str | None = None,
               md5: str | None = None, sha256_prefix: str | None = None) -> str:
    """Verify a file against whatever was published; return its sha256.

    Raises DownloadError naming the file and the expected and found values."""
    path = Path(path)
    if not path.is_file():
        raise DownloadError(f"{path}: file not found")
    found_size = path.stat().st_size
    if size is not None and found_size != size:
        raise DownloadError(f"{path}: {found_size} bytes, expected {size} (truncated or other)")
    if md5 is not None and (found := file_digest(path, "md5")) != md5:
        raise DownloadError(f"{path}: md5 {found}, expected {md5}")
    digest = file_digest(path, "sha256")
    if sha256 is not None and digest != sha256:
        raise DownloadError(f"{path}: sha256 {digest}, expected {sha256}")
    if sha256_prefix is not None and not digest.startswith(sha256_prefix):
        raise DownloadError(f"{path}: sha256 {digest} does not start with {sha256_prefix}")
    return digest


def download(url: str, dest: str | Path, *, timeout: float = 60.0, size: int | None = None,
             sha256: str | None = None, md5: str | None = None,
             sha256_prefix: str | None = None, progress: bool = True,
             desc: str | None = None) -> str:
    """Download `url` (http, https or file://) to `dest`, verify it, return its sha256.

    The bytes land in a temporary file beside `dest` and replace it only after verification,
    so an interrupted or corrupt download never leaves a file that looks complete. Progress
    in bytes is shown as `desc` (default "download <last part of the URL>"); `progress=False`
    shows none, for a fetch of many files that reports its own overall progress."""
    dest = Path(dest)
    name = PurePosixPath(urllib.parse.urlparse(url).path).name or dest.name
    request = urllib.request.Request(url, headers={"User-Agent": "sparsegen"})
    try:
        with atomic_path(dest) as tmp:
            with urllib.request.urlopen(request, timeout=timeout) as response, \
                    open(tmp, "wb") as out:
                total = int(response.headers.get("Content-Length") or 0) or size
                with Progress(total, desc or f"download {name}", unit="B", unit_scale=True,
                              disable=not progress) as bar:
                    while chunk := response.read(1 << 20):
                        out.write(chunk)
                        bar.update(len(chunk))
            digest = check_file(tmp, size=size, sha256=sha256, md5=md5,
                                sha256_prefix=sha256_prefix)
    except (urllib.error.URLError, TimeoutError, ConnectionError) as e:
        raise DownloadError(f"{url}: download failed ({e})") from None
    except DownloadError as e:
        raise DownloadError(f"{url}: downloaded bytes do not verify: {e}") from None
    return digest
