"""Evaluation samples of a DynaST variant: every test pair through the generator.

Output folder (written by `sparsegen.sampling.sample_folder`, renamed into place when done):
    outputs/<id>.png         Î_tgt at eval.size
    warps/<id>.png           the last block's warp (Ours-x: at x²) bilinearly to eval.size
                             (Table 1 left); none when the variant attends nowhere
    blocks/<id>/<name>.png   every block's warp (64-B1, ...) of the first eval.n_figure pairs
    jpeg/outputs|targets/<id>.jpg   supervised tasks: outputs and ground truths (eval.size) as
                             JPEG eval.jpeg_quality, the FID/SWD inputs (CoCosNet#19)
    pairs.csv                id, output, warp, target, exemplar (style: content, style) paths
    kept.json                per block: how many links each query kept (histogram), formed
    timing.json              matching + synthesis per pair (Table 1 "Time")
    sampling.json            the checkpoint and its training recipe
    untrained/...            with `eval.untrained_reference`: outputs/, warps/, blocks/ and
                             jpeg/outputs/ of the network initialised as training starts
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from sparsegen.data.images import load_rgb, to_uint8
from sparsegen.data.labels import load_label
from sparsegen.data.manifest import Sample
from sparsegen.io import read_image, write_image
from sparsegen.models.dynast import data
from sparsegen.models.dynast.task import build_networks, load_generator
from sparsegen.provenance import device_description
from sparsegen.sampling import sample_folder
from sparsegen.timing import time_callable

PAIRS_CSV = "pairs.csv"
KEPT_JSON = "kept.json"
TIMING_JSON = "timing.json"
UNTRAINED = "untrained"
OUTPUTS, WARPS, BLOCKS, JPEG = "outputs", "warps", "blocks", "jpeg"
COLUMNS = ("id", "output", "warp", "target", "exemplar")


def test_pairs(settings: dict[str, Any], task: str) -> list[dict[str, Any]]:
    """The evaluated pairs: ids sorted, the first eval.n_pairs (0: all).

    Supervised: each test row with the exemplar its `exemplar` column names (DeepFashion: the
    same person in another pose). Style: the test_pairs dataset (DPST: input + its target
    style) or, without one, the content and style test splits zipped in id order."""
    n = settings["eval"]["n_pairs"]
    if task != "style":
        directory, rows = data.samples(settings, "pairs", "test")
        index = data.by_id(directory)
        rows = sorted(rows, key=lambda s: s.id)
        rows = rows[:n] if n else rows
        return [{"id": r.id, "target": r, "exemplar": data.exemplar_of(r, index, directory)}
                for r in rows]
    if settings["datasets"].get("test_pairs"):
        _, rows = data.samples(settings, "test_pairs", "test")
        rows = sorted(rows, key=lambda s: s.id)
        rows = rows[:n] if n else rows
        return [{"id": r.id, "target": r,
                 "exemplar": Sample(f"{r.id}_style", "test", r.path.parent.parent
                                    / r.extra["style"], r.extra.get("style_sha256", ""))}
                for r in rows]
    contents = sorted(data.samples(settings, "content", "test")[1], key=lambda s: s.id)
    styles = sorted(data.samples(settings, "style", "test")[1], key=lambda s: s.id)
    count = min(len(contents), len(styles))
    count = min(count, n) if n else count
    return [{"id": f"c-{c.id}__s-{s.id}", "target": c, "exemplar": s}
            for c, s in zip(contents[:count], styles[:count], strict=True)]


def inputs(settings: dict[str, Any], task: str, pair: dict[str, Any], device: torch.device
           ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(S_tgt, I_ref, S_ref) of one pair at eval.size, batch 1."""
    size = settings["eval"]["size"]
    i_ref = load_rgb(pair["exemplar"].path, size=size)[None] * 2 - 1
    if task == "style":
        s_tgt = load_rgb(pair["target"].path, size=size)[None] * 2 - 1
        return s_tgt.to(device), i_ref.to(device), i_ref.to(device)
    s_tgt = load_label(pair["target"], task, size)[None]
    s_ref = load_label(pair["exemplar"], task, size)[None]
    return s_tgt.to(device), i_ref.to(device), s_ref.to(device)


def image_of(x: torch.Tensor, size: int) -> np.ndarray:
    """[-1, 1] (1, 3, h, w) -> uint8 (size, size, 3), bilinearly resized when smaller."""
    if x.shape[-1] != size:
        x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)
    return to_uint8(((x[0] + 1) / 2).clamp(0, 1))


