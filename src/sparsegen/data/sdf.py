"""SDF: iLAT's "synthetic DeepFashion" pose-editing set, In-shop people composited on Places.

Upstream, three parts:
  - DeepFashion In-shop images with CoCosNet's OpenPose keypoints and lists, read from the raw
    folder of the `deepfashion` source (`<raw root>/deepfashion`, fetched and pinned by
    `sparsegen.data.deepfashion`; downloaded once for DynaST and iLAT): `img/`, `pose/`,
    `train.txt`, `val.txt`;
  - In-shop's human segmentation, the `Anno/segmentation` folder of the DeepFashion In-shop
    Google Drive folder (placed by hand in this source's raw folder as `segmentation.zip` or
    unpacked as `segmentation/`): per image a colour-coded `<...>/<MEN|WOMEN>/<category>/<id>/
    <name>_segment.png` (black = background; clothes, skin, hair and face in colours, so the
    non-black pixels are the whole person), drawn on the high-resolution image
    (`img_highres`); In-shop's `img/` images are those shrunk with the aspect kept and centred
    on the 256 x 256 frame, so a segment is mapped onto the frame the same way;
  - Places365 `val_256.tar` (`sparsegen.data.places`), downloaded by fetch.

Checks: an image is used only when its segmentation covers the whole person: at least
COVERAGE of its detected OpenPose keypoints lie in the person mask (grown by TOLERANCE frame
pixels); when fewer than half of the segmented images pass, prepare stops (the segmentation
would then be clothes-only or misaligned with the images).

Pairs: In-shop items (`img/<MEN|WOMEN>/<category>/<id>/`) with at least two usable images are
ordered by the seed; the first `n_test` items give one test pair each, the others `train_pairs`
train pairs (items in turn, one pair per item per round, no ordered pair twice), so test items
are never seen in training. A pair is two images of the item (reference, target) pasted onto one
Places background (each pair its own, seeded); each becomes a row at size x size (stretched
from the In-shop frame): ids `<split>_<k>_ref` and `<split>_<k>_tgt`, columns `video` (the
item), `action` ("sdf"), `background` (Places file name), `image` (In-shop sample id), aux
`keypoints` (deepfashion's format: COCO-18 in the In-shop frame). The reference row carries
`pair` (the target's id) and aux `mask` (L, 255 = hole): the union of both person masks, each
resized to size x size and grown by `mask_dilation` pixels (at the prepared size) each way, a
square dilation (0 = not grown), as the `smoke_sdf` stand-in does.
`exclude` takes In-shop image paths (`img/...`) and Places members (`val_256/...`).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from functools import partial
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np
from PIL import Image

from sparsegen.config import ParamsError
from sparsegen.data import deepfashion, places
from sparsegen.data.archives import DatasetUnavailable, sample_id
from sparsegen.data.coco_masks import fit_mask, mask_png
from sparsegen.data.deepfashion import (
    DRIVE,
    IMAGES,
    ManualFiles,
    Needed,
    PoseFileError,
    image_path,
    keypoints_json,
    numbered_lines,
    pose_files,
    problems_error,
    read_pose,
)
from sparsegen.data.pose_masks import dilate
from sparsegen.data.prepare import Item
from sparsegen.io import ImageReadError, read_image

log = logging.getLogger(__name__)

SEGMENTATION, SUFFIX = "segmentation", "_segment.png"
COVERAGE, TOLERANCE = 0.9, 4     # share of keypoints inside the person; frame pixels of slack
LICENCE = (f"{deepfashion.LICENCE}; backgrounds: {places.LICENCE}")
SETTINGS = ("train_pairs", "mask_dilation")

SEGMENTATION_FILES = ManualFiles(
    title="DeepFashion In-shop human segmentation (Anno/segmentation)",
    terms=deepfashion.LICENCE,
    needed=(Needed(SEGMENTATION, "the folder `In-shop Clothes Retrieval Benchmark/Anno/"
                   f"segmentation` of the DeepFashion Drive folder {DRIVE}"
                   "0B7EVK8r0v71pVDZFQXRsMDZCX1E (its `*_segment.png` files; save the folder's "
                   "download as segmentation.zip)", archive="segmentation.zip"),),
)


# --- person masks -------------------------------------------------------------------------------

def segment_key(path: str) -> str:
    """The In-shop image a segment or image path belongs to: its last four path parts without
    suffix, 'x/img_highres/MEN/Denim/id_1/01_1_front_segment.png' -> 'MEN/Denim/id_1/01_1_front'
    ('img/MEN/Denim/id_1/01_1_front.jpg' maps to the same key)."""
    parts = PurePosixPath(path).parts[-4:]
    name = parts[-1]
    stem = name.removesuffix(SUFFIX) if name.endswith(SUFFIX) else PurePosixPath(name).stem
    return "/".join((*parts[:-1], stem))


def segment_index(folder: Path) -> dict[str, Path]:
    """Every `*_segment.png` below `folder`, by `segment_key`."""
    index = {}
    for top, _, files in os.walk(folder):
        for f in files:
            if f.endswith(SUFFIX):
                path = Path(top) / f
                index[segment_key(path.relative_to(folder).as_posix())] = path
    return index


def letterbox(mask: np.ndarray, frame: tuple[int, int]) -> np.ndarray:
    """A mask of the high-resolution image on the H x W frame: shrunk with the aspect kept
    (box filter, >= 50%) and centred, as In-shop's `img/` images were made."""
    h, w = mask.shape
    height, width = frame
    if (h, w) == (height, width):
        return mask
    scale = min(height / h, width / w)
    nh, nw = max(1, round(h * scale)), max(1, round(w * scale))
    out = np.zeros(frame, dtype=bool)
    top, left = (height - nh) // 2, (width - nw) // 2
    out[top:top + nh, left:left + nw] = fit_mask(mask, (nh, nw))
    return out


