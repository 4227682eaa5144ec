"""Train an SAE (TopK, BatchTopK, Matryoshka, JumpReLU, ReLU + L1) on cached activations: Adam as in the paper, AuxK,
held-out evaluation, atomic checkpoints with exact resume, data parallelism (torch.distributed; launch with torchrun).

Where each choice comes from (Gao et al. 2024 section 2 and appendix A; openai/sparse_autoencoder):
- from the paper: Adam, betas (0.9, 0.999), eps 6.25e-10, no weight decay; the learning rate falling as
  1/sqrt(n_latents) (default 2e-4 / sqrt(n / 2^14), the scaling EleutherAI's sparsify uses, from the paper's lr-vs-n
  fits); unit-norm decoder (project out the parallel gradient before each step, renormalise after); AuxK on latents
  dead for `dead_tokens` tokens (paper: 10M tokens in runs of billions; here the default scales with the run, see
  `TrainConfig.dead_tokens`);
- saelab's own: the paper and the released training loop use a constant learning rate; saelab warms up over the first
  2% of steps and decays linearly to zero over the last `decay_frac` (0.2 by default, 0.5 in the main job), because
  short CPU runs of a few thousand steps end measurably better with a decay (`saelab.presets.train_defaults` records
  the comparisons). Set warmup_frac=decay_frac=0 for the paper's.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import time
from contextlib import nullcontext
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal

import torch
import torch.distributed as dist

from saelab.acts.cache import ActivationCache, ShuffledCacheLoader, data_record
from saelab.config import check_choices
from saelab.distributed import rank_world
from saelab.evals.reconstruction import reconstruction_metrics
from saelab.files import atomic_write_text, run_lock
from saelab.sae.batchtopk import calibrate_threshold_
from saelab.sae.config import SAEConfig
from saelab.sae.input_norm import RENAMED
from saelab.sae.jumprelu import warn_jumprelu_init
from saelab.sae.matryoshka import parse_widths
from saelab.sae.model import SAE
from saelab.training.checkpoints import (
    RESUMABLE_CHANGES,
    check_resumable,
    checkpoint_folders,
    read_checkpoint,
    read_log,
    read_meta,
    write_checkpoint,
)
from saelab.training.ema import WeightEMA, fold_decoder_norms_
from saelab.training.tracking import TensorBoardLog

_STREAM_END = object()
__all__ = ["RESUMABLE_CHANGES", "TrainConfig", "Trainer", "read_log"]


@dataclass
class TrainConfig:
    """Hyperparameters of one SAE training run."""

    n_latents: int = 4096
    """Number of latents n."""
    k: int = 32
    """Active latents per token (TopK)."""
    activation: Literal["topk", "relu", "batchtopk", "jumprelu"] = "topk"
    """'topk', 'batchtopk' (the top B*k of each batch, Bussmann et al. 2024; a threshold at inference), 'jumprelu'
    (learned thresholds and an L0 penalty `l0_coef`, Rajamanoharan et al. 2024) or 'relu' (ReLU+L1 baseline)."""
    matryoshka_widths: str = ""
    """Matryoshka prefix sizes (Bussmann et al. 2025), e.g. '256,1024,4096' or 'doubling:5' (the paper's five
    nested prefixes); '' off. With activation 'batchtopk' this is the paper's Matryoshka BatchTopK SAE."""
    l0_coef: float = 0.0
    """JumpReLU's L0 coefficient (ramped like the L1 one, over `l1_warmup_frac`)."""
    multi_topk: bool = False
    """Train with Multi-TopK, L(k) + L(4k)/8 (paper section 5.3)."""
    k_aux: int | None = None
    """Dead latents used by AuxK (None: a power of two near d_in/2, off for JumpReLU; 0: off)."""
    aux_coef: float = 1 / 32
    """AuxK coefficient (paper: 1/32)."""
    l1_coef: float = 0.0
    """L1 coefficient for the ReLU baseline."""
    l1_warmup_frac: float = 0.0
    """Ramp the L1 coefficient linearly from 0 over this fraction of the steps (a strong L1 from step 0
    kills latents before they find data; Anthropic's 2024 ReLU-SAE recipe warms it up)."""
    normalize: Literal["per_token_unit_norm", "layernorm", "dataset_unit_norm", "none"] = "per_token_unit_norm"
    """Input normalisation (losses and normalized MSE are measured after it): 'per_token_unit_norm' (the
    paper's section 2.1: each token centred over d_model and scaled to unit norm; on the main job it measured
    as well as one dataset-wide scale and 4% lower delta CE, see the README), 'layernorm' (the released code's LN:
    the same direction at norm ~sqrt(d-1)), 'dataset_unit_norm' (one dataset-wide scale to unit mean squared
    norm; called 'unit_msn' before) or 'none'."""
    bias_init: Literal["geometric_median", "mean", "zeros"] = "geometric_median"
    """b_pre initialisation: 'geometric_median' (paper), 'mean' or 'zeros'."""
    tied_init: bool = True
    """Initialise the encoder as the decoder's transpose (paper); False: independent random encoder."""
    rescale_encoder_init: bool = False
    """Divide the initial encoder by the mean reconstruction norm of random unit inputs, as the released code's
    `init_from_data_` does (its comment: no clear evidence it helps). Off: on the main job it measured the same
    normalized MSE, with fewer never-firing latents (README, "Training details")."""
    ema_decay: float | None = None
    """Keep a bias-corrected exponential moving average of the weights (`saelab.training.ema`; the released
    `training_loop_`'s `ema_multiplier`, 0.999 by default there, off in its `Config`) and evaluate and save it;
    None: off (README, "Training details": measured)."""
    batch_size: int = 4096
    """Tokens per optimiser step (global, over all data-parallel ranks)."""
    epochs: float = 8.0
    """Passes over the training cache. Resuming with a larger value extends a run from its last checkpoint
    as a warm restart: the schedule is recomputed for the new length, so a run that was already decaying
    gets its learning rate back (exact only with warmup_frac = decay_frac = 0)."""
    lr: float | None = None
    """Adam learning rate; None: 2e-4 / sqrt(n_latents / 2^14)."""
    adam_eps: float = 6.25e-10
    """Adam epsilon (paper: 6.25e-10)."""
    beta1: float = 0.9
    """Adam beta1 (paper: 0.9)."""
    beta2: float = 0.999
    """Adam beta2 (paper: 0.999)."""
    warmup_frac: float = 0.02
    """Fraction of steps with linear learning-rate warmup."""
    decay_frac: float = 0.2
    """Fraction of final steps with linear decay to zero."""
    grad_clip: float | None = None
    """Clip the global gradient norm to this value (None: off)."""
    dead_tokens: int | None = None
    """A latent is dead after this many tokens without firing; None: min(10M, max(total/16, 2 batches))."""
    eval_every: int = 100
    """Evaluate on held-out activations every N steps (and at the end)."""
    log_every: int = 10
    """Write a log line every N steps."""
    checkpoint_every: int = 100
    """Write a checkpoint every N steps (atomic; 0: only at the end)."""
    keep_checkpoints: int = 2
    """How many recent checkpoints to keep after training (0: delete them all once the SAE is saved;
    while training the newest one is always kept, since it is the resume point)."""
    seed: int = 0
    """Seed of the initialisation and the data order."""
    kernel: Literal["sparse", "dense"] = "sparse"
    """'sparse' kernels or the 'dense' autograd reference."""
    tensorboard: bool = False
    """Also log to TensorBoard (needs the tensorboard package)."""
    progress: bool = True
    """Show a progress bar."""

    def __post_init__(self):
        self.normalize = RENAMED.get(self.normalize, self.normalize)
        check_choices(self)
        warn_jumprelu_init(self.activation, self.rescale_encoder_init)

    def learning_rate(self) -> float:
        return self.lr if self.lr is not None else 2e-4 / math.sqrt(self.n_latents / 2**14)


