"""Evaluation samples: every selected content x style test pair stylised by a checkpoint.

Output folder (written by `sparsegen.sampling.sample_folder`, renamed into place when done):
    c-<content>__s-<style>.png   one stylised image per pair
    samples.csv                  the pairs: ids, output file, content and style image paths
    timing.json                  seconds per stylisation (Table 1's inference time)
    sampling.json                the checkpoint and its training recipe
    untrained/c-...png           with `eval.untrained_reference`: the same pairs stylised by the
                                 untrained network (initialised as training starts)
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch

from sparsegen.data.images import load_rgb, to_uint8
from sparsegen.data.manifest import Sample
from sparsegen.models.stya2k.network import build_network
from sparsegen.models.stya2k.task import dataset_split, load_checkpoint
from sparsegen.provenance import device_description
from sparsegen.sampling import sample_folder
from sparsegen.timing import time_callable

SAMPLES_CSV = "samples.csv"
TIMING_JSON = "timing.json"
UNTRAINED = "untrained"
COLUMNS = ("id", "content_id", "style_id", "output", "content_path", "style_path")


def select(settings: dict[str, Any], role: str, count: int, generator: torch.Generator
           ) -> list[Sample]:
    """`count` test images of `role`: ids sorted, then a seeded permutation's first `count`."""
    directory, samples = dataset_split(settings, role, "test")
    if len(samples) < count:
        raise ValueError(f"{directory}: the {role} test split has {len(samples)} images, "
                         f"the evaluation needs {count} (eval.n_{role})")
    samples = sorted(samples, key=lambda s: s.id)
    return [samples[i] for i in torch.randperm(len(samples), generator=generator)[:count]]


def sample(settings: dict[str, Any], checkpoint: Path, out_dir: Path, device: torch.device
           ) -> None:
    """Write c-<content>__s-<style>.png for every selected pair, samples.csv and timing.json."""
    ev = settings["eval"]
    gen = torch.Generator().manual_seed(int(ev["selection_seed"]))
    contents = select(settings, "content", ev["n_content"], gen)
    styles = select(settings, "style", ev["n_style"], gen)
    net, ckpt = load_checkpoint(checkpoint, device)

    def image(s: Sample) -> torch.Tensor:
        return load_rgb(s.path, size=ev["size"])[None].to(device)

    content_images = {c.id: image(c) for c in contents}
    style_images = {s.id: image(s) for s in styles}
    rows = [{"id": f"c-{c.id}__s-{s.id}", "content_id": c.id, "style_id": s.id,
             "output": f"c-{c.id}__s-{s.id}.png", "content_path": str(c.path),
             "style_path": str(s.path)} for c in contents for s in styles]

    def stylised(model: torch.nn.Module, prefix: str = "") -> Iterator[tuple[str, np.ndarray]]:
        with torch.inference_mode():
            for row in rows:
                out = model.stylize(content_images[row["content_id"]],
                                    style_images[row["style_id"]])[0]
                yield prefix + row["output"], to_uint8(out.clamp(0, 1))

    with sample_folder(out_dir, settings, checkpoint, ckpt) as folder:
        folder.write_images(stylised(net), len(rows), "stylise")
        if ev.get("untrained_reference"):
            untrained = build_network(ckpt["settings"]).to(device).eval()  # as training starts
            folder.write_images(stylised(untrained, f"{UNTRAINED}/"), len(rows),
                                "stylise (untrained)")
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=COLUMNS, lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
        (folder.path / SAMPLES_CSV).write_text(buf.getvalue())

        content_image, style_image = content_images[contents[0].id], style_images[styles[0].id]
        timing = time_callable(lambda: net.stylize(content_image, style_image), device,
                               ev["timing_warmup"], ev["timing_repeats"])
        trained = ckpt["settings"]
        folder.write_json(TIMING_JSON, {
            **timing, "size": ev["size"], "batch": 1, "dtype": "float32",
            "device": device_description(device), "transform": trained["model"]["transform"],
            "variant": trained.get("variant"), "encoder": net.encoder.fingerprint,
            "checkpoint": str(checkpoint),
        })