def generate(net: torch.nn.Module, settings: dict[str, Any], pairs: list[dict[str, Any]],
             device: torch.device, prefix: str, kept: dict[str, Any] | None
             ) -> Iterator[tuple[str, np.ndarray]]:
    """(relative name, image) of every output, last warp and (figure pairs) block warp;
    `kept` collects each block's kept-link histogram."""
    size, n_figure = settings["eval"]["size"], settings["eval"]["n_figure"]
    with torch.inference_mode():
        for i, pair in enumerate(pairs):
            out = net(*inputs(settings, net.model["task"], pair, device))
            yield f"{prefix}{OUTPUTS}/{pair['id']}.png", image_of(out.image, size)
            if out.warps:
                yield f"{prefix}{WARPS}/{pair['id']}.png", image_of(out.warps[-1], size)
            for m in out.matches:
                if i < n_figure and m.match.warp is not None:
                    yield f"{prefix}{BLOCKS}/{pair['id']}/{m.name}.png", image_of(m.match.warp,
                                                                                  size)
                if kept is not None:
                    entry = kept.setdefault(m.name, {"formed": m.match.formed, "mode": m.mode,
                                                     "side": m.side,
                                                     "histogram": [0] * (m.match.formed + 1)})
                    counts = torch.bincount(m.match.kept.flatten().long(),
                                            minlength=m.match.formed + 1)
                    entry["histogram"] = [a + int(b) for a, b in
                                          zip(entry["histogram"], counts.tolist(), strict=False)]


def write_jpegs(root: Path, pairs: list[dict[str, Any]], size: int, quality: int,
                targets: bool = True) -> None:
    """jpeg/outputs/<id>.jpg (the PNG outputs re-encoded) and jpeg/targets/<id>.jpg (ground
    truths at `size`), JPEG at `quality`."""
    for pair in pairs:
        output = read_image(root / OUTPUTS / f"{pair['id']}.png")
        write_image(root / JPEG / OUTPUTS / f"{pair['id']}.jpg", output, quality=quality)
        if not targets:
            continue
        target = to_uint8(load_rgb(pair["target"].path, size=size))
        write_image(root / JPEG / "targets" / f"{pair['id']}.jpg", target, quality=quality)


def sample(settings: dict[str, Any], checkpoint: Path, out_dir: Path, device: torch.device
           ) -> None:
    """Write the outputs, warps, block warps, pairs.csv, kept.json and timing.json."""
    ev = settings["eval"]
    net, ckpt = load_generator(checkpoint, device)
    task = ckpt["settings"]["model"]["task"]  # the model's settings are the checkpoint's
    pairs = test_pairs(settings, task)
    has_warp = bool(net.attended)
    rows = [{"id": p["id"], "output": f"{OUTPUTS}/{p['id']}.png",
             "warp": f"{WARPS}/{p['id']}.png" if has_warp else "",
             "target": str(p["target"].path), "exemplar": str(p["exemplar"].path)}
            for p in pairs]
    n_blocks = sum(len(b) for b in net.blocks.values())
    per_image = 2 if has_warp else 1
    total = per_image * len(pairs) + n_blocks * min(ev["n_figure"], len(pairs))
    with sample_folder(out_dir, settings, checkpoint, ckpt) as folder:
        kept: dict[str, Any] = {}
        folder.write_images(generate(net, settings, pairs, device, "", kept), total, "generate")
        if ev.get("untrained_reference"):
            untrained, _ = build_networks(ckpt["settings"])  # seeded as training starts
            untrained = untrained.to(device).eval()
            folder.write_images(generate(untrained, settings, pairs, device, f"{UNTRAINED}/",
                                         None), total, "generate (untrained)")
        folder.sidecar["task"] = task
        if task != "style":
            write_jpegs(folder.path, pairs, ev["size"], ev["jpeg_quality"])
            if ev.get("untrained_reference"):
                write_jpegs(folder.path / UNTRAINED, pairs, ev["size"], ev["jpeg_quality"],
                            targets=False)
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=COLUMNS, lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
        (folder.path / PAIRS_CSV).write_text(buf.getvalue())
        folder.write_json(KEPT_JSON, kept)
        first = inputs(settings, task, pairs[0], device)
        timing = time_callable(lambda: net(*first), device, ev["timing_warmup"],
                               ev["timing_repeats"])
        folder.write_json(TIMING_JSON, {
            **timing, "size": ev["size"], "batch": 1, "dtype": "float32",
            "device": device_description(device), "variant": settings["variant"],
            "statistic": "mean seconds per pair: matching + synthesis (generator forward)",
            "checkpoint": str(checkpoint)})
