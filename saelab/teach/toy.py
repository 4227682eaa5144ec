"""The toy data of notebook 00 (`saelab.acts.synthetic`, re-exported here) and how an SAE recovers its features:
`feature_recovery` is, per true feature, the largest cosine between that feature and any decoder row."""

from __future__ import annotations

import torch

from saelab.acts.synthetic import ToyConfig, ToyData, make_toy

__all__ = ["ToyConfig", "ToyData", "feature_recovery", "make_toy", "recovered_fraction"]


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
