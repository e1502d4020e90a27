"""Penn Action (Zhang et al. 2013): iLAT's pose-guided video-frame dataset ("PA").

Upstream: https://www.cis.upenn.edu/~kostas/Penn_Action.tar.gz (no checksum or size published),
holding `Penn_Action/frames/<video>/<nnnnnn>.jpg` and `Penn_Action/labels/<video>.mat` for 2,326
videos of 15 actions. A label file (MATLAB, read with scipy.io.loadmat) holds `action` (name),
`train` (1 = official train video, -1 = test), `x`, `y` (nframes x 13, pixel coordinates of the
frame as annotated) and `visibility` (nframes x 13, 1 = visible), besides `pose`, `bbox`,
`dimensions`, `nframes`. Joints (JOINTS): head, shoulders, elbows, wrists, hips, knees, ankles
(left before right). Fetch downloads the tar.gz (or keeps a copy placed by hand), records its
sha256 in a sidecar, and unpacks `frames/` and `labels/` into `Penn_Action/` (a gzip stream
cannot be read at random); an already-unpacked `Penn_Action/` alone is accepted too.

Rows: one per kept frame, id `<video>_<frame>` (`0001_000001`), resized to size x size (stretch,
aspect not kept), columns `video`, `action`, `pair`, aux `keypoints` (`<id>_keypoints.json`,
{"frame": [H, W], "points": 13 x [x, y] or null}: the annotated coordinates in the original
frame of H x W pixels, null where the joint is not visible). Splits are the official ones:
  - train: every `frame_stride`-th frame of each train video (from its first frame); training
    pairs are drawn per step from two frames of one video;
  - test: `n_test` seeded pairs of two distinct frames of one test video (videos visited in a
    seeded order, one pair per video per round, so 1,000 pairs use 1,000 distinct videos), every
    frame of a test video eligible. Only the frames of these pairs are rows. The reference row
    carries `pair` (the target row's id) and aux `mask` (`<id>_mask.png`, L, 255 = hole at
    size x size): both frames' limb skeletons (LIMBS_13) dilated by the action's kernel
    (ACTION_KERNELS; iLAT A.2) and united (`pair_mask`). The paper states no unit for the
    kernel: settings `kernel_unit` "frame" counts it in original frame pixels (drawn on the
    frame, then resized with it), "resized" in pixels of the 256 x 256 resized frame.
`exclude` takes frame names (`frames/0001/000001.jpg`); an excluded frame is in no pair.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tarfile
import zlib
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from functools import partial
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np
import scipy.io
from PIL import Image

from sparsegen.config import ParamsError
from sparsegen.data.archives import DatasetUnavailable, recorded_sha256, sidecar
from sparsegen.data.coco_masks import fit_mask, mask_png
from sparsegen.data.deepfashion import problems_error
from sparsegen.data.pose_masks import ACTION_KERNELS, LIMBS_13, action_kernel, pair_mask
from sparsegen.data.prepare import Item
from sparsegen.download import DownloadError, check_file, download
from sparsegen.io import ImageReadError, atomic_dir, atomic_path, read_image, write_text

log = logging.getLogger(__name__)

FRAMES, LABELS = "frames", "labels"
JOINTS = ("head", "l_shoulder", "r_shoulder", "l_elbow", "r_elbow", "l_wrist", "r_wrist",
          "l_hip", "r_hip", "l_knee", "r_knee", "l_ankle", "r_ankle")
KERNEL_UNITS = ("frame", "resized")   # settings `kernel_unit` (frame_pair_mask)
RESIZED = 256                          # the resized frame ACTION_KERNELS count in ("resized")
LICENCE = ("Penn Action (University of Pennsylvania): academic research use; frames from "
           "YouTube videos under their owners' copyright")


class LabelError(ValueError):
    """A Penn Action label file is unreadable or malformed (the message names the file)."""


@dataclass(frozen=True)
class Video:
    """One video: its label fields and its frame files (names relative to the raw folder)."""

    id: str
    action: str
    train: bool
    points: np.ndarray      # (nframes, 13, 3): x, y, visible (0/1)
    frames: tuple[str, ...]  # `frames/<video>/<nnnnnn>.jpg`, sorted


def _field(mat: Mapping[str, Any], key: str, path: Path) -> np.ndarray:
    if key not in mat:
        raise LabelError(f"{path}: no field {key!r} (fields: "
                         f"{', '.join(k for k in mat if not k.startswith('__'))})")
    return np.asarray(mat[key])


def read_label(path: Path) -> tuple[str, bool, np.ndarray]:
    """(action, official train video, points (nframes, 13, 3) [x, y, visible])."""
    try:
        mat = scipy.io.loadmat(path)
    except FileNotFoundError:
        raise LabelError(f"{path}: file not found") from None
    except (ValueError, TypeError, OSError, NotImplementedError) as e:
        raise LabelError(f"{path}: not a readable MATLAB file ({e})") from None
    action = _field(mat, "action", path).ravel()
    if action.dtype.kind != "U" or action.size != 1:
        raise LabelError(f"{path}: field 'action' is not a string")
    train = _field(mat, "train", path).ravel()
    if train.size != 1 or train[0] not in (1, -1):
        raise LabelError(f"{path}: field 'train' is {train.tolist()}, expected 1 or -1")
    arrays = [_field(mat, k, path) for k in ("x", "y", "visibility")]
    for key, a in zip(("x", "y", "visibility"), arrays, strict=True):
        if a.ndim != 2 or a.shape[1] != len(JOINTS) or a.shape != arrays[0].shape:
            raise LabelError(f"{path}: field {key!r} has shape {a.shape}, expected "
                             f"(nframes, {len(JOINTS)}) like 'x' {arrays[0].shape}")
        if a.dtype.kind not in "biuf" or not np.isfinite(a.astype(float)).all():
            raise LabelError(f"{path}: field {key!r} holds non-numbers or non-finite values")
    if not np.isin(arrays[2], (0, 1)).all():
        raise LabelError(f"{path}: field 'visibility' holds values other than 0 and 1")
    return str(action[0]), bool(train[0] == 1), np.stack(arrays, -1).astype(np.float64)


def keypoints_json(frame: Path, points: np.ndarray) -> bytes:
    """The `keypoints` aux file: {"frame": [H, W], "points": [[x, y] or null] * 13}."""
    height, width = frame_size(frame)
    doc = {"frame": [height, width],
           "points": [[float(x), float(y)] if v else None for x, y, v in points]}
    return json.dumps(doc, separators=(",", ":")).encode()


def frame_size(frame: Path) -> tuple[int, int]:
    """(H, W) of an image file, from its header."""
    try:
        with Image.open(frame) as im:
            return im.size[1], im.size[0]
    except (OSError, SyntaxError) as e:
        raise ImageReadError(f"{frame}: unreadable or corrupt image ({e})") from None


def frame_pair_mask(frame: Path, a: np.ndarray, b: np.ndarray, action: str, size: int,
                    unit: str) -> bytes:
    """The `mask` aux file of a pair: `pair_mask_array` of the frame's size."""
    height, width = frame_size(frame)
    return mask_png(pair_mask_array(height, width, a, b, action, size, unit))


