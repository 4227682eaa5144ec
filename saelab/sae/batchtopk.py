"""BatchTopK training (Bussmann, Leask, Nanda 2024, arXiv 2412.06410): the batch's B*k largest pre-activations, so a
token's L0 varies with mean k, and the single threshold that replaces the batch at inference.

The model calls `select_batch` and `update_threshold_` in its training forward pass; the trainer calls
`calibrate_threshold_` after the last step.
"""

from __future__ import annotations

import torch

from saelab.sae.activation_fns import BATCHTOPK_THRESHOLD_LR


@torch.no_grad()
def select_batch(vals_BC: torch.Tensor, idx_BC: torch.Tensor, k: int):
    """From each token's top C pre-activations (sorted, descending), the batch's B*k largest positive ones, as
    (values, indices, kept mask as 0/1), each row cut to the largest row count (rows keep a prefix, as they are
    sorted); the other slots of a row are padding with value 0."""
    flat = vals_BC.clamp_min(0.0).flatten()
    keep = torch.zeros(flat.numel(), dtype=torch.bool, device=flat.device)
    keep[flat.topk(min(k * len(vals_BC), flat.numel()), sorted=False).indices] = True
    keep = keep.view_as(vals_BC) & (vals_BC > 0)
    width = max(int(keep.sum(-1).max()), 1)
    kept = keep[:, :width]
    return vals_BC[:, :width] * kept, idx_BC[:, :width], kept.to(vals_BC.dtype)


@torch.no_grad()
def update_threshold_(threshold_N: torch.Tensor, acts_BK: torch.Tensor) -> None:
    """The inference threshold during training: an exponential moving average (rate BATCHTOPK_THRESHOLD_LR, SAE
    Lens's) of the smallest positive activation kept in each batch. The first batch sets it (SAE Lens starts from 0,
    which takes ~500 steps to forget, so short runs had no usable threshold)."""
    # No host sync in the training step: a batch with nothing kept (smallest = inf) leaves the threshold as it is.
    smallest = acts_BK.masked_fill(acts_BK <= 0, float("inf")).amin().to(threshold_N.dtype)
    moved = threshold_N * (1 - BATCHTOPK_THRESHOLD_LR) + BATCHTOPK_THRESHOLD_LR * smallest
    new = torch.where((threshold_N == 0).all(), smallest.expand_as(threshold_N), moved)
    threshold_N.copy_(torch.where(torch.isfinite(smallest), new, threshold_N))


@torch.no_grad()
def calibrate_threshold_(sae, batches) -> float:
    """Set a BatchTopK SAE's threshold from its current weights: the mean, over `batches` (training-size batches of
    activations), of the smallest activation each batch's selection keeps. The trainer calls it after the last
    step, because the moving average lags when activations drift: on toy data (n 256, k 8, 280 steps) it left a
    held-out L0 of 6.1, this estimate 8.1 (tests/test_batchtopk.py holds it within 10% of k)."""
    cuts = []
    for x in batches:
        x_n, _ = sae.preprocess(x.to(sae.W_enc.device, sae.W_enc.dtype))
        vals, _, kept, _ = sae._select_batch(x_n - sae.b_pre, sae.cfg.k)
        if bool(kept.any()):
            cuts.append(vals[kept.bool()].min())
    if cuts:
        sae.threshold.fill_(float(torch.stack(cuts).mean()))
    return float(sae.threshold[0])
