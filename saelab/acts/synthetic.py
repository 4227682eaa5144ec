"""Synthetic activations with known ground-truth features (notebook 00's toy, and the ground-truth benchmark's data).

Each sample is a sparse, non-negative combination of `n_features` fixed unit directions in `d` dimensions,
with more features than dimensions (superposition). An SAE that works should find the directions: its
`feature_recovery` is, per true feature, the largest cosine between that feature and any decoder row.

Options for the ground-truth benchmark (`saelab.evals.ground_truth`), off by default: a hierarchy (`n_parents`
parent features, each with `children_per_parent` children that can fire only while their parent fires, at most one
at a time, as in SAE Lens's synthetic hierarchies), Zipf-like frequencies (`zipf_exponent`: feature i fires with
probability proportional to 1 / (i + 1)^exponent), and correlated pairs (`correlated_pairs` pairs of the independent
features after the hierarchy, (i, i + 1): while i fires, i + 1 also fires with probability `co_fire`).
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
    n_parents: int = 0
    """Parent features of a hierarchy (features 0 .. n_parents - 1); 0: no hierarchy."""
    children_per_parent: int = 0
    """Children of each parent (the features after the parents); a child fires only while its parent does."""
    child_prob: float = 0.5
    """While a parent fires, the probability that one of its children fires too (which one: uniform)."""
    zipf_exponent: float = 0.0
    """Firing probabilities proportional to 1 / (rank + 1)^exponent over the features that are not children (0:
    all equal), scaled so that `mean_active` of them fire on average."""
    correlated_pairs: int = 0
    """Pairs of independent features (after the hierarchy's) whose firing is correlated; 0: none."""
    co_fire: float = 0.5
    """While the first of a correlated pair fires, the probability that the second fires too."""
    seed: int = 0
    """Seed of the directions, the firing and the magnitudes."""

    def __post_init__(self):
        if not 0 < self.mean_active <= self.n_features:
            raise ValueError(f"mean_active must be in (0, n_features={self.n_features}], got {self.mean_active}")
        if self.d < 1 or self.n_samples < 1:
            raise ValueError(f"d and n_samples must be >= 1, got d={self.d}, n_samples={self.n_samples}")
        if self.n_parents * (1 + self.children_per_parent) > self.n_features:
            raise ValueError(f"a hierarchy of {self.n_parents} parents x {self.children_per_parent} children needs "
                             f"{self.n_parents * (1 + self.children_per_parent)} features; n_features is "
                             f"{self.n_features}")
        free = self.n_features - self.n_parents * (1 + self.children_per_parent)
        if 2 * self.correlated_pairs > free:
            raise ValueError(f"{self.correlated_pairs} correlated pairs need {2 * self.correlated_pairs} independent "
                             f"features; there are {free} after the hierarchy")


@dataclass
class ToyData:
    x_BD: torch.Tensor
    """The samples [n_samples, d]."""
    features_FD: torch.Tensor
    """The true unit directions [n_features, d]."""
    coeffs_BF: torch.Tensor
    """The true sparse coefficients [n_samples, n_features] (x = coeffs @ features + noise)."""
    parent_F: torch.Tensor | None = None
    """Per feature, the index of its parent (-1: none), when the data has a hierarchy."""


FEATURE_STREAM = 7_919_000_003
"""Offset of the features' random stream from `ToyConfig.seed` (far from any seed an SAE is trained with)."""


def make_toy(cfg: ToyConfig | None = None) -> ToyData:
    """Samples x = c @ F (+ noise): c sparse with magnitudes uniform in [0.5, 1.5], F random unit rows; with a
    hierarchy, children fire only inside their parent's samples (and at most one child of a parent at a time)."""
    cfg = cfg or ToyConfig()
    g = torch.Generator().manual_seed(cfg.seed)
    torch.randn(cfg.n_features, cfg.d, generator=g)  # drawn and dropped: the coefficients stay saelab 0.3's draws
    # The features come from their own stream. saelab 0.3 drew them first from `seed`, and an SAE initialised with the
    # same seed (`SAE(cfg, seed)` draws its decoder rows as torch.randn(n, d) too) started with its first rows equal to
    # the true features: at seed 0 and n_latents >= n_features the dictionary began solved (issue 38).
    F = torch.randn(cfg.n_features, cfg.d, generator=torch.Generator().manual_seed(cfg.seed + FEATURE_STREAM))
    F /= F.norm(dim=1, keepdim=True)
    if not cfg.n_parents and not cfg.zipf_exponent and not cfg.correlated_pairs:  # the teaching default, unchanged
        on = torch.rand(cfg.n_samples, cfg.n_features, generator=g) < cfg.mean_active / cfg.n_features
        c = on * (0.5 + torch.rand(cfg.n_samples, cfg.n_features, generator=g))
        parent = None
    else:
        c, parent = _hierarchical_coeffs(cfg, g)
    x = c @ F
    if cfg.noise:
        x += cfg.noise * torch.randn(x.shape, generator=g)
    return ToyData(x_BD=x, features_FD=F, coeffs_BF=c, parent_F=parent)


def _hierarchical_coeffs(cfg: ToyConfig, g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    P, C = cfg.n_parents, cfg.children_per_parent
    parent = torch.full((cfg.n_features,), -1, dtype=torch.long)
    children = torch.arange(P, P + P * C)
    parent[children] = torch.arange(P).repeat_interleave(C)
    free = parent < 0  # parents and independent features: they fire on their own
    rank = torch.arange(int(free.sum()), dtype=torch.float64)
    weight = (rank + 1) ** -cfg.zipf_exponent
    prob = torch.zeros(cfg.n_features, dtype=torch.float64)
    prob[free] = (weight * cfg.mean_active / weight.sum()).clamp(max=1.0)
    on = torch.rand(cfg.n_samples, cfg.n_features, generator=g, dtype=torch.float64) < prob
    if P and C:  # one child (uniform) of an active parent, with probability child_prob
        pick = torch.randint(C, (cfg.n_samples, P), generator=g)
        fires = (torch.rand(cfg.n_samples, P, generator=g) < cfg.child_prob) & on[:, :P]
        rows, par = fires.nonzero(as_tuple=True)
        on[rows, P + par * C + pick[rows, par]] = True
    if cfg.correlated_pairs:
        first = P + P * C + 2 * torch.arange(cfg.correlated_pairs)
        on[:, first + 1] |= on[:, first] & (torch.rand(cfg.n_samples, cfg.correlated_pairs, generator=g,
                                                       dtype=torch.float64) < cfg.co_fire)
    return on * (0.5 + torch.rand(cfg.n_samples, cfg.n_features, generator=g)), parent
