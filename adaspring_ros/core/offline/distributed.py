"""Several training processes on torch's own engine: ``torch.distributed`` under ``torchrun``.

The processes come from ``torchrun`` (one machine: ``--nproc-per-node N``; several:
``--nnodes``, ``--rdzv-backend c10d --rdzv-endpoint HOST:PORT``), never from a pool of our own.
Each reads its place from torchrun's environment (RANK, WORLD_SIZE, LOCAL_RANK, as torchvision's
``references/classification/utils.py`` does) and joins one process group: nccl on CUDA, gloo
on the CPU. The trainer wraps the backbone in DistributedDataParallel, which averages the
gradients of every backward pass over the ranks; this module holds the few collectives the
trainer adds (BN running statistics averaged at the end of an epoch, CPU time summed, a check
that every rank drew the same variants).
"""

from __future__ import annotations

import contextlib
import os
import zlib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn

__all__ = ["Ranks", "from_env", "process_group", "joined", "average_buffers", "summed",
           "check_same"]


@dataclass(frozen=True)
class Ranks:
    """This process's place in the run: ``rank`` of ``world_size``, ``local_rank`` on its
    machine (the GPU it drives). One process alone is rank 0 of 1."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    def __post_init__(self) -> None:
        if not 0 <= self.rank < self.world_size or self.local_rank < 0:
            raise ValueError(f"rank {self.rank} of world size {self.world_size} "
                             f"(local rank {self.local_rank}) is not a place in a run")

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        """Rank 0: the one process that logs, shows progress and writes files."""
        return self.rank == 0


def from_env(environ: Mapping[str, str] = os.environ) -> Ranks:
    """The place torchrun gives this process (RANK, WORLD_SIZE, LOCAL_RANK); rank 0 of 1 when
    started without torchrun. Raises ValueError for values that are not a place in a run."""
    if "RANK" not in environ or "WORLD_SIZE" not in environ:
        return Ranks()
    try:
        return Ranks(int(environ["RANK"]), int(environ["WORLD_SIZE"]),
                     int(environ.get("LOCAL_RANK", "0")))
    except ValueError as exc:
        raise ValueError(f"torchrun's RANK/WORLD_SIZE/LOCAL_RANK: {exc}") from exc


@contextlib.contextmanager
def process_group(ranks: Ranks, device: torch.device) -> Iterator[None]:
    """Join the run's process group for the duration of the block (nothing for one process):
    nccl when ``device`` is a GPU, gloo on the CPU; the rendezvous is torchrun's (env://)."""
    if not ranks.distributed:
        yield
        return
    cuda = device.type == "cuda"
    if cuda:
        torch.cuda.set_device(device)
    dist.init_process_group("nccl" if cuda else "gloo", init_method="env://",
                            rank=ranks.rank, world_size=ranks.world_size,
                            device_id=device if cuda else None)
    try:
        dist.barrier()
        yield
        # Neither rank tears the group down while the other may still be in a collective: a
        # fresh clone's run once saw rank 1 abort ("terminate called without an active
        # exception") as the group was destroyed at the end of a torchrun training.
        dist.barrier()
    finally:
        dist.destroy_process_group()


def joined() -> bool:
    """Whether this process is in a process group of more than one rank."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def _comm_device() -> torch.device:
    """Where a collective's tensors must live: the GPU for nccl, else the CPU."""
    return torch.device("cuda", torch.cuda.current_device()) \
        if dist.get_backend() == "nccl" else torch.device("cpu")


@torch.no_grad()
def average_buffers(module: nn.Module) -> None:
    """Average every floating-point buffer (BN running statistics) over the ranks, in place.

    Each rank's BN rows follow the batches of its own shard; their mean is what the rows of one
    process that saw every shard would hold for the running means (exactly, the updates being
    linear and the shards equal) and, for the variances, the mean of the ranks' estimates.
    Integer buffers (batch counters) are the same on every rank and left alone."""
    if not joined():
        return
    world = dist.get_world_size()
    for buf in module.buffers():
        if buf.is_floating_point():
            dist.all_reduce(buf, op=dist.ReduceOp.SUM)
            buf.div_(world)


def summed(value: float) -> float:
    """``value`` summed over the ranks (float64); ``value`` itself for one process."""
    if not joined():
        return value
    t = torch.tensor([value], dtype=torch.float64, device=_comm_device())
    dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return float(t.item())


def check_same(what: str, state: bytes) -> None:
    """Raise RuntimeError unless every rank holds the same ``state`` (compared by CRC-32):
    e.g. the sampling generators after an epoch, which must have drawn the same variants."""
    if not joined():
        return
    mine = torch.tensor([zlib.crc32(state)], dtype=torch.int64, device=_comm_device())
    every = [torch.zeros_like(mine) for _ in range(dist.get_world_size())]
    dist.all_gather(every, mine)
    if len({int(t.item()) for t in every}) != 1:
        raise RuntimeError(f"the ranks disagree on {what}: every rank must draw the same "
                           "variants and augmentation in the same order")
