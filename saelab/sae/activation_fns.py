"""Activation functions: which latents a token keeps, from its pre-activations (paper sections 2.3, 5.3).

Each is a small class with `select(pre_BN) -> (acts_BK, idx_BK)`, registered by name in `ACTIVATIONS`
(the released code keeps its activations the same way). These are functions of one batch's
pre-activations, not SAE families (`saelab.sae.families`): any SAE can be encoded with any of them
(progressive recovery's test-time TopK(k') and JumpReLU), and each family says which one it encodes with
at inference. Variable-count activations come back padded to the largest row count, with activation 0
at index 0 in the padding.
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

    @classmethod
    def make(cls, n_latents: int, k: int | None, threshold):
        if k is None or not 1 <= k <= n_latents:
            raise ValueError(f"k must be between 1 and n_latents={n_latents}, got {k}")
        return cls(k)

    def select(self, pre_BN: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        top = pre_BN.topk(self.k, dim=-1)
        return top.values.relu(), top.indices


@dataclass(frozen=True)
class JumpReLU:
    """Every pre-activation above a threshold theta (section 5.3: a test-time L0 knob): one value, or
    one per latent ([n], as JumpReLU SAEs trained elsewhere carry them), through a ReLU."""

    threshold: float | torch.Tensor

    @classmethod
    def make(cls, n_latents: int, k, threshold: float | torch.Tensor | None):
        if threshold is None:
            raise ValueError("jumprelu needs a threshold")
        return cls(threshold)

    def select(self, pre_BN: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return padded_from_mask(pre_BN, pre_BN > self.threshold)


@dataclass(frozen=True)
class ReLU:
    """Every positive pre-activation (the ReLU+L1 baseline's activation)."""

    @classmethod
    def make(cls, n_latents: int, k, threshold):
        return cls()

    def select(self, pre_BN: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return padded_from_mask(pre_BN, pre_BN > 0)


@dataclass(frozen=True)
class BatchTopK:
    """The k*B largest positive pre-activations over a batch of B tokens (beyond the paper)."""

    k: int

    @classmethod
    def make(cls, n_latents: int, k: int | None, threshold):
        return cls(TopK.make(n_latents, k, threshold).k)

    def select(self, pre_BN: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        flat = pre_BN.relu().flatten()
        kth = flat.topk(min(self.k * pre_BN.shape[0], flat.numel())).values[-1]
        return padded_from_mask(pre_BN, (pre_BN >= kth) & (pre_BN > 0))


ACTIVATIONS = {"topk": TopK, "jumprelu": JumpReLU, "relu": ReLU, "batchtopk": BatchTopK}


def make_activation(name: str, n_latents: int, k: int | None = None, threshold: float | torch.Tensor | None = None):
    """The activation `name` with its parameter, checked: TopK/BatchTopK take `k`, JumpReLU `threshold`."""
    if name not in ACTIVATIONS:
        raise ValueError(f"unknown activation {name!r}; choose from {tuple(ACTIVATIONS)}")
    return ACTIVATIONS[name].make(n_latents, k, threshold)
