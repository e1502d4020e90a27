"""StyleNAT trains: a short CPU run of the smoke model on procedural faces makes the EMA
generator's FID better than the untrained one's, evaluation loads the EMA weights, a run
stopped and resumed ends with exactly the weights of an uninterrupted one, and 2 ranks under
torchrun (gloo) stay identical through R1 and the frozen-network steps."""

from __future__ import annotations

import copy
import csv
import json
import math
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from sparsegen.data import sources
from sparsegen.data.images import load_rgb
from sparsegen.data.manifest import read_manifest
from sparsegen.metrics import registry
from sparsegen.models.stylenat.layers import to_unit_range
from sparsegen.models.stylenat.task import build_task, load_generator
from sparsegen.train import checkpoint, distributed, loop, schedules

CPU = torch.device("cpu")
N_FAKE, FID_INPUT = 64, 75  # 64 samples vs 128 faces; the smallest Inception input side


@pytest.fixture(scope="module")
def prepared(smoke: dict[str, Any], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """128 procedural faces at the smoke resolution."""
    root = tmp_path_factory.mktemp("prepared")
    sources.prepare("faces", {"source": "smoke_faces", "size": smoke["model"]["resolution"],
                              "n_train": 128, "n_test": 0, "seed": 2}, None, root / "faces")
    return root


def _settings(smoke: dict[str, Any], prepared: Path, **train: Any) -> dict[str, Any]:
    """The smoke settings on the prepared faces, with `train` overrides."""
    s = copy.deepcopy(smoke)
    s["paths"] = {**s["paths"], "prepared": str(prepared)}
    s["datasets"] = {"images": {"name": "faces"}}
    s["train"].update(train)
    return s


def _train(settings: dict[str, Any], run_dir: Path, stop_after: int | None = None):
    torch.manual_seed(settings["seed"])  # what the CLI's seed_everything does
    task = build_task(settings, CPU)
    t = settings["train"]
    cfg = loop.LoopConfig(iterations=t["iterations"], checkpoint_every=t["checkpoint_every"],
                          log_every=t["log_every"], seed=settings["seed"],
                          lr_factor=schedules.from_settings(t), stop_after=stop_after)
    done = loop.run(task, cfg, settings, run_dir, run_dir / "final.pt", run_dir / "log.csv")
    return task, done


def _samples(generator: torch.nn.Module) -> np.ndarray:
    z = torch.randn(N_FAKE, generator.style_dim, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        images = to_unit_range(generator.eval()(z))
    return (images * 255).round().byte().numpy()


@pytest.fixture(scope="module")
def trained(smoke: dict[str, Any], prepared: Path, tmp_path_factory: pytest.TempPathFactory):
    """60 steps at lr 1e-3 for G and D, EMA decay 0.9 (the paper's 0.9978 and TTUR rates
    need far more steps than a unit test has); FID before and after. Over run seeds 0-4 the
    EMA's FID ended at 0.05-0.16 x the untrained one's."""
    s = _settings(smoke, prepared, iterations=60, decay_start=60, lr_g=1e-3, lr_d=1e-3,
                  ema_decay=0.9, checkpoint_every=60, log_every=12)
    run_dir = tmp_path_factory.mktemp("run")
    torch.manual_seed(s["seed"])
    untrained = _samples(build_task(s, CPU).ema.module)
    task, done = _train(s, run_dir)
    assert done
    reals = np.stack([(load_rgb(r.path) * 255).round().byte().numpy()
                      for r in read_manifest(prepared / "faces")])
    fid = registry.get("fid_legacy_pytorch")
    ctx = registry.MetricContext(weights_mode="random", batch_size=64)
    ema, _ = load_generator(run_dir / "final.pt", CPU)
    scores = {name: fid(images, reals, ctx, input_size=FID_INPUT).value
              for name, images in (("untrained", untrained), ("ema", _samples(ema)))}
    return run_dir, task, scores


def test_training_improves_fid_of_the_ema_generator(trained) -> None:
    _, _, scores = trained
    assert all(math.isfinite(v) for v in scores.values())
    assert scores["ema"] < 0.5 * scores["untrained"], scores


def test_evaluation_loads_the_ema_generator(trained) -> None:
    run_dir, task, _ = trained
    modules = checkpoint.load(run_dir / "final.pt")["modules"]
    generator, settings = load_generator(run_dir / "final.pt", CPU)
    assert settings["paper"] == "stylenat" and not generator.training
    state = generator.state_dict()
    for key, value in state.items():
        assert torch.equal(value, modules["g_ema"][key]), key
        assert torch.equal(value, task.ema.module.state_dict()[key]), key
    assert any(not torch.equal(value, modules["generator"][key]) for key, value in state.items())


def test_log_has_both_learning_rates_and_the_losses(trained) -> None:
    run_dir, _, _ = trained
    with open(run_dir / "log.csv") as f:
        rows = list(csv.DictReader(f))
    assert [int(r["step"]) for r in rows] == [12, 24, 36, 48, 60]
    assert {"lr_g", "lr_d", "d", "bcr_real", "bcr_fake", "g"} <= set(rows[0])
    assert float(rows[0]["lr_g"]) == 1e-3
    assert float(rows[0]["lr_d"]) == pytest.approx(1e-3 * 16 / 17)


def test_resumed_training_equals_uninterrupted(smoke, prepared: Path, tmp_path: Path) -> None:
    """R1 at steps 0 and 4, linear decay from step 3: stopping after step 3 and resuming
    must reproduce every weight, optimizer-driven and EMA alike, bit for bit."""
    s = _settings(smoke, prepared, iterations=6, decay_start=3, checkpoint_every=2, log_every=1,
                  batch_size=2)
    s["loss"]["r1_every"] = 4
    _train(s, tmp_path / "straight")
    _, done = _train(s, tmp_path / "resumed", stop_after=3)
    assert not done and checkpoint.load(tmp_path / "resumed/ckpt/last.pt")["step"] == 3
    _, done = _train(s, tmp_path / "resumed")
    assert done
    a = checkpoint.load(tmp_path / "straight/final.pt")["modules"]
    b = checkpoint.load(tmp_path / "resumed/final.pt")["modules"]
    assert set(a) == set(b) == {"generator", "discriminator", "g_ema"}
    for module in a:
        for key, value in a[module].items():
            assert torch.equal(value, b[module][key]), f"{module}.{key}"
    logs = []
    for name in ("straight", "resumed"):
        with open(tmp_path / name / "log.csv") as f:
            logs.append([{k: v for k, v in r.items() if k != "wall_s"} for r in csv.DictReader(f)])
    assert logs[0] == logs[1] and len(logs[0]) == 6
    assert logs[0][0]["r1"] and logs[0][4]["r1"] and not logs[0][1]["r1"]
    assert float(logs[0][5]["lr_g"]) == pytest.approx(5e-5 * (1 - 2 / 3))


def _rank_main(out: Path) -> None:
    """One rank under torchrun: train, then store its modules beside (not in) the run."""
    settings = json.loads((out / "settings.json").read_text())
    world, _ = distributed.setup(CPU)
    task, done = _train(settings, out / ("run" if world.is_main else f"rank{world.rank}"))
    assert done
    torch.save({name: m.state_dict() for name, m in task.modules.items()},
               out / f"modules{world.rank}.pt")
    distributed.teardown()


def test_ddp_ranks_stay_identical(smoke, prepared: Path, tmp_path: Path) -> None:
    """DDP over G and D: R1 (steps 0 and 2) needs every D parameter in its backward, and the
    G step's frozen D must not leave DDP waiting for gradients."""
    s = _settings(smoke, prepared, iterations=3, checkpoint_every=3, log_every=1, batch_size=2,
                  decay_start=3)
    s["loss"]["r1_every"] = 2
    (tmp_path / "settings.json").write_text(json.dumps(s))
    env = {k: v for k, v in os.environ.items() if k not in distributed.ENV_KEYS}
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone",
                           "--nproc_per_node", "2", __file__, str(tmp_path)],
                          capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    ranks = [torch.load(tmp_path / f"modules{r}.pt") for r in range(2)]
    final = checkpoint.load(tmp_path / "run" / "final.pt")
    assert final["extra"] == {"world_size": 2, "global_batch": 4}
    for module, state in ranks[0].items():
        for key, value in state.items():
            assert torch.equal(value, ranks[1][module][key]), f"{module}.{key}"
            assert torch.equal(value, final["modules"][module][key]), f"{module}.{key}"
    torch.manual_seed(s["seed"])
    untrained = build_task(s, CPU).modules
    for module in ("generator", "discriminator"):
        assert any(not torch.equal(v, untrained[module].state_dict()[k])
                   for k, v in ranks[0][module].items()), module
    assert not (tmp_path / "rank1").exists()


if __name__ == "__main__":
    _rank_main(Path(sys.argv[1]))
