"""The 60 content/style pairs of Deep Photo Style Transfer (Luan et al. 2017): DynaST's
photorealistic style-transfer test set (the "test dataset in [59]", WCT2's).

Upstream: github.com/luanfujun/deep-photo-styletransfer, `examples/input/in<n>.png` (content)
and `examples/style/tar<n>.png` (style), n = 1..60, pinned at commit COMMIT (the commit quoted
in its issue #8, 2017-03-27, where pair 23 is one image twice: the authors use it with two
different segmentation masks). Fetch downloads the 120 files from raw.githubusercontent.com
into `input/` and `style/` of the raw folder, checks the two whose sha256 issue #8 publishes,
and records every file's sha256 in the receipt `SHA256SUMS`; later fetches and every prepare
check against it.

Items: the 60 content images, all split test, id `in<n>`; aux `style` (`<id>_style.png`) holds
the style image's file bytes, unchanged (its own size); `exemplar` is "" (the style image is not a
sample of the dataset).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

from sparsegen.data.archives import DatasetUnavailable
from sparsegen.data.deepfashion import RECEIPT, pin, read_receipt, verify_pinned
from sparsegen.data.prepare import Item
from sparsegen.download import DownloadError, check_file, download
from sparsegen.io import read_image
from sparsegen.provenance import sha256_file

log = logging.getLogger(__name__)

REPOSITORY = "luanfujun/deep-photo-styletransfer"
COMMIT = "97c35ef3c7176d1020de358f50927d114f0c8e04"
LICENCE = "academic and non-commercial use only (luanfujun/deep-photo-styletransfer README)"
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
# sha256 published in luanfujun/deep-photo-styletransfer#8 for the files at COMMIT.
ISSUE_8_SHA256 = "1889c0094c038a11f7cee6afb3bda075b33bbcea090086539f3db81534f85fec"


def content_file(n: int) -> str:
    return f"input/in{n}.png"


def style_file(n: int) -> str:
    return f"style/tar{n}.png"


@dataclass(frozen=True)
class DpstSource:
    """The DPST pairs at one pinned commit of the upstream repository."""

    name: str = "dpst_pairs"
    base_url: str = f"https://raw.githubusercontent.com/{REPOSITORY}/{COMMIT}/examples/"
    n_pairs: int = 60
    known_sha256: Mapping[str, str] = field(default_factory=lambda: {
        content_file(23): ISSUE_8_SHA256, style_file(23): ISSUE_8_SHA256})
    synthetic = False

    def files(self) -> list[str]:
        """The 2 x n_pairs files, relative to the raw folder (and to `base_url`)."""
        return [f(n) for n in range(1, self.n_pairs + 1) for f in (content_file, style_file)]

    def raw_files(self, raw_dir: Path) -> list[Path]:
        raw = Path(raw_dir)
        return [raw / "input", raw / "style", raw / RECEIPT]

    def unavailable(self, dataset: str, raw_dir: Path, reason: str) -> DatasetUnavailable:
        raw = raw_dir.absolute()
        return DatasetUnavailable(
            f"dataset {dataset!r}: the Deep Photo Style Transfer pairs are not available: "
            f"{reason}\nThe fetch step downloads them from\n  {self.base_url}"
            f"{{input/in<n>.png, style/tar<n>.png}}, n = 1..{self.n_pairs}\n"
            f"Without a connection, copy examples/input/ and examples/style/ of {REPOSITORY} "
            f"at commit {COMMIT} to\n  {raw / 'input'}/ and {raw / 'style'}/\nand run it again: "
            f"it then checks them and records their sha256 in {raw / RECEIPT}.\n"
            f"Terms: {LICENCE}")

    def _get(self, raw_dir: Path, rel: str) -> None:
        """Download one file unless present; check the published sha256 and the PNG signature."""
        dest = raw_dir / rel
        expected = self.known_sha256.get(rel)
        if dest.exists():
            check_file(dest, sha256=expected)
        else:
            download(self.base_url + rel, dest, sha256=expected, progress=False)
        with open(dest, "rb") as f:
            if f.read(len(PNG_SIGNATURE)) != PNG_SIGNATURE:
                raise DownloadError(f"{dest}: not a PNG file (from {self.base_url + rel}); "
                                    f"delete it and fetch again")

    def fetch(self, dataset: str, raw_dir: Path) -> None:
        """Download what is missing, check everything, pin every file in the receipt."""
        raw = Path(raw_dir)
        files = self.files()
        todo = sum(not (raw / rel).exists() for rel in files)
        log.info("%s: %d of %d files to download from %s", dataset, todo, len(files),
                 self.base_url)
        try:
            for rel in files:
                self._get(raw, rel)
            pin(raw, files)
        except DownloadError as e:
            raise self.unavailable(dataset, raw, str(e)) from None
        log.info("%s: %d files pinned in %s", dataset, len(files), raw / RECEIPT)

    def upstream(self, raw_dir: Path) -> dict[str, Any]:
        receipt = Path(raw_dir) / RECEIPT
        return {"repository": REPOSITORY, "commit": COMMIT, "files": len(self.files()),
                "receipt": RECEIPT,
                "receipt_sha256": sha256_file(receipt) if receipt.is_file() else None}

    @contextmanager
    def items(self, dataset: str, settings: Mapping[str, Any],
              raw_dir: Path) -> Iterator[list[Item]]:
        """The content images (split test), each with its style image's bytes as aux."""
        raw = Path(raw_dir)
        if not read_receipt(raw):
            raise self.unavailable(dataset, raw, f"nothing recorded in {raw / RECEIPT} "
                                   f"(run the fetch step)")
        try:
            verify_pinned(raw, self.files())
        except DownloadError as e:
            raise self.unavailable(dataset, raw, str(e)) from None
        yield [Item(id=f"in{n}", name=content_file(n), source=self.base_url + content_file(n),
                    licence=LICENCE, load=partial(read_image, raw / content_file(n)),
                    split="test", extra={"exemplar": ""},
                    aux={"style": ("_style.png", (raw / style_file(n)).read_bytes)})
               for n in range(1, self.n_pairs + 1)]


SOURCE = DpstSource()
