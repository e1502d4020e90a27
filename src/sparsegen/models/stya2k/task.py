"""StyA2K as a `TrainTask` for the shared loop, and checkpoint loading."""

from __future__ import annotations

from functools import cached_property
from pathlib import Path
from typing import Any

import torch

from sparsegen.data.images import load_rgb, random_crop_flip
from sparsegen.data.manifest import Sample, read_manifest, split
from sparsegen.layout import dataset_dir
from sparsegen.models.stya2k.losses import StyA2KLoss
from sparsegen.models.stya2k.network import StyA2KNet, build_network
from sparsegen.train import checkpoint


def dataset_split(settings: dict[str, Any], role: str, name: str) -> tuple[Path, list[Sample]]:
    """The prepared dataset of `role` (content | style) and its samples of split `name`."""
    directory = dataset_dir(settings, role)
    samples = split(read_manifest(directory), name)
    if not samples:
        raise ValueError(f"{directory}: the {role} dataset has no {name!r} images")
    return directory, samples


def checkpointed_modules(net: StyA2KNet) -> dict[str, torch.nn.Module]:
    """What a checkpoint holds: the transforms and the decoder (the encoder is frozen)."""
    return {"transform": net.transform, "decoder": net.decoder}


class StyA2KTask:
    """Content from the content train split, each paired with a uniformly drawn style image
    (the official 'unaligned' pairing); Adam over the decoder and transform parameters."""

    def __init__(self, settings: dict[str, Any], device: torch.device) -> None:
        self.settings = settings
        self.device = device
        self.net = build_network(settings).to(device)
        self.modules = checkpointed_modules(self.net)
        # The encoder is rebuilt, not stored: record which weights it had (file hash or
        # random-init) so a checkpoint is never decoded with a different encoder.
        self.checkpoint_extra = {"encoder": self.net.encoder.fingerprint}
        params = [p for m in self.modules.values() for p in m.parameters()]
        t = settings["train"]
        self.optimizers = {"adam": torch.optim.Adam(params, lr=t["lr"], betas=tuple(t["betas"]))}
        self.loss = StyA2KLoss(settings["model"], settings["loss"])

    # Datasets are read on first use, so the step itself can be benchmarked without data.
    @cached_property
    def content(self) -> list[Sample]:
        return dataset_split(self.settings, "content", "train")[1]

    @cached_property
    def style(self) -> list[Sample]:
        return dataset_split(self.settings, "style", "train")[1]

    def _load(self, samples: list[Sample], generator: torch.Generator) -> torch.Tensor:
        t = self.settings["train"]
        return torch.stack([random_crop_flip(load_rgb(s.path, size=t["load_size"]),
                                             t["crop_size"], t["hflip"], generator)
                            for s in samples])

    def batch(self, step: int, generator: torch.Generator) -> dict[str, torch.Tensor]:
        """Pure function of `generator`: content drawn without replacement within the batch
        (with replacement if the split is smaller), style uniformly and independently."""
        n = self.settings["train"]["batch_size"]
        if n <= len(self.content):
            ci = torch.randperm(len(self.content), generator=generator)[:n]
        else:
            ci = torch.randint(len(self.content), (n,), generator=generator)
        si = torch.randint(len(self.style), (n,), generator=generator)
        return {"content": self._load([self.content[i] for i in ci.tolist()], generator),
                "style": self._load([self.style[i] for i in si.tolist()], generator)}

    def train_step(self, step: int, batch: dict[str, torch.Tensor]) -> dict[str, float]:
        content = batch["content"].to(self.device, non_blocking=True)
        style = batch["style"].to(self.device, non_blocking=True)
        with torch.no_grad():
            fc, fs = self.net.encode(content), self.net.encode(style)
        out = self.net.decode(self.net.transfer(fc, fs))
        terms = self.loss(self.net.encode(out), fc, fs)
        opt = self.optimizers["adam"]
        opt.zero_grad(set_to_none=True)
        terms["loss"].backward()
        opt.step()
        return {name: float(value.detach()) for name, value in terms.items()}


def build_task(settings: dict[str, Any], device: torch.device) -> StyA2KTask:
    """The training task of resolved `settings` on `device`."""
    return StyA2KTask(settings, device)


def load_checkpoint(checkpoint_path: str | Path, device: torch.device
                    ) -> tuple[StyA2KNet, dict[str, Any]]:
    """The network of a checkpoint's own settings with its trained modules, and the checkpoint
    (the encoder is rebuilt: it must resolve to the weights it was trained with)."""
    ckpt = checkpoint.load_trained(checkpoint_path, "stya2k", ("transform", "decoder"))
    net = build_network(ckpt["settings"])
    checkpoint.check_rebuilt(ckpt, checkpoint_path, encoder=net.encoder.fingerprint)
    for name, module in checkpointed_modules(net).items():
        checkpoint.restore_module(ckpt, name, module, checkpoint_path)
    return net.to(device).eval(), ckpt


def load_model(checkpoint_path: str | Path, device: torch.device
               ) -> tuple[StyA2KNet, dict[str, Any]]:
    """Rebuild the network from a checkpoint's settings and load its trained modules."""
    net, ckpt = load_checkpoint(checkpoint_path, device)
    return net, ckpt["settings"]
