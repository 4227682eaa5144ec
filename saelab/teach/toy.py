"""Synthetic activations with known ground-truth features, for a first SAE that trains in seconds.

Each sample is a sparse, non-negative combination of `n_features` fixed unit directions in `d` dimensions,
with more features than dimensions (superposition). An SAE that works should find the directions: its
`feature_recovery` is, per true feature, the largest cosine between that feature and any decoder row.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class ToyConfig:
    """The synthetic data: how many features, in how many dimensions, how many at once."""

    d: int = 64
    """Dimension of the activations."""
    n_features: int = 256
    """Number of true feature directions (more than d: they cannot all be orthogonal)."""
    mean_active: float = 4.0
    """Features active per sample on average (each is on with probability mean_active / n_features)."""
    n_samples: int = 65536
    """Samples to generate."""
    noise: float = 0.0
    """Standard deviation of isotropic Gaussian noise added to each sample."""
    seed: int = 0

    def __post_init__(self):
        if not 0 < self.mean_active <= self.n_features:
            raise ValueError(f"mean_active must be in (0, n_features={self.n_features}], got {self.mean_active}")
        if self.d < 1 or self.n_samples < 1:
            raise ValueError(f"d and n_samples must be >= 1, got d={self.d}, n_samples={self.n_samples}")


@dataclass
class ToyData:
    x_BD: torch.Tensor
    """The samples [n_samples, d]."""
    features_FD: torch.Tensor
    """The true unit directions [n_features, d]."""
    coeffs_BF: torch.Tensor
    """The true sparse coefficients [n_samples, n_features] (x = coeffs @ features + noise)."""


def make_toy(cfg: ToyConfig | None = None) -> ToyData:
    """Samples x = c @ F (+ noise): c sparse with magnitudes uniform in [0.5, 1.5], F random unit rows."""
    cfg = cfg or ToyConfig()
    g = torch.Generator().manual_seed(cfg.seed)
    F = torch.randn(cfg.n_features, cfg.d, generator=g)
    F /= F.norm(dim=1, keepdim=True)
    on = torch.rand(cfg.n_samples, cfg.n_features, generator=g) < cfg.mean_active / cfg.n_features
    c = on * (0.5 + torch.rand(cfg.n_samples, cfg.n_features, generator=g))
    x = c @ F
    if cfg.noise:
        x += cfg.noise * torch.randn(x.shape, generator=g)
    return ToyData(x_BD=x, features_FD=F, coeffs_BF=c)


def feature_recovery(W_dec_ND: torch.Tensor, features_FD: torch.Tensor) -> torch.Tensor:
    """Per true feature [F]: the largest cosine similarity between it and any decoder row (1 = found exactly).
    Signed: a decoder row pointing the opposite way does not recover a feature with non-negative coefficients."""
    W = W_dec_ND.detach().float()
    W = W / W.norm(dim=1, keepdim=True).clamp_min(1e-12)
    F = features_FD.float() / features_FD.float().norm(dim=1, keepdim=True)
    return (F @ W.T).max(dim=1).values


def recovered_fraction(W_dec_ND: torch.Tensor, features_FD: torch.Tensor, threshold: float = 0.9) -> float:
    """Fraction of true features with a decoder row at cosine >= threshold."""
    return float((feature_recovery(W_dec_ND, features_FD) >= threshold).float().mean())
