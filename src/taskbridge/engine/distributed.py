"""Data-parallel training under `torchrun`: one process per device, gradients averaged over ranks.

`torchrun --nproc_per_node N -m taskbridge.cli fit RECIPE` starts N copies of the same run. Each
rank builds the same method from the same seed (and takes rank 0's weights, to be sure), reads its
share of every *global* batch (`data.batch_size` is the global batch, split evenly), and after
each optimizer group's backward the group's gradients are averaged over the ranks before clipping
and the optimizer step. Every rank therefore holds the same weights after every step, and a run
on N processes equals a 1-process run with the same global batch (up to float summation order),
which also makes resuming on another number of processes exact in its data order.

Why the gradients are averaged here and not by wrapping the method in
`torch.nn.parallel.DistributedDataParallel`: the engine computes one forward per step and then
back-propagates one loss per optimizer group through that shared graph (GAN generator, then
discriminator), with the discriminator used several times. DDP's reducer averages during the
*first* backward after a forward and ignores later ones (its autograd hooks are disarmed once a
reduction finishes), so the discriminator's gradients would stay per-rank and the ranks would drift
apart. The communication itself is PyTorch's (process groups: NCCL on GPUs, gloo on CPU; one
flattened all-reduce per group and step); SyncBatchNorm is PyTorch's too.

Rank 0 alone logs, draws image grids, validates, writes checkpoints and shows the progress bar;
every rank runs the method's own callbacks (EMA copies), so their state stays equal.
"""

from __future__ import annotations

import datetime
import os
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import Tensor, nn

from taskbridge.config import ConfigError
from taskbridge.engine.sampler import EpochBatchSampler

#: how long a rank waits for the others (rank 0 validating a large split holds the rest at the next step)
TIMEOUT = datetime.timedelta(hours=2)


@dataclass(frozen=True)
class DistContext:
    """Where this process stands in the job; `world_size` 1 is an ordinary single-process run."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def barrier(self) -> None:
        if self.enabled:
            dist.barrier()

    @contextmanager
    def main_first(self) -> Iterator[None]:
        """Rank 0 runs the block before the others (it writes files, e.g. split lists, they then read)."""
        if not self.is_main:
            self.barrier()
        yield
        if self.is_main:
            self.barrier()


SINGLE = DistContext()


def from_environment(device: torch.device) -> DistContext:
    """The job torchrun describes in WORLD_SIZE / RANK / LOCAL_RANK (read by the process group); joins (or creates) its process group.

    NCCL when the run computes on CUDA, gloo on CPU. Without torchrun's variables: a single process.
    """
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return SINGLE
    local = int(os.environ.get("LOCAL_RANK", "0"))
    if not dist.is_available():
        raise ConfigError("WORLD_SIZE > 1 but this torch build has no torch.distributed")
    if not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        if device.type == "cuda":
            torch.cuda.set_device(local)
        dist.init_process_group(backend, timeout=TIMEOUT)
    if dist.get_world_size() != world:
        raise ConfigError(f"WORLD_SIZE={world} but the process group has {dist.get_world_size()} processes")
    return DistContext(dist.get_rank(), world, local)


def rank_device(device: torch.device, ctx: DistContext) -> torch.device:
    """Each rank computes on its own GPU (`cuda:LOCAL_RANK`); CPU ranks share the CPU."""
    if ctx.enabled and device.type == "cuda":
        return torch.device("cuda", ctx.local_rank)
    return device


def local_batch_size(global_batch: int, ctx: DistContext) -> int:
    if global_batch % ctx.world_size:
        raise ConfigError(f"data.batch_size={global_batch} is the global batch and must divide evenly over "
                          f"{ctx.world_size} processes; use a multiple of {ctx.world_size}")
    return global_batch // ctx.world_size


class ShardedBatches:
    """This rank's contiguous slice of every global batch an `EpochBatchSampler` yields."""

    def __init__(self, batches: EpochBatchSampler, ctx: DistContext) -> None:
        self.batches, self.ctx = batches, ctx

    def __iter__(self) -> Iterator[list[int]]:
        per = self.batches.batch_size // self.ctx.world_size
        for batch in self.batches:
            yield batch[self.ctx.rank * per : (self.ctx.rank + 1) * per]

    def __len__(self) -> int:
        return len(self.batches)


