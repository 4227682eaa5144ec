"""The state dicts released with the paper (openai/sparse_autoencoder: GPT-2 small SAEs, ``.pt``)."""

from __future__ import annotations

from pathlib import Path

import torch

from saelab.sae.config import SAEConfig
from saelab.sae.model import SAE


def from_openai(path: str | Path, normalize: str | None = None, device=None, **provenance) -> SAE:
    """Load a released state dict, safely (`torch.load(..., weights_only=True)`: PyTorch's restricted loader
    accepts tensors and plain containers, never arbitrary code).

    Their layout: encoder.weight [n, d], decoder.weight [d, n], pre_bias, latent_bias,
    activation ('TopK' or 'ReLU'), activation_state_dict {'k': ...}. Their loader turns on
    input layer norm exactly when the activation is TopK; that choice is recorded in our config
    (`normalize`) instead of being guessed again later. Pass `normalize` to override it.
    """
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - torch raises UnpicklingError, RuntimeError, EOFError...
        raise ValueError(f"{path} could not be read as a tensors-only state dict ({type(e).__name__}: {e}); "
                         "saelab loads tensors only, never code: pass an openai/sparse_autoencoder .pt file") from None
    if not isinstance(state, dict):
        raise ValueError(f"{path} is not an openai/sparse_autoencoder state dict (a {type(state).__name__})")
    for key in ("encoder.weight", "decoder.weight", "pre_bias", "latent_bias"):
        if key not in state:
            raise ValueError(f"{path} is not an openai/sparse_autoencoder state dict: no {key!r}")
    n, d = state["encoder.weight"].shape
    if tuple(state["decoder.weight"].shape) != (d, n):
        raise ValueError(f"{path}: decoder.weight has shape {tuple(state['decoder.weight'].shape)}, "
                         f"expected {(d, n)}")
    act_name = state.get("activation", "ReLU")
    k = int(state.get("activation_state_dict", {}).get("k", 0)) if act_name == "TopK" else 1
    provenance.setdefault("source", f"openai:{path}")
    cfg = SAEConfig(d_in=d, n_latents=n, k=max(k, 1), activation="topk" if act_name == "TopK" else "relu",
                    normalize=normalize or ("layernorm" if act_name == "TopK" else "none"), **provenance)
    sae = SAE(cfg, seed=None, device=device)
    with torch.no_grad():
        sae.W_enc.copy_(state["encoder.weight"])
        sae.W_dec.copy_(state["decoder.weight"].t())
        sae.b_enc.copy_(state["latent_bias"])
        sae.b_pre.copy_(state["pre_bias"])
    return sae
