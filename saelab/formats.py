"""SAE files: saelab's own folder, the paper's released state dicts, and SAE Lens's layout.

saelab folder: ``cfg.json`` ({"format_version", "config": SAEConfig, training extras}) and
``sae.safetensors`` (parameters and buffers). Written atomically; read with checks that name the fix.
Format history: 1 kept `input_scale` and `tokens_seen` in the config (read and moved into the
buffers); 2 keeps them as buffers, so a config says only what was asked.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, fields
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from .files import atomic_write, atomic_write_text
from .normalization import PER_TOKEN
from .sae import SAE, SAEConfig

FORMAT_VERSION = 2
_MOVED_TO_BUFFERS = ("input_scale", "tokens_seen")  # config fields of format 1


def save_sae(sae: SAE, folder: str | Path, extra: dict | None = None) -> Path:
    """Write sae.safetensors and cfg.json (each atomically: temp file then rename)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().contiguous().cpu() for k, v in sae.state_dict().items()}
    atomic_write(folder / "sae.safetensors", lambda p: save_file(tensors, p))
    meta = {"format_version": FORMAT_VERSION, "config": asdict(sae.cfg), **(extra or {})}
    atomic_write_text(folder / "cfg.json", json.dumps(meta, indent=2))
    return folder


def load_saelab(folder: str | Path, device=None) -> SAE:
    """Load a folder written by `save_sae`; other layouts and damaged files get an error naming the fix."""
    folder = Path(folder)
    _check_saelab_folder(folder)
    try:
        meta = json.loads((folder / "cfg.json").read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"{folder}/cfg.json is damaged ({e}); re-save the SAE, or retrain it with "
                         "`saelab train --out` on that run folder") from None
    version = meta.get("format_version") if isinstance(meta, dict) else None
    if not isinstance(version, int) or "config" not in meta:
        raise ValueError(f"{folder}/cfg.json is not a saelab SAE config ({_foreign_format(meta)}); "
                         "saelab reads folders written by SAE.save or `saelab train`")
    if version > FORMAT_VERSION:
        raise ValueError(f"{folder}/cfg.json has format_version {version}, newer than this saelab reads "
                         f"({FORMAT_VERSION}); upgrade saelab (pip install -U saelab)")
    config = dict(meta["config"])
    moved = {k: config.pop(k) for k in _MOVED_TO_BUFFERS if k in config} if version == 1 else {}
    unknown = set(config) - {f.name for f in fields(SAEConfig)}
    if unknown:
        raise ValueError(f"{folder}/cfg.json has unknown config fields {sorted(unknown)}; upgrade saelab")
    sae = SAE(SAEConfig(**config), seed=None, device=device)
    try:
        state = load_file(folder / "sae.safetensors", device=str(device or "cpu"))
    except Exception as e:  # noqa: BLE001 - safetensors raises its own error types for truncated files
        raise ValueError(f"{folder}/sae.safetensors is damaged or truncated ({type(e).__name__}: {e}); "
                         "re-save the SAE, or retrain it") from None
    for name, value in moved.items():
        state.setdefault(name, torch.tensor(value, dtype=getattr(sae, name).dtype))
    expected = {k: tuple(v.shape) for k, v in sae.state_dict().items()}
    got = {k: tuple(v.shape) for k, v in state.items()}
    if expected != got:
        raise ValueError(f"{folder}/sae.safetensors does not match its cfg.json: expected {expected}, got {got}")
    sae.load_state_dict(state)
    return sae


def from_openai(path: str | Path, normalize: str | None = None, **provenance) -> SAE:
    """Load a state dict released with the paper (GPT-2 small SAEs, ``.pt``), safely.

    Their layout: encoder.weight [n, d], decoder.weight [d, n], pre_bias, latent_bias,
    activation ('TopK' or 'ReLU'), activation_state_dict {'k': ...}. Their loader turns on
    input layer norm exactly when the activation is TopK; that choice is recorded in our config
    (`normalize`) instead of being guessed again later. Pass `normalize` to override it.
    """
    state = torch.load(path, map_location="cpu", weights_only=True)
    for key in ("encoder.weight", "decoder.weight", "pre_bias", "latent_bias"):
        if key not in state:
            raise ValueError(f"{path} is not an openai/sparse_autoencoder state dict: no {key!r}")
    n, d = state["encoder.weight"].shape
    if tuple(state["decoder.weight"].shape) != (d, n):
        raise ValueError(f"{path}: decoder.weight has shape {tuple(state['decoder.weight'].shape)}, "
                         f"expected {(d, n)}")
    act_name = state.get("activation", "ReLU")
    k = int(state.get("activation_state_dict", {}).get("k", 0)) if act_name == "TopK" else 1
    cfg = SAEConfig(d_in=d, n_latents=n, k=max(k, 1), activation="topk" if act_name == "TopK" else "relu",
                    normalize=normalize or ("layernorm" if act_name == "TopK" else "none"), **provenance)
    sae = SAE(cfg, seed=None)
    with torch.no_grad():
        sae.W_enc.copy_(state["encoder.weight"])
        sae.W_dec.copy_(state["decoder.weight"].t())
        sae.b_enc.copy_(state["latent_bias"])
        sae.b_pre.copy_(state["pre_bias"])
    return sae


