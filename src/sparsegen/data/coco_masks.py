"""MS-COCO 2014 instance masks as hole masks (iLAT trains faces with 50% COCO object masks).

Upstream: http://images.cocodataset.org/annotations/annotations_trainval2014.zip (no checksum
published); fetch downloads it (or keeps a copy placed by hand), checks that it opens and holds
`annotations/instances_train2014.json`, and records its sha256 in a sidecar. Prepare reads that
JSON from the zip. Each annotation's `segmentation` is either polygons (`[[x1, y1, x2, y2, ...],
...]`, pixel coordinates, filled here with PIL) or run-length encoded (`{"counts", "size":
[h, w]}`, crowd regions): counts alternate background / object runs, starting with background,
over the pixels in column-major order; `counts` is a list of ints (uncompressed) or COCO's
compressed string (decoded here with numpy, no pycocotools).

Rows: one per kept annotation of the train split, id `coco_<annotation id>`, the mask as an L
image (255 = hole = the object) at the source image's size, resized to size x size (box filter,
then >= 50% -> hole). Kept: area / (image width * height) in [min_area, max_area], crowd
annotations only with `crowd: true`; then, when `max_masks` > 0, a seeded subset of that many.
Columns `image` (COCO file name), `category` (name). `exclude` takes the rows' names
(`instances_train2014#<annotation id>`).

Also the mask-image helpers the iLAT sources share: `fit_mask`, `mask_png`, `gray_png`.
"""

from __future__ import annotations

import io
import json
import logging
import zipfile
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

from sparsegen.config import ParamsError
from sparsegen.data.archives import DatasetUnavailable, recorded_sha256, sidecar
from sparsegen.data.deepfashion import problems_error
from sparsegen.data.prepare import Item
from sparsegen.download import DownloadError, check_file, download
from sparsegen.io import ImageReadError, atomic_path, write_text

log = logging.getLogger(__name__)

LICENCE = "COCO annotations: CC BY 4.0 (cocodataset.org/#termsofuse)"
SETTINGS = ("min_area", "max_area", "max_masks", "crowd")


# --- binary masks ---------------------------------------------------------------------------

def fit_mask(mask: np.ndarray, size: int | tuple[int, int]) -> np.ndarray:
    """Bool (H, W) -> bool size x size (or (h, w)): box-filter resize, a pixel is a hole when
    at least half of its footprint is (unchanged when already that size)."""
    mask = np.asarray(mask, dtype=bool)
    shape = (size, size) if isinstance(size, int) else tuple(size)
    if mask.shape == shape:
        return mask
    image = Image.fromarray(mask.astype(np.uint8) * 255)
    return np.asarray(image.resize(shape[::-1], Image.Resampling.BOX)) >= 128


def gray_png(array: np.ndarray) -> bytes:
    """A uint8 (H, W) array as an 8-bit grayscale PNG."""
    buf = io.BytesIO()
    Image.fromarray(np.asarray(array, dtype=np.uint8), mode="L").save(buf, format="PNG")
    return buf.getvalue()


def mask_png(mask: np.ndarray) -> bytes:
    """A bool mask as an 8-bit grayscale PNG, 255 = hole."""
    return gray_png(np.asarray(mask, dtype=bool).astype(np.uint8) * 255)


def fit_mask_image(array: np.ndarray, size: int) -> np.ndarray:
    """Item.fit of a mask row: uint8 (H, W[, 3]) 0/255 -> uint8 (size, size) 0/255."""
    plane = array[..., 0] if array.ndim == 3 else array
    return fit_mask(plane >= 128, size).astype(np.uint8) * 255


# --- COCO segmentations ---------------------------------------------------------------------

def rle_counts(counts: str) -> list[int]:
    """COCO's compressed RLE string -> run lengths: 5-bit groups (char - 48), bit 0x20 = more
    groups follow, bit 0x10 of the last group = negative; from the fourth count on, each is
    stored as the difference to the count two places before."""
    runs: list[int] = []
    p = 0
    while p < len(counts):
        value, shift, more = 0, 0, True
        while more:
            if p == len(counts):
                raise ValueError(f"compressed RLE string ends inside a count: {counts!r}")
            c = ord(counts[p]) - 48
            if not 0 <= c < 64:
                raise ValueError(f"compressed RLE string holds {counts[p]!r}")
            value |= (c & 0x1F) << shift
            more = bool(c & 0x20)
            p += 1
            shift += 5
            if not more and c & 0x10:
                value -= 1 << shift
        if len(runs) > 2:
            value += runs[-2]
        runs.append(value)
    return runs


