"""Where a training run's batches come from: a harvested cache or a tensor in memory (shuffled epochs a resumed run
can jump into), or a stream of batches (one pass, replayed on resume).

`TrainingData.of(data, ...)` takes any of them: an `ActivationCache`, a [tokens, d] tensor (read as
`acts.cache.TensorActivations`, the same order as a cache made of it), or an iterable of [tokens, d] batches of
`batch_size / world` rows with `tokens` (the schedule's length). Under data parallelism rank r reads rows
[r B/W, (r+1) B/W) of each global batch of a cache, and its own stream.
"""

from __future__ import annotations

import math

import torch
import torch.distributed as dist

from saelab.acts.cache import Activations, ShuffledCacheLoader, TensorActivations

STREAM_END = object()
"""What `TrainingData.batch` returns when a stream ran dry (on any rank)."""


class TrainingData:
    """Batches for steps 0, 1, ...: `batch(step)`; the first batch's width, a sample for the initialisation and
    the data's manifest."""

    def __init__(self, cache: Activations | None, stream, tokens: int | None, batch_size: int, seed: int, rank: int,
                 world: int, device):
        self.cache, self.stream, self.B, self.seed, self.device = cache, None, batch_size, seed, torch.device(device)
        self.world = world
        self._epoch_batches = None
        if cache is not None:
            self.loader = ShuffledCacheLoader(cache, batch_size, seed, rank=rank, world=world, device=self.device)
            self.steps_per_epoch, self.n_tokens = self.loader.batches_per_epoch(), cache.n_tokens
            self.manifest = cache.manifest
        elif stream is not None and tokens:
            self.loader, self.stream = None, iter(stream)
            self.steps_per_epoch, self.n_tokens, self.manifest = tokens // batch_size, tokens, {}
            self._first = next(self.stream)
        else:
            raise ValueError("give the training data: an ActivationCache, a [tokens, d] tensor, or an iterable of "
                             "batches with tokens= (the number of tokens to train on)")
        if self.steps_per_epoch == 0:
            raise ValueError(f"the training data has {self.n_tokens} tokens, fewer than one batch of "
                             f"{batch_size}; harvest more tokens or lower batch_size")

    @classmethod
    def of(cls, data, batch_size: int, seed: int, tokens: int | None = None, rank: int = 0, world: int = 1,
           device="cpu") -> TrainingData:
        if isinstance(data, torch.Tensor):
            data = TensorActivations(data)
        if isinstance(data, Activations):
            return cls(data, None, None, batch_size, seed, rank, world, device)
        return cls(None, data, tokens, batch_size, seed, rank, world, device)

    def total_steps(self, epochs: float) -> int:
        """Steps of a run of `epochs` passes (a stream: one pass of its tokens)."""
        return self.steps_per_epoch if self.stream is not None else max(1, math.ceil(epochs * self.steps_per_epoch))

    @property
    def d_in(self) -> int:
        return self._first.shape[1] if self.stream is not None else self.cache.d_model

    def sample(self, n: int = 32768) -> torch.Tensor:
        """Rows for the initialisation (b_pre, the input scale): a sample of the cache, or a stream's first batch."""
        return self._first if self.stream is not None else self.cache.sample(min(n, self.cache.n_tokens),
                                                                              seed=self.seed)

    def batch(self, step: int):
        """The batch of `step` (steps come in order; a new epoch, or a resumed run, starts where `step` says):
        a tensor on the device, or STREAM_END when the stream ran dry on any rank."""
        if self.stream is not None:
            x, self._first = (self._first, None) if self._first is not None else (next(self.stream, None), None)
            if self.world > 1:  # every rank stops at the same step
                have = torch.tensor([0 if x is None else 1], device=self.device)  # NCCL needs it on the GPU
                dist.all_reduce(have, op=dist.ReduceOp.MIN)
                x = x if int(have) else None
            return STREAM_END if x is None else x.to(self.device)
        epoch, b = divmod(step, self.steps_per_epoch)
        if self._epoch_batches is None or b == 0:
            self._epoch_batches = self.loader.iter_epoch(epoch, start_batch=b)
        return next(self._epoch_batches)

    def skip(self, steps: int) -> None:
        """Resume after `steps`: a stream is replayed to there (it is deterministic); a cache jumps on its own."""
        if self.stream is not None:
            for _ in range(steps):
                self.batch(0)

    def calibration_batches(self, last_batch: torch.Tensor, n: int = 8):
        """Whole training batches for a family's `finalize` (BatchTopK's threshold): the first `n` of epoch 0, the
        same on every rank (all B rows, not the rank's slice); a stream: its last batch (this rank's)."""
        if self.stream is not None:
            return [last_batch]
        whole = ShuffledCacheLoader(self.cache, self.B, self.seed, device=self.device)
        return (b for b, _ in zip(whole.iter_epoch(0), range(n)))
