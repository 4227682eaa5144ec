"""Notebook 08, exercise 8.2: JumpReLU's straight-through threshold gradient. The reference solution and a check that
varies every argument and names the mistake."""

from __future__ import annotations

import torch

from saelab.teach.exercises.base import (
    call_learner,
    diagnose,
    exercise,
    expect_shape,
    passed,
    same_output,
    unlike,
)


# ---- 8.2 JumpReLU's threshold gradient -------------------------------------------------------------------------
def jumprelu_threshold_grad(pre_BN: torch.Tensor, theta_N: torch.Tensor, eps: float, grad_BN: torch.Tensor
                            ) -> torch.Tensor:
    """dL/dtheta through f = pre * H(pre - theta), with the paper's pseudo-derivative -(theta/eps) K((pre-theta)/eps),
    K the rectangle 1{|u| < 1/2}; `grad_BN` is dL/df."""
    u = (pre_BN - theta_N) / eps
    return (-(theta_N / eps) * ((u > -0.5) & (u < 0.5)).to(pre_BN.dtype) * grad_BN).sum(0)


def _jumprelu_case(seed: int, B: int, n: int, eps: float):
    """(pre, theta, grad): thresholds in [0.01, 1], pre-activations within 1.5 eps of them (none within eps/50 of the
    window's edges, where the answer would hang on rounding) and upstream gradients of both signs."""
    g = torch.Generator().manual_seed(seed)
    theta = 0.01 + 0.99 * torch.rand(n, generator=g)
    u = 3 * torch.rand(B, n, generator=g) - 1.5
    u = torch.where(((u.abs() - 0.5).abs() < 0.02), u * 0.9, u)
    return theta + eps * u, theta, torch.randn(B, n, generator=g)


def _jumprelu_cases():
    """(what, pre, theta, eps, grad): hand-placed values around the window's edges, then random ones (16 x 8, eps
    0.3), a batch of one (eps 0.05) and a wide window (eps 1.0)."""
    theta = torch.tensor([0.5, 0.2, 0.8])
    pre = torch.tensor([[0.52, 0.21, 0.70], [0.47, 0.28, 0.83], [0.90, 0.17, 0.79], [0.56, 0.05, 0.845]])
    g = torch.tensor([[2.0, -1.0, 3.0], [3.0, 5.0, 1.0], [7.0, 2.0, -4.0], [1.0, 1.0, 1.0]])
    out = [("with B = 4, n = 3, eps = 0.1 (values placed around the window's edges)", pre, theta, 0.1, g)]
    for seed, B, n, eps in ((1, 16, 8, 0.3), (2, 1, 6, 0.05), (3, 12, 5, 1.0)):
        p, t, gr = _jumprelu_case(seed, B, n, eps)
        out.append((f"with B = {B}, n = {n}, eps = {eps}", p, t, eps, gr))
    return out


@exercise("8.2", jumprelu_threshold_grad)
def check_jumprelu_threshold_grad(fn) -> None:
    """`fn(pre_BN, theta_N, eps, grad_BN) -> [n]`. Varies eps (0.05, 0.1, 0.3, 1.0), the batch (4, 16, 12, ONE
    token), n (3, 8, 6, 5), the thresholds (one per latent, 0.01 to 1) and the upstream gradient's signs, with values
    on both sides of each window's edges."""
    for what, pre, theta, eps, g in _jumprelu_cases():
        got = call_learner(fn, what, pre.clone(), theta.clone(), eps, g.clone())
        expect_shape(got, theta.shape, f"{what}: one gradient per latent, [n] (summed over the batch)")
        u = (pre - theta) / eps
        inside = ((u > -0.5) & (u < 0.5)).float()
        above = (((u >= 0) & (u < 0.5)).float())
        wide = ((u > -1) & (u < 1)).float()
        want = jumprelu_threshold_grad(pre, theta, eps, g)
        diagnose(got, unlike(want, [
            ((-(1 / eps) * inside * g).sum(0), "that is the Heaviside step's pseudo-derivative; JumpReLU's carries a "
                                               "factor theta: -(theta/eps) K((pre - theta)/eps)"),
            (((theta / eps) * inside * g).sum(0), "the sign: raising theta switches an active latent off, so the "
                                                  "pseudo-derivative is negative"),
            ((-(theta / eps) * above * g).sum(0), "the window has two sides: pre-activations just BELOW theta count "
                                                  "too (|pre - theta| < eps/2)"),
            ((-(theta / eps) * wide * g).sum(0), "K is 1 on (-1/2, 1/2): the window is eps wide in all, eps/2 each "
                                                 "side"),
            (-(theta / eps) * (inside * g).mean(0), "sum over the batch's tokens, do not average"),
            ((-(theta / eps) * inside).sum(0), "multiply each entry's pseudo-derivative by its upstream gradient "
                                               "grad_BN (the chain rule: dL/dtheta = sum over tokens of dL/df * "
                                               "df/dtheta)"),
            ((-(theta.mean() / eps) * inside * g).sum(0), "each latent has its own threshold: the factor is theta_i, "
                                                          "not the mean threshold"),
            ((-(pre / eps) * inside * g).sum(0), "the factor is theta, not the pre-activation: an entry switched off "
                                                 "at the threshold loses f = pre = theta, and the estimate is taken "
                                                 "at theta itself"),
        ], what))
        same_output(got, want, f"{what}: your gradient")
    passed("jumprelu_threshold_grad")
