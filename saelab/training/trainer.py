"""Train an SAE of any family on a cache, a tensor or a stream of batches: Adam as in the paper, AuxK, held-out
evaluation, and with a run folder atomic checkpoints with exact resume; under torchrun, data parallelism
(`saelab.training.parallel`: PyTorch's DistributedDataParallel by default) or latents split across ranks
(`saelab.training.sharded`). The recipe and where each choice comes from: `saelab.training.config`.

    trainer = Trainer(TrainConfig(n_latents=4096, k=32), acts_TD)            # in memory, nothing written
    trainer = Trainer(cfg, cache, "runs/x", eval_cache=held)                  # a run folder: log, checkpoints, sae/
    trainer.train(); trainer.sae

The family's hooks run here: `after_step` after each optimiser step, `finalize` once on the weights that are
saved and evaluated (after the weight average is swapped in, when the run keeps one).
"""

from __future__ import annotations

import time
from contextlib import contextmanager
from pathlib import Path

import torch

from saelab.acts.cache import data_record
from saelab.distributed import rank_world, ranks
from saelab.evals.reconstruction import reconstruction_metrics
from saelab.sae.families import family_of
from saelab.sae.model import SAE
from saelab.training.acceleration import autocast_region, check_autocast, compiled_forward
from saelab.training.checkpoints import TrainingState
from saelab.training.config import TrainConfig
from saelab.training.data import STREAM_END, TrainingData
from saelab.training.ema import WeightEMA, fold_decoder_norms_
from saelab.training.identity import RESUMABLE_CHANGES
from saelab.training.parallel import DataParallel
from saelab.training.run_folder import RunFolder, read_log
from saelab.training.sharded import LatentShards

__all__ = ["RESUMABLE_CHANGES", "TrainConfig", "Trainer", "read_log"]
DATA_IDENTITY = ("model", "model_hash", "site", "layer", "corpus", "split", "corpus_hash")
"""What an SAE learns from: checked on resume, so a folder is never resumed on other activations."""


def new_sae(cfg: TrainConfig, data: TrainingData, provenance: dict, device) -> SAE:
    """The SAE `cfg` asks for, at the data's width, initialised as the paper does (or as `cfg` says)."""
    m = data.manifest
    where = {k: provenance.get(k, m.get(k)) for k in ("model", "site", "layer")}
    sae_cfg = family_of(cfg.sae).config_for_data(cfg.sae, data.d_in, where)
    if cfg.sae.d_in is not None and cfg.sae.d_in != sae_cfg.d_in:
        raise ValueError(f"TrainConfig.sae.d_in is {cfg.sae.d_in} but the training data gives {sae_cfg.d_in}; leave "
                         "d_in unset (None): the Trainer takes it from the data")
    sae = SAE(sae_cfg, seed=cfg.seed, device=device)
    sae.data_record = data_record(m, provenance)
    if not cfg.tied_init:
        with torch.no_grad():
            W = torch.randn(sae.W_enc.shape, generator=torch.Generator().manual_seed(cfg.seed + 1))
            sae.W_enc.copy_(W / W.norm(dim=1, keepdim=True))
    sae.init_from_data(data.sample(), cfg.bias_init)
    if cfg.rescale_encoder_init:
        sae.rescale_encoder_init_(seed=cfg.seed)
    return sae


