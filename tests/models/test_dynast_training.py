"""DynaST trains: a short CPU run on the smoke people lowers the matching loss L_m (Eq. 14) on
held-out pairs and moves the fraction of kept links (Eq. 5); a run stopped and resumed ends
with exactly the G, D and both optimisers of an uninterrupted one; a pair dataset naming an
exemplar it does not hold fails naming the manifest, row and id; the length in epochs counts
the train list."""

from __future__ import annotations

import copy
import csv
from pathlib import Path
from typing import Any

import pytest
import torch

from sparsegen.config import load_params, resolve
from sparsegen.data import sources
from sparsegen.models.dynast import data
from sparsegen.models.dynast.losses import pooled_target
from sparsegen.models.dynast.task import build_task
from sparsegen.train import checkpoint, loop, schedules

CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def prepared(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("prepared")
    sources.prepare("people", {"source": "smoke_people", "size": 32, "n_train": 48,
                               "n_test": 8, "seed": 5}, None, root / "people")
    return root


def settings_on(prepared: Path, **train: Any) -> dict[str, Any]:
    s = copy.deepcopy(resolve(load_params(), "dynast", "df_full", check=False))
    s["paths"] = {**s["paths"], "prepared": str(prepared)}
    s["datasets"] = {"pairs": {"name": "people"}}
    s["weights"] = "random"
    s["train"].update(train)
    return s


def run(settings: dict[str, Any], run_dir: Path, stop_after: int | None = None):
    torch.manual_seed(settings["seed"])
    task = build_task(settings, CPU)
    t = settings["train"]
    cfg = loop.LoopConfig(iterations=t["iterations"], checkpoint_every=t["checkpoint_every"],
                          log_every=t["log_every"], seed=settings["seed"],
                          lr_factor=schedules.from_settings(t), stop_after=stop_after,
                          prefetch=0)
    return task, loop.run(task, cfg, settings, run_dir, run_dir / "final.pt",
                          run_dir / "log.csv")


def held_out(settings: dict[str, Any]) -> dict[str, torch.Tensor]:
    directory, rows = data.samples(settings, "pairs", "test")
    return data.pair_batch(settings, rows, data.by_id(directory), directory,
                           torch.Generator().manual_seed(0))


def matching_loss(generator: torch.nn.Module, batch: dict[str, torch.Tensor]) -> float:
    """Eq. 14 on held-out pairs: the warps' MSE to the pooled ground truth, summed."""
    with torch.no_grad():
        out = generator(batch["s_tgt"], batch["i_ref"], batch["s_ref"])
    return float(sum(((w - pooled_target(batch["i_tgt"], w.shape[-1])) ** 2).mean()
                     for w in out.warps))


def test_a_short_run_lowers_the_matching_loss_and_moves_the_kept_fraction(prepared, tmp_path):
    s = settings_on(prepared, batch_size=4, iterations=60, decay_start=60, lr_g=5e-4,
                    lr_d=5e-4, checkpoint_every=60, log_every=1)
    torch.manual_seed(s["seed"])
    before = matching_loss(build_task(s, CPU).generator.eval(), held_out(s))
    task, done = run(s, tmp_path)
    assert done
    after = matching_loss(task.generator.eval(), held_out(s))
    assert after < 0.8 * before
    with open(tmp_path / "log.csv") as f:
        kept = [float(r["kept_fraction"]) for r in csv.DictReader(f)]
    assert all(0 < k < 1 for k in kept) and abs(kept[-1] - kept[0]) > 0.01


def test_resumed_training_equals_uninterrupted(prepared, tmp_path):
    s = settings_on(prepared, batch_size=2, iterations=4, decay_start=2, checkpoint_every=2,
                    log_every=1)
    run(s, tmp_path / "straight")
    _, done = run(s, tmp_path / "resumed", stop_after=2)
    assert not done
    _, done = run(s, tmp_path / "resumed")
    assert done
    a, b = (checkpoint.load(tmp_path / name / "final.pt") for name in ("straight", "resumed"))
    assert set(a["modules"]) == {"generator", "discriminator"}
    for module in a["modules"]:
        for key, value in a["modules"][module].items():
            assert torch.equal(value, b["modules"][module][key]), f"{module}.{key}"
    last_a = checkpoint.load(tmp_path / "straight/ckpt/last.pt")["optimizers"]
    last_b = checkpoint.load(tmp_path / "resumed/ckpt/last.pt")["optimizers"]
    assert set(last_a) == {"g", "d"}
    for name in last_a:
        for pid, state in last_a[name]["state"].items():
            for key, value in state.items():
                assert torch.equal(value, last_b[name]["state"][pid][key]), f"{name}.{key}"


def test_an_unknown_exemplar_names_the_manifest_row_and_id(prepared):
    s = settings_on(prepared)
    directory, rows = data.samples(s, "pairs", "train")
    row = rows[0]
    broken = type(row)(row.id, row.split, row.path, row.sha256,
                       {**row.extra, "exemplar": "nobody_42"})
    with pytest.raises(data.PairError, match=rf"manifest.csv: row '{row.id}' names exemplar "
                                             r"'nobody_42'"):
        data.exemplar_of(broken, data.by_id(directory), directory)


def test_the_length_in_epochs_counts_the_train_list(prepared):
    s = settings_on(prepared)
    task = build_task(s, CPU)
    n = task.train_size()
    assert n == len(data.samples(s, "pairs", "train")[1])
    length = schedules.by_epochs({"epochs": 80, "decay_epochs": 20, "batch_size": 32}, n)
    assert length["iterations"] == 100 * -(-n // 32)
