"""Activation functions: which latents a token keeps, from its pre-activations (paper sections 2.3, 5.3).

Each is a small class with `select(pre_BN) -> (acts_BK, idx_BK)`, registered by name in `ACTIVATIONS`
(the released code keeps its activations the same way). TopK trains the SAE; the others are
test-time choices for progressive recovery. Variable-count activations come back padded to the
largest row count, with activation 0 at index 0 in the padding.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


def padded_from_mask(pre_BN: torch.Tensor, mask_BN: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The rows of a boolean mask as (acts, idx), padded to the largest row count with zeros."""
    width = max(int(mask_BN.sum(-1).max()) if mask_BN.numel() else 0, 1)
    top = pre_BN.masked_fill(~mask_BN, 0.0).topk(width, dim=-1)
    return top.values.clamp_min(0.0), top.indices


@dataclass(frozen=True)
class TopK:
    """The k largest pre-activations of each token, through a ReLU (the released code's relu(topk(.)); the paper's
    eq. 2 writes TopK(.))."""

    k: int

    def select(self, pre_BN: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        top = pre_BN.topk(self.k, dim=-1)
        return top.values.relu(), top.indices


@dataclass(frozen=True)
class JumpReLU:
    """Every pre-activation above a threshold theta (section 5.3: a test-time L0 knob): one value, or
    one per latent ([n], as JumpReLU SAEs trained elsewhere carry them), through a ReLU."""

    threshold: float | torch.Tensor

    def select(self, pre_BN: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return padded_from_mask(pre_BN, pre_BN > self.threshold)


@dataclass(frozen=True)
class ReLU:
    """Every positive pre-activation (the ReLU+L1 baseline's activation)."""

    def select(self, pre_BN: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return padded_from_mask(pre_BN, pre_BN > 0)


@dataclass(frozen=True)
class BatchTopK:
    """The k*B largest positive pre-activations over a batch of B tokens (beyond the paper)."""

    k: int

    def select(self, pre_BN: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        flat = pre_BN.relu().flatten()
        kth = flat.topk(min(self.k * pre_BN.shape[0], flat.numel())).values[-1]
        return padded_from_mask(pre_BN, (pre_BN >= kth) & (pre_BN > 0))


ACTIVATIONS = {"topk": TopK, "jumprelu": JumpReLU, "relu": ReLU, "batchtopk": BatchTopK}
TRAINING_ACTIVATIONS = ("topk", "relu", "batchtopk", "jumprelu")
SAE_ACTIVATIONS = TRAINING_ACTIVATIONS
BATCHTOPK_THRESHOLD_LR = 0.01
"""A BatchTopK SAE's inference threshold follows an exponential moving average of the smallest positive activation
the batch selection kept in each training step, with this rate (SAE Lens's `topk_threshold_lr` default)."""
BATCHTOPK_CANDIDATES = 8
"""Training selects a batch's top B*k among each token's top BATCHTOPK_CANDIDATES * k pre-activations: exact unless
one token holds more than that many of the batch's B*k largest (it cannot at k*8 >= n)."""


def make_activation(name: str, n_latents: int, k: int | None = None, threshold: float | torch.Tensor | None = None):
    """The activation `name` with its parameter, checked: TopK/BatchTopK take `k`, JumpReLU `threshold`."""
    if name not in ACTIVATIONS:
        raise ValueError(f"unknown activation {name!r}; choose from {tuple(ACTIVATIONS)}")
    if name in ("topk", "batchtopk"):
        if k is None or not 1 <= k <= n_latents:
            raise ValueError(f"k must be between 1 and n_latents={n_latents}, got {k}")
        return ACTIVATIONS[name](k)
    if name == "jumprelu":
        if threshold is None:
            raise ValueError("jumprelu needs a threshold")
        return JumpReLU(threshold)
    return ReLU()