def broadcast_module(module: nn.Module, ctx: DistContext) -> None:
    """Every rank takes rank 0's parameters and buffers (one flattened broadcast per dtype)."""
    if not ctx.enabled:
        return
    tensors = [t for t in (*module.parameters(), *module.buffers()) if t.numel()]
    by_dtype: dict[torch.dtype, list[Tensor]] = {}
    for t in tensors:
        by_dtype.setdefault(t.dtype, []).append(t)
    with torch.no_grad():
        for group in by_dtype.values():
            flat = torch.cat([t.detach().reshape(-1) for t in group])
            dist.broadcast(flat, src=0)
            for t, part in zip(group, flat.split([t.numel() for t in group]), strict=True):
                t.copy_(part.view_as(t))


def average_gradients(params: Sequence[nn.Parameter], ctx: DistContext) -> None:
    """Mean of each parameter's gradient over the ranks, in place.

    A parameter whose gradient is None on every rank stays None (the optimizer skips it, as it would
    in one process); one that has a gradient on some ranks counts as zero on the others.
    """
    if not ctx.enabled or not params:
        return
    present = torch.tensor([p.grad is not None for p in params], dtype=torch.float32, device=params[0].device)
    dist.all_reduce(present, op=dist.ReduceOp.MAX)
    live = [p for p, on in zip(params, present.tolist(), strict=True) if on]
    if not live:
        return
    flat = torch.cat([(p.grad if p.grad is not None else torch.zeros_like(p)).reshape(-1).float() for p in live])
    dist.all_reduce(flat)
    flat /= ctx.world_size
    for p, part in zip(live, flat.split([p.numel() for p in live]), strict=True):
        p.grad = part.view_as(p).to(p.dtype)


def any_rank(flag: bool, ctx: DistContext, device: torch.device) -> bool:
    """True when `flag` is true on any rank (a NaN loss or a stop request must stop every rank at once)."""
    if not ctx.enabled:
        return flag
    t = torch.tensor([float(flag)], device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item())


def mean_scalars(values: dict[str, Tensor], ctx: DistContext) -> dict[str, Tensor]:
    """Scalar tensors averaged over the ranks (what the log shows is the global batch's loss)."""
    if not ctx.enabled or not values:
        return values
    keys = sorted(values)
    flat = torch.stack([values[k].detach().float().reshape(()) for k in keys])
    dist.all_reduce(flat)
    flat /= ctx.world_size
    return dict(zip(keys, flat.unbind(), strict=True))


def sync_batchnorm(method: nn.Module, device: torch.device, ctx: DistContext) -> nn.Module:
    """BatchNorm layers that train become SyncBatchNorm on GPUs (statistics of the global batch).

    PyTorch's SyncBatchNorm runs on GPUs only: on CPU each rank normalises with its own share of the
    batch, so a multi-process CPU run of a method that trains BatchNorm differs from a 1-process one
    (a warning says so). Frozen parts keep their layers.
    """
    if not ctx.enabled:
        return method
    training_bn = [name for name, child in method.named_children()
                   if any(p.requires_grad for p in child.parameters())
                   and any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in child.modules())]
    if not training_bn:
        return method
    if device.type != "cuda":
        if ctx.is_main:
            warnings.warn(f"{', '.join(training_bn)} train BatchNorm; SyncBatchNorm needs GPUs, so on CPU each of the "
                          f"{ctx.world_size} processes normalises with its own part of the batch", stacklevel=2)
        return method
    for name in training_bn:
        setattr(method, name, nn.SyncBatchNorm.convert_sync_batchnorm(getattr(method, name)))
    return method


def close(ctx: DistContext) -> None:
    """Leave the process group at the end of the job."""
    if ctx.enabled and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()
