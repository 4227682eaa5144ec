"""Data parallelism of a training run (torchrun): each rank holds a slice of the global batch, and the ranks keep
one SAE.

'ddp' (the default): the SAE wrapped in PyTorch's `DistributedDataParallel`, whose bucketed all-reduces of the
gradient average run during the backward pass. 'allreduce': saelab's own, one flat all-reduce of every gradient
after the backward pass (kept to measure DDP against; docs/performance.md has the figures). Either way the losses'
normalisers and BatchTopK's selection are of the global batch (`saelab.distributed.Ranks`, passed to the forward
pass), each rank's loss is its slice's share, so the averaged gradient is the global batch's.
"""

from __future__ import annotations

import inspect

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel

__all__ = ["DataParallel"]


class DataParallel:
    """The SAE as the training step calls it (`model`), and the gradient average after its backward pass."""

    def __init__(self, sae: torch.nn.Module, world: int, mode: str = "ddp"):
        """Start every rank from rank 0's SAE (ranks streaming disjoint data initialised from different samples)."""
        if mode not in ("ddp", "allreduce"):
            raise ValueError(f"data_parallel must be 'ddp' or 'allreduce', got {mode!r}")
        self.sae, self.world, self.mode = sae, world, mode
        self.model = sae
        if world == 1:
            return
        if mode == "ddp":
            self.model = _wrap(sae)
        else:
            for t in [*sae.parameters(), *sae.buffers()]:
                dist.broadcast(t.data, src=0)

    def average_grads(self) -> None:
        """After the backward pass: the gradients' mean over ranks (DDP has taken it already)."""
        if self.world == 1 or self.mode == "ddp":
            return
        grads = [p.grad for p in self.sae.parameters()]
        flat = torch.cat([g.reshape(-1) for g in grads])
        dist.all_reduce(flat, op=dist.ReduceOp.SUM)
        flat /= self.world
        off = 0
        for g in grads:
            g.copy_(flat[off: off + g.numel()].view_as(g))
            off += g.numel()

    def any_rank(self, fired_N: torch.Tensor) -> torch.Tensor:
        """Latents that fired on any rank's slice (bool per latent)."""
        if self.world == 1:
            return fired_N
        f = fired_N.to(torch.int32)
        dist.all_reduce(f, op=dist.ReduceOp.MAX)
        return f.bool()

    def mean(self, values: dict[str, torch.Tensor]) -> dict[str, float]:
        """{name: the mean over ranks} of scalars (each rank's loss is of its slice: their mean is the global
        batch's), in one all-reduce; every rank must call it with the same names."""
        names = sorted(values)
        v = torch.stack([values[k].detach().double().reshape(()) for k in names])
        if self.world > 1:
            dist.all_reduce(v, op=dist.ReduceOp.SUM)
            v /= self.world
        return dict(zip(names, v.tolist()))


def _wrap(sae: torch.nn.Module) -> DistributedDataParallel:
    """`sae` in DDP. Every family uses all its parameters in each training step (tests/test_parallel.py), so DDP
    need not search the graph for unused ones. Its buffers (the dead-latent counts, BatchTopK's threshold) are
    kept equal by the ranks themselves, so they are broadcast once, at the start, not before every forward pass."""
    if "forward_sync_buffers" in inspect.signature(DistributedDataParallel).parameters:  # torch >= 2.13
        return DistributedDataParallel(sae, forward_sync_buffers=False)
    for b in sae.buffers():  # older torch: broadcast_buffers=False leaves them out of the initial broadcast too
        dist.broadcast(b.data, src=0)
    return DistributedDataParallel(sae, broadcast_buffers=False)
