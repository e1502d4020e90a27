"""DeepFashion In-shop with CoCosNet's OpenPose keypoints and lists: DynaST's pose -> person data.

Raw folder (what CoCosNet's README asks for, all from Google Drive, placed by hand):
  img/ (or img.zip)     the In-shop images, `img/<MEN|WOMEN>/<category>/<id_x>/<nn_v_view>.jpg`
  pose/ (or pose.zip)   OpenPose (Hzzone/pytorch-openpose) per image, beside the same relative
                        path: `<name>_candidate.txt`, rows `x y score id` (one per detected joint);
                        `<name>_subset.txt`, rows of 20 numbers (one per person): for each
                        COCO-18 keypoint the candidate row index or -1, then total score, count
  train.txt, val.txt    the official split, one image path per line (`img\\MEN\\...\\x.jpg`)
  deepfashion_ref.txt, deepfashion_ref_test.txt, deepfashion_self_pair.txt
                        `key,exemplar,...,exemplar` per line, Windows back-slashed paths
Google Drive needs a browser, so fetch downloads nothing: it names each missing file, unpacks
the zips, and records the sha256 of every list file and zip in the receipt `SHA256SUMS`
(`sha256sum -c` format); later fetches and every prepare check the list files against it.

Items: every image of train.txt (split train) and val.txt (split test). Each carries
  - aux `keypoints` (`<id>_keypoints.json`): {"frame": [H, W], "points": [[x, y] or null] * 18},
    COCO-18 order (KEYPOINTS), pixel coordinates of the original image (the frame's H x W), the
    first person of the subset file; null where OpenPose found no joint;
  - `exemplar`: the sample id of the exemplar, by the official code's rule (`--video_like`,
    `data/deepfashion_dataset.py::get_ref_video_like`): the first entry of the key's
    deepfashion_self_pair line (same garment, other view) if there is one, else the LAST entry
    of its deepfashion_ref.txt (train) / deepfashion_ref_test.txt (test) line (the last for
    test too: `--video_like`, set by DynaST's test script, takes `items[-1]` in both phases;
    only the non-video_like branch takes the first). Upstream consults the self-pair list only
    for keys of the ref list; a key only in the self-pair list is accepted here;
  - `self_pair`: "1" when the exemplar came from deepfashion_self_pair, else "0".
Upstream crashes with KeyErrors on keys missing from the lists (microsoft/CoCosNet#2, #36,
Huage001/DynaST#7); here every such problem is reported before anything is written, naming the
file and line.

The receipt, list and zip helpers at the end are shared with `celebahq` and `dpst`.
"""

from __future__ import annotations

import json
import logging
import shutil
import zipfile
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from functools import partial
from pathlib import Path, PurePosixPath
from typing import Any

from PIL import Image

from sparsegen.data.archives import DatasetUnavailable, sample_id
from sparsegen.data.prepare import Item
from sparsegen.download import DownloadError, check_file
from sparsegen.io import ImageReadError, atomic_dir, read_image, write_text

log = logging.getLogger(__name__)

TRAIN_LIST, TEST_LIST = "train.txt", "val.txt"
REF, REF_TEST, SELF_PAIR = ("deepfashion_ref.txt", "deepfashion_ref_test.txt",
                            "deepfashion_self_pair.txt")
IMAGES, POSES = "img", "pose"
KEYPOINTS = ("nose", "neck", "r_shoulder", "r_elbow", "r_wrist", "l_shoulder", "l_elbow",
             "l_wrist", "r_hip", "r_knee", "r_ankle", "l_hip", "l_knee", "l_ankle", "r_eye",
             "l_eye", "r_ear", "l_ear")   # OpenPose COCO-18
LICENCE = ("DeepFashion (CUHK MMLab): non-commercial research and educational use only; "
           "OpenPose keypoints and lists from microsoft/CoCosNet inherit these terms")
SHOWN = 10   # problems quoted in one error message


