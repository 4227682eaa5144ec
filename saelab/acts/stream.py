"""On-the-fly training data: activations straight from the LM (no disk), and a buffer that shuffles them.

Not to be confused with `cache.ShuffledCacheLoader`, which reads a harvested cache in a seeded order
that a resumed run can jump into; a stream cannot jump, so a resumed run replays it.
"""

from __future__ import annotations

import torch

from saelab.acts.harvest import HarvestConfig, harvest_contexts, load_harvest_lm
from saelab.acts.outliers import outlier_mask
from saelab.distributed import rank_world
from saelab.lm.models import LM
from saelab.lm.sites import run_to_site


class StreamShuffleBuffer:
    """On-the-fly mode: mix incoming activation batches in a bounded buffer, yield shuffled batches
    (under data parallelism: each rank its own buffer over its own stream, batch_size = global / world,
    and its own seed)."""

    def __init__(self, source, batch_size: int, capacity: int = 65536, seed: int = 0):
        self.source, self.B, self.cap = source, batch_size, max(capacity, batch_size)
        self.gen = torch.Generator().manual_seed(seed)

    def __iter__(self):
        buf = None
        for acts in self.source:
            buf = acts if buf is None else torch.cat([buf, acts])
            while len(buf) >= self.cap:
                perm = torch.randperm(len(buf), generator=self.gen)
                buf = buf[perm]
                yield buf[: self.B].float()
                buf = buf[self.B:]
        if buf is not None and len(buf):
            buf = buf[torch.randperm(len(buf), generator=self.gen)]
            for s in range(0, len(buf) - self.B + 1, self.B):
                yield buf[s:s + self.B].float()


def stream_activations(cfg: HarvestConfig, lm: LM | None = None, rank: int | None = None, world: int | None = None,
                       with_ids: bool = False):
    """On-the-fly harvest (no disk): yield [tokens, d] fp32 activation blocks, batch by batch.

    The same tokens as `harvest` with the same config: the same contexts, cut into the same batches of
    `cfg.batch_size` contexts, and the same position and outlier rules (so separators never reach
    training). Under torchrun (or with rank/world given) rank r takes batches j with j % world == r:
    the ranks' tokens are disjoint and together are exactly one process's. with_ids: yield (acts,
    ids) with ids = context * ctx_len + position, to check which tokens a rank saw.
    """
    lm = lm or load_harvest_lm(cfg)
    layer = lm.default_layer if cfg.layer is None else cfg.layer
    if rank is None or world is None:
        rank, world = rank_world()
    T = cfg.context.ctx_len
    _, contexts = harvest_contexts(cfg, lm)
    toks = torch.from_numpy(contexts.tokens_NT).long()
    pos = torch.arange(cfg.exclude_first, T)
    # the harvest's batches: batch_size contexts at a time within each shard of shard_contexts
    starts = [s for c0 in range(0, len(toks), cfg.shard_contexts)
              for s in range(c0, min(c0 + cfg.shard_contexts, len(toks)), cfg.batch_size)]
    for j, s in enumerate(starts):
        if j % world != rank:
            continue
        end = min(s + cfg.batch_size, (s // cfg.shard_contexts + 1) * cfg.shard_contexts, len(toks))
        batch = toks[s:end]
        acts = run_to_site(lm, batch, cfg.site, layer)[:, cfg.exclude_first:].float()
        acts = acts.reshape(-1, acts.shape[-1]).cpu()
        keep = outlier_mask(acts, cfg.outlier_factor)
        if with_ids:
            ids = ((torch.arange(s, s + len(batch))[:, None] * T) + pos[None]).reshape(-1)
            yield acts[keep], ids[keep]
        else:
            yield acts[keep]