def pair_mask_array(height: int, width: int, a: np.ndarray, b: np.ndarray, action: str,
                    size: int, unit: str, kernel_scale: float | None = None) -> np.ndarray:
    """Bool (size, size): `pair_mask` of both poses ((13, 3) [x, y, visible], pixels of the
    H x W frame) with the action's kernel. unit "frame": kernel in original frame pixels,
    drawn on the frame (a square canvas of the long side, cut to H x W), then resized with the
    frame to size x size; unit "resized": kernel in pixels of the 256 x 256 resized frame
    (pose_masks' reading) times `kernel_scale` (default size / 256: the same share of the
    frame), drawn at size x size on the stretched coordinates. The prepare
    step draws the test masks with it and iLAT's training draws its per-step masks with it."""
    if unit == "frame":
        side = max(height, width)
        mask = pair_mask(a, b, LIMBS_13, ACTION_KERNELS[action], side)[:height, :width]
        return fit_mask(mask, size)
    stretch = np.array([size / width, size / height])
    a, b = (np.column_stack([(p[:, :2] + 0.5) * stretch - 0.5, p[:, 2]]) for p in (a, b))
    scale = size / RESIZED if kernel_scale is None else kernel_scale
    return pair_mask(a, b, LIMBS_13, action_kernel(action, scale), size)


