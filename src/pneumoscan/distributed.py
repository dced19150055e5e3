"""Training on several processes or machines with ``torchrun`` and PyTorch DDP (gloo on CPUs, NCCL on GPUs).

``torchrun --nproc-per-node N -m pneumoscan.cli train ...`` starts N copies of the same training run;
``Ranks.from_environment`` reads who is who from torchrun's variables (one process without them). Every
rank draws the same global batches (the seeds are shared) and trains on its slice of each one; DDP
averages the gradients, and each rank's loss is weighted by its share of the global batch, so a step
equals one process's step on the whole batch. Rank 0 alone writes the run folder (split, caches,
checkpoints, the finished model) and validates on the whole validation set; the others wait for it at
a barrier, read what it wrote, and receive its validation result. A killed run resumes from rank 0's
last checkpoint like a single-process one.

Two layers would still train differently on a slice of the batch: BatchNorm (statistics of the slice)
and dropout (a mask drawn for the slice). While a stage trains under DDP they are replaced
(``batch_wide``) by versions that see the whole batch: torch's ``SyncBatchNorm`` on GPUs, and on CPUs,
where it does not run, ``BatchNormOverRanks`` (statistics summed over the ranks); ``DropoutOverRanks``
draws the mask one process would draw for the whole batch and keeps this rank's rows.
"""

from __future__ import annotations

import contextlib
import logging
import os
from dataclasses import dataclass

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

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


def wrapped(module: nn.Module, ranks: Ranks, device: torch.device) -> nn.Module:
    """``module`` under DistributedDataParallel when there are several ranks (itself otherwise)."""
    if not ranks.distributed:
        return module
    from torch.nn.parallel import DistributedDataParallel

    ids = [device.index] if device.type == "cuda" else None
    return DistributedDataParallel(module, device_ids=ids)


class BatchNormOverRanks(nn.BatchNorm2d):
    """BatchNorm2d that trains with the statistics of the global batch: per-channel sums are added up over
    the ranks (a differentiable all-reduce, so gradients flow through them as in one process)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training:
            return super().forward(x)
        from torch.distributed._functional_collectives import all_reduce  # differentiable (torch's advice)

        values = x.float()
        channels = values.shape[1]
        count = torch.full((1,), values.numel() / channels, device=x.device)
        totals = all_reduce(torch.cat([count, values.sum(dim=(0, 2, 3))]), "sum", dist.group.WORLD)
        n, mean = totals[0], totals[1:] / totals[0]
        centred = values - mean[None, :, None, None]  # two passes, as BatchNorm2d: no cancellation in E[x^2]-E[x]^2
        variance = all_reduce((centred * centred).sum(dim=(0, 2, 3)), "sum", dist.group.WORLD) / n
        if self.track_running_stats:
            self._track(mean.detach(), variance.detach() * n.detach() / (n.detach() - 1).clamp_min(1))
        out = centred * torch.rsqrt(variance + self.eps)[None, :, None, None]
        if self.affine:
            out = out * self.weight[None, :, None, None] + self.bias[None, :, None, None]
        return out.to(x.dtype)

    def _track(self, mean: torch.Tensor, unbiased_variance: torch.Tensor) -> None:
        self.num_batches_tracked += 1
        momentum = self.momentum if self.momentum is not None else 1.0 / float(self.num_batches_tracked)
        self.running_mean.mul_(1 - momentum).add_(momentum * mean)
        self.running_var.mul_(1 - momentum).add_(momentum * unbiased_variance)


class DropoutOverRanks(nn.Dropout):
    """Dropout whose mask is this rank's rows of the mask one process draws for the whole batch (F.dropout on
    a CPU: a Bernoulli draw shaped like its input); every rank's generator is seeded alike and draws it all."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0:
            return x
        sizes = [torch.zeros(1, dtype=torch.long) for _ in range(dist.get_world_size())]
        dist.all_gather(sizes, torch.tensor([len(x)]))
        start = int(sum(sizes[:dist.get_rank()]))
        noise = torch.empty((int(sum(sizes)), *x.shape[1:]), dtype=x.dtype).bernoulli_(1 - self.p)
        noise.div_(1 - self.p)
        return x * noise[start:start + len(x)].to(x.device)


def batch_wide(module: nn.Module, ranks: Ranks, device: torch.device, *, undo: bool = False) -> nn.Module:
    """Replace, in place, ``module``'s BatchNorm2d and dropout layers by versions that see the whole batch
    across ranks (``undo``: back to the plain layers). The new layers hold the same parameters and buffers,
    so an optimizer made earlier keeps working and the state dict is unchanged. Nothing to do on one rank."""
    if not ranks.distributed:
        return module
    for name, child in module.named_children():
        setattr(module, name, _layer_for(child, device, undo) or batch_wide(child, ranks, device, undo=undo))
    return module


def _layer_for(layer: nn.Module, device: torch.device, undo: bool) -> nn.Module | None:
    """The replacement of one layer, or None when it is not one to replace."""
    if type(layer) in ((nn.SyncBatchNorm, BatchNormOverRanks) if undo else (nn.BatchNorm2d,)):
        cls = nn.BatchNorm2d if undo else nn.SyncBatchNorm if device.type == "cuda" else BatchNormOverRanks
        new = cls(layer.num_features, layer.eps, layer.momentum, layer.affine, layer.track_running_stats)
        new.weight, new.bias = layer.weight, layer.bias
        new.running_mean, new.running_var = layer.running_mean, layer.running_var
        new.num_batches_tracked = layer.num_batches_tracked
        return new.train(layer.training)
    if type(layer) is (DropoutOverRanks if undo else nn.Dropout):
        return (nn.Dropout if undo else DropoutOverRanks)(layer.p, layer.inplace).train(layer.training)
    return None
