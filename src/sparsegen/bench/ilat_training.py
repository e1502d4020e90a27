"""iLAT's training cost on one GPU: seconds per iteration of each stage at the paper's settings,
and the GPU-hours per model and per table that follow (README "iLAT").

    python -m sparsegen.bench.ilat_training [--out results/bench/ilat_training.csv]

Rows (`kind` train_step, random weights and inputs, batch 16 at 256², PyTorch defaults):
- tokenizer: one `TokenizerTask.train_step` of `ts_pa` (taming's f16 VQGAN, two-stream encoder,
  LPIPS-VGG, adaptive GAN weight, D step) and of `ts_ffhq` (Table 3), in the masked phase
  (Eq. 4 with a partial hole);
- transformer: one `TransformerTask.train_step` of `ilat_pa` and `ilat_ffhq` (the frozen
  tokenizers' encodings included), on random-init tokenizers saved as their checkpoints.
`gpu_hours_per_model` = seconds per iteration x train.iterations / 3600 (one GPU, batch 16 as
the paper, no data loading).
"""

from __future__ import annotations

import argparse
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from sparsegen.bench.common import complete, environment, measure, release, write_csv
from sparsegen.config import load_params, resolve
from sparsegen.models.ilat.task import TokenizerTask, TransformerTask
from sparsegen.train import checkpoint

PAPER = "ilat"
TOKENIZERS = ("ts_pa", "ts_ffhq")
TRANSFORMERS = ("ilat_pa", "ilat_ffhq")


def _settings(params: dict[str, Any], variant: str, root: Path) -> dict[str, Any]:
    s = resolve(params, PAPER, variant)
    s["paths"] = {**s["paths"], "weights": str(root / "weights")}
    s["weights"] = "auto"
    return s


def _tokenizer_batch(s: dict[str, Any], n: int, device: torch.device
                     ) -> dict[str, torch.Tensor]:
    side, channels = s["model"]["size"], s["model"]["tokenizer"]["channels"]
    g = torch.Generator().manual_seed(0)
    mask = torch.zeros(n, 1, side, side)
    mask[..., side // 4: side // 2, side // 4: 3 * side // 4] = 1  # a partial hole
    return {"image": (torch.rand(n, channels, side, side, generator=g) * 2 - 1).to(device),
            "mask": mask.to(device)}


def _transformer_batch(s: dict[str, Any], n: int, device: torch.device
                       ) -> dict[str, torch.Tensor]:
    side, joints = s["model"]["size"], s["model"]["joints"]
    g = torch.Generator().manual_seed(1)
    mask = torch.zeros(n, 1, side, side)
    mask[..., side // 4: side // 2, :] = 1
    cond_channels = 3 if joints else 1
    batch = {"condition": torch.rand(n, cond_channels, side, side, generator=g) * 2 - 1,
             "target": torch.rand(n, 3, side, side, generator=g) * 2 - 1,
             "truth": torch.zeros(n, 3, side, side), "mask": mask}
    if joints:
        batch["pose"] = torch.rand(n, joints, 3, generator=g)
    return batch


def _row(variant: str, s: dict[str, Any], result: dict[str, Any], stage: str) -> dict[str, Any]:
    iterations = int(s["train"]["iterations"])
    row = {"paper": PAPER, "kind": "train_step", "model": stage, "variant": variant,
           "part": "training", "side": s["model"]["size"], "batch": s["train"]["batch_size"],
           "precision": "fp32+tf32conv", "iterations": iterations, **result,
           "note": f"one {stage} train_step (sparsegen.models.ilat.task), random weights "
           "and inputs"}
    if result.get("status") == "ok":
        row["gpu_hours_per_model"] = round(result["mean_ms"] / 1e3 * iterations / 3600, 1)
        row["derived_from"] = "mean_ms x train.iterations / 3600 (batch 16 on one GPU)"
    return row


def run(out: Path, device: torch.device, calls: tuple[int, int] = (2, 5),
        preset: str = "paper") -> Path:
    params = load_params(overrides={"preset": preset})
    env = environment(device)
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        for variant in TOKENIZERS:
            s = _settings(params, variant, root)
            task = TokenizerTask(s, device)
            batch = _tokenizer_batch(s, s["train"]["batch_size"], device)
            step = s["train"]["mask_from"] + 1  # the masked phase, GAN on
            result = measure(lambda t=task, b=batch, k=step: t.train_step(k, b), device,
                             *calls, grad=True)
            ckpt = root / f"{variant}.pt"
            checkpoint.save(ckpt, step=0, modules={"tokenizer": task.tokenizer}, optimizers={},
                            settings=s)
            rows.append({**_row(variant, s, result, "tokenizer"), **env})
            print(rows[-1]["variant"], rows[-1].get("mean_ms"), flush=True)
            del task
            release(device)
        for variant in TRANSFORMERS:
            s = _settings(params, variant, root)
            s["uses"] = {role: {"variant": up, "checkpoint": str(root / f"{up}.pt")}
                         for role, up in params[PAPER]["variants"][variant]["uses"].items()}
            for up in s["uses"].values():
                if not Path(up["checkpoint"]).exists():  # e.g. the sketch tokenizer
                    ts = _settings(params, up["variant"], root)
                    tok = TokenizerTask(ts, device).tokenizer
                    checkpoint.save(up["checkpoint"], step=0, modules={"tokenizer": tok},
                                    optimizers={}, settings=ts)
            task2 = TransformerTask(s, device)
            batch = _transformer_batch(s, s["train"]["batch_size"], device)
            result = measure(lambda t=task2, b=batch: t.train_step(0, b), device, *calls,
                             grad=True)
            rows.append({**_row(variant, s, result, "transformer"), **env})
            print(rows[-1]["variant"], rows[-1].get("mean_ms"), flush=True)
            del task2
            release(device)
    return write_csv(out, [complete(r) for r in rows])


def main(argv: Sequence[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, default=Path("results/bench/ilat_training.csv"))
    p.add_argument("--calls", type=int, nargs=2, default=(2, 5), metavar=("WARMUP", "TIMED"))
    p.add_argument("--preset", choices=("paper", "smoke"), default="paper",
                   help="smoke: the smoke sizes (a CPU check of the code path)")
    args = p.parse_args(argv)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    print(run(args.out, device, tuple(args.calls), args.preset))


if __name__ == "__main__":
    main()
