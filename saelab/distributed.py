"""This process's place in a torch.distributed job (torchrun), or (0, 1) outside one."""

from __future__ import annotations

import torch
import torch.distributed as dist


def rank_world() -> tuple[int, int]:
    """(rank, world size) of the initialised process group, or (0, 1)."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


class Ranks:
    """The process group of a data-parallel job, for statistics of the global batch (each rank holds a slice)."""

    def __init__(self, world: int):
        self.world = world

    def mean(self, t):
        """The mean over ranks of `t` (a new tensor)."""
        t = t.clone()
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
        return t / self.world

    def min(self, t):
        """The minimum over ranks of `t` (a new tensor)."""
        t = t.clone()
        dist.all_reduce(t, op=dist.ReduceOp.MIN)
        return t

    def cat(self, t):
        """Every rank's `t` (the same shape on each), concatenated in rank order along the first dimension."""
        parts = [torch.empty_like(t) for _ in range(self.world)]
        dist.all_gather(parts, t.contiguous())
        return torch.cat(parts)


def ranks():
    """`Ranks` of the initialised process group when it has more than one process, else None."""
    _, world = rank_world()
    return Ranks(world) if world > 1 else None
