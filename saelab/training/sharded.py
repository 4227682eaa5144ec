"""Latents sharded across the ranks of a torchrun job (model parallelism; the released code's `n_op_shards`), for
SAEs wider than one device: `TrainConfig.shard_latents`.

Rank r of W holds latents [r n/W, (r+1) n/W): its rows of W_enc, b_enc, W_dec, the dead-latent tracker and their
Adam state; b_pre and the input scale are replicated. Every rank reads the same whole batch. One step:

    pre_BN   = W_enc_r (x_n - b_pre) + b_enc_r               local pre-activations, local top-k candidates
    winners  = top-k over the W*k candidates of each token     all-gather of k values + k indices per token
    x_hat_n  = sum_r W_dec_r^T z_r + b_pre                     all-reduce of the [B, d] partial decodes
    AuxK     = the same, over the dead latents of every shard  all-reduce of the dead count, then as above

The all-reduce's backward passes the gradient through unchanged (`AllReduceSum`): every rank computes the same loss
from the same sum, so each already holds dL/d(its partial). The encoder's share of b_pre's gradient is summed over
ranks after the backward (`reduce_grads`): each rank's encoder sees only its latents. So the loss, the selection and
every gradient are those of one process, up to the order of float sums.

Checkpoints and the saved SAE are gathered on rank 0 (shard by shard, to its CPU) into one ordinary SAE folder, so a
run resumes at any world size that divides n (each rank reads its rows of the whole checkpoint), or in one process.
"""

from __future__ import annotations

from dataclasses import replace

import torch
import torch.distributed as dist
from safetensors.torch import load_file

from saelab.acts.cache import Activations
from saelab.sae.auxk import dead_top
from saelab.sae.families import family_of
from saelab.sae.families.base import ForwardOut, SparseStep, StepContext
from saelab.sae.input_norm import check_input
from saelab.sae.kernels import WORKSPACE_BYTES, dense_encode, selected_encode, transposed_pattern
from saelab.sae.losses import normalized_mse
from saelab.sae.model import SAE
from saelab.training.checkpoints import TrainingState, read_meta

SUPPORTED = ("topk",)
"""The families whose training pass is sharded (TopK, with AuxK; not Multi-TopK)."""
SHARDED = ("W_dec", "W_enc", "b_enc", "tokens_since_fired")
"""The SAE's tensors whose rows are latents: split across ranks. The others are replicated."""


def check_sharding(cfg, world: int, data=None) -> None:
    """Refuse, with the fix, what `shard_latents` does not support: another family, n not divisible by the world
    size, k above n/W, a stream of batches (`data`: the Trainer's, when not None)."""
    fam = family_of(cfg.sae)
    if fam.name not in SUPPORTED or cfg.sae.multi_topk:
        what = "Multi-TopK" if fam.name in SUPPORTED else f"the {fam.name!r} family"
        raise ValueError(f"shard_latents trains {', '.join(SUPPORTED)} SAEs (with AuxK), not {what}; train it "
                         "without --train.shard_latents")
    if cfg.compile:
        raise ValueError("shard_latents runs its own forward pass (collectives between the ranks), which is not "
                         "compiled; train it without --train.compile")
    n = cfg.sae.n_latents
    if n % world:
        raise ValueError(f"shard_latents splits n_latents={n} over {world} ranks, but {world} does not divide it; "
                         f"launch a world size that divides {n}, or use n_latents={n + world - n % world} "
                         f"(a multiple of {world})")
    if cfg.sae.k > n // world:
        raise ValueError(f"shard_latents needs k <= n_latents / world ({n // world}), got k={cfg.sae.k}; use fewer "
                         "ranks")
    if data is not None and not isinstance(data, (torch.Tensor, Activations)):
        raise ValueError("shard_latents reads every batch whole on every rank, from a cache or a tensor; a stream "
                         "of batches (--on-the-fly) is not supported: harvest a cache (drop --on-the-fly)")


class AllReduceSum(torch.autograd.Function):
    """Forward: the sum over ranks of each rank's tensor. Backward: the gradient unchanged, since every rank
    computes the same loss from the sum (an all-reduce here would count it W times)."""

    @staticmethod
    def forward(ctx, part):
        total = part.clone()
        dist.all_reduce(total)
        return total

    @staticmethod
    def backward(ctx, g):
        return g


