"""CelebA-HQ from CelebAMask-HQ with CoCosNet's split and retrieval lists: DynaST's edge -> face.

Raw folder (CoCosNet's README layout of the `CelebAMask-HQ` root, placed by hand; Google Drive):
  CelebA-HQ-img/<n>.jpg                      the 30,000 1024x1024 faces (n = 0 .. 29999)
  CelebAMask-HQ-mask-anno/<n//2000>/<n:05d>_<part>.png
                                             the part masks (512x512, 255 inside the part);
                                             both folders come from CelebAMask-HQ.zip
                                             (top folder CelebAMask-HQ/), unpacked by fetch
  train.txt, val.txt                         the official split, one image number per line
  celebahq_ref.txt, celebahq_ref_test.txt    `<n>.jpg,<exemplar>.jpg,...` retrieval lists
Fetch checks and pins the files as `deepfashion.ManualFiles` does (receipt `SHA256SUMS`).

Items: every image of train.txt (split train) and val.txt (split test), id `<n:05d>`, with
  - aux `parts` (`<id>_parts.png`): a uint8 part-index map at the image's resolution: 0
    background, k for PARTS[k-1] (skin, l_brow, r_brow, l_eye, r_eye, l_ear, r_ear, nose, u_lip,
    mouth, l_lip, eye_g, hair = 1..13). Masks are resized NEAREST to the image (512 -> 1024, an
    exact 2x) and painted in that order where they are 255, later parts over earlier ones, so a
    pixel holds the last part covering it. That is the order CoCosNet's edge dataset visits
    the parts in, so `1 <= map <= 12` is exactly its "inner face" region (hair, painted last,
    is outside); an absent mask file means the part is absent, as upstream;
  - `exemplar`: the first exemplar of the image's line in celebahq_ref.txt (train) or
    celebahq_ref_test.txt (test): CoCosNet's "easy" reference in both phases;
  - `exemplar_hard`: the last exemplar of that line, the "hard" reference that training draws
    with `hard_reference_probability`;
  - `self_pair`: "0" (retrieved exemplars are other people).
"""

from __future__ import annotations

import io
import logging
import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from sparsegen.data.deepfashion import (
    DRIVE,
    ManualFiles,
    ManualSource,
    Needed,
    Pair,
    numbered_lines,
    problems_error,
    read_pairs,
)
from sparsegen.data.prepare import Item
from sparsegen.io import ImageReadError, read_image

log = logging.getLogger(__name__)

TRAIN_LIST, TEST_LIST = "train.txt", "val.txt"
REF, REF_TEST = "celebahq_ref.txt", "celebahq_ref_test.txt"
IMAGES, MASKS = "CelebA-HQ-img", "CelebAMask-HQ-mask-anno"
PARTS = ("skin", "l_brow", "r_brow", "l_eye", "r_eye", "l_ear", "r_ear", "nose", "u_lip",
         "mouth", "l_lip", "eye_g", "hair")
LICENCE = ("CelebAMask-HQ: non-commercial research and educational use only, no "
           "redistribution (its Dataset Agreement); CelebA-HQ images derive from CelebA")


def image_name(number: int) -> str:
    return f"{IMAGES}/{number}.jpg"


