"""Exercise 8.2: jumprelu_threshold_grad, dL/dtheta through f = pre * H(pre - theta), straight-through."""
import torch


def _window(pre_BN, theta_N, eps, half_width=0.5, one_sided=False):
    u = (pre_BN - theta_N) / eps
    if one_sided:
        return ((u >= 0) & (u < half_width)).to(pre_BN.dtype)
    return (u.abs() < half_width).to(pre_BN.dtype)


# ---- my honest attempt: sum over the batch of grad * ( -(theta/eps) K((pre - theta)/eps) ) ----------------
def jumprelu_threshold_grad_mine(pre_BN, theta_N, eps, grad_BN):
    K = _window(pre_BN, theta_N, eps)
    return (grad_BN * (-(theta_N / eps) * K)).sum(0)


# ---- wrong 1: a one-sided window (only pre just above theta), as if only active latents mattered ------------
def jumprelu_threshold_grad_one_sided(pre_BN, theta_N, eps, grad_BN):
    K = _window(pre_BN, theta_N, eps, one_sided=True)
    return (grad_BN * (-(theta_N / eps) * K)).sum(0)


# ---- wrong 2: pre in place of theta in the pseudo-derivative (-(pre/eps) K), since f = pre * H -----------
def jumprelu_threshold_grad_pre_factor(pre_BN, theta_N, eps, grad_BN):
    K = _window(pre_BN, theta_N, eps)
    return (grad_BN * (-(pre_BN / eps) * K)).sum(0)


# ---- wrong 3: mean over the batch instead of summing each latent's entries ----------------------------------
def jumprelu_threshold_grad_mean(pre_BN, theta_N, eps, grad_BN):
    K = _window(pre_BN, theta_N, eps)
    return (grad_BN * (-(theta_N / eps) * K)).mean(0)


# ---- wrong 4: window |pre - theta| < eps (forgot K's half width) --------------------------------------------
def jumprelu_threshold_grad_full_width(pre_BN, theta_N, eps, grad_BN):
    K = _window(pre_BN, theta_N, eps, half_width=1.0)
    return (grad_BN * (-(theta_N / eps) * K)).sum(0)


# ---- wrong 5: the L0 term's dH/dtheta (-(1/eps) K) used for f: the factor theta is missing ---------------
def jumprelu_threshold_grad_l0_form(pre_BN, theta_N, eps, grad_BN):
    K = _window(pre_BN, theta_N, eps)
    return (grad_BN * (-(1.0 / eps) * K)).sum(0)


# ---- wrong 6: lost the minus sign ---------------------------------------------------------------------
def jumprelu_threshold_grad_sign(pre_BN, theta_N, eps, grad_BN):
    K = _window(pre_BN, theta_N, eps)
    return (grad_BN * ((theta_N / eps) * K)).sum(0)


CANDIDATES = [
    ("one_sided", jumprelu_threshold_grad_one_sided, "window only on the side above theta", False),
    ("pre_factor", jumprelu_threshold_grad_pre_factor, "uses -(pre/eps) K instead of -(theta/eps) K", False),
    ("batch_mean", jumprelu_threshold_grad_mean, "averages over the batch instead of summing", False),
    ("full_width", jumprelu_threshold_grad_full_width, "window |pre - theta| < eps: twice K's width", False),
    ("l0_form", jumprelu_threshold_grad_l0_form, "uses the L0 term's -(1/eps) K: the factor theta missing", False),
    ("sign", jumprelu_threshold_grad_sign, "drops the minus sign of the pseudo-derivative", False),
    ("mine", jumprelu_threshold_grad_mine, "my honest attempt at a correct solution", True),
]
