"""iLAT's examples: images, pose conditions, sketches and masks from a prepared dataset.

Three kinds of dataset feed iLAT (`sparsegen.data.penn_action`, `sdf`, `ffhq_ilat` and their
smoke stand-ins `sparsegen.data.sticks`), told apart by their columns:
- frames (Penn Action): rows per video frame with `video`, `action` and 13 keypoints; training
  pairs are two frames of one training video drawn per step (Sec. 4), their mask the union of
  both poses' limb skeletons dilated by the action's kernel (A.2); test pairs are fixed;
- pairs (SDF): reference rows name their target (`pair`) and carry the mask, in both splits;
- faces (FFHQ): rows with an XDoG `sketch`; training masks are free-form strokes or, half the
  time, instance masks of the `masks` dataset (Sec. 3.3); test rows carry an edit mask and the
  face whose sketch is drawn inside it (`pair`).
Images are in [-1, 1], masks float {0, 1} with 1 = hole, pose conditions (J, 3) rows
(x / W, y / H, 1) or (-1, -1, 0) for a missing joint (Sec. 3.3). Every random draw comes from
the caller's generator, so a resumed run draws what an uninterrupted one did.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from sparsegen.data.images import load_rgb, resize
from sparsegen.data.manifest import Sample, read_manifest
from sparsegen.data.penn_action import pair_mask_array
from sparsegen.data.pose_masks import ACTION_KERNELS, keypoint_array
from sparsegen.data.strokes import free_form_mask
from sparsegen.layout import dataset_dir


class ExampleError(ValueError):
    """A prepared iLAT dataset lacks or mangles what an example needs (names file and id)."""


def _aux(sample: Sample, column: str) -> Path:
    """A row's aux file (its column is relative to the dataset folder)."""
    root = sample.path.parent.parent
    rel = sample.extra.get(column, "")
    if not rel:
        raise ExampleError(f"{root / 'manifest.csv'}: row {sample.id!r} has no {column!r} "
                           f"file")
    path = root / rel
    if not path.is_file():
        raise ExampleError(f"{path}: the {column} file of row {sample.id!r} is missing")
    return path


def read_points(sample: Sample, joints: int) -> tuple[tuple[int, int], list[Any]]:
    """Frame (H, W) and the `joints` points ([x, y] pixels or None) of a row's keypoints."""
    path = _aux(sample, "keypoints")
    try:
        doc = json.loads(path.read_text())
        frame, points = doc["frame"], doc["points"]
    except (ValueError, KeyError, TypeError):
        raise ExampleError(f"{path}: row {sample.id!r}: expected "
                           '{"frame": [H, W], "points": [...]}') from None
    if not isinstance(points, list) or len(points) != joints:
        raise ExampleError(f"{path}: row {sample.id!r} has "
                           f"{len(points) if isinstance(points, list) else 'no'} points, "
                           f"the model expects {joints} (model.joints)")
    return (int(frame[0]), int(frame[1])), points


def pose_condition(sample: Sample, joints: int) -> torch.Tensor:
    """(J, 3): (x / W, y / H, 1) per joint, (-1, -1, 0) where it is missing (Sec. 3.3)."""
    (h, w), points = read_points(sample, joints)
    rows = [[p[0] / w, p[1] / h, 1.0] if p is not None else [-1.0, -1.0, 0.0] for p in points]
    return torch.tensor(rows, dtype=torch.float32)


def pose_pair_mask(a: Sample, b: Sample, joints: int, side: int, kernel_unit: str,
                   kernel_scale: float | None = None) -> torch.Tensor:
    """(1, side, side): the union of both frames' skeletons dilated by their action's kernel
    (A.2), drawn as the prepare step draws the test masks (`penn_action.pair_mask_array`;
    `kernel_unit` and `kernel_scale` are the dataset's)."""
    (h, w), pa = read_points(a, joints)
    _, pb = read_points(b, joints)
    action = a.extra.get("action", "")
    if action not in ACTION_KERNELS:
        raise ExampleError(f"row {a.id!r}: action {action!r} has no mask kernel (known: "
                           f"{', '.join(sorted(ACTION_KERNELS))})")
    mask = pair_mask_array(h, w, keypoint_array(pa), keypoint_array(pb), action, side,
                           kernel_unit, kernel_scale)
    return torch.from_numpy(mask).float()[None]


