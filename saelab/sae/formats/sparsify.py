"""EleutherAI sparsify's folder: ``cfg.json`` (SparseCoderConfig + d_in) and ``sae.safetensors``
(encoder.weight [n, d], encoder.bias [n], W_dec [n, d], b_dec [d]). A training run saves one such
folder per hook point (named by the module path, e.g. 'layers.8'), side by side.

sparsify's encoder: z = TopK(ReLU(encoder(x - b_dec))), x_hat = z W_dec + b_dec: saelab's SAE with the
same tensors and no input normalisation (ReLU before or after TopK selects the same values).
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import save_file

from saelab.files import atomic_write, atomic_write_text
from saelab.sae.config import SAEConfig
from saelab.sae.formats.hooks import hf_hookpoint, site_from_hook
from saelab.sae.formats.saelens import read_json, read_safetensors
from saelab.sae.model import SAE

WEIGHTS, CONFIG = "sae.safetensors", "cfg.json"
CONFIG_KEYS = {"expansion_factor", "num_latents", "normalize_decoder", "skip_connection", "transcode"}


def is_sparsify_config(meta: dict) -> bool:
    return "format_version" not in meta and "d_in" in meta and bool(CONFIG_KEYS & set(meta))


def hookpoints(folder: Path) -> list[str]:
    """The hook points of a sparsify checkpoint folder (its subfolders holding cfg.json + sae.safetensors)."""
    return sorted(p.name for p in folder.iterdir()
                  if p.is_dir() and (p / CONFIG).is_file() and (p / WEIGHTS).is_file())


def from_sparsify(folder: str | Path, hookpoint: str | None = None, device=None) -> SAE:
    """Load a sparsify SAE folder, or one hook point (`hookpoint`, e.g. 'layers.8') of a checkpoint."""
    folder = Path(folder)
    if hookpoint is not None or not (folder / CONFIG).is_file():
        points = hookpoints(folder)
        if hookpoint is None:
            if len(points) != 1:
                raise ValueError(f"{folder} is a sparsify checkpoint of {len(points)} hook points {points}; "
                                 "pick one: load_sae(path, hookpoint=...) or `--sae PATH/HOOKPOINT`")
            hookpoint = points[0]
        if hookpoint not in points:
            raise ValueError(f"{folder} has no hook point {hookpoint!r}; it has {points}")
        folder = folder / hookpoint
    cfg = read_json(folder / CONFIG)
    for flag, why in (("transcode", "a transcoder predicts another module's output"),
                      ("skip_connection", "a skip connection adds x @ W_skip")):
        if cfg.get(flag):
            raise ValueError(f"{folder}: sparsify {flag}=True is not supported ({why}; saelab's SAE has no "
                             "equivalent)")
    if cfg.get("activation", "topk") != "topk":
        raise ValueError(f"{folder}: sparsify activation {cfg['activation']!r} is not supported; saelab reads 'topk'")
    w = read_safetensors(folder / WEIGHTS)
    missing = [k for k in ("encoder.weight", "encoder.bias", "W_dec", "b_dec") if k not in w]
    if missing:
        raise ValueError(f"{folder}/{WEIGHTS} lacks {missing} (an encoder-only checkpoint?); found {sorted(w)}")
    n, d = w["encoder.weight"].shape
    hook = folder.name
    site_layer = site_from_hook(hook)
    sae_cfg = SAEConfig(d_in=d, n_latents=n, k=int(cfg.get("k", 32)), activation="topk", normalize="none",
                        multi_topk=bool(cfg.get("multi_topk", False)) and 4 * int(cfg.get("k", 32)) <= n,
                        site=site_layer[0] if site_layer else None, layer=site_layer[1] if site_layer else None,
                        hook=hook, source=f"sparsify:{folder}")
    sae = SAE(sae_cfg, seed=None, device=device)
    with torch.no_grad():
        sae.W_enc.copy_(w["encoder.weight"].float())
        sae.b_enc.copy_(w["encoder.bias"].float())
        sae.W_dec.copy_(w["W_dec"].float())
        sae.b_pre.copy_(w["b_dec"].float())
    return sae


def to_sparsify(sae: SAE, folder: str | Path) -> Path:
    """Export sparsify's layout (loads with `sparsify.SparseCoder.load_from_disk`). sparsify has no input
    normalisation: a dataset_unit_norm scale is folded into the weights; per-token normalisations and
    non-TopK SAEs cannot be expressed and get an error."""
    from saelab.sae.formats.saelens import folded_weights

    c = sae.cfg
    if c.activation != "topk":
        raise ValueError(f"sparsify SAEs are TopK; this one is {c.activation!r}: export it with to_saelens")
    if c.normalize not in ("none", "dataset_unit_norm"):
        raise ValueError(f"sparsify has no input normalisation, and this SAE normalises each token "
                         f"({c.normalize!r}); export it with to_saelens (SAE Lens's layer_norm)")
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    f = folded_weights(sae)
    tensors = {"encoder.weight": f["W_enc"].t().contiguous(), "encoder.bias": f["b_enc"],
               "W_dec": f["W_dec"], "b_dec": f["b_dec"]}
    cfg = {"activation": "topk", "expansion_factor": max(c.n_latents // c.d_in, 1), "normalize_decoder": True,
           "num_latents": c.n_latents, "k": c.k, "multi_topk": c.multi_topk, "skip_connection": False,
           "transcode": False, "d_in": c.d_in}
    atomic_write(folder / WEIGHTS, lambda p: save_file(tensors, p))
    atomic_write_text(folder / CONFIG, json.dumps(cfg))
    return folder


def default_hookpoint(sae: SAE) -> str:
    """The folder name sparsify would give this SAE's hook point."""
    return hf_hookpoint(sae.cfg.site, sae.cfg.layer, sae.cfg.model)