class Trainer:
    """Owns the SAE, optimiser, data order and checkpoints of one run in `out_dir`."""

    def __init__(self, cfg: TrainConfig, train_cache: ActivationCache | None, out_dir: str | Path,
                 eval_cache: ActivationCache | None = None, provenance: dict | None = None, device="cpu",
                 stream=None, stream_tokens: int | None = None, tracker=None):
        """Train from `train_cache`, or on the fly from `stream` (an iterable of [tokens, d] batches of
        `cfg.batch_size / world` rows, e.g. a `StreamShuffleBuffer` over `stream_activations`) for `stream_tokens`
        (the schedule's length; the run ends early, and says so, when the stream runs dry first: the
        outlier rule drops ~1% of the harvested positions). `tracker` gets each log.jsonl record too (tracking)."""
        self.cfg, self.train_cache, self.eval_cache, self.tracker = cfg, train_cache, eval_cache, tracker
        self.out = Path(out_dir)
        self.rank, self.world = rank_world()
        self.device = torch.device(device)
        self.stream = None
        if train_cache is not None:
            self.loader = ShuffledCacheLoader(train_cache, cfg.batch_size, cfg.seed, rank=self.rank, world=self.world,
                                         device=self.device)
            self.steps_per_epoch = self.loader.batches_per_epoch()
            n_tokens = train_cache.n_tokens
            self.total_steps = max(1, math.ceil(cfg.epochs * self.steps_per_epoch))
        elif stream is not None and stream_tokens:
            self.loader, self.stream = None, iter(stream)
            n_tokens = stream_tokens
            self.steps_per_epoch = self.total_steps = stream_tokens // cfg.batch_size
        else:
            raise ValueError("give a train_cache, or a stream with stream_tokens")
        if self.steps_per_epoch == 0:
            raise ValueError(f"the training data has {n_tokens} tokens, fewer than one batch of "
                             f"{cfg.batch_size}; harvest more tokens or lower batch_size")
        self.total_tokens = self.total_steps * cfg.batch_size
        self.dead_tokens = cfg.dead_tokens or min(10_000_000, max(self.total_tokens // 16, 2 * cfg.batch_size))
        if self.stream is not None:
            self._first = next(self.stream)
            d_in, manifest, sample = self._first.shape[1], {}, self._first
        else:
            d_in, manifest = train_cache.d_model, train_cache.manifest
            sample = train_cache.sample(min(32768, train_cache.n_tokens), seed=cfg.seed)
        prov = provenance or {}
        # what the SAE learns from: checked on resume, so a folder is never resumed on other activations
        self.data_identity = {k: prov.get(k, manifest.get(k)) for k in
                              ("model", "model_hash", "site", "layer", "corpus", "split", "corpus_hash")}
        sae_cfg = SAEConfig(d_in=d_in, n_latents=cfg.n_latents, k=cfg.k, activation=cfg.activation,
                            k_aux=cfg.k_aux, aux_coef=cfg.aux_coef, multi_topk=cfg.multi_topk, l0_coef=cfg.l0_coef,
                            matryoshka_widths=parse_widths(cfg.matryoshka_widths, cfg.n_latents),
                            l1_coef=cfg.l1_coef, normalize=cfg.normalize, kernel=cfg.kernel,
                            model=prov.get("model", manifest.get("model")),
                            site=prov.get("site", manifest.get("site")),
                            layer=prov.get("layer", manifest.get("layer")))
        self.sae = SAE(sae_cfg, seed=cfg.seed, device=self.device)
        self.sae.data_record = data_record(manifest, prov)
        if not cfg.tied_init:
            with torch.no_grad():
                g = torch.Generator().manual_seed(cfg.seed + 1)
                W = torch.randn(self.sae.W_enc.shape, generator=g)
                self.sae.W_enc.copy_(W / W.norm(dim=1, keepdim=True))
        self.sae.init_from_data(sample, cfg.bias_init)
        if cfg.rescale_encoder_init:
            self.sae.rescale_encoder_init_(seed=cfg.seed)
        if self.world > 1:  # ranks streaming disjoint data saw different samples: start from rank 0's SAE
            for t in [*self.sae.parameters(), *self.sae.buffers()]:
                dist.broadcast(t.data, src=0)
        fused = self.device.type in ("cpu", "cuda")
        self.opt = torch.optim.Adam(self.sae.parameters(), lr=cfg.learning_rate(), betas=(cfg.beta1, cfg.beta2),
                                    eps=cfg.adam_eps, fused=fused)
        self.ema = WeightEMA(self.sae, cfg.ema_decay) if cfg.ema_decay else None
        self.step = 0
        self.history: list[dict] = []
        self.writer = None
        self._lock = run_lock(self.out, "training run") if self.rank == 0 else None
        if self._lock is not None:
            self._lock.__enter__()  # held until train() returns: a second run on this folder is refused
        try:
            self._maybe_resume()
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        """Release the run folder's lock (train() does this when it returns)."""
        if self._lock is not None:
            lock, self._lock = self._lock, None
            lock.__exit__(None, None, None)

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

    def l1_at(self, step: int, coef: float | None = None) -> float:
        """The sparsity penalty's coefficient at `step` (ReLU's L1, or `coef`: JumpReLU's L0), ramped up from 0 over
        `l1_warmup_frac` of the steps."""
        coef = self.cfg.l1_coef if coef is None else coef
        if self.cfg.l1_warmup_frac <= 0:
            return coef
        return coef * min(1.0, (step + 1) / (self.cfg.l1_warmup_frac * self.total_steps))

    # ---- data-parallel helpers -----------------------------------------------------------------
    def _reduce_mean(self, t: torch.Tensor) -> torch.Tensor:
        if self.world == 1:
            return t
        t = t.clone()
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
        return t / self.world

    def _update_dead(self, fired_N: torch.Tensor) -> torch.Tensor:
        """Record which latents fired in this (global) batch, then return the dead mask AuxK uses."""
        if self.world > 1:
            f = fired_N.to(torch.int32)
            dist.all_reduce(f, op=dist.ReduceOp.MAX)
            fired_N = f.bool()
        self.sae.update_fired_(fired_N, self.cfg.batch_size)
        return self.sae.dead_mask(self.dead_tokens)

    def _sync_grads(self) -> None:
        if self.world == 1:
            return
        grads = [p.grad for p in self.sae.parameters()]
        flat = torch.cat([g.reshape(-1) for g in grads])
        dist.all_reduce(flat, op=dist.ReduceOp.SUM)
        flat /= self.world
        off = 0
        for g in grads:
            g.copy_(flat[off: off + g.numel()].view_as(g))
            off += g.numel()

    # ---- training ------------------------------------------------------------------------------
    def train(self) -> dict:
        try:
            return self._train()
        finally:
            self.sae.release_workspace()  # the [batch, n] training buffer is not needed after training
            self.close()

    def _train(self) -> dict:
        from tqdm.auto import tqdm

        cfg, sae = self.cfg, self.sae
        is_main = self.rank == 0
        if is_main:
            self.out.mkdir(parents=True, exist_ok=True)
            if cfg.tensorboard:
                self.writer = TensorBoardLog(self.out / "tensorboard")
        bar = tqdm(total=self.total_steps, initial=self.step, disable=not (cfg.progress and is_main),
                   desc=f"train n={cfg.n_latents} k={cfg.k}", unit="step", dynamic_ncols=True)
        t0 = time.time()
        batches = None
        while self.step < self.total_steps:
            x = self._next_batch(batches)
            if x is _STREAM_END:
                if is_main:
                    print(f"saelab: the activation stream ended after {self.step} of {self.total_steps} steps",
                          flush=True)
                self.total_steps = self.step  # the last step's log line and evaluation follow the loop
                if is_main and self.eval_cache is not None and self.step:
                    self._log_heldout()
                break
            if x is None:
                epoch, b = divmod(self.step, self.steps_per_epoch)
                batches = self.loader.iter_epoch(epoch, start_batch=b)
                x = next(batches)
            for group in self.opt.param_groups:
                group["lr"] = self.lr_at(self.step)
            out = sae(x, dead_mask_fn=self._update_dead, reduce=self._reduce_mean if self.world > 1 else None,
                      l1_coef=self.l1_at(self.step), l0_coef=self.l1_at(self.step, cfg.l0_coef))
            out.losses["total"].backward()
            self._sync_grads()
            sae.project_decoder_grad_()
            if cfg.grad_clip:
                torch.nn.utils.clip_grad_norm_(sae.parameters(), cfg.grad_clip)
            self.opt.step()
            self.opt.zero_grad(set_to_none=True)
            sae.normalize_decoder_()
            if cfg.activation == "jumprelu":  # thresholds stay >= 0 (also in what is saved)
                sae.threshold.data.clamp_(min=0.0)
            if self.ema is not None:
                self.ema.update()
            self.step += 1
            sae.tokens_seen.fill_(self.step * cfg.batch_size)
            bar.update(1)
            if cfg.activation == "batchtopk" and self.step == self.total_steps:
                self._calibrate_threshold(x)
            if is_main and (self.step % cfg.log_every == 0 or self.step == self.total_steps):
                rec = {"step": self.step, "tokens": int(sae.tokens_seen), "lr": self.lr_at(self.step - 1),
                       **{k: float(v.detach()) for k, v in out.losses.items()}, "l0": float(out.l0),
                       "dead_frac": float(sae.dead_mask(self.dead_tokens).float().mean()),
                       "seconds": round(time.time() - t0, 2)}
                self._log(rec)
                bar.set_postfix(nmse=f"{rec['nmse']:.3f}", l0=f"{rec['l0']:.0f}", dead=f"{rec['dead_frac']:.1%}")
            if self.eval_cache is not None and is_main and (self.step % cfg.eval_every == 0
                                                            or self.step == self.total_steps):
                self._log_heldout()
            if cfg.checkpoint_every and self.step % cfg.checkpoint_every == 0 and self.step < self.total_steps:
                self.save_checkpoint()
        bar.close()
        if self.writer is not None:
            self.writer.finish()
        if is_main:
            self._save_final()
            if cfg.keep_checkpoints == 0:
                shutil.rmtree(self._ckpt_root(), ignore_errors=True)
        return self.history[-1] if self.history else {}

    def _calibrate_threshold(self, last_batch) -> None:
        """BatchTopK: the threshold from the final weights on 8 batches of epoch 0 (streaming: the last), rank mean."""
        it = iter(self.loader.iter_epoch(0)) if self.loader is not None else iter([last_batch])
        calibrate_threshold_(self.sae, [b.to(self.device) for b, _ in zip(it, range(8))])
        self.sae.threshold.copy_(self._reduce_mean(self.sae.threshold))

    def _next_batch(self, batches):
        """The next batch: from the stream (_STREAM_END when any rank's stream is done), or from the
        current epoch's iterator (None: start an epoch)."""
        if self.stream is not None:
            x, self._first = (self._first, None) if self._first is not None else (next(self.stream, None), None)
            if self.world > 1:  # every rank stops at the same step
                have = torch.tensor([0 if x is None else 1], device=self.device)  # NCCL needs it on the GPU
                dist.all_reduce(have, op=dist.ReduceOp.MIN)
                x = x if int(have) else None
            return _STREAM_END if x is None else x.to(self.device)
        if batches is None or self.step % self.steps_per_epoch == 0:
            return None
        return next(batches)

    def _save_final(self) -> None:
        """Save the SAE (the EMA's, decoder norms folded back to unit, when the run keeps one) to out/sae;
        after this the trainer's SAE is the saved one."""
        extra = {"train_config": asdict(self.cfg), "dead_tokens": self.dead_tokens}
        if self.ema is not None:
            with torch.no_grad():
                for p, a in zip(self.sae.parameters(), self.ema.averaged()):
                    p.copy_(a)
            norms = fold_decoder_norms_(self.sae)
            extra["ema"] = {"decay": self.cfg.ema_decay, "steps": self.ema.steps,
                            "decoder_norm_min": float(norms.min()), "decoder_norm_max": float(norms.max())}
            self.ema = None  # the averaged weights are now the SAE's own
        self.sae.save(self.out / "sae", extra=extra)

    def _log_heldout(self) -> None:
        self._log({"step": self.step, "tokens": int(self.sae.tokens_seen), **self.heldout_metrics(prefix="eval_")})

    def _log(self, rec: dict) -> None:
        self.history.append(rec)
        with open(self.out / "log.jsonl", "a") as f:
            f.write(json.dumps(rec) + "\n")
        for sink in (self.writer, self.tracker):
            if sink is not None:
                sink.log(rec)

    # ---- evaluation ----------------------------------------------------------------------------
    @torch.no_grad()
    def heldout_metrics(self, cache: ActivationCache | None = None, prefix: str = "") -> dict:
        """`reconstruction_metrics` on held-out activations (default: the eval cache), plus the fraction of
        latents the trainer counts as dead (`dead_train_frac`), each key prefixed with `prefix`."""
        with self.ema.swapped_in() if self.ema is not None and self.ema.steps else nullcontext():
            out = reconstruction_metrics(self.sae, cache or self.eval_cache)
        out["dead_train_frac"] = float(self.sae.dead_mask(self.dead_tokens).float().mean())
        return {f"{prefix}{k}": v for k, v in out.items()}

    # ---- checkpoints (saelab.training.checkpoints) ------------------------------------------------
    def _ckpt_root(self) -> Path:
        return self.out / "checkpoints"

    def save_checkpoint(self) -> Path | None:
        if self.rank != 0:
            return None
        return write_checkpoint(self._ckpt_root(), self.step, self.sae, self.opt, self.cfg, self.total_steps,
                                self.data_identity, self.ema)

    def _maybe_resume(self) -> None:
        ckpts = checkpoint_folders(self._ckpt_root())
        if not ckpts:
            if (self.out / "sae" / "cfg.json").exists():
                raise ValueError(f"{self.out} holds a finished run (sae/) with no checkpoint to resume from; pass "
                                 f"another --out folder (Python: another out_dir), or delete {self.out}")
            if (self.out / "log.jsonl").exists() and self.rank == 0:  # a run killed before its first checkpoint
                os.replace(self.out / "log.jsonl", self.out / "log.restarted.jsonl")  # restarts from step 0
            return
        path = ckpts[-1]
        check_resumable(path, read_meta(path), self.cfg, self.data_identity)
        meta = read_checkpoint(path, self.sae, self.opt, self.device, self.ema)
        self.step = meta["step"]
        if self.stream is not None:  # the stream is deterministic: skip what was already trained on
            for _ in range(self.step):
                self._next_batch(None)
        log = self.out / "log.jsonl"
        if log.exists() and self.rank == 0:
            keep = [rec for rec in read_log(log) if rec["step"] <= self.step]
            atomic_write_text(log, "".join(json.dumps(rec) + "\n" for rec in keep))
            self.history = keep
        if self.rank == 0:
            print(f"saelab: resumed from {path} at step {self.step}/{self.total_steps}", flush=True)
