"""Data-parallel training under torchrun: process group, one device per rank, DDP, rank 0 writes.

`torchrun --nproc_per_node N -m sparsegen train ...` starts N copies of the training command with
RANK, WORLD_SIZE and LOCAL_RANK in the environment. `setup` joins them into a process group
(NCCL on CUDA, gloo on CPU); without torchrun (or with WORLD_SIZE=1) nothing changes and every
helper here is a no-op, so a single process behaves exactly as it always did.
"""

from __future__ import annotations

import inspect
import os
from collections.abc import Mapping
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

ENV_KEYS = ("RANK", "WORLD_SIZE", "LOCAL_RANK")
_DDP_ARGUMENTS = frozenset(inspect.signature(DistributedDataParallel.__init__).parameters)


@dataclass(frozen=True)
class World:
    """This process's place among the training processes."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        """Rank 0: the only process that writes checkpoints, logs and progress."""
        return self.rank == 0


def env_world(env: Mapping[str, str] | None = None) -> World:
    """The world torchrun describes in `env` (default: os.environ); one process when unset."""
    env = os.environ if env is None else env
    if "WORLD_SIZE" not in env:
        return World()
    values = {}
    for key in ENV_KEYS:
        try:
            values[key] = int(env.get(key, "0"))
        except ValueError:
            raise ValueError(f"environment variable {key}={env[key]!r} is not an integer "
                             "(set by torchrun)") from None
    world = World(values["RANK"], values["WORLD_SIZE"], values["LOCAL_RANK"])
    if world.world_size < 1 or not 0 <= world.rank < world.world_size or world.local_rank < 0:
        raise ValueError(f"inconsistent torchrun environment: RANK={world.rank}, "
                         f"WORLD_SIZE={world.world_size}, LOCAL_RANK={world.local_rank}")
    return world


def active() -> bool:
    """Whether this process belongs to a process group of more than one rank."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def current() -> World:
    """The world of the initialised process group, or a single process."""
    if not active():
        return World()
    return World(dist.get_rank(), dist.get_world_size(), env_world().local_rank)


def setup(device: torch.device) -> tuple[World, torch.device]:
    """Join the torchrun process group; return the world and this rank's device.

    On CUDA each rank takes GPU LOCAL_RANK and the group uses NCCL; on CPU it uses gloo."""
    world = env_world()
    if world.world_size == 1 or active():
        return current(), device
    if device.type == "cuda":
        if world.local_rank >= torch.cuda.device_count():
            raise RuntimeError(f"LOCAL_RANK {world.local_rank} has no GPU: torch sees "
                               f"{torch.cuda.device_count()} (start fewer processes per node)")
        device = torch.device("cuda", world.local_rank)
        torch.cuda.set_device(device)
        dist.init_process_group("nccl", rank=world.rank, world_size=world.world_size,
                                device_id=device)
    else:
        dist.init_process_group("gloo", rank=world.rank, world_size=world.world_size)
    return world, device


def teardown() -> None:
    """Leave the process group (after the last collective)."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def barrier() -> None:
    """Wait for every rank (no-op in a single process)."""
    if active():
        dist.barrier()


def wrap(module: nn.Module, device: torch.device) -> nn.Module:
    """`module` in DistributedDataParallel when several ranks train, else `module` itself.

    Every parameter must receive a gradient in every backward through the wrapper (there is
    no unused-parameter search; a network frozen for a whole step is fine). Buffers are not
    re-broadcast at every forward (as StyleSwin/StyleNAT): ranks start from the same buffers
    and update them identically. Where torch has `forward_sync_buffers`, DDP also copies rank
    0's buffers at the start; older torch's `broadcast_buffers=False` does not, and relies on
    every rank building the module from the same seed (as `cmd_train` does)."""
    if not active():
        return module
    key = "forward_sync_buffers"
    if key not in _DDP_ARGUMENTS:  # older torch
        key = "broadcast_buffers"
    return DistributedDataParallel(
        module, device_ids=[device.index] if device.type == "cuda" else None,
        **{key: False})


def unwrap(module: nn.Module) -> nn.Module:
    """The network inside a DDP wrapper (or the module itself)."""
    return module.module if isinstance(module, DistributedDataParallel) else module


def mean_over_ranks(values: Mapping[str, float]) -> dict[str, float]:
    """Each value averaged over all ranks (every rank must call this with the same keys)."""
    if not active():
        return dict(values)
    keys = sorted(values)
    device = (torch.device("cuda", torch.cuda.current_device())
              if dist.get_backend() == "nccl" else torch.device("cpu"))
    t = torch.tensor([float(values[k]) for k in keys], dtype=torch.float64, device=device)
    dist.all_reduce(t)
    means = dict(zip(keys, (v / dist.get_world_size() for v in t.tolist()), strict=True))
    return {k: means[k] for k in values}
