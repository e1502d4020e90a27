"""One rank of the multi-GPU StyleNAT training-iteration benchmark.

`bench.stylenat` starts it as `torchrun --standalone --nproc_per_node N -m
sparsegen.bench.stylenat_ddp --device cuda --out rank0.json --calls W T R`: every rank joins the
process group (`sparsegen.train.distributed.setup`: NCCL on CUDA, gloo on the CPU), builds the
real StyleNAT task, whose networks are DDP-wrapped, and times the same iterations as one process
does (`bench.stylenat.train_step_timing`, under the training job's switches); rank 0 writes its
timing as JSON for the parent to turn into rows."""

from __future__ import annotations

import argparse
import sys

import torch

from sparsegen.bench.stylenat import train_settings, train_step_timing, training_flags
from sparsegen.io import write_json
from sparsegen.train import distributed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m sparsegen.bench.stylenat_ddp",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("--device", choices=("cuda", "cpu"), required=True)
    parser.add_argument("--out", required=True, help="JSON file rank 0 writes its timing to")
    parser.add_argument("--calls", type=int, nargs=3, required=True,
                        metavar=("WARMUP", "TIMED", "TIMED_R1"),
                        help="warm-up iterations, timed without R1, timed with R1")
    parser.add_argument("--preset", default=None, help="params preset (default: paper on "
                        "CUDA, smoke on the CPU)")
    parser.add_argument("--backend", default=None, help="NA backend (default: flex on CUDA, "
                        "torch on the CPU)")
    args = parser.parse_args(argv)
    world, device = distributed.setup(torch.device(args.device))
    try:
        settings = train_settings(device.type, args.preset, args.backend)
        with training_flags(settings, device):
            timing = train_step_timing(settings, device, tuple(args.calls))
        if world.is_main:
            write_json(args.out, {**timing, "world_size": world.world_size})
    finally:
        distributed.teardown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
