"""Training on several processes or machines with ``torchrun`` and PyTorch DDP (gloo on CPUs, NCCL on GPUs).

``torchrun --nproc-per-node N -m pneumoscan.cli train ...`` starts N copies of the same training run;
``Ranks.from_environment`` reads who is who from torchrun's variables (one process without them). Every
rank draws the same global batches (the seeds are shared) and trains on its slice of each one; DDP
averages the gradients, and each rank's loss is weighted by its share of the global batch, so a step
equals one process's step on the whole batch. Rank 0 alone writes the run folder (split, caches,
checkpoints, the finished model) and validates on the whole validation set; the others wait for it at
a barrier, read what it wrote, and receive its validation result. A killed run resumes from rank 0's
last checkpoint like a single-process one.
"""

from __future__ import annotations

import contextlib
import logging
import os
from dataclasses import dataclass

import numpy as np
import torch
import torch.distributed as dist

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Ranks:
    """This process's place among the training processes."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world > 1

    @classmethod
    def from_environment(cls) -> Ranks:
        """torchrun's RANK, WORLD_SIZE and LOCAL_RANK; one process when they are not set."""
        variable = lambda name, default: int(os.environ.get(name, default))  # noqa: E731
        return cls(rank=variable("RANK", 0), world=variable("WORLD_SIZE", 1), local_rank=variable("LOCAL_RANK", 0))

    def local_rows(self, n: int) -> slice:
        """The rows of a global batch of ``n`` that this rank trains on (contiguous, sizes differ by one at most)."""
        bounds = np.linspace(0, n, self.world + 1).round().astype(int)
        return slice(int(bounds[self.rank]), int(bounds[self.rank + 1]))


SINGLE = Ranks()


def start(ranks: Ranks, device: torch.device) -> None:
    """Join the process group (gloo on a CPU, NCCL on CUDA) when there is more than one rank."""
    if ranks.distributed and not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
        log.info("rank %d of %d joined the %s process group", ranks.rank, ranks.world, dist.get_backend())


def stop(ranks: Ranks) -> None:
    if ranks.distributed and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


def barrier(ranks: Ranks) -> None:
    if ranks.distributed:
        dist.barrier()


@contextlib.contextmanager
def main_first(ranks: Ranks):
    """Rank 0 runs the block first (and writes what it makes: a split, a cache); the others run it after,
    reading what rank 0 wrote."""
    if not ranks.main:
        barrier(ranks)
    yield
    if ranks.main:
        barrier(ranks)


def from_main(ranks: Ranks, value=None):
    """Rank 0's ``value`` on every rank (any picklable object)."""
    if not ranks.distributed:
        return value
    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def gathered(ranks: Ranks, array: np.ndarray) -> np.ndarray:
    """Every rank's rows, concatenated in rank order (no padding: ranks may hold different counts)."""
    if not ranks.distributed:
        return array
    parts = [None] * ranks.world
    dist.all_gather_object(parts, np.asarray(array))
    return np.concatenate(parts)


def wrapped(module: torch.nn.Module, ranks: Ranks, device: torch.device) -> torch.nn.Module:
    """``module`` under DistributedDataParallel when there are several ranks (itself otherwise)."""
    if not ranks.distributed:
        return module
    from torch.nn.parallel import DistributedDataParallel

    ids = [device.index] if device.type == "cuda" else None
    return DistributedDataParallel(module, device_ids=ids)