class PoseFileError(ValueError):
    """An OpenPose candidate/subset file is missing or malformed (the message names file, line)."""


# --- keypoints ------------------------------------------------------------------------------

def _rows(path: Path, width: int, layout: str) -> list[tuple[int, list[float]]]:
    """Non-blank lines of a whitespace-separated number file as (line number, numbers)."""
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise PoseFileError(f"{path}: file not found") from None
    rows = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            values = [float(v) for v in line.split()]
        except ValueError:
            raise PoseFileError(f"{path}:{number}: not numbers: {line.strip()!r}") from None
        if len(values) != width:
            raise PoseFileError(f"{path}:{number}: {len(values)} numbers, expected {width} "
                                f"({layout})")
        rows.append((number, values))
    return rows


def read_pose(candidate: Path, subset: Path) -> list[tuple[float, float] | None]:
    """The first person's 18 keypoints (x, y) in COCO-18 order, None where not detected."""
    joints = _rows(candidate, 4, "x y score id")
    people = _rows(subset, 20, "a candidate row or -1 per COCO-18 keypoint, score, count")
    if not people:
        raise PoseFileError(f"{subset}: no person row")
    line, person = people[0]
    points: list[tuple[float, float] | None] = []
    for k, index in enumerate(person[:18]):
        if index == -1:
            points.append(None)
            continue
        if index != int(index) or not 0 <= index < len(joints):
            raise PoseFileError(f"{subset}:{line}: keypoint {k} ({KEYPOINTS[k]}) names "
                                f"candidate {index:g}, but {candidate} has {len(joints)} rows")
        x, y = joints[int(index)][1][:2]
        points.append((x, y))
    return points


def keypoints_json(image: Path, candidate: Path, subset: Path) -> bytes:
    """The `keypoints` aux file: {"frame": [H, W], "points": [[x, y] or null] * 18}."""
    points = read_pose(candidate, subset)
    try:
        with Image.open(image) as im:
            width, height = im.size
    except (OSError, SyntaxError) as e:
        raise ImageReadError(f"{image}: unreadable or corrupt image ({e})") from None
    doc = {"frame": [height, width], "points": [list(p) if p else None for p in points]}
    return json.dumps(doc, separators=(",", ":")).encode()


# --- lists ----------------------------------------------------------------------------------

@dataclass(frozen=True)
class Pair:
    """One line of a ref / self-pair list: the key's exemplars, in file order."""

    exemplars: tuple[str, ...]
    where: str   # "<file>:<line>"


def image_path(entry: str) -> str:
    """A list entry as a posix path below the raw folder: 'img\\MEN\\a.jpg' -> 'img/MEN/a.jpg'."""
    return entry.strip().replace("\\", "/")


def read_pairs(path: Path, normalise: Callable[[str], str] = image_path) -> dict[str, Pair]:
    """`key,exemplar,...` lines by key (normalised); a repeated key keeps its last line, as the
    upstream dict does."""
    pairs: dict[str, Pair] = {}
    repeated = 0
    for number, line in numbered_lines(path):
        fields = [normalise(f) for f in line.split(",")]
        if len(fields) < 2 or not all(fields):
            raise DatasetUnavailable(f"{path}:{number}: expected 'key,exemplar[,exemplar...]', "
                                     f"found {line!r}")
        repeated += fields[0] in pairs
        pairs[fields[0]] = Pair(tuple(fields[1:]), f"{path}:{number}")
    if repeated:
        log.warning("%s: %d key(s) listed more than once; the last line of each is used",
                    path, repeated)
    return pairs


def pick_exemplar(key: str, self_pair: Mapping[str, Pair],
                  ref: Mapping[str, Pair]) -> tuple[str, bool, str] | None:
    """(exemplar, from self_pair, where) by the `--video_like` rule, None when unlisted."""
    if key in self_pair:
        pair = self_pair[key]
        return pair.exemplars[0], True, pair.where
    if key in ref:
        pair = ref[key]
        return pair.exemplars[-1], False, pair.where
    return None


