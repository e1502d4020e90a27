"""The paper registry: every paper the pipeline reproduces and what each one provides.

A paper is a package `sparsegen.models.<name>` whose `__init__` defines `PAPER`, an object that
satisfies `Paper` (most build it with `PaperPackage`). `REGISTERED` lists the packages, one
line per paper. Nothing else names a paper: config, layout, weights, dvc generation, the CLI
and the Snakemake rules ask this module.

A package's `__init__` must not import torch: Snakemake and config validation read the
registry while parsing. The heavy modules of a paper (`task`, `sampling`, `evaluation`,
`bench`, and its figures module) are imported when a job calls them.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    import torch

    from sparsegen.metrics.records import ResultRecord
    from sparsegen.train.loop import TrainTask

REGISTERED = (
    "sparsegen.models.stya2k",
    "sparsegen.models.stylenat",
    "sparsegen.models.dynast",
    "sparsegen.models.ilat",
)

Settings = Mapping[str, Any]


class RegistryError(ValueError):
    """A paper is not registered, or its package does not define a usable PAPER."""


@dataclass(frozen=True)
class Stage:
    """One model a paper trains. `evaluated`: its variants are sampled and scored (a tokenizer
    that only feeds a later stage may not be)."""

    name: str
    evaluated: bool = True


class Paper(Protocol):
    """What the pipeline needs from a paper."""

    name: str
    title: str
    package: str                      # the package holding its code (sparsegen.models.<name>)
    stages: tuple[Stage, ...]         # in training order; a variant's `stage` picks one
    loss_columns: tuple[str, ...]     # train_log.csv columns plotted (DVC plots, figures)
    figures: str                      # module whose functions the paper's notebook calls
    code: Mapping[str, tuple[str, ...]]  # unit -> source paths (beyond the package) it runs

    def problems(self, settings: Settings) -> list[str]:
        """Impossible resolved settings, each naming its key; [] when jobs can run."""

    def training_networks(self, settings: Settings) -> list[str]:
        """Weights-manifest names the `train` job loads (e.g. a frozen encoder)."""

    def evaluation_networks(self, settings: Settings) -> list[str]:
        """Weights-manifest names the `sample` and `evaluate` jobs load."""

    def build_task(self, settings: Settings, device: torch.device) -> TrainTask:
        """The training task of a variant's resolved settings (its stage's model)."""

    def sample(self, settings: Settings, checkpoint: Path, out_dir: Path,
               device: torch.device) -> None:
        """Write the evaluation samples of a trained variant into `out_dir`."""

    def evaluate(self, settings: Settings, samples_dir: Path, device: torch.device
                 ) -> list[ResultRecord]:
        """Metric records (facts, no verdicts) of a variant's samples."""

    def convert(self, settings: Settings, out: Path, device: torch.device) -> None:
        """Write a released variant's checkpoint (converted.pt) from the authors' weights named
        in `settings["released"]` (`sparsegen.released`)."""

    def bench(self, out: Path | None, sizes: Sequence[int] | None, device_name: str) -> Path:
        """Run the paper's GPU benchmark; return the CSV written."""


def _none(settings: Settings) -> list[str]:
    return []


