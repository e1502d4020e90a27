"""A training job killed mid-run resumes when the same command is run again, and ends with
exactly the weights of an uninterrupted run (CPU, deterministic mode)."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from sparsegen.config import load_params, unit_settings
from sparsegen.provenance import REPO_ROOT
from sparsegen.train import checkpoint

pytestmark = pytest.mark.pipeline


def _prepare(root: Path, params: dict) -> None:
    for name in ("smoke_content", "smoke_style"):
        subprocess.run([sys.executable, "-m", "sparsegen", "prepare", "--name", name,
                        "--settings", json.dumps(params["datasets"][name]),
                        "--out", str(root / name)], check=True, capture_output=True)


def _train_cmd(settings: dict, run_dir: Path) -> list[str]:
    return [sys.executable, "-m", "sparsegen", "train", "--settings", json.dumps(settings),
            "--run-dir", str(run_dir), "--final", str(run_dir / "final.pt"),
            "--log", str(run_dir / "train_log.csv")]


def _smoke_settings(tmp_path: Path, **train: int) -> dict:
    """StyA2K `full` train settings of the smoke preset on data prepared under tmp_path."""
    params = load_params(REPO_ROOT / "params.yaml", overrides={"preset": "smoke"})
    _prepare(tmp_path / "prepared", params)
    settings = unit_settings(params, "stya2k", "full", "train")
    settings["paths"] = {**settings["paths"], "prepared": str(tmp_path / "prepared"),
                         "weights": str(tmp_path / "weights")}
    settings["train"].update(train)
    settings["deterministic"] = True
    return settings


def test_killed_training_resumes_to_the_same_weights(tmp_path: Path) -> None:
    settings = _smoke_settings(tmp_path, iterations=8, checkpoint_every=2, decay_start=4)

    straight = tmp_path / "straight"
    subprocess.run(_train_cmd(settings, straight), check=True, capture_output=True)

    killed = tmp_path / "killed"
    proc = subprocess.Popen(_train_cmd(settings, killed), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    last = killed / "ckpt" / "last.pt"
    deadline = time.monotonic() + 120
    while not (last.exists() and checkpoint.load(last)["step"] >= 2):
        assert proc.poll() is None, "training ended before it could be killed"
        assert time.monotonic() < deadline, "no checkpoint within 120 s"
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    killed_at = checkpoint.load(last)["step"]
    assert killed_at < 8 and not (killed / "final.pt").exists()

    resumed = subprocess.run(_train_cmd(settings, killed), check=True, capture_output=True,
                             text=True)
    assert f"resuming from {last} at step {killed_at}" in resumed.stdout + resumed.stderr
    a = checkpoint.load(straight / "final.pt")["modules"]
    b = checkpoint.load(killed / "final.pt")["modules"]
    for module in a:
        for key, value in a[module].items():
            assert torch.equal(value, b[module][key]), f"{module}.{key}"
    # The loss log too: every logged step, and the losses (not the wall times), agree.
    logs = [[r.split(",") for r in (d / "train_log.csv").read_text().splitlines()]
            for d in (straight, killed)]
    assert len(logs[0]) == 9 and logs[0][0] == logs[1][0]
    loss_cols = [i for i, name in enumerate(logs[0][0]) if name != "wall_s"]
    assert [[r[i] for i in loss_cols] for r in logs[0]] == [[r[i] for i in loss_cols]
                                                             for r in logs[1]]


def test_a_time_limited_job_stops_checkpointed_and_the_next_attempt_resumes(tmp_path: Path
                                                                            ) -> None:
    """A cluster allocation ends: the train step checkpoints, exits 75 (Snakemake retries it)
    and the next attempt resumes to the weights of an uninterrupted run."""
    settings = _smoke_settings(tmp_path, iterations=6, checkpoint_every=100, decay_start=3)
    straight = tmp_path / "straight"
    subprocess.run(_train_cmd(settings, straight), check=True, capture_output=True)

    limited = tmp_path / "limited"
    # 0.05 min allocation with a 0.05 min margin: the deadline is the start itself.
    first = subprocess.run([*_train_cmd(settings, limited), "--time-limit-min", "0.05",
                            "--stop-margin-min", "0.05"], capture_output=True, text=True)
    assert first.returncode == 75, first.stderr
    assert "time limit: checkpointed at step 1 of 6" in first.stderr
    assert checkpoint.load(limited / "ckpt" / "last.pt")["step"] == 1
    assert not (limited / "final.pt").exists()
    second = subprocess.run(_train_cmd(settings, limited), check=True, capture_output=True,
                            text=True)
    assert "resuming from" in second.stdout
    a = checkpoint.load(straight / "final.pt")["modules"]
    b = checkpoint.load(limited / "final.pt")["modules"]
    for module in a:
        for key, value in a[module].items():
            assert torch.equal(value, b[module][key]), f"{module}.{key}"