def folded_weights(sae: SAE) -> dict[str, torch.Tensor]:
    """Weights with a constant input scale folded in: dataset_unit_norm's scale (the SAE then works on raw
    activations), or per_token_unit_norm's 1/sqrt(d-1) relative to layer norm (it then works on
    layer-normalised inputs, as SAE Lens's 'layer_norm' gives them; equal up to LN's eps)."""
    c = sae.cfg
    s = {"dataset_unit_norm": float(sae.input_scale),
         "per_token_unit_norm": 1 / math.sqrt(max(c.d_in - 1, 1))}.get(c.normalize, 1.0)
    with torch.no_grad():
        return {"W_enc": (sae.W_enc * s).t().contiguous().cpu(), "b_enc": sae.b_enc.detach().cpu().clone(),
                "W_dec": (sae.W_dec / s).contiguous().cpu(), "b_dec": (sae.b_pre / s).detach().cpu()}


def to_saelens(sae: SAE, folder: str | Path, context_size: int = 64) -> Path:
    """Export SAE Lens's layout: cfg.json + sae_weights.safetensors (scales folded in)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    c = sae.cfg
    weights = folded_weights(sae)
    hook = f"blocks.{c.layer}.hook_{c.site or 'resid_post'}" if c.layer is not None else "unknown"
    cfg = {
        "architecture": "topk" if c.activation == "topk" else "standard",
        "d_in": c.d_in, "d_sae": c.n_latents, "dtype": c.dtype, "device": "cpu",
        "apply_b_dec_to_input": True,
        "normalize_activations": "layer_norm" if c.normalize in PER_TOKEN else "none",
        "activation_fn": c.activation, "activation_fn_kwargs": {"k": c.k} if c.activation == "topk" else {},
        "k": c.k if c.activation == "topk" else None,
        "model_name": c.model, "hook_name": hook, "hook_layer": c.layer, "context_size": context_size,
        "prepend_bos": False, "finetuning_scaling_factor": False,
        "metadata": {"model_name": c.model, "hook_name": hook, "context_size": context_size,
                     "exported_by": "saelab", "tokens_seen": int(sae.tokens_seen)},
    }
    atomic_write(folder / "sae_weights.safetensors", lambda p: save_file(weights, p))
    atomic_write_text(folder / "cfg.json", json.dumps(cfg, indent=2))
    return folder
def _foreign_format(meta) -> str:
    """Name the library that wrote a cfg.json that is not saelab's, from its keys."""
    keys = set(meta) if isinstance(meta, dict) else set()
    if {"d_sae", "d_in"} <= keys or "architecture" in keys and "hook_name" in keys:
        return "it looks like an SAE Lens config"
    if keys & {"expansion_factor", "num_latents", "normalize_decoder"}:
        return "it looks like an EleutherAI sparsify config"
    return f"keys: {sorted(keys)[:8]}"


def _check_saelab_folder(folder: Path) -> None:
    """Raise a clear error when `folder` is missing, or holds another library's SAE layout."""
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder} is not a folder: pass a folder written by SAE.save or `saelab train` "
                                "(e.g. runs/default/sae)")
    if (folder / "sae_weights.safetensors").is_file():
        raise ValueError(f"{folder} holds an SAE Lens SAE (sae_weights.safetensors); saelab reads its own "
                         "folders (cfg.json + sae.safetensors) and OpenAI .pt files (SAE.from_openai)")
    missing = [n for n in ("cfg.json", "sae.safetensors") if not (folder / n).is_file()]
    if missing:
        raise FileNotFoundError(f"{folder} is not a saved SAE: missing {', '.join(missing)} "
                                "(write one with SAE.save or `saelab train`)")