def mask_path(raw_dir: Path, number: int, part: str) -> Path:
    return raw_dir / MASKS / str(number // 2000) / f"{number:05d}_{part}.png"


def _read_mask(path: Path, size: tuple[int, int], remedy: str) -> np.ndarray:
    try:
        with Image.open(path) as im:
            return np.asarray(im.convert("L").resize(size, Image.Resampling.NEAREST))
    except (OSError, SyntaxError, ValueError) as e:
        raise ImageReadError(f"{path}: unreadable or corrupt mask ({e}); {remedy}") from None


def part_map(image: Path, masks: Mapping[str, Path], remedy: str = "") -> np.ndarray:
    """uint8 (H, W) at the image's size: index 1 + PARTS.index(part) where that part's mask is
    255, later parts painted over earlier ones; 0 elsewhere. `masks`: the parts present."""
    try:
        with Image.open(image) as im:
            size = im.size
    except (OSError, SyntaxError) as e:
        raise ImageReadError(f"{image}: unreadable or corrupt image ({e})") from None
    out = np.zeros(size[::-1], np.uint8)
    for index, part in enumerate(PARTS, start=1):
        if part in masks:
            out[_read_mask(masks[part], size, remedy) == 255] = index
    return out


def parts_png(image: Path, masks: Mapping[str, Path], remedy: str = "") -> bytes:
    """The `parts` aux file: `part_map` as an 8-bit grayscale PNG."""
    buf = io.BytesIO()
    Image.fromarray(part_map(image, masks, remedy), mode="L").save(buf, format="PNG")
    return buf.getvalue()


def _number(entry: str) -> int | None:
    """'2994' or '2994.jpg' -> 2994; None when not an image number."""
    stem = entry.strip().removesuffix(".jpg")
    return int(stem) if stem.isdigit() else None


def _ref_key(entry: str) -> str:
    """Ref-list entries as image names: '2994.jpg' -> 'CelebA-HQ-img/2994.jpg'."""
    number = _number(entry)
    return image_name(number) if number is not None else entry.strip()


FILES = ManualFiles(
    title="CelebA-HQ (CelebAMask-HQ) with CoCosNet's split and retrieval lists",
    terms=LICENCE,
    needed=(
        Needed(IMAGES, "CelebAMask-HQ (switchablenorms/CelebAMask-HQ): "
               "https://drive.google.com/file/d/1badu11NqxGf6qM3PTTooQDJvQbejgbTv",
               archive="CelebAMask-HQ.zip"),
        Needed(MASKS, "its part masks, from the same CelebAMask-HQ.zip",
               archive="CelebAMask-HQ.zip"),
        Needed(TRAIN_LIST, f"CoCosNet's train split: {DRIVE}1y2vvt3Cy_rh3UdYOY27g1Gxnp9Q_Kgv4"),
        Needed(TEST_LIST, f"CoCosNet's val split: {DRIVE}1y2vvt3Cy_rh3UdYOY27g1Gxnp9Q_Kgv4"),
        *(Needed(name, f"CoCosNet's retrieval pairs: {DRIVE}1WQmRKRdRb_E-AMh_K-iGcoEYEqll4pWz")
          for name in (REF, REF_TEST)),
    ),
)


def _mask_files(raw_dir: Path) -> set[str]:
    """Names of all mask files, `<group>/<file>`, listed once per group folder."""
    root = raw_dir / MASKS
    return {f"{group.name}/{entry.name}" for group in root.iterdir() if group.is_dir()
            for entry in os.scandir(group)}


@dataclass(frozen=True)
class CelebAHQEdgeSource(ManualSource):
    """CelebA-HQ faces with part maps (for the edge label) and retrieval exemplars."""

    name: str = "celebahq_edge"
    files: ManualFiles = FILES

    @contextmanager
    def items(self, dataset: str, settings: Mapping[str, Any],
              raw_dir: Path) -> Iterator[list[Item]]:
        """Every listed image with its part map and exemplars; every problem of the kept ones
        (bad list lines, absent images or masks, unlisted keys, unknown exemplars) first."""
        raw = Path(raw_dir)
        self.files.check(dataset, raw)
        exclude = frozenset(settings.get("exclude") or ())
        problems: list[str] = []
        listed: dict[str, tuple[int, str, str]] = {}   # name -> (number, split, where)
        for list_name, split in ((TRAIN_LIST, "train"), (TEST_LIST, "test")):
            for line, text in numbered_lines(raw / list_name):
                where, number = f"{raw / list_name}:{line}", _number(text)
                if number is None:
                    problems.append(f"{where}: {text!r} is not an image number")
                elif (name := image_name(number)) in listed:
                    problems.append(f"{where}: {name} is listed already at {listed[name][2]}")
                else:
                    listed[name] = (number, split, where)
        refs = {"train": (read_pairs(raw / REF, _ref_key), REF),
                "test": (read_pairs(raw / REF_TEST, _ref_key), REF_TEST)}
        images = {f"{IMAGES}/{e.name}" for e in os.scandir(raw / IMAGES)}
        masks = _mask_files(raw)
        remedy = f"list its image under datasets.{dataset}.exclude in params.yaml to leave it out"
        items = []
        for name, (number, split, where) in sorted(listed.items()):
            common = {"id": f"{number:05d}", "name": name, "source": name, "licence": LICENCE,
                      "load": partial(read_image, raw / name), "split": split}
            if name in exclude:
                items.append(Item(**common))
                continue
            before = len(problems)
            if name not in images:
                problems.append(f"{where}: names {name}, which is not in {raw / IMAGES}")
            present = {p: mask_path(raw, number, p) for p in PARTS
                       if f"{number // 2000}/{number:05d}_{p}.png" in masks}
            if not present:
                problems.append(f"{where}: no part mask of {name} (expected "
                                f"{mask_path(raw, number, '<part>')})")
            pair = self._pair(name, where, refs[split], listed, exclude, problems)
            if pair is None or len(problems) > before:
                continue
            items.append(Item(
                **common,
                extra={"exemplar": f"{listed[pair.exemplars[0]][0]:05d}",
                       "exemplar_hard": f"{listed[pair.exemplars[-1]][0]:05d}",
                       "self_pair": "0"},
                aux={"parts": ("_parts.png", partial(parts_png, raw / name, present,
                                                     f"{remedy} ({name})"))}))
        if problems:
            raise problems_error(dataset, f"the CelebA-HQ lists and masks in {raw.absolute()}",
                                 problems, f"To leave an image out, {remedy}.")
        log.info("%s: %d listed image(s), %d excluded", dataset, len(items),
                 len(exclude & listed.keys()))
        yield items

    @staticmethod
    def _pair(name: str, where: str, ref: tuple[Mapping[str, Pair], str],
              listed: Mapping[str, tuple[int, str, str]], exclude: frozenset[str],
              problems: list[str]) -> Pair | None:
        """The image's retrieval line, or None with its problems appended."""
        table, list_name = ref
        if name not in table:
            problems.append(f"{where}: {name} has no line in {list_name} (upstream KeyError "
                            f"'{Path(name).name}', Huage001/DynaST#7)")
            return None
        pair = table[name]
        bad = [e for e in dict.fromkeys((pair.exemplars[0], pair.exemplars[-1]))
               if e not in listed or e in exclude]
        for exemplar in bad:
            state = "is excluded" if exemplar in exclude else (
                f"is not listed in {TRAIN_LIST} or {TEST_LIST}")
            problems.append(f"{pair.where}: exemplar {exemplar} of {name} {state}")
        return None if bad else pair


SOURCE = CelebAHQEdgeSource()
