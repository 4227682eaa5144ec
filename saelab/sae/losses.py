"""The paper's normalized MSE of one batch: the SAE's training loss (section 2.1).

normalized MSE = the reconstruction's MSE / the MSE of always predicting the mean of x, in the SAE's
input space (after its normalisation). The held-out metric over many batches is
`saelab.evals.reconstruction.NormalizedMSE`, the same ratio accumulated.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def mean_predictor_mse(v_BD: torch.Tensor, reduce=None) -> torch.Tensor:
    """Per-token squared error of always predicting the mean: E||v||^2 - ||E v||^2 (in fp64).

    `reduce` averages a statistic over data-parallel ranks, so the mean is the global batch's.
    """
    reduce = reduce or (lambda t: t)
    v = v_BD.detach().double()
    mean = reduce(v.mean(0))
    sq = reduce(v.pow(2).sum(-1).mean())
    return (sq - mean.pow(2).sum()).clamp_min(1e-30).to(v_BD.dtype)


def normalized_mse(recon_BD: torch.Tensor, x_BD: torch.Tensor, reduce=None,
                   baseline: torch.Tensor | None = None) -> torch.Tensor:
    """The paper's normalized MSE of one batch (differentiable in `recon_BD` and `x_BD`; `reduce` as in
    `mean_predictor_mse`: under data parallelism the normaliser is the global batch's). `baseline`: that
    normaliser when already computed (e.g. of the uncentred input, the same mean predictor's error)."""
    rows = x_BD.numel() // x_BD.shape[-1]
    base = mean_predictor_mse(x_BD, reduce) if baseline is None else baseline
    return F.mse_loss(recon_BD, x_BD, reduction="sum") / rows / base  # one fused pass and its backward