class Trainer:
    """Owns the SAE, optimiser and data order of one run, and its run folder when given one."""

    def __init__(self, cfg: TrainConfig, data=None, out_dir: str | Path | None = None, eval_cache=None,
                 provenance: dict | None = None, device="cpu", stream=None, stream_tokens: int | None = None,
                 tokens: int | None = None, tracker=None):
        """Train on `data`: an ActivationCache, a [tokens, d] tensor, or an iterable of [tokens, d] batches of
        `cfg.batch_size / world` rows (e.g. a `StreamShuffleBuffer` over `stream_activations`) with `tokens`, the
        schedule's length (`stream`/`stream_tokens`: the same, by their 0.3 names; the run ends early, and says so,
        when the stream runs dry first). `out_dir`: a run folder (log.jsonl, checkpoints/, sae/, resumed when it
        holds a run of the same config), or None (nothing written: read `trainer.sae` and `trainer.history`).
        `eval_cache`: held-out activations (a cache or a tensor) scored every `cfg.eval_every` steps. `tracker`
        (`saelab.training.tracking`): gets each log.jsonl record too. `cfg.shard_latents`: each rank holds n/W
        latents (`saelab.training.sharded`); after `train()` rank 0's `sae` is the whole SAE, the others' a shard."""
        self.cfg, self.eval_cache, self.device = cfg, eval_cache, torch.device(device)
        check_autocast(cfg.autocast, self.device, cfg.sae.dtype)  # before any work
        self.rank, self.world = rank_world()
        self.shards = LatentShards(cfg, self.rank, self.world, data if data is not None else stream) \
            if cfg.shard_latents else None  # model parallel: every rank reads the whole batch (one data rank)
        self.data = TrainingData.of(data if data is not None else stream, cfg.batch_size, cfg.seed,
                                    tokens or stream_tokens, *((0, 1) if self.shards else (self.rank, self.world)),
                                    self.device)
        self.steps_per_epoch, self.total_steps = self.data.steps_per_epoch, self.data.total_steps(cfg.epochs)
        self.total_tokens = self.total_steps * cfg.batch_size
        self.dead_tokens = cfg.dead_tokens or min(10_000_000, max(self.total_tokens // 16, 2 * cfg.batch_size))
        prov = provenance or {}
        self.data_identity = {k: prov.get(k, self.data.manifest.get(k)) for k in DATA_IDENTITY}
        self.sae = new_sae(cfg, self.data, prov, "cpu" if self.shards is not None else self.device)
        if self.shards is not None:  # this rank's rows of the same initialisation (drawn whole, on the CPU)
            self.sae = self.shards.shard(self.sae, self.device)
        # data parallel (starts the ranks from rank 0's SAE); sharded: every rank is one data rank of its own
        self.parallel = DataParallel(self.sae, 1 if self.shards is not None else self.world, cfg.data_parallel)
        self.opt = torch.optim.Adam(self.sae.parameters(), lr=cfg.learning_rate(), betas=(cfg.beta1, cfg.beta2),
                                    eps=cfg.adam_eps, fused=self.device.type in ("cpu", "cuda"))
        self.ema = WeightEMA(self.sae, cfg.ema_decay) if cfg.ema_decay else None
        self.forward = compiled_forward(self.parallel.model) if cfg.compile else self.parallel.model  # DDP on ranks
        self.step, self.history, self.finished = 0, [], False
        self.folder = RunFolder(out_dir, self.rank, tracker) if out_dir is not None else None
        self.out = self.folder.path if self.folder is not None else None
        if self.folder is not None:
            self.folder.open(self)  # locks the folder (until train() returns) and resumes its last checkpoint

    def close(self) -> None:
        """Release the run folder's lock (train() does this when it returns)."""
        if self.folder is not None:
            self.folder.close()

    # ---- schedule ------------------------------------------------------------------------------
    def lr_at(self, step: int) -> float:
        base, T = self.cfg.learning_rate(), self.total_steps
        warm = max(1, int(self.cfg.warmup_frac * T))
        decay_start = int((1 - self.cfg.decay_frac) * T)
        if step < warm:
            return base * (step + 1) / warm
        if step >= decay_start and T > decay_start:
            return base * max(0.0, (T - step) / (T - decay_start))
        return base

    def penalty_ramp(self, step: int) -> float:
        """The sparsity penalty's factor at `step` (ReLU's L1, JumpReLU's L0): ramped up from 0 over `l1_warmup_frac`
        of the steps, then 1."""
        if self.cfg.l1_warmup_frac <= 0:
            return 1.0
        return min(1.0, (step + 1) / (self.cfg.l1_warmup_frac * self.total_steps))

    # ---- data-parallel helpers -----------------------------------------------------------------
    def _update_dead(self, fired_N: torch.Tensor) -> torch.Tensor:
        """Record which latents fired in this (global) batch, then return the dead mask AuxK uses."""
        if self.shards is None:  # (sharded: each rank's own latents, of the same batch)
            fired_N = self.parallel.any_rank(fired_N)
        self.sae.update_fired_(fired_N, self.cfg.batch_size)
        return self.sae.dead_mask(self.dead_tokens)

    # ---- training ------------------------------------------------------------------------------
    def train(self) -> dict:
        try:
            return self._train()
        finally:
            self.sae.release_workspace()  # the [batch, n] training buffer is not needed after training
            self.close()

    def _train(self) -> dict:
        from tqdm.auto import tqdm

        if self.folder is not None:
            self.folder.start(self)
        bar = tqdm(total=self.total_steps, initial=self.step, disable=not (self.cfg.progress and self.rank == 0),
                   desc=f"train n={self.cfg.sae.n_latents} k={self.cfg.sae.k}", unit="step", dynamic_ncols=True)
        t0 = time.time()
        while self.step < self.total_steps:
            x = self.data.batch(self.step)
            if x is STREAM_END:
                self._stream_ended(getattr(self, "_last_batch", None))
                break
            out = self._step(x)
            bar.update(1)
            if self.step == self.total_steps:
                self._finish_weights(x)
            self._record(out, t0)
        bar.close()
        if self.folder is not None:
            self.folder.finish(self)
        return self.history[-1] if self.history else {}

    def _step(self, x: torch.Tensor):
        """One optimiser step on batch `x`: the family's forward pass (under autocast and compiled when `cfg` asks),
        the paper's unit-norm decoder, the family's `after_step`, the weight average."""
        cfg, sae = self.cfg, self.sae
        for group in self.opt.param_groups:
            group["lr"] = self.lr_at(self.step)
        with autocast_region(cfg.autocast, self.device):  # the backward pass runs outside it, as torch advises
            out = self.shards.forward(sae, x, self._update_dead) if self.shards is not None else \
                self.forward(x, dead_mask_fn=self._update_dead, ranks=ranks(), ramp=self.penalty_ramp(self.step))
        self._last_batch = x
        out.losses["total"].backward()  # under DDP the gradients come back averaged over the ranks
        self.shards.reduce_grads(sae) if self.shards is not None else self.parallel.average_grads()
        sae.project_decoder_grad_()  # after the average: the step the ranks take is the global batch's
        if cfg.grad_clip:  # (sharded: the whole SAE's norm)
            self.shards.clip_grad_norm_(sae, cfg.grad_clip) if self.shards else torch.nn.utils.clip_grad_norm_(
                sae.parameters(), cfg.grad_clip)
        self.opt.step()
        self.opt.zero_grad(set_to_none=True)
        sae.normalize_decoder_()
        sae.family.after_step(sae)
        if self.ema is not None:
            self.ema.update()
        self.step += 1
        sae.tokens_seen.fill_(self.step * cfg.batch_size)
        return out

    def _record(self, out, t0: float) -> None:
        """Log this step (every `log_every`), evaluate (every `eval_every`), checkpoint (every `checkpoint_every`)."""
        cfg, sae, last = self.cfg, self.sae, self.step == self.total_steps
        if self.step % cfg.log_every == 0 or last:  # every rank: the losses are the global batch's (their mean)
            losses = self.parallel.mean({**out.losses, "l0": out.l0})
            if self.rank == 0:
                self._log({"step": self.step, "tokens": int(sae.tokens_seen), "lr": self.lr_at(self.step - 1),
                           **losses, "dead_frac": self.shards.dead_frac if self._sharded_now() else
                           float(sae.dead_mask(self.dead_tokens).float().mean()),
                           "seconds": round(time.time() - t0, 2)})
        evaluates = self.rank == 0 or self._sharded_now()
        if self.eval_cache is not None and evaluates and (self.step % cfg.eval_every == 0 or last):
            self._log_heldout()
        if self.folder is not None and cfg.checkpoint_every and self.step % cfg.checkpoint_every == 0 and not last:
            self.save_checkpoint()

    def _stream_ended(self, last_batch) -> None:
        if self.rank == 0:
            print(f"saelab: the activation stream ended after {self.step} of {self.total_steps} steps", flush=True)
        self.total_steps = self.step
        if self.step:
            self._finish_weights(last_batch)
            if self.rank == 0 and self.eval_cache is not None:
                self._log_heldout()

    def _finish_weights(self, last_batch) -> None:
        """The weights the run saves and evaluates: the weight average when kept (decoder norms folded back to
        unit), then the family's `finalize` on them (BatchTopK: its threshold, estimated on these weights)."""
        if self.ema is not None:
            with torch.no_grad():
                for p, a in zip(self.sae.parameters(), self.ema.averaged()):
                    p.copy_(a)
            norms = fold_decoder_norms_(self.sae)
            self.ema_record = {"decay": self.cfg.ema_decay, "steps": self.ema.steps,
                               "decoder_norm_min": float(norms.min()), "decoder_norm_max": float(norms.max())}
            self.ema = None  # the averaged weights are now the SAE's own
        self._finalize(last_batch)
        if self.shards is not None:  # rank 0: the whole SAE from here on (saved, evaluated); the others: their shard
            self.sae = self.shards.gather_sae(self.sae, self.device) or self.sae
        self.finished = True

    def _finalize(self, last_batch) -> None:
        batches = self.data.calibration_batches(last_batch)
        self.sae.family.finalize(self.sae, batches, ranks() if self.data.stream is not None else None)

    def _sharded_now(self) -> bool:  # latents split across ranks (not yet gathered at the end): every rank evaluates
        return self.shards is not None and not self.finished

    def _log_heldout(self) -> None:
        if metrics := self.heldout_metrics(prefix="eval_"):  # ({} on the ranks that only sent their latents)
            self._log({"step": self.step, "tokens": int(self.sae.tokens_seen), **metrics})

    def _log(self, rec: dict) -> None:
        self.history.append(rec)
        if self.folder is not None:
            self.folder.log(rec)

    # ---- evaluation ----------------------------------------------------------------------------
    @contextmanager
    def evaluated_weights(self):
        """Inside the block the SAE holds the weights the run would save now: the weight average when kept, with
        the family's `finalize` state (BatchTopK's threshold) estimated on them; afterwards the live ones."""
        if self.ema is None or not self.ema.steps:
            yield self.sae
            return
        buffers = {n: b.clone() for n, b in self.sae.named_buffers()}
        with self.ema.swapped_in():
            try:
                batches = self.data.calibration_batches(getattr(self, "_last_batch", None))
                self.sae.family.finalize(self.sae, [b for b in batches if b is not None], None)
                yield self.sae
            finally:
                with torch.no_grad():
                    for n, b in self.sae.named_buffers():
                        b.copy_(buffers[n])

    @torch.no_grad()
    def heldout_metrics(self, cache=None, prefix: str = "") -> dict:
        """`reconstruction_metrics` on held-out activations (default: the eval cache) of the weights the run would
        save, plus the fraction of latents the trainer counts as dead (`dead_train_frac`), keys prefixed `prefix`.
        While the latents are sharded every rank must call it: rank 0 gathers and evaluates, the others get {}."""
        with self.evaluated_weights():
            sae = self.shards.gather_sae(self.sae, self.device) if self._sharded_now() else self.sae
            if sae is None:
                return {}
            out = reconstruction_metrics(sae, cache if cache is not None else self.eval_cache)
        out["dead_train_frac"] = float(sae.dead_mask(self.dead_tokens).float().mean())
        return {f"{prefix}{k}": v for k, v in out.items()}

    # ---- checkpoints (saelab.training.run_folder) ------------------------------------------------
    def save_checkpoint(self) -> Path | None:
        """Write a checkpoint on rank 0 (while sharded every rank calls it: rank 0 gathers an ordinary one)."""
        if self.folder is None or not (self.rank == 0 or self._sharded_now()):
            return None
        saved = self.shards.gather_state(self.sae, self.opt, self.ema) if self._sharded_now() else \
            TrainingState.of(self.sae, self.opt, self.ema)
        return self.folder.save_checkpoint(self, saved) if saved is not None else None
