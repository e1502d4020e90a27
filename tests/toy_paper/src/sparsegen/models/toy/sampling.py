"""Reconstructions of the first eval.n_images images by a trained refiner (and its upstream
auto-encoder)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from sparsegen.models.toy.task import images, load_autoencoder, refiner

from sparsegen.data.images import load_rgb, to_uint8
from sparsegen.sampling import sample_folder
from sparsegen.train import checkpoint as ckpts


def sample(settings: dict[str, Any], checkpoint: Path, out_dir: Path, device: torch.device
           ) -> None:
    ckpt = ckpts.load_trained(checkpoint, "toy", ("refiner",))
    net = ckpts.restore_module(ckpt, "refiner", refiner(ckpt["settings"]["model"]["width"]),
                               checkpoint).to(device).eval()
    frozen = load_autoencoder(settings, device)
    chosen = images(settings)[: settings["eval"]["n_images"]]
    with torch.inference_mode(), sample_folder(out_dir, settings, checkpoint, ckpt) as folder:
        def outputs():
            for s in chosen:
                base = frozen(load_rgb(s.path)[None].to(device))
                yield f"{s.id}.png", to_uint8((base + net(base))[0].clamp(0, 1))

        folder.write_images(outputs(), len(chosen), "reconstruct")
        folder.sidecar["images"] = {s.id: str(s.path) for s in chosen}