def decode_rle(counts: Sequence[int] | str, height: int, width: int) -> np.ndarray:
    """Bool (height, width) of an RLE: runs alternate background / object over the pixels in
    column-major order, starting with background."""
    runs = rle_counts(counts) if isinstance(counts, str) else [int(c) for c in counts]
    if any(r < 0 for r in runs) or sum(runs) != height * width:
        raise ValueError(f"RLE runs sum to {sum(runs)} (or hold negatives), expected "
                         f"{height} x {width} = {height * width}")
    values = np.zeros(len(runs), dtype=bool)
    values[1::2] = True
    flat = np.repeat(values, runs)
    return flat.reshape(width, height).T


def polygon_mask(polygons: Sequence[Sequence[float]], height: int, width: int) -> np.ndarray:
    """Bool (height, width): the union of the filled polygons (x, y pixel coordinates);
    polygons of fewer than 3 points are skipped."""
    image = Image.new("L", (width, height), 0)
    draw = ImageDraw.Draw(image)
    for poly in polygons:
        if len(poly) % 2:
            raise ValueError(f"polygon with an odd number of coordinates ({len(poly)})")
        if len(poly) >= 6:
            draw.polygon([(float(poly[i]), float(poly[i + 1])) for i in range(0, len(poly), 2)],
                         fill=1, outline=1)
    return np.asarray(image, dtype=bool)


def segmentation_mask(segmentation: Any, height: int, width: int) -> np.ndarray:
    """Bool (height, width) of a COCO `segmentation` (polygons or RLE)."""
    if isinstance(segmentation, list):
        return polygon_mask(segmentation, height, width)
    if isinstance(segmentation, dict) and "counts" in segmentation:
        size = list(segmentation.get("size", [height, width]))
        if size != [height, width]:
            raise ValueError(f"RLE size {size} differs from the image's [{height}, {width}]")
        return decode_rle(segmentation["counts"], height, width)
    raise ValueError(f"segmentation is neither polygons nor RLE: {str(segmentation)[:80]}")


def _load(segmentation: Any, height: int, width: int, where: str) -> np.ndarray:
    try:
        mask = segmentation_mask(segmentation, height, width)
    except (ValueError, TypeError) as e:
        raise ImageReadError(f"{where}: bad segmentation ({e})") from None
    return np.repeat((mask.astype(np.uint8) * 255)[..., None], 3, axis=2)


# --- the source -----------------------------------------------------------------------------

@dataclass(frozen=True)
class Instance:
    """One kept annotation, reduced to what a row needs."""

    id: int
    image: str
    height: int
    width: int
    category: str
    segmentation: Any


def read_instances(data: bytes, where: str, settings: Mapping[str, Any],
                   problems: list[str]) -> list[Instance]:
    """The annotations of an instances JSON that pass the area and crowd filters."""
    try:
        doc = json.loads(data)
        images = {im["id"]: (im["file_name"], int(im["height"]), int(im["width"]))
                  for im in doc["images"]}
        categories = {c["id"]: c["name"] for c in doc["categories"]}
        annotations = doc["annotations"]
    except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError, ValueError) as e:
        raise DatasetUnavailable(f"{where}: not a COCO instances JSON ({e!r})") from None
    low, high, crowd = settings["min_area"], settings["max_area"], settings["crowd"]
    kept = []
    for ann in annotations:
        ann_id = ann.get("id")
        if ann.get("image_id") not in images:
            problems.append(f"{where}: annotation {ann_id} names image {ann.get('image_id')}, "
                            f"which is not among its images")
            continue
        name, height, width = images[ann["image_id"]]
        if "segmentation" not in ann or "area" not in ann:
            problems.append(f"{where}: annotation {ann_id} (image {name}) has no "
                            f"segmentation or area")
            continue
        if ann.get("iscrowd", 0) and not crowd:
            continue
        if low <= ann["area"] / (height * width) <= high:
            kept.append(Instance(int(ann_id), name, height, width,
                                 categories.get(ann.get("category_id"), ""),
                                 ann["segmentation"]))
    return kept


def _settings(settings: Mapping[str, Any], dataset: str) -> None:
    missing = [k for k in SETTINGS if k not in settings]
    if missing:
        raise ParamsError(f"datasets.{dataset}: missing {', '.join(missing)}")
    low, high = settings["min_area"], settings["max_area"]
    if not 0 <= low <= high <= 1:
        raise ParamsError(f"datasets.{dataset}: min_area {low}, max_area {high}; expected "
                          f"0 <= min_area <= max_area <= 1 (fractions of the image)")
    if not isinstance(settings["max_masks"], int) or settings["max_masks"] < 0:
        raise ParamsError(f"datasets.{dataset}.max_masks: {settings['max_masks']!r}; expected "
                          f"an integer >= 0 (0 = all)")


