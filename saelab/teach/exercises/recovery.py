"""Notebook 04 (progressive recovery): decode with another k, and a JumpReLU threshold for a target L0."""

from __future__ import annotations

import torch

from saelab.teach.exercises.base import diagnose, passed
from saelab.teach.exercises.training import topk_activation


def topk_reconstruct(pre_BN: torch.Tensor, W_dec_ND: torch.Tensor, b_pre_D: torch.Tensor, k: int) -> torch.Tensor:
    """Decode with k active latents: ReLU(TopK_k(pre)) @ W_dec + b_pre."""
    return topk_activation(pre_BN, k) @ W_dec_ND + b_pre_D


def threshold_for_l0(pre_BN: torch.Tensor, target_l0: float) -> float:
    """The JumpReLU threshold theta with, on average, target_l0 pre-activations above it per row."""
    n = pre_BN.shape[-1]
    values = pre_BN.flatten().double()
    if values.numel() > 2**24:  # torch.quantile's limit: a random subsample of 2^24 values
        values = values[torch.randperm(values.numel(), generator=torch.Generator().manual_seed(0))[: 2**24]]
    return float(torch.quantile(values, 1 - target_l0 / n))


def check_topk_reconstruct(fn) -> None:
    """`fn(pre_BN, W_dec_ND, b_pre_D, k) -> [B, D]`."""
    g = torch.Generator().manual_seed(0)
    pre = torch.randn(6, 20, generator=g)
    W = torch.randn(20, 5, generator=g)
    b = torch.randn(5, generator=g) + 3
    pre[0] = pre[0].abs() + 0.1  # a row with more than k positive pre-activations
    got = fn(pre.clone(), W.clone(), b.clone(), 12)  # k = 12 of 20: some kept values are negative
    top = pre.topk(12, dim=-1)
    no_relu = torch.zeros_like(pre).scatter(-1, top.indices, top.values) @ W + b
    diagnose(got, [(topk_activation(pre, 12) @ W, "add the decoder bias b_pre: x_hat = W_dec z + b_pre"),
                   (no_relu, "at large k some kept pre-activations are negative: the ReLU after TopK zeroes them"),
                   (pre.relu() @ W + b, "you kept every positive pre-activation (a ReLU SAE): keep only the top k"),
                   (topk_reconstruct(pre, W, b, 11), "that decodes 11 latents: keep k"),
                   (topk_reconstruct(pre, W, b, 13), "that decodes 13 latents: keep k")])
    want = topk_reconstruct(pre, W, b, 12)
    assert tuple(got.shape) == tuple(want.shape), f"expected shape {tuple(want.shape)}, got {tuple(got.shape)}"
    assert torch.allclose(got, want, atol=1e-5), "not ReLU(TopK_k(pre)) @ W_dec + b_pre"
    passed("topk_reconstruct")


def check_threshold_for_l0(fn) -> None:
    """`fn(pre_BN, target_l0) -> float`: rows have, on average, target_l0 pre-activations above it."""
    g = torch.Generator().manual_seed(0)
    pre = torch.randn(400, 256, generator=g) * torch.linspace(0.2, 2.0, 256)  # latents of different scales
    for target in (8.0, 32.0):
        theta = float(fn(pre.clone(), target))
        l0 = float((pre > theta).sum(-1).float().mean())
        if abs(l0 - (256 - target)) < 0.02 * target + 1:
            raise AssertionError(f"theta = {theta:.3f} leaves {l0:.1f} latents active, about n - L0: take the "
                                 "(1 - L0 / n) quantile, not the L0 / n one")
        if l0 < 0.1 * target:
            raise AssertionError(f"theta = {theta:.3f} leaves {l0:.2f} active per row: L0 counts active latents PER "
                                 "ROW; over a batch of B rows that is B * L0 values above theta (a fraction L0 / n)")
        per_row = float(pre.topk(int(target), dim=-1).values[:, -1].mean())
        if abs(theta - per_row) < 1e-6:
            raise AssertionError("you averaged each row's k-th largest value: one global threshold must give L0 on "
                                 f"AVERAGE over rows; yours gives {l0:.2f}; use a quantile of all pre-activations")
        assert abs(l0 - target) <= 0.02 * target + 0.05, f"theta = {theta:.3f} gives L0 {l0:.2f}, target {target}"
    passed("threshold_for_l0")