class LatentShards:
    """This rank's share of the latents, and the collectives of a sharded training step."""

    def __init__(self, cfg, rank: int, world: int, data=None):
        """Shard `cfg`'s SAE over `world` ranks (refused, with the fix, when it cannot be; `data`: the Trainer's)."""
        check_sharding(cfg, world, data)
        self.rank, self.world, self.n = rank, world, cfg.sae.n_latents
        self.n_local = self.n // world
        self.lo, self.hi = rank * self.n_local, (rank + 1) * self.n_local
        self.enc_bias: torch.Tensor | None = None
        self.dead_frac = 0.0

    # ---- the shard of an SAE ---------------------------------------------------------------------
    def shard(self, full: SAE, device) -> SAE:
        """This rank's SAE: `full`'s rows lo:hi of the sharded tensors, the replicated ones as rank 0's."""
        local = SAE(replace(full.cfg, n_latents=self.n_local), seed=0, device=device)
        local.load_state_dict(self.rows_of(full.state_dict()))
        local.data_record = full.data_record
        if self.world > 1:
            for name, t in local.state_dict().items():
                if name not in SHARDED:
                    dist.broadcast(t, src=0)
        return local

    def rows_of(self, tensors: dict[str, torch.Tensor], sharded=SHARDED) -> dict[str, torch.Tensor]:
        """This rank's slice of each of `tensors` named in `sharded`; the others unchanged."""
        return {k: v[self.lo:self.hi].clone() if k in sharded else v for k, v in tensors.items()}

    # ---- the training step -----------------------------------------------------------------------
    def forward(self, sae: SAE, rows: torch.Tensor, dead_mask_fn) -> ForwardOut:
        """TopK's training pass (with AuxK) over every rank's latents; every rank gets the same losses."""
        cfg = sae.cfg
        check_input(rows, cfg.d_in)
        x_n, undo = sae.preprocess(rows.to(sae.W_enc.dtype))
        step = SparseStep(sae, x_n.detach())  # its centred_g carries b_pre's replicated gradient
        self.enc_bias = sae.b_pre.detach().clone().requires_grad_()  # the encoder's b_pre: summed in reduce_grads
        with torch.no_grad():
            vals, idx, pre_BN = sae.select(step.centred, cfg.k, sorted_=False)
            win_vals, win_idx, won = self._global_topk(vals, idx + self.lo, cfg.k)
        acts, pattern = self._encode(sae, step, idx, vals, won)
        first = self._sum(step.decode(idx, acts, sae.W_dec, pattern))
        losses, total, _ = step.reconstruction(first, StepContext())
        recon_n = first + sae.b_pre
        fired = torch.zeros(self.n_local, dtype=torch.bool, device=x_n.device)
        fired[idx[acts.detach() > 0]] = True
        dead = dead_mask_fn(fired)
        n_dead = dead.sum()
        if self.world > 1:
            dist.all_reduce(n_dead)
        self.dead_frac = int(n_dead) / self.n
        if cfg.k_aux and int(n_dead):  # + alpha * AuxK, its top-k_aux global as the main one
            resid = (step.target_n - recon_n).detach()
            losses["aux"] = self._aux(sae, step, pre_BN, dead, min(cfg.k_aux, int(n_dead)), resid)
            total = total + cfg.aux_coef * losses["aux"]
        losses["total"] = total
        top_acts = win_vals.relu()
        return ForwardOut(undo(recon_n), losses, top_acts, win_idx, fired, (top_acts > 0).sum(-1).float().mean())

    def _aux(self, sae, step, pre_BN, dead_N, k_aux: int, resid) -> torch.Tensor:
        """AuxK (`saelab.sae.auxk`): the global top-k_aux of the dead latents' pre-activations reconstruct the
        residual; each rank offers its own dead latents' top k_aux (fewer: the rest padded with -inf, never chosen)."""
        dead_idx = dead_N.nonzero().squeeze(1)
        (rows, d), m = step.centred.shape, dead_idx.numel()
        kk = min(k_aux, m)
        with torch.no_grad():
            vals = torch.full((rows, k_aux), float("-inf"), dtype=step.centred.dtype, device=step.centred.device)
            idx = torch.zeros(rows, k_aux, dtype=torch.long, device=step.centred.device)
            if m:
                fits = rows * m * sae.W_enc.element_size() <= WORKSPACE_BYTES
                top = dead_top(sae, step.centred, pre_BN, dead_idx, kk, fits)[1]
                vals[:, :kk], idx[:, :kk] = top.values, dead_idx[top.indices]
            won = self._global_topk(vals, idx + self.lo, k_aux)[2][:, :kk]
        if m:
            idx, vals = idx[:, :kk].contiguous(), vals[:, :kk].contiguous()
            acts, pattern = self._encode(sae, step, idx, vals, won)
            part = step.decode(idx, acts, sae.W_dec, pattern)
        else:  # no dead latent here: this rank adds nothing (the backward has no collective to join)
            part = step.centred.new_zeros(rows, d)
        return normalized_mse(self._sum(part), resid).nan_to_num(0.0)

    def _global_topk(self, vals_BC, gidx_BC, k: int):
        """Each token's k winners among every rank's C candidates (this rank's: values `vals_BC`, global indices
        `gidx_BC`): (their values, their global indices, which of this rank's C candidates won)."""
        C = vals_BC.shape[1]
        if self.world > 1:
            parts_v = [torch.empty_like(vals_BC) for _ in range(self.world)]
            parts_i = [torch.empty_like(gidx_BC) for _ in range(self.world)]
            dist.all_gather(parts_v, vals_BC.contiguous())
            dist.all_gather(parts_i, gidx_BC.contiguous())
            vals_BC, gidx_BC = torch.cat(parts_v, 1), torch.cat(parts_i, 1)
        top = vals_BC.topk(k, dim=-1, sorted=False)
        won = torch.zeros_like(vals_BC, dtype=torch.bool).scatter_(1, top.indices, True)
        return top.values, gidx_BC.gather(1, top.indices), won[:, self.rank * C:(self.rank + 1) * C]

    def _encode(self, sae, step, idx_BC, vals_BC, won_BC):
        """(ReLU'd activations of this rank's candidates `idx_BC` (local, distinct in each row, as one process's
        selection) where they won, else 0, with gradients into its rows only where they won; the kernels' pattern)."""
        if step.sparse:
            pattern = transposed_pattern(idx_BC, self.n_local)
            z = selected_encode(step.x_n, self.enc_bias, sae.W_enc, sae.b_enc, idx_BC, vals_BC, pattern, step.centred)
        else:
            pattern, z = None, dense_encode(step.x_n, self.enc_bias, sae.W_enc, sae.b_enc, idx_BC)
        return z.relu() * won_BC, pattern

    def _sum(self, part_BD: torch.Tensor) -> torch.Tensor:
        return AllReduceSum.apply(part_BD) if self.world > 1 else part_BD

    def reduce_grads(self, sae: SAE) -> None:
        """After the backward: b_pre's gradient gets the encoder's share summed over ranks (each rank's encoder
        reads b_pre through its own latents only; the reconstruction's share is already whole on every rank)."""
        g = self.enc_bias.grad if self.enc_bias is not None and self.enc_bias.grad is not None \
            else torch.zeros_like(sae.b_pre)
        if self.world > 1:
            dist.all_reduce(g)
        sae.b_pre.grad.add_(g)
        self.enc_bias = None

    @torch.no_grad()
    def clip_grad_norm_(self, sae: SAE, max_norm: float) -> None:
        """`torch.nn.utils.clip_grad_norm_` over the whole SAE: the sharded rows' squares summed over ranks,
        the replicated parameters' counted once."""
        sq = {name: p.grad.double().pow(2).sum() for name, p in sae.named_parameters() if p.grad is not None}
        shard_sq = sum((v for k, v in sq.items() if k in SHARDED), torch.zeros((), dtype=torch.float64,
                                                                               device=sae.b_pre.device))
        if self.world > 1:
            dist.all_reduce(shard_sq)
        total = (shard_sq + sum(v for k, v in sq.items() if k not in SHARDED)).sqrt()
        coef = (max_norm / (total + 1e-6)).clamp(max=1.0)
        for p in sae.parameters():
            if p.grad is not None:
                p.grad.mul_(coef.to(p.grad.dtype))

    # ---- gathering on rank 0, reading back -------------------------------------------------------
    def _gather_rows(self, t: torch.Tensor) -> torch.Tensor | None:
        """Every rank's `t` concatenated in rank order on rank 0's CPU (one shard at a time on its device); None
        on the other ranks."""
        t = t.detach().contiguous()
        if self.world == 1:
            return t.cpu().clone()
        if self.rank != 0:
            dist.send(t, dst=0)
            return None
        parts = [t.cpu().clone()]
        for r in range(1, self.world):
            buf = torch.empty_like(t)
            dist.recv(buf, src=r)
            parts.append(buf.cpu())
        return torch.cat(parts)

    def _gather(self, tensors: dict[str, torch.Tensor], sharded) -> dict[str, torch.Tensor] | None:
        out = {k: self._gather_rows(v) if k in sharded else v.detach().cpu().clone() for k, v in tensors.items()}
        return out if self.rank == 0 else None

    def gather_sae(self, sae: SAE, device="cpu") -> SAE | None:
        """The whole SAE on rank 0 (built on its CPU, then moved to `device`; every rank must call it); None on the
        other ranks."""
        state = self._gather(sae.state_dict(), SHARDED)
        if state is None:
            return None
        whole = SAE(replace(sae.cfg, n_latents=self.n), seed=0, device="cpu")
        whole.load_state_dict(state)
        whole.data_record = sae.data_record
        return whole.to(device)

    def gather_state(self, sae: SAE, opt: torch.optim.Optimizer, ema=None) -> TrainingState | None:
        """What a checkpoint holds, gathered on rank 0 as one process would have it (every rank must call it)."""
        whole = self.gather_sae(sae)
        names = [n for n, _ in sae.named_parameters()]
        state = opt.state_dict()
        moments: dict[int, dict] = {}
        for i, st in state["state"].items():
            moments[i] = self._gather(st, ("exp_avg", "exp_avg_sq") if names[i] in SHARDED else ())
        ema_tensors = None
        if ema is not None:
            shadows = {f"ema.{n}": t for n, t in zip(ema.names, ema.shadow)}  # on the device (NCCL sends from there)
            ema_tensors = self._gather(shadows, {f"ema.{n}" for n in SHARDED})
        if self.rank != 0:
            return None
        return TrainingState(whole, {"state": moments, "param_groups": state["param_groups"]}, ema_tensors,
                             ema.steps if ema is not None else None)

    def read_checkpoint(self, path, sae: SAE, opt: torch.optim.Optimizer, device, ema=None) -> dict:
        """`saelab.training.checkpoints.read_checkpoint` for a shard: this rank's rows of a whole checkpoint
        (written at any world size, or by one process)."""
        meta = read_meta(path)
        whole = SAE.load(path, device="cpu")
        if whole.cfg.n_latents != self.n:
            raise ValueError(f"{path} holds an SAE of {whole.cfg.n_latents} latents, this run {self.n}")
        sae.load_state_dict({k: v.to(device) for k, v in self.rows_of(whole.state_dict()).items()})
        sae.cfg = replace(whole.cfg, n_latents=self.n_local)
        names = [n for n, _ in sae.named_parameters()]
        state: dict = {}
        for key, v in load_file(path / "optim.safetensors").items():
            i, name = key.split(".", 1)
            rows = name in ("exp_avg", "exp_avg_sq") and names[int(i)] in SHARDED
            state.setdefault(int(i), {})[name] = (v[self.lo:self.hi].clone() if rows else v).to(device)
        opt.load_state_dict({"state": state, "param_groups": meta["param_groups"]})
        if ema is not None:
            tensors = self.rows_of(load_file(path / "ema.safetensors"), {f"ema.{n}" for n in SHARDED})
            ema.load_state_tensors({k: v.to(device) for k, v in tensors.items()}, meta["ema_steps"])
        return meta
