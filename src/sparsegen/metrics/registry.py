"""Metric registry: names that say the protocol, one calling convention, records out.

Every metric is called as ``get(name)(a, b, ctx, **options)`` where ``a`` is the set being
judged (outputs) and ``b`` the reference (content, style, ground truth or real images); it
returns a :class:`ResultRecord`. Feature extractors come from the weights manifest through
:meth:`MetricContext.resolve`; nothing is downloaded.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from sparsegen import weights
from sparsegen.metrics.records import Measurement, ResultRecord


@dataclass(frozen=True)
class MetricContext:
    """Where and how metrics run.

    `pretrained` maps manifest names to weights resolved already (by a caller, or a test that
    points at a file of its own); other names are resolved from `weights_dir` per
    `weights_mode` (auto | pretrained | random)."""

    weights_mode: str = "auto"
    weights_dir: Path = Path("data/weights")
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    batch_size: int = 16
    pretrained: Mapping[str, weights.ResolvedWeights] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.weights_mode not in weights.MODES:
            raise ValueError(f"weights_mode {self.weights_mode!r} is not one of "
                             f"{', '.join(weights.MODES)}")
        if not isinstance(self.batch_size, int) or self.batch_size < 1:
            raise ValueError(f"batch_size must be a positive integer, got {self.batch_size!r}")
        object.__setattr__(self, "weights_dir", Path(self.weights_dir))
        object.__setattr__(self, "device", torch.device(self.device))

    def resolve(self, name: str) -> weights.ResolvedWeights:
        if name in self.pretrained:
            return self.pretrained[name]
        return weights.resolve(name, self.weights_mode, self.weights_dir)


@dataclass(frozen=True)
class Metric:
    name: str
    fn: Callable[..., Measurement]
    higher_is_better: bool
    description: str

    def __call__(self, a: Any, b: Any, ctx: MetricContext, *,
                 source: dict[str, Any] | None = None, **options: Any) -> ResultRecord:
        """Measure `a` against `b`; `source` (paper, variant, samples dir ...) goes into the
        record as given."""
        measurement = self.fn(a, b, ctx, **options)
        record = ResultRecord.from_measurement(self.name, self.higher_is_better, measurement,
                                               ctx.device)
        record.source = dict(source or {})
        return record


def import_needing_torchvision(module: str) -> Any:
    """Import `module` (lpips, clean-fid), which imports torchvision; a torchvision built for
    another torch fails at import, which is reported as such."""
    try:
        return importlib.import_module(module)
    except RuntimeError as e:
        raise RuntimeError(f"{module} cannot be imported because torchvision is broken in this "
                           f"environment ({e}); install the torchvision build matching torch "
                           f"{torch.__version__} (see constraints.txt)") from e


_REGISTRY: dict[str, Metric] = {}


def register(name: str, *, higher_is_better: bool, description: str
             ) -> Callable[[Callable[..., Measurement]], Metric]:
    """Decorator: file a function ``fn(a, b, ctx, **options) -> Measurement`` under `name`."""

    def wrap(fn: Callable[..., Measurement]) -> Metric:
        if name in _REGISTRY:
            raise ValueError(f"metric {name!r} is registered twice")
        metric = Metric(name, fn, higher_is_better, description)
        _REGISTRY[name] = metric
        return metric

    return wrap


def _load_all() -> None:
    importlib.import_module("sparsegen.metrics")  # imports every metric family


def get(name: str) -> Metric:
    _load_all()
    try:
        return _REGISTRY[name]
    except KeyError:
        raise KeyError(f"unknown metric {name!r}; registered: {', '.join(names())}") from None


def names() -> list[str]:
    _load_all()
    return sorted(_REGISTRY)
