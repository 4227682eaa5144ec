"""Input normalisation: the space an SAE encodes from, and its inverse (paper section 2.1).

Reconstruction errors, the losses and the paper's normalized MSE are measured after it.
    per_token_unit_norm  the paper's: each token mean-subtracted over d_model, scaled to unit norm
    layernorm            the released code's LN, (x - mean) / (std + 1e-5), undone with std: the same direction
                         at norm ~sqrt(d-1)
    dataset_unit_norm    one dataset-wide scale, set from data so the mean squared norm is 1
    constant_norm_rescale  each token scaled to norm sqrt(d), not centred (SAE Lens's mode of that name; read
                         from SAE Lens folders, not offered for training)
    none                 raw activations
Every mode is x_n = (x - shift) / scale with a per-token or constant shift and scale; `Undo` keeps them.
"""

from __future__ import annotations

from typing import NamedTuple

import torch

NORMALIZATIONS = ("none", "dataset_unit_norm", "layernorm", "per_token_unit_norm", "constant_norm_rescale")
PER_TOKEN = ("layernorm", "per_token_unit_norm", "constant_norm_rescale")
RENAMED = {"unit_msn": "dataset_unit_norm"}  # names of saelab <= 0.1, still read from old files and configs
LN_EPS = 1e-5  # as in openai/sparse_autoencoder's LN (std is the unbiased estimate, eps added to std)
NORM_EPS = 1e-8  # per_token_unit_norm: a floor on the centred norm (a constant token has none)


class Undo(NamedTuple):
    """What maps a normalised tensor back to the input's space: x = x_n * scale + shift."""

    shift: torch.Tensor | float
    scale: torch.Tensor | float

    def __call__(self, x_n: torch.Tensor) -> torch.Tensor:
        if isinstance(self.scale, float) and isinstance(self.shift, float) and self.scale == 1 and self.shift == 0:
            return x_n  # the identity ('none'): no copy
        return x_n * self.scale + self.shift


def canonical_normalization(name: str) -> str:
    """The current name of a normalisation (old names are accepted), or a clear error."""
    name = RENAMED.get(name, name)
    if name not in NORMALIZATIONS:
        raise ValueError(f"normalize must be one of {NORMALIZATIONS}, got {name!r}")
    return name


def normalize(x: torch.Tensor, mode: str, dataset_scale: torch.Tensor | float = 1.0) -> tuple[torch.Tensor, Undo]:
    """(x_n, undo) for `mode`; `dataset_scale` multiplies the input under 'dataset_unit_norm'."""
    if mode == "none":
        return x, Undo(0.0, 1.0)
    if mode == "dataset_unit_norm":
        return x * dataset_scale, Undo(0.0, 1.0 / dataset_scale)
    if mode == "constant_norm_rescale":
        scale = x.norm(dim=-1, keepdim=True).clamp_min(NORM_EPS) / x.shape[-1] ** 0.5
        return x / scale, Undo(0.0, scale)
    shift = x.mean(-1, keepdim=True)
    centred = x - shift
    if mode == "layernorm":  # divide by std + eps, undo with std: as openai/sparse_autoencoder and SAE Lens do
        std = centred.std(-1, keepdim=True)
        return centred / (std + LN_EPS), Undo(shift, std)
    scale = centred.norm(dim=-1, keepdim=True).clamp_min(NORM_EPS)
    return centred / scale, Undo(shift, scale)


def dataset_scale_from(sample_BD: torch.Tensor) -> float:
    """The 'dataset_unit_norm' scale: 1 / sqrt(mean squared norm) of a sample."""
    return float(1.0 / sample_BD.float().pow(2).sum(-1).mean().sqrt())


def geometric_median(x_BD: torch.Tensor, iters: int = 200, tol: float = 1e-7) -> torch.Tensor:
    """Weiszfeld's algorithm: the point minimising the sum of Euclidean distances to the rows."""
    x = x_BD.double()
    m = x.mean(0)
    for _ in range(iters):
        w = 1.0 / (x - m).norm(dim=1).clamp_min(1e-12)
        new = (w[:, None] * x).sum(0) / w.sum()
        if (new - m).norm() <= tol * m.norm().clamp_min(1e-12):
            m = new
            break
        m = new
    return m.to(x_BD.dtype)


def check_input(x: torch.Tensor, d_in: int) -> None:
    """Raise a clear error for a wrong width or non-finite rows."""
    if x.ndim < 1 or x.shape[-1] != d_in:
        raise ValueError(f"expected activations with last dimension d_in={d_in}, got shape {tuple(x.shape)}")
    if x.is_floating_point() and bool(torch.isfinite(x.sum(dtype=torch.float32))):  # a NaN or inf makes it one
        return
    bad = (~torch.isfinite(x)).any(-1)
    if bad.any():
        raise ValueError(f"input has {int(bad.sum())} of {bad.numel()} rows with NaN or inf values; "
                         "drop or fix those tokens before encoding")