@dataclass(frozen=True)
class PaperPackage:
    """A `Paper` whose jobs live in modules of one package, imported on first use:
    `<package>.task.build_task`, `.sampling.sample`, `.evaluation.evaluate`, `.bench.run`,
    `.released.convert`."""

    name: str
    title: str
    package: str
    stages: tuple[Stage, ...] = (Stage("train"),)
    loss_columns: tuple[str, ...] = ()
    figures: str = ""
    code: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    problems: Callable[[Settings], list[str]] = _none
    training_networks: Callable[[Settings], list[str]] = _none
    evaluation_networks: Callable[[Settings], list[str]] = _none
    bench_module: str | None = "bench"   # a module of the package, a dotted path, or None

    def module(self, name: str) -> ModuleType:
        return importlib.import_module(f"{self.package}.{name}")

    def build_task(self, settings: Settings, device: torch.device) -> TrainTask:
        return self.module("task").build_task(settings, device)

    def sample(self, settings: Settings, checkpoint: Path, out_dir: Path,
               device: torch.device) -> None:
        self.module("sampling").sample(settings, Path(checkpoint), Path(out_dir), device)

    def evaluate(self, settings: Settings, samples_dir: Path, device: torch.device
                 ) -> list[ResultRecord]:
        return self.module("evaluation").evaluate(settings, Path(samples_dir), device)

    def convert(self, settings: Settings, out: Path, device: torch.device) -> None:
        self.module("released").convert(settings, Path(out), device)

    def bench(self, out: Path | None, sizes: Sequence[int] | None, device_name: str) -> Path:
        if self.bench_module is None:
            raise RegistryError(f"paper {self.name!r} has no benchmark")
        module = importlib.import_module(self.bench_module if "." in self.bench_module
                                         else f"{self.package}.{self.bench_module}")
        return module.run(out, sizes=list(sizes) if sizes else None, device_name=device_name)


@cache
def _load() -> dict[str, Paper]:
    papers: dict[str, Paper] = {}
    for package in REGISTERED:
        module = importlib.import_module(package)
        paper = getattr(module, "PAPER", None)
        if paper is None:
            raise RegistryError(f"{package} is registered in sparsegen.papers but defines no "
                                "PAPER")
        if paper.name in papers:
            raise RegistryError(f"paper {paper.name!r} is registered twice ({package})")
        if not paper.stages:
            raise RegistryError(f"{package}.PAPER has no stages")
        papers[paper.name] = paper
    return papers


def names() -> list[str]:
    """Registered paper names, in registry order."""
    return list(_load())


def get(name: str) -> Paper:
    papers = _load()
    if name not in papers:
        raise RegistryError(f"unknown paper {name!r}; registered: {', '.join(papers)} "
                            "(sparsegen.papers.REGISTERED)")
    return papers[name]


def stage_of(paper: Paper, variant: Mapping[str, Any]) -> Stage:
    """The stage a variant block (its params entry) trains: its `stage`, else the first."""
    wanted = variant.get("stage", paper.stages[0].name)
    for stage in paper.stages:
        if stage.name == wanted:
            return stage
    raise RegistryError(f"{paper.name}: no stage {wanted!r} (stages: "
                        f"{', '.join(s.name for s in paper.stages)})")


# Source each pipeline unit runs, besides the paper's own package and its `code` entries. A
# job's params carry a fingerprint of these files, and the generated dvc.yaml lists them as
# dependencies, so a code edit reruns exactly the jobs that run it, in both tools.
CODE_ROOT = "src/sparsegen"
SHARED_CODE: dict[str, tuple[str, ...]] = {
    "train": ("attention", "nets", "train", "data/images.py", "data/manifest.py"),
    "evaluate": ("attention", "nets", "metrics", "train/checkpoint.py", "sampling.py",
                 "timing.py", "data/images.py", "data/manifest.py"),
    "convert": ("attention", "nets", "train/checkpoint.py", "released.py", "weights.py"),
    "tables": ("claims.py", "judge.py", "tables.py"),
    "figures": ("figures", "notebooks.py"),
    "report": ("report.py",),
}
UNITS_WITH_PAPER_CODE = ("train", "convert", "evaluate")


def unit_code(paper: str | None, unit: str) -> list[str]:
    """Repository-relative source paths (files or folders) that `unit` of `paper` runs."""
    paths = [f"{CODE_ROOT}/{p}" for p in SHARED_CODE.get(unit, ())]
    if paper is not None and unit in UNITS_WITH_PAPER_CODE:
        spec = get(paper)
        paths.append(f"src/{spec.package.replace('.', '/')}")
        paths += [f"{CODE_ROOT}/{p}" for p in spec.code.get(unit, ())]
    return list(dict.fromkeys(paths))
