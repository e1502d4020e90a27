"""DynaST's training and test pairs: (S_tgt, I_tgt) with an exemplar (I_ref, S_ref).

Pair datasets (deepfashion, celebahq_edge and their smoke stand-ins) list per row the exemplar
the official rules pick (`exemplar` column, `sparsegen.data.deepfashion` / `celebahq`) and
whether it shows the same person (`self_pair`); labels are made at load time
(`sparsegen.data.labels`). With `train.exemplar_gt_prob` p (CelebA-HQ, CoCosNet's recipe) the
exemplar is the ground truth itself with probability p. The sample weight w_b is 1 for an
exemplar that shows the ground truth's subject (the ground truth, or any pair exemplar when
`train.weight_retrieval`, as the DeepFashion code), else 0.
Style: S_tgt = I_tgt = a content image, I_ref = S_ref = a style image (the paper names no S_ref).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from sparsegen.data.images import load_rgb
from sparsegen.data.labels import load_label
from sparsegen.data.manifest import Sample, read_manifest, split
from sparsegen.layout import dataset_dir


class PairError(ValueError):
    """A pair dataset names an exemplar it does not hold."""


def samples(settings: Mapping[str, Any], role: str, name: str) -> tuple[Path, list[Sample]]:
    directory = dataset_dir(settings, role)
    rows = split(read_manifest(directory), name)
    if not rows:
        raise ValueError(f"{directory}: the {role} dataset has no {name!r} images")
    return directory, rows


def by_id(directory: Path) -> dict[str, Sample]:
    return {s.id: s for s in read_manifest(directory)}


def exemplar_of(row: Sample, index: Mapping[str, Sample], directory: Path) -> Sample:
    """The exemplar a row names (an error naming the manifest and ids when it is absent)."""
    key = row.extra.get("exemplar", "")
    if key not in index:
        raise PairError(f"{directory / 'manifest.csv'}: row {row.id!r} names exemplar {key!r}, "
                        "which the dataset does not hold")
    return index[key]


def crop_window(side: int, crop: int, flip: bool, generator: torch.Generator
                ) -> tuple[int, int, bool]:
    if crop > side:
        raise ValueError(f"crop {crop} larger than the loaded side {side}")
    top = int(torch.randint(0, side - crop + 1, (1,), generator=generator))
    left = int(torch.randint(0, side - crop + 1, (1,), generator=generator))
    return top, left, flip and bool(torch.rand((), generator=generator) < 0.5)


def apply_window(x: torch.Tensor, window: tuple[int, int, bool], crop: int) -> torch.Tensor:
    top, left, flip = window
    out = x[..., top:top + crop, left:left + crop]
    return out.flip(-1) if flip else out


def image_and_label(sample: Sample, task: str, load: int, crop: int,
                    window: tuple[int, int, bool] | None) -> tuple[torch.Tensor, torch.Tensor]:
    """The image in [-1, 1] and its label map, loaded at `load`, cropped/flipped alike."""
    image = load_rgb(sample.path, size=load) * 2 - 1
    label = load_label(sample, task, load)
    if window is not None:
        image, label = apply_window(image, window, crop), apply_window(label, window, crop)
    return image, label


def pair_batch(settings: Mapping[str, Any], rows: list[Sample], index: Mapping[str, Sample],
               directory: Path, generator: torch.Generator) -> dict[str, torch.Tensor]:
    """A training batch of pair rows: targets, exemplars and the sample weights."""
    t, task, size = settings["train"], settings["model"]["task"], settings["model"]["size"]
    load = t["load_size"]
    out: dict[str, list[torch.Tensor]] = {k: [] for k in ("s_tgt", "i_tgt", "s_ref", "i_ref",
                                                         "weight")}
    for row in rows:
        window = crop_window(load, size, t["hflip"], generator) if load != size or t["hflip"] \
            else None
        i_tgt, s_tgt = image_and_label(row, task, load, size, window)
        if bool(torch.rand((), generator=generator) < t["exemplar_gt_prob"]):
            i_ref, s_ref, w = i_tgt, s_tgt, 1.0
        else:
            ex = exemplar_of(row, index, directory)
            ref_window = crop_window(load, size, t["hflip"], generator) if window else None
            i_ref, s_ref = image_and_label(ex, task, load, size, ref_window)
            same = row.extra.get("self_pair", "0") == "1"
            w = 1.0 if (t["weight_retrieval"] or same) else 0.0
        for key, value in (("s_tgt", s_tgt), ("i_tgt", i_tgt), ("s_ref", s_ref),
                           ("i_ref", i_ref), ("weight", torch.tensor(w))):
            out[key].append(value)
    return {k: torch.stack(v) for k, v in out.items()}


def style_batch(settings: Mapping[str, Any], content: list[Sample], style: list[Sample],
                n: int, generator: torch.Generator) -> dict[str, torch.Tensor]:
    """Content (S_tgt = I_tgt) and style (I_ref = S_ref) crops: load, random crop, no flip."""
    t, size = settings["train"], settings["model"]["size"]
    ci = torch.randint(len(content), (n,), generator=generator).tolist()
    si = torch.randint(len(style), (n,), generator=generator).tolist()

    def crop(sample: Sample) -> torch.Tensor:
        image = load_rgb(sample.path, size=t["load_size"]) * 2 - 1
        return apply_window(image, crop_window(t["load_size"], size, False, generator), size)

    c = torch.stack([crop(content[i]) for i in ci])
    s = torch.stack([crop(style[i]) for i in si])
    return {"s_tgt": c, "i_tgt": c, "s_ref": s, "i_ref": s, "weight": torch.ones(n)}
