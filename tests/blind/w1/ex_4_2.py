"""Exercise 4.2 — threshold_for_l0: blind candidates."""
import torch


def threshold_right(pre_BN, target_l0) -> float:
    flat = pre_BN.detach().flatten().float()
    return float(torch.quantile(flat, 1.0 - float(target_l0) / pre_BN.shape[-1]))


def threshold_per_row_mean(pre_BN, target_l0) -> float:
    # a threshold per token (its own quantile) then averaged: not the threshold that gives L0 on average
    q = 1.0 - float(target_l0) / pre_BN.shape[-1]
    return float(torch.quantile(pre_BN.detach().float(), q, dim=-1).mean())


def threshold_wrong_tail(pre_BN, target_l0) -> float:
    # the quantile at L0/n: target_l0 values per row end up BELOW theta, not above
    return float(torch.quantile(pre_BN.detach().flatten().float(), float(target_l0) / pre_BN.shape[-1]))


def threshold_global_topk(pre_BN, target_l0) -> float:
    # the target_l0-th largest value of the whole batch, i.e. target_l0 above theta in total, not per row
    flat = pre_BN.detach().flatten().float()
    return float(flat.topk(max(1, int(round(float(target_l0))))).values[-1])


def threshold_batch_fraction(pre_BN, target_l0) -> float:
    # fraction computed with the batch size B instead of the number of latents n
    flat = pre_BN.detach().flatten().float()
    q = min(max(1.0 - float(target_l0) / pre_BN.shape[0], 0.0), 1.0)
    return float(torch.quantile(flat, q))


def threshold_kth_per_row_mean(pre_BN, target_l0) -> float:
    # each row's round(L0)-th largest pre-activation, averaged over rows
    k = max(1, int(round(float(target_l0))))
    return float(pre_BN.detach().float().topk(k, dim=-1).values[:, -1].mean())


CANDIDATES = [
    ("per_row_quantile_mean", threshold_per_row_mean, "averages per-token quantiles instead of one quantile of all values", False),
    ("wrong_tail", threshold_wrong_tail, "quantile at L0/n instead of 1 - L0/n", False),
    ("global_topk", threshold_global_topk, "the L0-th largest value of the whole batch (L0 in total, not per row)", False),
    ("batch_fraction", threshold_batch_fraction, "fraction 1 - L0/B with B tokens, not 1 - L0/n latents", False),
    ("kth_per_row_mean", threshold_kth_per_row_mean, "mean over rows of each row's L0-th largest value", False),
    ("mine", threshold_right, "my honest attempt at a correct solution", True),
]