def load_mask(sample: Sample, side: int, column: str = "mask") -> torch.Tensor:
    """(1, side, side) float {0, 1}: a row's mask file (255 = hole); nearest resize, errors for
    an unreadable or non-binary file."""
    path = _aux(sample, column) if column else sample.path
    try:
        with Image.open(path) as im:
            array = np.asarray(im.convert("L"))
    except OSError as e:
        raise ExampleError(f"{path}: row {sample.id!r}: unreadable mask ({e})") from None
    values = np.unique(array)
    if not set(values.tolist()) <= {0, 255}:
        raise ExampleError(f"{path}: row {sample.id!r}: mask is not binary (values "
                           f"{values[:6].tolist()}...; expected 0 and 255)")
    if column:  # an aux mask is drawn for its row's image: the same size or it is corrupt
        with Image.open(sample.path) as im:
            size = im.size
        if array.shape[::-1] != size:
            raise ExampleError(f"{path}: row {sample.id!r}: mask is {array.shape[1]}x"
                               f"{array.shape[0]}, its image is {size[0]}x{size[1]}")
    mask = torch.from_numpy(array >= 128).float()[None]
    if mask.shape[-1] != side or mask.shape[-2] != side:
        mask = torch.nn.functional.interpolate(mask[None], size=(side, side),
                                               mode="nearest")[0]
    return mask


def load_image(sample: Sample, side: int) -> torch.Tensor:
    return load_rgb(sample.path, size=side) * 2 - 1


def load_sketch(sample: Sample, side: int) -> torch.Tensor:
    """(1, side, side) in [-1, 1]: a row's XDoG sketch."""
    path = _aux(sample, "sketch")
    try:
        with Image.open(path) as im:
            gray = torch.from_numpy(np.asarray(im.convert("L")).copy()).float()[None] / 255.0
    except OSError as e:
        raise ExampleError(f"{path}: row {sample.id!r}: unreadable sketch ({e})") from None
    if gray.shape[-1] != side:
        gray = resize(gray, side)
    return gray * 2 - 1


@dataclass(frozen=True)
class Example:
    """One training or test example. `condition`: the condition image (pose tasks: the
    reference frame) or sketch (faces); `target`: the image under the mask (training: the
    target frame; test: the reference itself, Sec. 3.3); `truth`: what the output is scored
    against (test pose pairs: the target frame); `pose`: (J, 3) or None."""

    id: str
    condition: torch.Tensor
    target: torch.Tensor
    truth: torch.Tensor
    mask: torch.Tensor
    pose: torch.Tensor | None


