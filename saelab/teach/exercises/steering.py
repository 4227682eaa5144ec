"""Notebook 07 (steering and attribution): concept scores, a steering edit and attribution patching."""

from __future__ import annotations

import torch

from saelab.teach.exercises.base import passed


def concept_scores(acts_pos_TN: torch.Tensor, acts_neg_TN: torch.Tensor) -> torch.Tensor:
    """Per latent: mean activation on the concept's tokens minus mean activation on other tokens."""
    return acts_pos_TN.mean(0) - acts_neg_TN.mean(0)


def steer_rows(x_RD: torch.Tensor, W_dec_ND: torch.Tensor, latent: int, alpha: float) -> torch.Tensor:
    """Add alpha times the latent's decoder row to every activation row (an SAE on raw activations)."""
    return x_RD + alpha * W_dec_ND[latent]


def ablation_attribution(acts_RK: torch.Tensor, grad_RK: torch.Tensor, idx_RK: torch.Tensor,
                         n_latents: int) -> torch.Tensor:
    """Per latent, the first-order change of the metric when it is ablated everywhere: -sum a * dm/da."""
    out = torch.zeros(n_latents, dtype=acts_RK.dtype)
    return out.index_add_(0, idx_RK.reshape(-1), (-acts_RK * grad_RK).reshape(-1))


def check_concept_scores(fn) -> None:
    """`fn(acts_pos_TN, acts_neg_TN) -> [n]`: concept latents score high, generic and opposite ones do not."""
    torch.manual_seed(0)
    n = 12
    pos, neg = torch.rand(30, n) * 0.1, torch.rand(90, n) * 0.1
    pos[:, 3] += 2.0  # the concept latent
    pos[:, 7] += 1.0
    neg[:, 7] += 1.0  # fires everywhere: not about the concept
    neg[:, 9] += 2.0  # fires on everything BUT the concept
    got = fn(pos.clone(), neg.clone())
    assert tuple(got.shape) == (n,), f"return one score per latent, shape ({n},), got {tuple(got.shape)}"
    if int(got.argmax()) == 9:
        raise AssertionError("latent 9 (silent on the concept) scores highest: subtract the OTHER tokens' mean from "
                             "the concept's, not the other way round")
    want = concept_scores(pos, neg)
    if not torch.allclose(got, want, atol=1e-5):
        sums = pos.sum(0) - neg.sum(0)
        if torch.allclose(got, sums, atol=1e-4):
            raise AssertionError("you summed activations; there are 3x more other tokens than concept tokens, so "
                                 "sums favour latents that fire everywhere: use means")
        raise AssertionError(f"latent 3's score is {float(got[3]):.3f}, expected {float(want[3]):.3f}: mean on the "
                             "concept's tokens minus mean on the others")
    assert int(got.argmax()) == 3 and abs(float(got[7])) < 0.1
    passed("concept_scores")


def check_steer_rows(fn) -> None:
    """`fn(x_RD, W_dec_ND, latent, alpha) -> [R, D]`: x plus alpha times the latent's decoder row."""
    torch.manual_seed(0)
    x, W = torch.randn(5, 6), torch.randn(10, 6)
    got = fn(x.clone(), W.clone(), 4, 2.5)
    assert tuple(got.shape) == (5, 6), f"return the steered activations, shape (5, 6), got {tuple(got.shape)}"
    if torch.allclose(got, 2.5 * W[4].expand(5, 6)):
        raise AssertionError("you replaced the activations by the steering vector: ADD it to x (keep the rest)")
    if torch.allclose(got, x + 2.5 * W[:, 4][:6].expand(5, 6)) or not torch.allclose(got - x, (got - x)[0:1]):
        raise AssertionError("the same vector is added to every row, and it is row `latent` of W_dec [n, d] "
                             "(the latent's direction in activation space), not a column")
    assert torch.allclose(got, steer_rows(x, W, 4, 2.5), atol=1e-6), \
        "expected x + alpha * W_dec[latent]: check the sign and the scale"
    passed("steer_rows")


def check_ablation_attribution(fn) -> None:
    """`fn(acts_RK, grad_RK, idx_RK, n) -> [n]`: -sum of activation x gradient per latent (attribution patching)."""
    acts = torch.tensor([[2.0, 1.0], [3.0, 0.0]])
    grad = torch.tensor([[0.5, -1.0], [0.25, 9.0]])
    idx = torch.tensor([[4, 1], [4, 2]])  # latent 4 at both positions; latent 2 selected but inactive (act 0)
    got = fn(acts.clone(), grad.clone(), idx.clone(), 6)
    assert tuple(got.shape) == (6,), f"return one estimate per latent, shape (6,), got {tuple(got.shape)}"
    want = ablation_attribution(acts, grad, idx, 6)
    if torch.allclose(got, -want):
        raise AssertionError("wrong sign: ablating sets a to 0, a change of -a, so the metric moves by -a * dm/da")
    if abs(float(got[2])) > 1e-6:
        raise AssertionError("latent 2 has activation 0: ablating it changes nothing; multiply by the ACTIVATION, "
                             "not just the gradient")
    if abs(float(got[4]) - float(want[4])) > 1e-6:
        raise AssertionError(f"latent 4 fires at two positions; its estimate is the SUM over them ({float(want[4]):g}),"
                             f" got {float(got[4]):g} (did scatter overwrite one? use index_add)")
    assert torch.allclose(got, want, atol=1e-6), f"expected {want.tolist()}, got {got.tolist()}"
    passed("ablation_attribution")