def _listed(raw_dir: Path, problems: list[str]) -> dict[str, tuple[str, str]]:
    """name -> (split, "<list>:<line>") over train.txt and val.txt."""
    listed: dict[str, tuple[str, str]] = {}
    for list_name, split in ((TRAIN_LIST, "train"), (TEST_LIST, "test")):
        for number, line in numbered_lines(raw_dir / list_name):
            where, name = f"{raw_dir / list_name}:{number}", image_path(line)
            parts = PurePosixPath(name).parts
            if parts[:1] != (IMAGES,) or ".." in parts or not name.endswith(".jpg"):
                problems.append(f"{where}: {line!r} is not a path {IMAGES}\\...\\<name>.jpg")
            elif name in listed:
                problems.append(f"{where}: {name} is listed already at {listed[name][1]}")
            else:
                listed[name] = (split, where)
    return listed


def pose_files(raw_dir: Path, name: str) -> tuple[Path, Path]:
    """The candidate and subset files of image `name` ('img/MEN/.../01_1_front.jpg')."""
    stem = f"{POSES}/{name[len(IMAGES) + 1:-len('.jpg')]}"
    return raw_dir / f"{stem}_candidate.txt", raw_dir / f"{stem}_subset.txt"


def problems_error(dataset: str, what: str, problems: list[str],
                   remedy: str) -> DatasetUnavailable:
    shown = "\n  ".join(problems[:SHOWN])
    more = f"\n  ... and {len(problems) - SHOWN} more" if len(problems) > SHOWN else ""
    return DatasetUnavailable(f"dataset {dataset!r}: {len(problems)} problem(s) in {what}:\n"
                              f"  {shown}{more}\n{remedy}")


# --- the source -----------------------------------------------------------------------------

DRIVE = "https://drive.google.com/drive/folders/"


@dataclass(frozen=True)
class Needed:
    """One upstream file or folder that a user places in the raw folder by hand."""

    path: str                   # relative to the raw folder: a list file, or a folder
    what: str                   # what it is and where to get it, for the message
    archive: str | None = None  # a zip in the raw folder that unpacks to `path` (folders)