def draw_pairs(videos: list[Video], n: int, seed: int,
               usable: Callable[[str], bool]) -> list[tuple[Video, int, int]]:
    """`n` (video, reference frame index, target frame index) pairs, seeded: videos in a seeded
    order, one pair per video per round; reference frames never repeat."""
    rng = np.random.default_rng(seed)
    order = [videos[i] for i in rng.permutation(len(videos))]
    used: set[str] = set()
    pairs: list[tuple[Video, int, int]] = []
    while len(pairs) < n:
        before = len(pairs)
        for video in order:
            if len(pairs) == n:
                break
            free = [i for i, f in enumerate(video.frames) if usable(f)]
            refs = [i for i in free if video.frames[i] not in used]
            if len(free) < 2 or not refs:
                continue
            ref = refs[int(rng.integers(len(refs)))]
            others = [i for i in free if i != ref]
            target = others[int(rng.integers(len(others)))]
            used.add(video.frames[ref])
            pairs.append((video, ref, target))
        if len(pairs) == before:
            raise ParamsError(f"n_test {n}: only {len(pairs)} test pairs with distinct "
                              f"reference frames exist in {len(videos)} test video(s)")
    return pairs


def frame_id(name: str) -> str:
    """'frames/0001/000001.jpg' -> '0001_000001'."""
    parts = PurePosixPath(name).parts
    return f"{parts[1]}_{PurePosixPath(parts[2]).stem}"


def _settings(settings: Mapping[str, Any], dataset: str) -> tuple[int, str]:
    """(frame_stride, kernel_unit), checked."""
    stride, unit = settings.get("frame_stride"), settings.get("kernel_unit")
    if not isinstance(stride, int) or isinstance(stride, bool) or stride < 1:
        raise ParamsError(f"datasets.{dataset}.frame_stride: {stride!r}; expected a positive "
                          f"integer (every n-th frame of a train video is a row)")
    if unit not in KERNEL_UNITS:
        raise ParamsError(f"datasets.{dataset}.kernel_unit: {unit!r} is not one of "
                          f"{', '.join(KERNEL_UNITS)}")
    return stride, unit


