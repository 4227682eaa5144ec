"""Gemma Scope (Lieberum et al. 2024; google/gemma-scope-2b-pt-res and its siblings) and Gemma Scope 2
(google/gemma-scope-2-*): one JumpReLU SAE per folder, named by layer, width and L0, e.g.
``layer_20/width_16k/average_l0_71/params.npz``.

    params.npz           W_enc [d, n], W_dec [n, d], b_enc [n], b_dec [d], threshold [n]   (Gemma Scope)
    params.safetensors   w_enc, w_dec, b_enc, b_dec, threshold (+ config.json)            (Gemma Scope 2)

Their forward (the release's tutorial; SAE Lens's JumpReLU with apply_b_dec_to_input=False):
pre = x W_enc + b_enc, f = pre * (pre > threshold), x_hat = f W_dec + b_dec. No decoder bias is subtracted from
the input; `sae_from_weights` folds that into b_enc. The files carry no model or hook name: saelab reads them from
the path (the repository name, the ``layer_L`` folder), as SAE Lens does. Residual-stream SAEs ('res',
'resid_post') map to saelab's resid_post; Gemma's MLP and attention SAEs sit after a norm saelab's mlp_out /
attn_out do not include (or at hook_z), so they load without a site (pass site= and layer= to splice them);
transcoders are refused (they reconstruct another site than their input).
"""

from __future__ import annotations

import re
import warnings
from pathlib import Path

import numpy as np

from saelab.sae.formats.build import sae_from_weights
from saelab.sae.formats.hooks import transformerlens_hook
from saelab.sae.model import SAE

FILES = ("params.npz", "params.safetensors")
_REPO = re.compile(r"gemma-scope-(2-)?(\d+(?:\.\d+)?[bm])-(pt|it)(?:-([a-z]+))?")
_LAYER = re.compile(r"^layer_(\d+)")
_L0 = re.compile(r"average_l0_(\d+)")


def params_file(folder: Path) -> Path | None:
    """The folder's params.npz / params.safetensors, or None."""
    return next((folder / f for f in FILES if (folder / f).is_file()), None)


def read_params(path: Path) -> dict:
    """The arrays of params.npz (no pickled objects: allow_pickle=False) or params.safetensors, keys as Gemma Scope 1
    spells them (W_enc, W_dec; Gemma Scope 2 writes w_enc, w_dec)."""
    try:
        if path.suffix == ".npz":
            with np.load(path, allow_pickle=False) as data:
                arrays = {k: data[k] for k in data.files}
        else:
            from safetensors.numpy import load_file

            arrays = load_file(path)
    except Exception as e:  # noqa: BLE001 - numpy / safetensors / zipfile raise many types for damaged files
        raise ValueError(f"{path} could not be read as Gemma Scope parameters ({type(e).__name__}: {e}); fetch it "
                         "again") from None
    return {("W_" + k[2:] if k.startswith("w_") else k): v for k, v in arrays.items()}


def provenance_from_path(path: Path) -> dict:
    """model, site, layer, hook and the release's L0 read from a Gemma Scope path (a Hub cache path names the
    repository, models--google--gemma-scope-2b-pt-res)."""
    text = str(path).replace("\\", "/")
    out: dict = {}
    repo = _REPO.search(text)
    if repo:
        v3, size, kind, what = repo.groups()
        it = "-it" if kind == "it" else ""
        out["model"] = f"google/gemma-3-{size}-{kind}" if v3 else f"google/gemma-2-{size}{it}"
        if what:
            out["kind"] = what
    layer = next((int(m.group(1)) for part in path.parts if (m := _LAYER.match(part))), None)
    if layer is not None:
        out["layer"] = layer
    l0 = _L0.search(text)
    if l0:
        out["l0"] = int(l0.group(1))
    for part in path.parts:  # Gemma Scope 2 names the site in a folder: resid_post[_all], mlp_out, attn_out, ...
        kind = next((k for prefix, k in (("resid_post", "res"), ("mlp_out", "mlp"), ("attn_out", "att"),
                                         ("transcoder", "transcoders"), ("clt", "transcoders"))
                     if part.startswith(prefix)), None)
        out["kind"] = kind or out.get("kind")
    return out


def from_gemmascope(path: str | Path, device=None, **provenance) -> SAE:
    """Load a Gemma Scope folder (or its params file). `provenance` (model=, site=, layer=, source=) overrides what
    the path says."""
    path = Path(path)
    file = path if path.is_file() else params_file(path)
    if file is None:
        raise ValueError(f"{path} holds no Gemma Scope parameters ({' or '.join(FILES)})")
    if "embedding" in file.parts:
        raise ValueError(f"{file} is a Gemma Scope embedding SAE (trained on embeddings scaled by sqrt(d_model)); "
                         "saelab has no embedding site: use it through sae_lens")
    p = read_params(file)
    info = provenance_from_path(file)
    if info.get("kind", "").startswith("transcoder") or "affine_skip_connection" in p:
        raise ValueError(f"{file} is a Gemma Scope transcoder: it reconstructs another site than its input, which "
                         "saelab's SAEs do not; use it through sae_lens")
    missing = [k for k in ("W_enc", "W_dec", "b_enc", "b_dec", "threshold") if k not in p]
    if missing:
        raise ValueError(f"{file} lacks {missing} (found {sorted(p)}); a Gemma Scope SAE has W_enc, W_dec, b_enc, "
                         "b_dec and threshold")
    layer = info.get("layer")
    site = "resid_post" if info.get("kind") == "res" and layer is not None else None
    hook = {"res": "hook_resid_post", "mlp": "hook_mlp_out", "att": "attn.hook_z"}.get(info.get("kind", ""))
    if site is None and "site" not in provenance:
        warnings.warn(f"{file}: not a residual-stream SAE saelab can place (Gemma's MLP and attention SAEs sit after "
                      "a norm or at hook_z); it encodes activations you pass it, and splices only with site= and "
                      "layer=", stacklevel=3)
    record = {"model": info.get("model"), "site": site, "layer": layer if site else None,
              "hook": f"blocks.{layer}.{hook}" if hook and layer is not None else None,
              "source": f"gemma_scope:{path}", **provenance}
    if record["site"] and not record["hook"]:
        record["hook"] = transformerlens_hook(record["site"], record["layer"])
    # a JumpReLU SAE has no k; the release's L0 sets the default k' of test-time TopK sweeps
    return sae_from_weights(file, p["W_enc"], p["b_enc"], p["W_dec"], p["b_dec"], activation="jumprelu",
                            subtracts_b_dec=False, k=info.get("l0", 32), threshold_N=p["threshold"], device=device,
                            **record)
