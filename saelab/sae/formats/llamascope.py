"""Llama Scope (He et al. 2024, OpenMOSS; fnlp/Llama3_1-8B-Base-L{layer}{R,A,M}-{8,32}x): one JumpReLU SAE a folder.

    hyperparams.json                  d_model, d_sae, hook_point_in / _out, jump_relu_threshold (one for all latents),
                                      norm_activation ('dataset-wise'), dataset_average_activation_norm {in, out}
    checkpoints/final.safetensors     encoder.weight [n, d], encoder.bias [n], decoder.weight [d, n], decoder.bias [d]

Read as SAE Lens 6.54 reads it (its `llama_scope` converter, then `fold_activation_norm_scaling_factor`): the
encoder takes x * f with f = sqrt(d_model) / average input norm (or the factor SAE Lens's registry records for the
release), pre = f x W_enc + b_enc with no decoder bias subtracted, the threshold is jump_relu_threshold * f, and
the decoder's output is divided by f. saelab folds f into the weights the same way, so the SAE works on the raw
activations. This follows SAE Lens's reading; OpenMOSS's own lm-saes code was not checked here. A transcoder
(hook_point_out differs from hook_point_in) is refused.
"""

from __future__ import annotations

import math
from pathlib import Path

from saelab.sae.formats.build import sae_from_weights
from saelab.sae.formats.hooks import site_from_hook
from saelab.sae.formats.saelens import read_json, read_safetensors
from saelab.sae.model import SAE

CONFIG, WEIGHTS = "hyperparams.json", "checkpoints/final.safetensors"
DEFAULT_MODEL = "meta-llama/Llama-3.1-8B"  # SAE Lens's record for every Llama Scope release


def is_llamascope(folder: Path) -> bool:
    return (folder / CONFIG).is_file() and (folder / WEIGHTS).is_file()


def norm_factor(hp: dict, where) -> float:
    """f = sqrt(d_model) / average input norm for 'dataset-wise' normalisation, else 1."""
    if hp.get("norm_activation", "dataset-wise") != "dataset-wise":
        return 1.0
    try:
        return math.sqrt(float(hp["d_model"])) / float(hp["dataset_average_activation_norm"]["in"])
    except (KeyError, TypeError, ValueError, ZeroDivisionError) as e:
        raise ValueError(f"{where}/{CONFIG}: 'dataset-wise' normalisation without a usable "
                         f"dataset_average_activation_norm.in ({type(e).__name__}: {e})") from None


def from_llamascope(folder: str | Path, device=None, norm_scaling_factor: float | None = None, **provenance) -> SAE:
    """Load a Llama Scope folder. `norm_scaling_factor`: the factor f when known elsewhere (SAE Lens's registry),
    instead of the one computed from hyperparams.json."""
    folder = Path(folder)
    hp = read_json(folder / CONFIG)
    hook_in, hook_out = hp.get("hook_point_in"), hp.get("hook_point_out", hp.get("hook_point_in"))
    if hook_out != hook_in:
        raise ValueError(f"{folder}: a Llama Scope transcoder ({hook_in} -> {hook_out}) reconstructs another site "
                         "than its input, which saelab's SAEs do not; use it through sae_lens")
    if hp.get("act_fn", "jumprelu") not in ("jumprelu", "jump_relu"):
        raise ValueError(f"{folder}/{CONFIG}: act_fn {hp['act_fn']!r}; saelab reads Llama Scope's JumpReLU SAEs")
    if "jump_relu_threshold" not in hp:
        raise ValueError(f"{folder}/{CONFIG} has no jump_relu_threshold (found {sorted(hp)[:12]})")
    w = read_safetensors(folder / WEIGHTS)
    missing = [k for k in ("encoder.weight", "encoder.bias", "decoder.weight", "decoder.bias") if k not in w]
    if missing:
        raise ValueError(f"{folder}/{WEIGHTS} lacks {missing}; found {sorted(w)}")
    f = float(norm_scaling_factor) if norm_scaling_factor is not None else norm_factor(hp, folder)
    W_enc, W_dec = w["encoder.weight"].float().t() * f, w["decoder.weight"].float().t() / f
    site_layer = site_from_hook(hook_in)
    record = {"model": hp.get("model_name") or DEFAULT_MODEL, "hook": hook_in,
              "site": site_layer[0] if site_layer else None, "layer": site_layer[1] if site_layer else None,
              "source": f"llama_scope:{folder}", **provenance}
    threshold = float(hp["jump_relu_threshold"]) * f
    return sae_from_weights(folder, W_enc, w["encoder.bias"], W_dec, w["decoder.bias"].float() / f,
                            activation="jumprelu", subtracts_b_dec=False, threshold_N=threshold, device=device,
                            **record)
