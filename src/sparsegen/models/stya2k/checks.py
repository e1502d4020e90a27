"""StyA2K settings checks a JSON schema cannot express (no torch: config validation runs them
while Snakemake parses the workflow)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

# Downsampling factor of each VGG layer relative to the image.
VGG_STRIDE = {"relu1_1": 1, "relu2_1": 2, "relu3_1": 4, "relu4_1": 8, "relu5_1": 16}


def problems(s: Mapping[str, Any]) -> list[str]:
    """Crops that do not fit the load size, image sides the block grids do not divide."""
    found = []
    t = s["train"]
    if t["crop_size"] > t["load_size"]:
        found.append(f"train.crop_size {t['crop_size']} exceeds train.load_size "
                     f"{t['load_size']}")
    count_mode = s["model"]["block_mode"] == "count"
    for key, size in (("train.crop_size", t["crop_size"]), ("eval.size", s["eval"]["size"])):
        for layer, block in s["model"]["block_sizes"].items():
            multiple = VGG_STRIDE[layer] * block
            if size % multiple:
                unit = "blocks per side" if count_mode else "pixels per block side"
                found.append(
                    f"{key} {size}: the {layer} feature side {size / VGG_STRIDE[layer]:g} is not "
                    f"divisible by model.block_sizes.{layer} = {block} ({unit}); use a multiple "
                    f"of {multiple}")
    return found
