"""Exercise 3.3 — effect_sparsity: blind candidates."""
import torch


def sparsity_right(logit_diff_TV) -> float:
    e = logit_diff_TV.double()
    e = e - e.median(dim=-1, keepdim=True).values
    return float((e.abs().sum() / e.norm()) ** 2 / e.numel())


def sparsity_mean_centred(logit_diff_TV) -> float:
    # centres each position by its mean instead of its median
    e = logit_diff_TV.double()
    e = e - e.mean(dim=-1, keepdim=True)
    return float((e.abs().sum() / e.norm()) ** 2 / e.numel())


def sparsity_median_over_positions(logit_diff_TV) -> float:
    # takes the median over positions (dim 0, per vocabulary entry) instead of per position
    e = logit_diff_TV.double()
    e = e - e.median(dim=0, keepdim=True).values
    return float((e.abs().sum() / e.norm()) ** 2 / e.numel())


def sparsity_no_square(logit_diff_TV) -> float:
    # forgets the square of L1/L2
    e = logit_diff_TV.double()
    e = e - e.median(dim=-1, keepdim=True).values
    return float((e.abs().sum() / e.norm()) / e.numel())


def sparsity_rowwise_mean(logit_diff_TV) -> float:
    # computes the sparsity of each position separately and averages them, instead of one ratio on the concatenation
    e = logit_diff_TV.double()
    e = e - e.median(dim=-1, keepdim=True).values
    per_row = (e.abs().sum(-1) / e.norm(dim=-1).clamp_min(1e-300)) ** 2 / e.shape[-1]
    return float(per_row.mean())


def sparsity_over_V(logit_diff_TV) -> float:
    # divides by V only (the count of one row) instead of T*V
    e = logit_diff_TV.double()
    e = e - e.median(dim=-1, keepdim=True).values
    return float((e.abs().sum() / e.norm()) ** 2 / e.shape[-1])


CANDIDATES = [
    ("mean_centred", sparsity_mean_centred, "centres each position by its mean, not its median", False),
    ("median_over_positions", sparsity_median_over_positions, "median taken over positions (dim 0), not over the vocabulary", False),
    ("no_square", sparsity_no_square, "(L1/L2)/(TV): the square is missing", False),
    ("rowwise_mean", sparsity_rowwise_mean, "averages per-position sparsities instead of one ratio over all T x V", False),
    ("divide_by_V", sparsity_over_V, "divides by V instead of T*V", False),
    ("mine", sparsity_right, "my honest attempt at a correct solution", True),
]