@dataclass(frozen=True)
class ManualFiles:
    """Upstream files that only a browser can download: check, pin, unpack."""

    title: str
    terms: str
    needed: tuple[Needed, ...]

    def lists(self) -> list[str]:
        return [n.path for n in self.needed if n.archive is None]

    def folders(self) -> list[Needed]:
        return [n for n in self.needed if n.archive is not None]

    def present_archives(self, raw_dir: Path) -> list[str]:
        names = dict.fromkeys(n.archive for n in self.folders())
        return [a for a in names if a and (raw_dir / a).is_file()]

    def raw_files(self, raw_dir: Path) -> list[Path]:
        """Lists, folders, the receipt, and the zips where present."""
        return ([raw_dir / p for p in self.lists()] + [raw_dir / f.path for f in self.folders()]
                + [raw_dir / a for a in self.present_archives(raw_dir)] + [raw_dir / RECEIPT])

    def unavailable(self, dataset: str, raw_dir: Path, reason: str) -> DatasetUnavailable:
        raw = raw_dir.absolute()
        places = []
        for n in self.needed:
            where = (f"{raw / n.archive}  (or the folder {raw / n.path}/ it unpacks to)"
                     if n.archive else str(raw / n.path))
            places.append(f"  {where}\n      {n.what}")
        return DatasetUnavailable(
            f"dataset {dataset!r}: {self.title} is not available: {reason}\n"
            f"Its files are on Google Drive, which needs a browser: download them by hand and "
            f"place them as\n" + "\n".join(places) + "\n"
            f"then run the pipeline again: its fetch step unpacks the zips and records the "
            f"sha256 of every list file and zip in {raw / RECEIPT}; later runs check them.\n"
            f"Terms: {self.terms}")

    def fetch(self, dataset: str, raw_dir: Path) -> None:
        """Check that everything is present, pin lists and zips, unpack missing folders."""
        missing = [n for n in self.needed if not (raw_dir / n.path).exists()
                   and not (n.archive and (raw_dir / n.archive).is_file())]
        if missing:
            names = ", ".join(n.archive or n.path for n in missing)
            raise self.unavailable(dataset, raw_dir, f"{len(missing)} missing in "
                                   f"{raw_dir.absolute()}: {names}")
        try:
            pin(raw_dir, self.lists() + self.present_archives(raw_dir))
            for folder in self.folders():
                target = raw_dir / folder.path
                if not target.is_dir():
                    log.info("%s: unpacking %s from %s", dataset, folder.path, folder.archive)
                    extract_folder(raw_dir / str(folder.archive), folder.path, raw_dir)
                if next(target.rglob("*.*"), None) is None:
                    raise DownloadError(f"{target} holds no files")
        except DownloadError as e:
            raise self.unavailable(dataset, raw_dir, str(e)) from None
        log.info("%s: lists and zips pinned in %s", dataset, raw_dir / RECEIPT)

    def check(self, dataset: str, raw_dir: Path) -> None:
        """Before prepare: lists unchanged since the fetch pinned them, folders unpacked."""
        try:
            verify_pinned(raw_dir, self.lists())
        except DownloadError as e:
            raise self.unavailable(dataset, raw_dir, str(e)) from None
        for folder in self.folders():
            if not (raw_dir / folder.path).is_dir():
                raise self.unavailable(dataset, raw_dir, f"{raw_dir / folder.path} not found "
                                       f"(run the fetch step, which unpacks {folder.archive})")

    def upstream(self, raw_dir: Path) -> dict[str, Any]:
        pinned = read_receipt(raw_dir)
        return {"receipt": RECEIPT, "sha256": {p: pinned.get(p) for p in
                                               self.lists() + self.present_archives(raw_dir)},
                "folders": [f.path for f in self.folders()]}


FILES = ManualFiles(
    title="DeepFashion In-shop with CoCosNet's OpenPose keypoints and lists",
    terms=LICENCE,
    needed=(
        Needed(IMAGES, "the In-shop images, 256x256 (`Img/img.zip` of the DeepFashion folder "
               f"{DRIVE}0B7EVK8r0v71pVDZFQXRsMDZCX1E)", archive="img.zip"),
        Needed(POSES, "CoCosNet's OpenPose results (save the download as pose.zip): "
               "https://drive.google.com/file/d/1Vzpl3DpHZistiEjXXb0Blk4L12LsDluU",
               archive="pose.zip"),
        Needed(TRAIN_LIST, f"CoCosNet's train split: {DRIVE}1kLOeRYZ1wUDzo3eg9ZihJj-yuyDQhp_T"),
        Needed(TEST_LIST, f"CoCosNet's val split: {DRIVE}1kLOeRYZ1wUDzo3eg9ZihJj-yuyDQhp_T"),
        *(Needed(name, f"CoCosNet's exemplar pairs: {DRIVE}1FEMuwWZqk_cuzl7HSSbCrtl1ynIE0zIE")
          for name in (REF, REF_TEST, SELF_PAIR)),
    ),
)


@dataclass(frozen=True)
class ManualSource:
    """A real source whose files are placed by hand (`ManualFiles`): fetch checks and pins
    them; a subclass adds `items`."""

    name: str
    files: ManualFiles
    synthetic = False

    def raw_files(self, raw_dir: Path) -> list[Path]:
        return self.files.raw_files(Path(raw_dir))

    def fetch(self, dataset: str, raw_dir: Path) -> None:
        self.files.fetch(dataset, Path(raw_dir))

    def upstream(self, raw_dir: Path) -> dict[str, Any]:
        return self.files.upstream(Path(raw_dir))