def person_mask(segment: Path, frame: tuple[int, int]) -> np.ndarray:
    """Bool H x W: the non-black pixels of a colour-coded segment, on the image's frame."""
    try:
        with Image.open(segment) as im:
            rgb = np.asarray(im.convert("RGB"))
    except (OSError, SyntaxError, ValueError) as e:
        raise ImageReadError(f"{segment}: unreadable or corrupt segmentation ({e})") from None
    return letterbox(rgb.any(axis=2), frame)


def coverage(mask: np.ndarray, points: Sequence[tuple[float, float] | None],
             tolerance: int = TOLERANCE) -> float | None:
    """Share of the detected keypoints inside the mask grown by `tolerance` pixels (None when
    no keypoint was detected); keypoints off the frame count as outside."""
    found = [p for p in points if p is not None]
    if not found:
        return None
    grown = dilate(mask, 2 * tolerance + 1)
    h, w = mask.shape
    inside = [0 <= round(y) < h and 0 <= round(x) < w and bool(grown[round(y), round(x)])
              for x, y in found]
    return sum(inside) / len(found)


def _frame(image: Path) -> tuple[int, int]:
    try:
        with Image.open(image) as im:
            return im.size[1], im.size[0]
    except (OSError, SyntaxError) as e:
        raise ImageReadError(f"{image}: unreadable or corrupt image ({e})") from None


def composite(image: Path, segment: Path, backgrounds: places.PlacesTar,
              background: str) -> np.ndarray:
    """The In-shop person (its segment) pasted onto a Places background, on the image's frame
    (the background stretched to it when the sizes differ)."""
    person = read_image(image)
    frame = person.shape[:2]
    scene = backgrounds.read(background)
    if scene.shape[:2] != frame:
        scene = np.asarray(Image.fromarray(scene).resize(frame[::-1], Image.Resampling.BILINEAR))
    return np.where(person_mask(segment, frame)[..., None], person, scene)


def union_mask(image: Path, segments: tuple[Path, Path], grow: int, size: int) -> bytes:
    """The `mask` aux file: both person masks resized to size x size, each grown by `grow`
    pixels each way (a (2 grow + 1) square dilation), united."""
    frame = _frame(image)
    union = np.zeros((size, size), dtype=bool)
    for segment in segments:
        union |= dilate(fit_mask(person_mask(segment, frame), size), 2 * grow + 1)
    return mask_png(union)


# --- pairs --------------------------------------------------------------------------------------

def draw_train_pairs(items: Sequence[tuple[str, Sequence[str]]], n: int,
                     rng: np.random.Generator) -> list[tuple[str, str, str]]:
    """`n` (item, reference, target) pairs: items in the given order, one pair per item per
    round, two distinct images, no ordered pair twice."""
    used: set[tuple[str, str]] = set()
    pairs: list[tuple[str, str, str]] = []
    while len(pairs) < n:
        before = len(pairs)
        for item, images in items:
            if len(pairs) == n:
                break
            free = [(a, b) for a in images for b in images if a != b and (a, b) not in used]
            if free:
                a, b = free[int(rng.integers(len(free)))]
                used.add((a, b))
                pairs.append((item, a, b))
        if len(pairs) == before:
            raise ParamsError(f"train_pairs {n}: the {len(items)} train item(s) give only "
                              f"{len(pairs)} distinct ordered pairs")
    return pairs


