"""Training tasks of the toy paper's two stages."""

from __future__ import annotations

from functools import cached_property
from typing import Any

import torch
from torch import nn

from sparsegen.data.images import load_rgb
from sparsegen.data.manifest import Sample, read_manifest
from sparsegen.layout import dataset_dir
from sparsegen.train import checkpoint


def autoencoder(width: int) -> nn.Module:
    return nn.Sequential(nn.Conv2d(3, width, 4, stride=2, padding=1), nn.ReLU(),
                         nn.ConvTranspose2d(width, 3, 4, stride=2, padding=1))


def refiner(width: int) -> nn.Module:
    return nn.Sequential(nn.Conv2d(3, width, 3, padding=1), nn.ReLU(),
                         nn.Conv2d(width, 3, 3, padding=1))


def load_autoencoder(settings: dict[str, Any], device: torch.device) -> nn.Module:
    """The frozen auto-encoder of the variant this one `uses` (its final.pt)."""
    path = settings["uses"]["autoencoder"]["checkpoint"]
    ckpt = checkpoint.load_trained(path, "toy", ("autoencoder",))
    net = checkpoint.restore_module(ckpt, "autoencoder",
                                    autoencoder(ckpt["settings"]["model"]["width"]), path)
    return net.to(device).eval().requires_grad_(False)


def images(settings: dict[str, Any]) -> list[Sample]:
    return read_manifest(dataset_dir(settings, "images"))


class ToyTask:
    def __init__(self, settings: dict[str, Any], device: torch.device) -> None:
        self.settings, self.device = settings, device
        torch.manual_seed(settings["seed"])
        width = settings["model"]["width"]
        if settings["stage"] == "encode":
            self.frozen = None
            self.modules = {"autoencoder": autoencoder(width).to(device)}
        else:
            self.frozen = load_autoencoder(settings, device)
            self.modules = {"refiner": refiner(width).to(device)}
        params = [p for m in self.modules.values() for p in m.parameters()]
        self.optimizers = {"adam": torch.optim.Adam(params, lr=settings["train"]["lr"])}
        self.checkpoint_extra: dict[str, Any] = {}

    @cached_property
    def samples(self) -> list[Sample]:
        return images(self.settings)

    def batch(self, step: int, generator: torch.Generator) -> torch.Tensor:
        index = torch.randint(len(self.samples), (self.settings["train"]["batch_size"],),
                              generator=generator)
        return torch.stack([load_rgb(self.samples[i].path) for i in index.tolist()])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.frozen is None:
            return self.modules["autoencoder"](x)
        base = self.frozen(x)
        return base + self.modules["refiner"](base)

    def train_step(self, step: int, batch: torch.Tensor) -> dict[str, float]:
        x = batch.to(self.device)
        loss = (self.forward(x) - x).abs().mean()
        opt = self.optimizers["adam"]
        opt.zero_grad()
        loss.backward()
        opt.step()
        return {"loss": loss.item()}


def build_task(settings: dict[str, Any], device: torch.device) -> ToyTask:
    return ToyTask(settings, device)