@dataclass(frozen=True)
class DeepFashionSource(ManualSource):
    """DeepFashion In-shop for pose-guided person synthesis, CoCosNet's split and pairs."""

    name: str = "deepfashion"
    files: ManualFiles = FILES

    @contextmanager
    def items(self, dataset: str, settings: Mapping[str, Any],
              raw_dir: Path) -> Iterator[list[Item]]:
        """Every listed image with its keypoints and exemplar; every problem of the kept ones
        (bad list lines, absent images, bad pose files, unknown exemplars) is reported first."""
        raw = Path(raw_dir)
        self.files.check(dataset, raw)
        exclude = frozenset(settings.get("exclude") or ())
        problems: list[str] = []
        listed = _listed(raw, problems)
        self_pair = read_pairs(raw / SELF_PAIR)
        refs = {"train": (read_pairs(raw / REF), REF), "test": (read_pairs(raw / REF_TEST),
                                                                  REF_TEST)}
        items = []
        for name, (split, where) in sorted(listed.items()):
            if name in exclude:
                items.append(Item(id=sample_id(name[len(IMAGES) + 1:]), name=name, source=name,
                                  licence=LICENCE, load=partial(read_image, raw / name),
                                  split=split))
                continue
            item = self._item(raw, name, split, where, listed, exclude, self_pair, refs[split],
                              problems)
            if item is not None:
                items.append(item)
        if problems:
            raise problems_error(
                dataset, f"the DeepFashion lists and poses in {raw.absolute()}", problems,
                f"To leave an image out, list its path (as img/...) under "
                f"datasets.{dataset}.exclude in params.yaml.")
        log.info("%s: %d listed image(s), %d excluded", dataset, len(items),
                 len(exclude & listed.keys()))
        yield items

    def _item(self, raw: Path, name: str, split: str, where: str,
              listed: Mapping[str, tuple[str, str]], exclude: frozenset[str],
              self_pair: Mapping[str, Pair], ref: tuple[Mapping[str, Pair], str],
              problems: list[str]) -> Item | None:
        """One kept image, or None with its problems appended."""
        before = len(problems)
        if not (raw / name).is_file():
            problems.append(f"{where}: names {name}, which is not in {raw / IMAGES}")
        candidate, subset = pose_files(raw, name)
        try:
            read_pose(candidate, subset)
        except PoseFileError as e:
            problems.append(f"{e} (pose of {name}, {where})")
        picked = pick_exemplar(name, self_pair, ref[0])
        if picked is None:
            problems.append(f"{where}: {name} has no line in {raw / SELF_PAIR} or "
                            f"{raw / ref[1]}")
            return None
        exemplar, paired, pair_where = picked
        if exemplar not in listed:
            problems.append(f"{pair_where}: exemplar {exemplar} of {name} is not listed in "
                            f"{TRAIN_LIST} or {TEST_LIST}")
        elif exemplar in exclude:
            problems.append(f"{pair_where}: exemplar {exemplar} of {name} is excluded; "
                            f"exclude {name} too")
        if len(problems) > before:
            return None
        return Item(id=sample_id(name[len(IMAGES) + 1:]), name=name, source=name,
                    licence=LICENCE, load=partial(read_image, raw / name), split=split,
                    extra={"exemplar": sample_id(exemplar[len(IMAGES) + 1:]),
                           "self_pair": "1" if paired else "0"},
                    aux={"keypoints": ("_keypoints.json",
                                       partial(keypoints_json, raw / name, candidate, subset))})


SOURCE = DeepFashionSource()


# --- shared with celebahq and dpst: receipts, list files, zips ---------------------------------

RECEIPT = "SHA256SUMS"


def read_receipt(raw_dir: Path) -> dict[str, str]:
    """Recorded sha256 by path relative to raw_dir (empty when nothing is recorded yet)."""
    path = raw_dir / RECEIPT
    if not path.is_file():
        return {}
    recorded = {}
    for number, line in numbered_lines(path):
        digest, sep, rel = line.partition("  ")
        if not sep or len(digest) != 64:
            raise DatasetUnavailable(f"{path}:{number}: expected '<sha256>  <path>', "
                                     f"found {line!r}")
        recorded[rel] = digest
    return recorded