@dataclass(frozen=True)
class Person:
    """One usable In-shop image."""

    name: str          # img/MEN/.../01_1_front.jpg (relative to the deepfashion raw folder)
    segment: Path
    candidate: Path
    subset: Path


def _check_settings(settings: Mapping[str, Any], dataset: str) -> None:
    missing = [k for k in SETTINGS if k not in settings]
    if missing:
        raise ParamsError(f"datasets.{dataset}: missing {', '.join(missing)}")
    for key, low in (("train_pairs", 0), ("mask_dilation", 0)):
        value = settings[key]
        if not isinstance(value, int) or isinstance(value, bool) or value < low:
            raise ParamsError(f"datasets.{dataset}.{key}: {value!r}; expected an integer >= "
                              f"{low}")


@dataclass(frozen=True)
class SdfSource:
    """In-shop people (the deepfashion raw folder + segmentation) on Places backgrounds."""

    name: str = "sdf"
    deepfashion_source: str = "deepfashion"
    deepfashion_files: ManualFiles = deepfashion.FILES
    segmentation: ManualFiles = SEGMENTATION_FILES
    places: places.PlacesArchive = places.ARCHIVE
    synthetic = False

    @property
    def reads(self) -> tuple[str, ...]:
        """Sources whose fetched files this one prepares from (`sources.reads`)."""
        return (self.deepfashion_source,)

    def deepfashion_dir(self, raw_dir: Path) -> Path:
        """The raw folder of the `deepfashion` source: raw folders are `<raw root>/<source>`."""
        return Path(raw_dir).parent / self.deepfashion_source

    def raw_files(self, raw_dir: Path) -> list[Path]:
        raw = Path(raw_dir)
        receipt = raw / deepfashion.RECEIPT
        return ([raw / SEGMENTATION]
                + [raw / a for a in self.segmentation.present_archives(raw)]
                + ([receipt] if receipt.is_file() else []) + [self.places.path(raw)])

    def _deepfashion(self, dataset: str, raw_dir: Path) -> Path:
        """The checked deepfashion raw folder; fails saying to fetch that source first."""
        folder = self.deepfashion_dir(raw_dir)
        try:
            self.deepfashion_files.check(dataset, folder)
        except DatasetUnavailable as e:
            raise DatasetUnavailable(
                f"dataset {dataset!r} reads DeepFashion In-shop from the raw folder of the "
                f"source {self.deepfashion_source!r}, {folder.absolute()}; fetch that source "
                f"first (python -m sparsegen fetch dataset --source {self.deepfashion_source} "
                f"--raw-dir {folder} --receipt <file>):\n{e}") from None
        return folder

    def fetch(self, dataset: str, raw_dir: Path) -> None:
        """Check the deepfashion folder, pin and unpack the segmentation, fetch Places."""
        raw = Path(raw_dir)
        self._deepfashion(dataset, raw)
        self.segmentation.fetch(dataset, raw)
        self.places.fetch(dataset, raw)

    def upstream(self, raw_dir: Path) -> dict[str, Any]:
        raw = Path(raw_dir)
        return {"deepfashion": self.deepfashion_files.upstream(self.deepfashion_dir(raw)),
                "segmentation": self.segmentation.upstream(raw),
                "places": self.places.upstream(raw)}

    def people(self, dataset: str, raw: Path, exclude: frozenset[str]
               ) -> dict[str, list[Person]]:
        """Usable images by In-shop item: listed, segmented, posed, covered (module doc)."""
        folder = self._deepfashion(dataset, raw)
        self.segmentation.check(dataset, raw)
        segments = segment_index(raw / SEGMENTATION)
        problems: list[str] = []
        listed = sorted({image_path(line) for list_name in (deepfashion.TRAIN_LIST,
                                                            deepfashion.TEST_LIST)
                         for _, line in numbered_lines(folder / list_name)})
        candidates = [n for n in listed if n not in exclude and segment_key(n) in segments]
        people: dict[str, list[Person]] = {}
        uncovered = []
        for name in candidates:
            candidate, subset = pose_files(folder, name)
            try:
                points = read_pose(candidate, subset)
                share = coverage(person_mask(segments[segment_key(name)],
                                             _frame(folder / name)), points)
            except (PoseFileError, ImageReadError) as e:
                problems.append(f"{e} (image {name})")
                continue
            if share is None or share < COVERAGE:
                uncovered.append(name)
                continue
            item = str(PurePosixPath(name).parent)
            people.setdefault(item, []).append(Person(name, segments[segment_key(name)],
                                                      candidate, subset))
        if problems:
            raise problems_error(dataset, "the In-shop images, poses and segments for SDF",
                                 problems, f"To leave an image out, list its path (as img/...) "
                                 f"under datasets.{dataset}.exclude in params.yaml.")
        log.info("%s: %d of %d listed image(s) segmented; %d dropped whose segment covers "
                 "under %.0f%% of their keypoints (first: %s)", dataset, len(candidates),
                 len(listed), len(uncovered), 100 * COVERAGE, ", ".join(uncovered[:5]))
        if candidates and len(uncovered) > len(candidates) / 2:
            raise DatasetUnavailable(
                f"dataset {dataset!r}: the segments in {raw / SEGMENTATION} cover the whole "
                f"person for only {len(candidates) - len(uncovered)} of {len(candidates)} "
                f"images (first failing: {', '.join(uncovered[:5])}); they should be In-shop's "
                f"Anno/segmentation human parsing (clothes, skin, hair, face) of the same "
                f"images")
        return people

    @contextmanager
    def items(self, dataset: str, settings: Mapping[str, Any],
              raw_dir: Path) -> Iterator[list[Item]]:
        """The composites of the seeded train and test pairs (module docstring)."""
        raw = Path(raw_dir)
        _check_settings(settings, dataset)
        exclude = frozenset(settings.get("exclude") or ())
        folder = self.deepfashion_dir(raw)
        people = self.people(dataset, raw, exclude)
        backgrounds = self.places.open(dataset, raw)
        scenes = [n for n in backgrounds.names() if n not in exclude]
        n_test, n_train, size = settings["n_test"], settings["train_pairs"], settings["size"]
        rng = np.random.default_rng(settings["seed"])
        eligible = sorted(i for i, p in people.items() if len(p) >= 2)
        order = [eligible[i] for i in rng.permutation(len(eligible))]
        if n_test > len(order):
            raise ParamsError(f"datasets.{dataset}.n_test: {n_test} test items, but only "
                              f"{len(order)} item(s) have two usable images")
        by_name = {p.name: p for group in people.values() for p in group}
        test = [(item, *(people[item][i].name for i in rng.choice(len(people[item]), 2,
                                                                  replace=False)))
                for item in order[:n_test]]
        train = draw_train_pairs([(i, [p.name for p in people[i]]) for i in order[n_test:]],
                                 n_train, rng)
        if len(test) + len(train) > len(scenes):
            raise ParamsError(f"datasets.{dataset}: {len(test) + len(train)} pairs need as many "
                              f"backgrounds; {backgrounds.path} has {len(scenes)}")
        chosen = rng.choice(len(scenes), len(test) + len(train), replace=False)

        def row(split: str, k: int, role: str, person: Person, scene: str,
                partner: Person | None) -> Item:
            image = folder / person.name
            aux = {"keypoints": ("_keypoints.json", partial(keypoints_json, image,
                                                            person.candidate, person.subset))}
            if partner is not None:
                aux["mask"] = ("_mask.png", partial(union_mask, image, (
                    person.segment, partner.segment), settings["mask_dilation"], size))
            return Item(
                id=f"{split}_{k:05d}_{role}", name=f"{split}/{k:05d}/{role}",
                source=f"{person.name} on {scene}", licence=LICENCE, split=split,
                load=partial(composite, image, person.segment, backgrounds, scene),
                extra={"video": sample_id(str(PurePosixPath(person.name).parent)
                                          [len(IMAGES) + 1:]),
                       "action": "sdf", "background": PurePosixPath(scene).name,
                       "image": sample_id(person.name[len(IMAGES) + 1:]),
                       "pair": f"{split}_{k:05d}_tgt" if partner is not None else ""},
                aux=aux)

        items = []
        for (split, k, (_, a, b)), scene in zip(
                [("test", k, p) for k, p in enumerate(test)]
                + [("train", k, p) for k, p in enumerate(train)], chosen, strict=True):
            ref, tgt = by_name[a], by_name[b]
            items += [row(split, k, "ref", ref, scenes[scene], tgt),
                      row(split, k, "tgt", tgt, scenes[scene], None)]
        # Excluded inputs are listed (never loaded) so that prepare reports them as excluded.
        items += [Item(id=f"excluded_{k}", name=n, source=n, licence=LICENCE, split="train",
                       load=partial(read_image, folder / n))
                  for k, n in enumerate(sorted(exclude))
                  if (folder / n).is_file() or n in backgrounds.names()]
        log.info("%s: %d test and %d train pair(s) from %d item(s)", dataset, len(test),
                 len(train), len(order))
        yield items


SOURCE = SdfSource()
