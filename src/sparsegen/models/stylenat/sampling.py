"""Evaluation samples of a StyleNAT checkpoint: the FID50k images, a grid, the throughput.

As the official evaluation (src/evaluate.py, src/throughput.py): the EMA generator, z ~ N(0, I)
without truncation, images un-normalised from ImageNet statistics and written as PNG the way
`torchvision.utils.save_image(normalize=True, value_range=(0, 1))` writes them; throughput of
the EMA generator at batch 1 in float32 with TF32, timed with CUDA events (Table 1, Fig. 3).

With `eval.checkpoint: best` (the paper reports the best of its checkpoints, e.g. 940k of 1M)
the kept checkpoints (`train.keep_every`, in kept/ beside final.pt) and final.pt are scored
with the FID protocol first (`selection.best_checkpoint`) and the samples come from the best.

Output folder (written by `sparsegen.sampling.sample_folder`, renamed into place when done):
    images/<index>.png   the n_samples PNGs the FID reads (nothing else lies under images/)
    grid.png             the first GRID_SIZE samples as one mosaic (figures)
    sampling.json        seed, count, conversion, the checkpoint (and the selection) and its
                         training recipe, generator settings
    throughput.json      images/s, timing protocol, parameter count, device
    untrained/images/    with `eval.untrained_reference`: the same z through the untrained
                         generator (initialised as training starts)
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch

from sparsegen.io import write_image, write_json
from sparsegen.models.stylenat.generator import build_generator
from sparsegen.models.stylenat.layers import to_unit_range
from sparsegen.models.stylenat.task import load_generator_checkpoint
from sparsegen.provenance import device_description
from sparsegen.sampling import SIDECAR, SampleFolder, sample_folder
from sparsegen.timing import event_times, tf32

IMAGES = "images"
GRID = "grid.png"
SAMPLING_JSON = SIDECAR
THROUGHPUT_JSON = "throughput.json"
UNTRAINED = "untrained"
GRID_SIZE = 16       # samples in grid.png (a 4 x 4 mosaic)
SAMPLE_BATCH = 8     # generator batch while writing samples (the official code used 4)
CONVERSION = ("un-normalise ImageNet mean/std, clamp to [0, 1], x * 255 + 0.5, clamp to "
              "[0, 255], truncate to uint8 (torchvision save_image, normalize=True, "
              "value_range=(0, 1))")


def to_png_uint8(images: torch.Tensor) -> np.ndarray:
    """Generator output [B, 3, H, W] (ImageNet-normalised) -> uint8 [B, H, W, 3], exactly as
    the official `save_image(unnormalize(x), normalize=True, value_range=(0, 1))` quantises."""
    x = to_unit_range(images.float())
    return x.mul(255).add_(0.5).clamp_(0, 255).permute(0, 2, 3, 1).to("cpu", torch.uint8).numpy()


def latents(n: int, style_dim: int, seed: int) -> torch.Tensor:
    """z ~ N(0, I) [n, style_dim], drawn at once on the CPU from `seed` (so sample i does not
    depend on the batch size or the device)."""
    return torch.randn(n, style_dim, generator=torch.Generator().manual_seed(seed))


def mosaic(images: np.ndarray, columns: int) -> np.ndarray:
    """uint8 [N, H, W, 3] -> one uint8 image with `columns` images per row (blank cells black)."""
    n, h, w, c = images.shape
    rows = math.ceil(n / columns)
    out = np.zeros((rows * h, columns * w, c), dtype=np.uint8)
    for i, img in enumerate(images):
        r, col = divmod(i, columns)
        out[r * h:(r + 1) * h, col * w:(col + 1) * w] = img
    return out


def sample_name(index: int, n: int) -> str:
    return f"{index:0{max(6, len(str(n - 1)))}d}.png"


def _generated(generator: torch.nn.Module, z: torch.Tensor, device: torch.device, batch: int,
               first: list[np.ndarray]) -> Iterator[tuple[str, np.ndarray]]:
    n = len(z)
    with torch.inference_mode():
        for start in range(0, n, batch):
            for i, image in enumerate(to_png_uint8(generator(z[start:start + batch].to(device)))):
                if start + i < GRID_SIZE:
                    first.append(image)
                yield sample_name(start + i, n), image


def write_samples(generator: torch.nn.Module, z: torch.Tensor, folder: Path,
                  device: torch.device, batch: int = SAMPLE_BATCH, workers: int = 1
                  ) -> np.ndarray:
    """Generate one PNG per row of z into `folder` (PNG encoding in `workers` threads); returns
    the first GRID_SIZE images as uint8 [k, H, W, 3]."""
    first: list[np.ndarray] = []
    SampleFolder(Path(folder)).write_images(_generated(generator, z, device, batch, first),
                                            len(z), "sample", workers)
    return np.stack(first)


def parameter_count(generator: torch.nn.Module) -> int:
    """Parameters of the generator (mapping + synthesis), as the official main.py counts."""
    return sum(p.numel() for p in generator.parameters())


def throughput(generator: torch.nn.Module, style_dim: int, device: torch.device, warmup: int,
               repeats: int, seed: int) -> dict[str, Any]:
    """Images per second at batch 1 (official src/throughput.py): `warmup` then `repeats` timed
    forwards under inference mode with TF32 matmuls/convolutions and cuDNN autotuning (as the
    official main.py sets globally); imgs/s = repeats / sum of per-forward times."""
    z = latents(1, style_dim, seed).to(device)
    with tf32(True, cudnn_benchmark=True):
        times = event_times(lambda: generator(z), device, warmup, repeats)
    cuda = device.type == "cuda"
    return {
        "img_per_s": repeats / sum(times),
        "batch": 1, "warmup": warmup, "repeats": repeats,
        "mean_s": float(np.mean(times)), "median_s": float(np.median(times)),
        "std_s": float(np.std(times)),
        "timer": "CUDA events per forward, synchronised" if cuda else "time.perf_counter",
        "tf32": cuda, "cudnn_benchmark": cuda, "dtype": "float32", "inference_mode": True,
        "z_seed": seed,
    }


def sample(settings: dict[str, Any], checkpoint: Path, out_dir: Path, device: torch.device
           ) -> None:
    """Write images/, grid.png, sampling.json and throughput.json for one variant: from final.pt,
    with `eval.checkpoint: best` from the best of its kept checkpoints, or from a released
    variant's converted.pt.

    The folder appears only when complete (written beside it, then renamed)."""
    from sparsegen.models.stylenat.selection import best_checkpoint

    ev = settings["eval"]
    n, seed = int(ev["n_samples"]), int(ev["sample_seed"])
    selection = None
    # A released variant's converted.pt is the authors' own pick (e.g. step 940k): no kept/.
    if ev.get("checkpoint", "final") == "best" and not settings.get("released"):
        checkpoint, selection = best_checkpoint(settings, Path(checkpoint), Path(out_dir),
                                                device)
    generator, ckpt = load_generator_checkpoint(checkpoint, device)
    model = ckpt["settings"]["model"]
    chosen = "best" if selection and len(selection["candidates"]) > 1 else "final"
    z = latents(n, model["style_dim"], seed)
    with sample_folder(out_dir, settings, checkpoint, ckpt, chosen) as folder:
        first = write_samples(generator, z, folder.path / IMAGES, device,
                              workers=torch.get_num_threads())
        write_image(folder.path / GRID, mosaic(first, columns=math.ceil(math.sqrt(len(first)))))
        if ev.get("untrained_reference"):
            torch.manual_seed(ckpt["settings"]["seed"])  # as the train step seeds, then builds G
            untrained = build_generator(model).to(device).eval()
            write_samples(untrained, z, folder.path / UNTRAINED / IMAGES, device,
                          workers=torch.get_num_threads())
        folder.sidecar.update({
            "n_samples": n, "sample_seed": seed, "images": IMAGES, "format": "png",
            "z": f"torch.randn({n}, {model['style_dim']}) from a CPU generator seeded "
                 f"{seed}; no truncation",
            "conversion": CONVERSION, "grid": {"file": GRID, "samples": len(first)},
            "generator": "g_ema", "model": model, "selection": selection,
        })
        timing = throughput(generator, model["style_dim"], device,
                            int(ev["throughput_warmup"]), int(ev["throughput_repeats"]), seed)
        count = parameter_count(generator)
        write_json(folder.path / THROUGHPUT_JSON, {
            **timing, "resolution": model["resolution"], "params": count,
            "params_m": count / 1e6, "params_counted": "g_ema: mapping + synthesis",
            "attention": model["attention"], "backend": model.get("backend"),
            "device": device_description(device), "variant": settings["variant"],
            "checkpoint": str(checkpoint),
        })