class Examples:
    """The examples of one prepared dataset under resolved settings."""

    def __init__(self, settings: Mapping[str, Any]) -> None:
        self.settings = settings
        self.directory = dataset_dir(settings, "images")
        self.side = int(settings["model"]["size"])
        self.joints = int(settings["model"]["joints"])
        dataset = settings.get("datasets", {}).get("images", {})
        self.kernel_unit = str(dataset.get("kernel_unit", "resized"))
        self.kernel_scale = dataset.get("kernel_scale")

    @cached_property
    def rows(self) -> list[Sample]:
        rows = read_manifest(self.directory)
        if not rows:
            raise ExampleError(f"{self.directory / 'manifest.csv'}: no rows")
        return rows

    @cached_property
    def index(self) -> dict[str, Sample]:
        return {r.id: r for r in self.rows}

    @cached_property
    def kind(self) -> str:
        """faces (sketch files), pairs (training pairs listed) or frames (videos)."""
        if any(r.extra.get("sketch") for r in self.rows):
            return "faces"
        if any(r.extra.get("pair") for r in self.rows if r.split == "train"):
            return "pairs"
        if all(r.extra.get("video") for r in self.rows):
            return "frames"
        raise ExampleError(f"{self.directory / 'manifest.csv'}: neither sketches, training "
                           "pairs nor videos: not an iLAT dataset")

    def split(self, name: str) -> list[Sample]:
        return [r for r in self.rows if r.split == name]

    @cached_property
    def videos(self) -> list[list[Sample]]:
        """Training videos with at least two frames (frames datasets)."""
        groups: dict[str, list[Sample]] = {}
        for r in self.split("train"):
            groups.setdefault(r.extra["video"], []).append(r)
        out = [g for g in groups.values() if len(g) >= 2]
        if not out:
            raise ExampleError(f"{self.directory / 'manifest.csv'}: no training video with two "
                               "frames")
        return out

    def pairs(self, split: str) -> list[Sample]:
        """Reference rows of the split's fixed pairs (their `pair` names the target)."""
        return [r for r in self.split(split) if r.extra.get("pair")]

    def partner(self, row: Sample) -> Sample:
        key = row.extra.get("pair", "")
        if key not in self.index:
            raise ExampleError(f"{self.directory / 'manifest.csv'}: row {row.id!r} names pair "
                               f"{key!r}, which the dataset does not hold")
        return self.index[key]

    def _pose(self, row: Sample) -> torch.Tensor | None:
        return pose_condition(row, self.joints) if self.joints else None

    # -- training --------------------------------------------------------------------------

    def training_images(self) -> list[Sample]:
        return self.split("train")

    def face_mask(self, generator: torch.Generator, masks: list[Sample] | None) -> torch.Tensor:
        """Sec. 3.3: free-form strokes or (half the time, when a mask dataset is given) an
        instance mask."""
        if masks and bool(torch.rand((), generator=generator) < 0.5):
            row = masks[int(torch.randint(len(masks), (), generator=generator))]
            return load_mask(row, self.side, column="")
        seed = int(torch.randint(2**31 - 1, (), generator=generator))
        return torch.from_numpy(free_form_mask(self.side, np.random.default_rng(seed))
                                ).float()[None]

    def training_example(self, generator: torch.Generator, masks: list[Sample] | None = None
                         ) -> Example:
        """A training example: frames: two frames of one training video (condition, target),
        the pair mask; pairs: a fixed training pair; faces: a face, its sketch, a mask."""
        if self.kind == "frames":
            video = self.videos[int(torch.randint(len(self.videos), (), generator=generator))]
            i, j = torch.randperm(len(video), generator=generator)[:2].tolist()
            ref, tgt = video[i], video[j]
            mask = pose_pair_mask(ref, tgt, self.joints, self.side, self.kernel_unit,
                                  self.kernel_scale)
        elif self.kind == "pairs":
            pairs = self.pairs("train")
            ref = pairs[int(torch.randint(len(pairs), (), generator=generator))]
            tgt, mask = self.partner(ref), load_mask(ref, self.side)
        else:
            rows = self.split("train")
            row = rows[int(torch.randint(len(rows), (), generator=generator))]
            image = load_image(row, self.side)
            return Example(row.id, load_sketch(row, self.side), image, image,
                           self.face_mask(generator, masks), None)
        target = load_image(tgt, self.side)
        return Example(ref.id, load_image(ref, self.side), target, target, mask,
                       self._pose(tgt))

    # -- test -------------------------------------------------------------------------------

    def test_rows(self) -> list[Sample]:
        """Test examples in manifest order: fixed pairs (pose tasks) or edited faces."""
        rows = self.pairs("test") if self.kind != "faces" else [
            r for r in self.split("test") if r.extra.get("mask")]
        if not rows:
            raise ExampleError(f"{self.directory / 'manifest.csv'}: no test pairs or edits")
        return rows

    def test_example(self, row: Sample) -> Example:
        """Pose pairs: condition = reference, target stream = the reference under the mask
        ("the same pose in the inference phase", Sec. 3.3), truth = the target frame, pose =
        the target's. Faces: the condition sketch is the face's own with the partner's sketch
        inside the mask; target and truth are the face (no ground truth of the edit exists)."""
        mask = load_mask(row, self.side)
        if self.kind == "faces":
            image = load_image(row, self.side)
            other = load_sketch(self.partner(row), self.side)
            sketch = load_sketch(row, self.side) * (1 - mask) + other * mask
            return Example(row.id, sketch, image, image, mask, None)
        tgt = self.partner(row)
        ref = load_image(row, self.side)
        return Example(row.id, ref, ref, load_image(tgt, self.side), mask, self._pose(tgt))


def stack(examples: list[Example]) -> dict[str, torch.Tensor]:
    """A batch of examples (pose only when every example has one)."""
    out = {k: torch.stack([getattr(e, k) for e in examples])
           for k in ("condition", "target", "truth", "mask")}
    if all(e.pose is not None for e in examples):
        out["pose"] = torch.stack([e.pose for e in examples])  # type: ignore[misc]
    return out


def flip(batch: dict[str, torch.Tensor], generator: torch.Generator) -> dict[str, torch.Tensor]:
    """Horizontal flips, per example, of every image and mask together (faces, as the code);
    pose batches are never flipped (left and right joints would swap)."""
    if "pose" in batch:
        return batch
    n = next(iter(batch.values())).shape[0]
    chosen = torch.rand(n, generator=generator) < 0.5
    return {k: torch.where(chosen.view(-1, 1, 1, 1), v.flip(-1), v) for k, v in batch.items()}
