"""BatchTopK (Bussmann, Leask, Nanda 2024, arXiv 2412.06410): the batch's B*k largest pre-activations, so a token's
L0 varies with mean k, and at inference one threshold instead of the batch. Under data parallelism the batch is the
global one (every rank's candidates are gathered), so one process and several train the same SAE.

Training selects among each token's top BATCHTOPK_CANDIDATES * k pre-activations (exact unless one token holds more
than that many of the batch's B*k largest: it cannot at 8k >= n). The threshold follows an exponential moving average
of the smallest kept activation while training (`update_threshold_`), and is re-estimated from the final weights
(`calibrate_threshold_`, the `finalize` hook), because the average lags when activations drift.
"""

from __future__ import annotations

import torch

from saelab.sae.families.base import SparseFamily, SparseStep

BATCHTOPK_THRESHOLD_LR = 0.01
"""The inference threshold follows an exponential moving average of the smallest positive activation the batch
selection kept in each training step, with this rate (SAE Lens's `topk_threshold_lr` default)."""
BATCHTOPK_CANDIDATES = 8
"""Training selects a batch's top B*k among each token's top BATCHTOPK_CANDIDATES * k pre-activations."""


@torch.no_grad()
def select_batch(vals_BC: torch.Tensor, idx_BC: torch.Tensor, k: int, ranks=None):
    """From each token's top C pre-activations (sorted, descending), the batch's B*k largest positive ones, as
    (values, indices, kept mask as 0/1), each row cut to the largest row count (rows keep a prefix, as they are
    sorted); the other slots of a row are padding with value 0. Under data parallelism (`ranks`) the batch is the
    global one: the candidates of every rank are gathered, and each rank keeps its entries at or above the global
    B*k-th largest (the same entries as one process, up to exact ties)."""
    flat = vals_BC.clamp_min(0.0).flatten()
    if ranks is None:
        keep = torch.zeros(flat.numel(), dtype=torch.bool, device=flat.device)
        keep[flat.topk(min(k * len(vals_BC), flat.numel()), sorted=False).indices] = True
        keep = keep.view_as(vals_BC) & (vals_BC > 0)
    else:
        everything = ranks.cat(flat)
        cut = everything.topk(min(k * len(vals_BC) * ranks.world, everything.numel()), sorted=False).values.min()
        keep = (vals_BC >= cut) & (vals_BC > 0)
    width = max(int(keep.sum(-1).max()), 1)
    kept = keep[:, :width]
    return vals_BC[:, :width] * kept, idx_BC[:, :width], kept.to(vals_BC.dtype)


@torch.no_grad()
def batch_codes(sae, centred_BD: torch.Tensor, k: int, ranks=None):
    """The training selection of one batch (the global batch under `ranks`): (values, indices, kept 0/1, dense
    pre-activations or None)."""
    vals, idx, pre_BN = sae.select(centred_BD, min(sae.cfg.n_latents, BATCHTOPK_CANDIDATES * k), sorted_=True)
    return (*select_batch(vals, idx, k, ranks), pre_BN)


@torch.no_grad()
def smallest_kept(acts_BK: torch.Tensor, ranks=None) -> torch.Tensor:
    """The smallest positive activation kept in the (global) batch; inf when none is."""
    smallest = acts_BK.masked_fill(acts_BK <= 0, float("inf")).amin()
    return ranks.min(smallest) if ranks is not None else smallest


@torch.no_grad()
def update_threshold_(threshold_N: torch.Tensor, acts_BK: torch.Tensor, ranks=None) -> None:
    """The inference threshold during training: an exponential moving average (rate BATCHTOPK_THRESHOLD_LR, SAE
    Lens's) of the smallest positive activation kept in each (global) batch. The first batch sets it (SAE Lens
    starts from 0, which takes ~500 steps to forget, so short runs had no usable threshold)."""
    # No host sync in the training step: a batch with nothing kept (smallest = inf) leaves the threshold as it is.
    smallest = smallest_kept(acts_BK, ranks).to(threshold_N.dtype)
    moved = threshold_N * (1 - BATCHTOPK_THRESHOLD_LR) + BATCHTOPK_THRESHOLD_LR * smallest
    new = torch.where((threshold_N == 0).all(), smallest.expand_as(threshold_N), moved)
    threshold_N.copy_(torch.where(torch.isfinite(smallest), new, threshold_N))


@torch.no_grad()
def calibrate_threshold_(sae, batches, ranks=None) -> float:
    """Set a BatchTopK SAE's threshold from its current weights: the mean, over `batches` (training-size batches of
    activations; under `ranks`, each rank's slice of the same global batches), of the smallest activation each
    batch's selection keeps. On toy data (n 256, k 8, 280 steps) the moving average left a held-out L0 of 6.1, this
    estimate 8.1 (tests/test_batchtopk.py holds it within 10% of k)."""
    cuts = []
    for x in batches:
        x_n, _ = sae.preprocess(x.to(sae.W_enc.device, sae.W_enc.dtype))
        vals, _, kept, _ = batch_codes(sae, x_n - sae.b_pre, sae.cfg.k, ranks)
        cut = smallest_kept(vals * kept, ranks)
        if bool(torch.isfinite(cut)):
            cuts.append(cut)
    if cuts:
        sae.threshold.fill_(float(torch.stack(cuts).mean()))
    return float(sae.threshold[0])


class BatchTopK(SparseFamily):
    name, display, selection, nests = "batchtopk", "BatchTopK", "batchtopk", True
    recipe = {"activation": "batchtopk"}
    saelens_reads, saelens_training = {"batchtopk": "batchtopk"}, "batchtopk"

    def add_parameters(self, sae, dtype, device) -> None:  # the inference threshold, estimated in training
        sae.register_buffer("threshold", torch.zeros(sae.cfg.n_latents, dtype=dtype, device=device))

    def codes(self, sae, step: SparseStep, ctx):
        with torch.no_grad():
            vals, idx, kept, pre_BN = batch_codes(sae, step.centred, sae.cfg.k, ctx.ranks)
        acts = step.encode(idx, vals) * kept  # rows hold different counts: the padding carries no value or gradient
        update_threshold_(sae.threshold, acts.detach(), ctx.ranks)
        return acts, idx, pre_BN

    def inference(self, sae):
        return "jumprelu", sae.threshold  # one threshold instead of the batch

    def finalize(self, sae, batches, ranks=None) -> None:
        calibrate_threshold_(sae, batches, ranks)

    def export_architecture(self, cfg) -> str:
        return "jumprelu"  # as SAE Lens's own inference save writes a BatchTopK SAE

    def examples(self):
        return {"batchtopk": {"activation": "batchtopk"}}


FAMILY = BatchTopK()