def pin(raw_dir: Path, rels: Iterable[str]) -> dict[str, str]:
    """Hash each file; check it against the receipt, record those not yet in it. Raises
    DownloadError naming a changed file (and records nothing then)."""
    recorded = read_receipt(raw_dir)
    found = {rel: check_file(raw_dir / rel) for rel in rels}
    for rel, digest in found.items():
        if rel in recorded and recorded[rel] != digest:
            raise DownloadError(f"{raw_dir / rel}: sha256 {digest} differs from {recorded[rel]} "
                                f"recorded in {raw_dir / RECEIPT} when it was first fetched "
                                f"(the file changed; if that is intended, delete its line "
                                f"there and fetch again)")
    if found.keys() - recorded.keys():
        merged = {**recorded, **found}
        write_text(raw_dir / RECEIPT, "".join(f"{merged[r]}  {r}\n" for r in sorted(merged)))
    return found


def verify_pinned(raw_dir: Path, rels: Iterable[str]) -> None:
    """Each file exists, is in the receipt and still has the recorded sha256."""
    recorded = read_receipt(raw_dir)
    for rel in rels:
        if rel not in recorded:
            raise DownloadError(f"{raw_dir / rel} is not recorded in {raw_dir / RECEIPT} "
                                f"(run the fetch step)")
        if (digest := check_file(raw_dir / rel)) != recorded[rel]:
            raise DownloadError(f"{raw_dir / rel}: sha256 {digest} differs from {recorded[rel]} "
                                f"recorded in {raw_dir / RECEIPT} (the file changed)")


def numbered_lines(path: Path) -> list[tuple[int, str]]:
    """(1-based line number, stripped text) of the non-blank lines; BOM and CRLF tolerated."""
    try:
        text = path.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise DatasetUnavailable(f"{path}: file not found") from None
    except UnicodeDecodeError as e:
        raise DatasetUnavailable(f"{path}: not a text file ({e})") from None
    return [(n, line.strip()) for n, line in enumerate(text.splitlines(), start=1)
            if line.strip()]


def extract_folder(archive: Path, folder: str, raw_dir: Path) -> int:
    """Unpack the members below `<prefix>/<folder>/` of a zip (the shallowest such prefix, often
    none) into `raw_dir/<folder>`, atomically; return the number of files."""
    try:
        with zipfile.ZipFile(archive) as zf:
            names = [n for n in zf.namelist() if not n.endswith("/")
                     and not n.startswith("__MACOSX/")]
            prefixes = {"/".join(p[:p.index(folder)]) for p in
                        (PurePosixPath(n).parts for n in names) if folder in p[:-1]}
            if not prefixes:
                tops = sorted({PurePosixPath(n).parts[0] for n in names})[:5]
                raise DownloadError(f"{archive}: holds no folder {folder}/ (top entries: "
                                    f"{', '.join(tops) or 'none'})")
            start = min(prefixes, key=len)
            start = f"{start}/{folder}/" if start else f"{folder}/"
            members = [n for n in names if n.startswith(start)]
            with atomic_dir(raw_dir / folder) as tmp:
                for member in members:
                    rel = PurePosixPath(member[len(start):])
                    if rel.is_absolute() or ".." in rel.parts:
                        raise DownloadError(f"{archive}: unsafe member path {member!r}")
                    (tmp / rel).parent.mkdir(parents=True, exist_ok=True)
                    with zf.open(member) as src, open(tmp / rel, "wb") as dst:
                        shutil.copyfileobj(src, dst, 1 << 24)
    except (zipfile.BadZipFile, OSError) as e:
        raise DownloadError(f"{archive}: not a readable zip archive ({e})") from None
    return len(members)
