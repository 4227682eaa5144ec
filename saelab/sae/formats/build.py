"""saelab's `SAE` from another library's tensors, in their orientation (W_enc [d, n], W_dec [n, d]).

Every public layout here encodes pre = (x - b_dec * s) W_enc + b_enc with s = 1 (it subtracts the decoder bias, as
saelab does) or s = 0 (Gemma Scope, Llama Scope, dictionary_learning's JumpReLU); s = 0 folds exactly into saelab's
form: (x - b_dec) W_enc + (b_enc + b_dec W_enc).
"""

from __future__ import annotations

import numpy as np
import torch

from saelab.sae.config import SAEConfig
from saelab.sae.model import SAE


def as_tensor(value, name: str, where) -> torch.Tensor:
    """A float32 tensor from a numpy array or tensor; a clear error for anything else."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        value = torch.tensor(float(value))
    if isinstance(value, np.ndarray):
        value = torch.from_numpy(np.ascontiguousarray(value))
    if not isinstance(value, torch.Tensor):
        raise ValueError(f"{where}: {name!r} is a {type(value).__name__}, not an array of weights")
    return value.float()


def sae_from_weights(where, W_enc_DN, b_enc_N, W_dec_ND, b_dec_D, *, activation: str, subtracts_b_dec: bool,
                     k: int = 32, threshold_N=None, matryoshka_widths=None, normalize: str = "none", device=None,
                     extra: dict | None = None, **fields) -> SAE:
    """An SAE holding these weights; shapes are checked against each other (errors name `where`). `extra`: a family's
    own tensors by parameter name (a transcoder's W_skip). `fields`: the rest of its `SAEConfig` (provenance: model,
    site, layer, hook, source; the family's options)."""
    W_enc, b_enc, W_dec, b_dec = (as_tensor(t, n, where) for t, n in
                                  ((W_enc_DN, "W_enc"), (b_enc_N, "b_enc"), (W_dec_ND, "W_dec"), (b_dec_D, "b_dec")))
    if W_enc.dim() != 2:
        raise ValueError(f"{where}: W_enc has shape {tuple(W_enc.shape)}, expected [d_in, n_latents]")
    d, n = W_enc.shape
    for name, t, want in (("W_dec", W_dec, (n, d)), ("b_enc", b_enc, (n,)), ("b_dec", b_dec, (d,))):
        if tuple(t.shape) != want:
            raise ValueError(f"{where}: {name} has shape {tuple(t.shape)}, expected {want} from W_enc {(d, n)}")
    if not subtracts_b_dec:
        b_enc = b_enc + b_dec @ W_enc
    cfg = SAEConfig(d_in=d, n_latents=n, k=min(max(int(k), 1), n), activation=activation,
                    matryoshka_widths=matryoshka_widths, normalize=normalize, **fields)
    sae = SAE(cfg, seed=None, device=device)
    with torch.no_grad():
        sae.W_enc.copy_(W_enc.t())
        sae.W_dec.copy_(W_dec)
        sae.b_enc.copy_(b_enc)
        sae.b_pre.copy_(b_dec)
        if threshold_N is not None:
            t = as_tensor(threshold_N, "threshold", where)
            if t.numel() == 1:
                t = t.reshape(1).expand(n)
            if t.numel() != n:
                raise ValueError(f"{where}: threshold has shape {tuple(t.shape)}, expected ({n},) or a scalar")
            sae.threshold.copy_(t.reshape(n))
        for name, t in (extra or {}).items():
            getattr(sae, name).copy_(as_tensor(t, name, where))
    return sae
