"""Notebook 00 (toy data): feature recovery and dead latents."""

from __future__ import annotations

import torch

from saelab.teach.exercises.base import close, diagnose, expect_shape, passed
from saelab.teach.toy import feature_recovery


def dead_fraction(acts_BN: torch.Tensor) -> float:
    """Fraction of latents that never fired (activation > 0) on any row of the batch."""
    return float((acts_BN > 0).sum(0).eq(0).float().mean())


def check_feature_recovery(fn) -> None:
    """`fn(W_dec_ND, features_FD) -> [F]`: per true feature, the largest cosine with any decoder row."""
    F = torch.eye(3, 4)  # three true features along axes 0, 1, 2
    W = torch.tensor([[3.0, 0.0, 0.0, 0.0],   # feature 0, at norm 3
                      [0.0, -1.0, 0.0, 0.0],  # MINUS feature 1
                      [0.0, 0.6, 0.0, 0.8],   # partly feature 1
                      [0.0, 0.0, 0.5, 0.5],   # halfway to feature 2 (cosine 0.707)
                      [0.0, 0.0, 0.0, 1.0]])
    got = fn(W.clone(), F.clone())
    want = feature_recovery(W, F)
    diagnose(got, [(torch.tensor([3.0, 0.6, 0.5]),
                    "the values are dot products, not cosines: normalise the decoder rows (a row of norm 3 "
                    "is not 3x as similar)"),
                   (torch.tensor([1.0, 1.0, 0.7071]),
                    "feature 1 scores 1 because a row points the OPPOSITE way: do not take abs(); with "
                    "non-negative coefficients a flipped direction does not reconstruct the feature")], atol=1e-3)
    if tuple(torch.as_tensor(got).shape) == (5,):
        raise AssertionError("you returned one value per decoder row (5): return one per TRUE feature (3), the max "
                             "over the decoder rows")
    expect_shape(got, (3,), "one value per true feature")
    assert close(got, want, atol=1e-4), f"expected {want.tolist()}, got {torch.as_tensor(got).tolist()}"
    passed("feature_recovery")


def check_dead_fraction(fn) -> None:
    """`fn(acts_BN) -> float`: the fraction of latents with no activation on any row."""
    acts = torch.zeros(4, 5)
    acts[0, 1], acts[2, 1], acts[3, 3] = 2.0, 1.0, 0.5  # latents 1 and 3 fire; 0, 2 and 4 never do
    got = float(fn(acts.clone()))
    diagnose(got, [(17 / 20, "that is the fraction of zero ENTRIES (sparsity); a dead latent is a column that is "
                             "zero on every row"),
                   (2 / 5, "that is the fraction of latents that fired (alive); dead = never fired"),
                   (0.0, "latents 0, 2 and 4 never fire in this batch: look for columns with no positive entry")])
    assert abs(got - 0.6) < 1e-6, f"expected 0.6 (3 of 5 latents never fire), got {got}"
    passed("dead_fraction")