@dataclass(frozen=True)
class CocoMaskSource:
    """The annotations zip; rows are instance masks (module docstring)."""

    name: str = "coco_masks"
    url: str = "http://images.cocodataset.org/annotations/annotations_trainval2014.zip"
    filename: str = "annotations_trainval2014.zip"
    member: str = "annotations/instances_train2014.json"
    size: int | None = None   # not published
    synthetic = False

    def archive(self, raw_dir: Path) -> Path:
        return Path(raw_dir) / self.filename

    def raw_files(self, raw_dir: Path) -> list[Path]:
        return [self.archive(raw_dir)]

    def unavailable(self, dataset: str, raw_dir: Path, reason: str) -> DatasetUnavailable:
        return DatasetUnavailable(
            f"dataset {dataset!r}: the COCO 2014 annotations are not available: {reason}\n"
            f"Download by hand\n  {self.url}\n  (about 240 MB; holds {self.member})\nand save "
            f"it as\n  {self.archive(raw_dir).absolute()}\nthen run the fetch step again: it "
            f"checks that the zip holds {self.member} and records its sha256 in "
            f"{sidecar(self.archive(raw_dir)).name}.\nTerms: {LICENCE}")

    def _check(self, path: Path) -> str:
        digest = check_file(path, size=self.size)
        try:
            with zipfile.ZipFile(path) as zf:
                names = set(zf.namelist())
        except (zipfile.BadZipFile, OSError) as e:
            raise DownloadError(f"{path}: not a readable zip archive ({e})") from None
        if self.member not in names:
            raise DownloadError(f"{path}: holds no {self.member}")
        return digest

    def fetch(self, dataset: str, raw_dir: Path) -> None:
        """Download (unless present) and check the zip; pin its sha256."""
        path = self.archive(raw_dir)
        try:
            if path.exists():
                digest = self._check(path)
            else:
                with atomic_path(path) as tmp:
                    download(self.url, tmp, size=self.size)
                    digest = self._check(tmp)
        except DownloadError as e:
            raise self.unavailable(dataset, raw_dir, str(e)) from None
        recorded = recorded_sha256(path)
        if recorded is not None and recorded != digest:
            raise self.unavailable(dataset, raw_dir, f"{path}: sha256 {digest} differs from "
                                   f"{recorded} recorded in {sidecar(path)} (the file changed)")
        write_text(sidecar(path), f"{digest}  {path.name}\n")
        log.info("%s: %s verified (sha256 %s)", dataset, path, digest)

    def upstream(self, raw_dir: Path) -> dict[str, Any]:
        return {"archive": self.filename, "member": self.member,
                "sha256": recorded_sha256(self.archive(raw_dir))}

    def row_name(self, ann_id: int) -> str:
        return f"{Path(self.member).stem}#{ann_id}"

    @contextmanager
    def items(self, dataset: str, settings: Mapping[str, Any],
              raw_dir: Path) -> Iterator[list[Item]]:
        """The kept instance masks, all split train."""
        _settings(settings, dataset)
        path = self.archive(raw_dir)
        if recorded_sha256(path) is None:
            raise self.unavailable(dataset, raw_dir, f"{path} was not fetched (no "
                                   f"{sidecar(path).name}; run the fetch step)")
        where = f"{path} member {self.member}"
        try:
            with zipfile.ZipFile(path) as zf:
                data = zf.read(self.member)
        except (zipfile.BadZipFile, KeyError, OSError) as e:
            raise self.unavailable(dataset, raw_dir, f"{where}: unreadable ({e})") from None
        problems: list[str] = []
        instances = read_instances(data, where, settings, problems)
        del data
        if problems:
            raise problems_error(dataset, where, problems, "Replace the annotations zip with "
                                 "the published one (delete it and fetch again).")
        exclude = frozenset(settings.get("exclude") or ())
        kept = [i for i in instances if self.row_name(i.id) not in exclude]
        if settings["max_masks"] and len(kept) > settings["max_masks"]:
            chosen = np.random.default_rng(settings["seed"]).choice(
                len(kept), settings["max_masks"], replace=False)
            kept = [kept[i] for i in sorted(chosen)]
        log.info("%s: %d of %d instance(s) kept (area %s..%s of the image%s)", dataset,
                 len(kept), len(instances), settings["min_area"], settings["max_area"],
                 ", crowds too" if settings["crowd"] else "")
        items = [Item(id=f"coco_{i.id}", name=self.row_name(i.id), source=f"{where} id {i.id}",
                      licence=LICENCE, fit=fit_mask_image, split="train",
                      load=partial(_load, i.segmentation, i.height, i.width,
                                   f"{where} annotation {i.id} (image {i.image})"),
                      extra={"image": i.image, "category": i.category})
                 for i in kept]
        # Excluded rows are listed (never loaded) so that prepare reports them as excluded.
        items += [Item(id=f"coco_{i.id}", name=self.row_name(i.id), source=where,
                       licence=LICENCE, split="train", load=partial(np.zeros, (1, 1, 3), np.uint8))
                  for i in instances if self.row_name(i.id) in exclude]
        yield items


SOURCE = CocoMaskSource()