@dataclass(frozen=True)
class PennActionSource:
    """The published tar.gz, unpacked at fetch; rows and pairs as the module describes."""

    name: str = "penn_action"
    url: str = "https://www.cis.upenn.edu/~kostas/Penn_Action.tar.gz"
    filename: str = "Penn_Action.tar.gz"
    folder: str = "Penn_Action"
    n_videos: int | None = 2_326
    synthetic = False

    def archive(self, raw_dir: Path) -> Path:
        return Path(raw_dir) / self.filename

    def extracted(self, raw_dir: Path) -> Path:
        return Path(raw_dir) / self.folder

    def raw_files(self, raw_dir: Path) -> list[Path]:
        """The unpacked folder, and the archive where present."""
        archive = self.archive(raw_dir)
        return ([archive] if archive.exists() else []) + [self.extracted(raw_dir)]

    def unavailable(self, dataset: str, raw_dir: Path, reason: str) -> DatasetUnavailable:
        raw = Path(raw_dir).absolute()
        return DatasetUnavailable(
            f"dataset {dataset!r}: Penn Action is not available: {reason}\n"
            f"Download it by hand\n  {self.url}\n  (about 3 GB; no checksum published; "
            f"{self.n_videos or 'the'} videos: {self.folder}/frames/<video>/*.jpg and "
            f"{self.folder}/labels/<video>.mat)\nand save it as\n  {raw / self.filename}\n"
            f"(or unpack it there so that {raw / self.folder}/ holds frames/ and labels/), then "
            f"run the fetch step again: it unpacks the archive, checks that every video has "
            f"its label file and frames, and records the archive's sha256 in "
            f"{sidecar(self.archive(raw_dir)).name}.\nTerms: {LICENCE}")

    # --- fetch ------------------------------------------------------------------------------

    def _unpack(self, archive: Path, dest: Path) -> None:
        """Stream `frames/` and `labels/` of the tar.gz (below any top folder) into `dest`."""
        try:
            with atomic_dir(dest) as tmp, tarfile.open(archive, mode="r|gz") as tf:
                for info in tf:
                    parts = PurePosixPath(info.name).parts
                    start = next((i for i, p in enumerate(parts) if p in (FRAMES, LABELS)),
                                 None)
                    if not info.isfile() or start is None or start > 1:
                        continue
                    rel = PurePosixPath(*parts[start:])
                    if ".." in rel.parts:
                        raise DownloadError(f"{archive}: unsafe member path {info.name!r}")
                    (tmp / rel).parent.mkdir(parents=True, exist_ok=True)
                    src = tf.extractfile(info)
                    assert src is not None  # a regular file
                    with src, open(tmp / rel, "wb") as dst:
                        shutil.copyfileobj(src, dst, 1 << 20)
        except (tarfile.TarError, EOFError, zlib.error, OSError) as e:
            raise DownloadError(f"{archive}: not a readable .tar.gz archive ({e})") from None

    def _check_folder(self, raw_dir: Path) -> int:
        """Number of videos; every label file needs its frame folder."""
        root = self.extracted(raw_dir)
        labels = sorted((root / LABELS).glob("*.mat")) if (root / LABELS).is_dir() else []
        if not labels:
            raise DownloadError(f"{root / LABELS} holds no .mat label files")
        if self.n_videos is not None and len(labels) != self.n_videos:
            raise DownloadError(f"{root / LABELS}: {len(labels)} label files, expected "
                                f"{self.n_videos}")
        missing = [p.stem for p in labels if not (root / FRAMES / p.stem).is_dir()]
        if missing:
            raise DownloadError(f"{root / FRAMES}: no frame folder for video(s) "
                                f"{', '.join(missing[:10])}")
        return len(labels)

    def fetch(self, dataset: str, raw_dir: Path) -> None:
        """Download (unless present), pin and unpack the archive; check the unpacked videos."""
        raw = Path(raw_dir)
        archive, folder = self.archive(raw), self.extracted(raw)
        try:
            if archive.exists():
                digest = check_file(archive)
                recorded = recorded_sha256(archive)
                if recorded is not None and recorded != digest:
                    raise DownloadError(f"{archive}: sha256 {digest} differs from {recorded} "
                                        f"recorded in {sidecar(archive)} (the file changed)")
                write_text(sidecar(archive), f"{digest}  {archive.name}\n")
            elif not folder.is_dir():
                log.info("%s: downloading %s", dataset, self.url)
                with atomic_path(archive) as tmp:
                    digest = download(self.url, tmp)
                write_text(sidecar(archive), f"{digest}  {archive.name}\n")
            if archive.exists() and not folder.is_dir():
                log.info("%s: unpacking %s", dataset, archive)
                self._unpack(archive, folder)
            count = self._check_folder(raw)
        except DownloadError as e:
            raise self.unavailable(dataset, raw, str(e)) from None
        log.info("%s: %d videos in %s", dataset, count, folder)

    def upstream(self, raw_dir: Path) -> dict[str, Any]:
        archive = self.archive(raw_dir)
        return {"archive": self.filename, "sha256": recorded_sha256(archive),
                "folder": self.folder}

    # --- prepare ----------------------------------------------------------------------------

    def videos(self, raw_dir: Path, problems: list[str]) -> list[Video]:
        """Every video whose label file and frames agree; the others' problems appended."""
        root = self.extracted(raw_dir)
        out = []
        for label in sorted((root / LABELS).glob("*.mat")):
            try:
                action, train, points = read_label(label)
            except LabelError as e:
                problems.append(f"{e} (video {label.stem})")
                continue
            folder = root / FRAMES / label.stem
            frames = (sorted(e.name for e in os.scandir(folder)
                             if e.name.lower().endswith(".jpg")) if folder.is_dir() else [])
            if len(frames) != len(points):
                problems.append(f"{folder}: {len(frames)} frame file(s), but {label} labels "
                                f"{len(points)} frame(s) (video {label.stem})")
                continue
            if action not in ACTION_KERNELS:
                problems.append(f"{label}: action {action!r} has no mask kernel (known: "
                                f"{', '.join(sorted(ACTION_KERNELS))}) (video {label.stem})")
                continue
            out.append(Video(label.stem, action, train, points,
                             tuple(f"{FRAMES}/{label.stem}/{f}" for f in frames)))
        return out

    @contextmanager
    def items(self, dataset: str, settings: Mapping[str, Any],
              raw_dir: Path) -> Iterator[list[Item]]:
        """Strided train frames and the frames of the seeded test pairs (module docstring)."""
        raw = Path(raw_dir)
        stride, unit = _settings(settings, dataset)
        if not self.extracted(raw).is_dir():
            raise self.unavailable(dataset, raw, f"{self.extracted(raw)} not found (run the "
                                   f"fetch step)")
        problems: list[str] = []
        videos = self.videos(raw, problems)
        if problems:
            raise problems_error(dataset, f"the Penn Action labels and frames in "
                                 f"{self.extracted(raw).absolute()}", problems,
                                 "Replace the broken files from the archive (delete "
                                 f"{self.extracted(raw)} and fetch again).")
        exclude = frozenset(settings.get("exclude") or ())
        root = self.extracted(raw)
        size = settings["size"]

        def item(video: Video, index: int, split: str, target: int | None = None) -> Item:
            """Frame `index` of `video`; with `target`, the reference row of that pair."""
            name = video.frames[index]
            aux: dict[str, tuple[str, Callable[[], bytes]]] = {"keypoints": (
                "_keypoints.json", partial(keypoints_json, root / name, video.points[index]))}
            if target is not None:
                aux["mask"] = ("_mask.png", partial(
                    frame_pair_mask, root / name, video.points[index], video.points[target],
                    video.action, size, unit))
            return Item(id=frame_id(name), name=name, source=f"{self.folder}/{name}",
                        licence=LICENCE, load=partial(read_image, root / name), split=split,
                        extra={"video": video.id, "action": video.action,
                               "pair": "" if target is None else frame_id(video.frames[target])},
                        aux=aux)

        items = [item(v, i, "train") for v in videos if v.train
                 for i in range(0, len(v.frames), stride) if v.frames[i] not in exclude]
        pairs = draw_pairs([v for v in videos if not v.train], settings["n_test"],
                           settings["seed"], lambda f: f not in exclude)
        refs = {v.frames[r]: (v, r, t) for v, r, t in pairs}
        targets = {v.frames[t]: (v, t) for v, _, t in pairs}
        items += [item(v, r, "test", t) for v, r, t in refs.values()]
        items += [item(v, t, "test") for name, (v, t) in sorted(targets.items())
                  if name not in refs]
        log.info("%s: %d videos, %d train frame(s) (stride %d), %d test pair(s)", dataset,
                 len(videos), sum(it.split == "train" for it in items), stride, len(pairs))
        # Excluded frames are listed so that prepare reports them as excluded.
        items += [Item(id=frame_id(n), name=n, source=n, licence=LICENCE,
                       load=partial(read_image, root / n), split="train")
                  for n in sorted(exclude) if (root / n).is_file()]
        yield items


SOURCE = PennActionSource()
