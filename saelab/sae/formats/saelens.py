"""SAE Lens's folder: ``cfg.json`` + ``sae_weights.safetensors`` (W_enc [d, n], W_dec [n, d], b_enc, b_dec,
and ``threshold`` for JumpReLU).

SAE Lens's inference SAE (6.x):  pre = (norm_in(x) - b_dec * apply_b_dec_to_input) @ W_enc + b_enc;
z = ReLU(pre) (standard), TopK then ReLU (topk), ReLU(pre) * (pre > threshold) (jumprelu);
x_hat = norm_out(z @ W_dec + b_dec). Everything maps onto saelab's SAE exactly (fp32 rounding aside):
apply_b_dec_to_input=False folds into b_enc, a TopK SAE's rescale_acts_by_decoder_norm folds the decoder
norms into the encoder, and SAE Lens's 'layer_norm' is saelab's 'layernorm' ((x - mean) / (std + 1e-5),
undone with std). Configs written before SAE Lens 6 (hook_point, activation_fn_str, a boolean
normalize_activations, TopK as 'standard' + activation_fn 'topk') are read the way SAE Lens reads them.

BatchTopK and Matryoshka BatchTopK (SAE Lens 6.54): SAE Lens has no inference class for them. Its training
save (`save_model`, the trainer's checkpoints) writes architecture 'batchtopk' / 'matryoshka_batchtopk' with the
training fields (k, topk_threshold_lr, rescale_acts_by_decoder_norm, matryoshka_widths) and a scalar float64
'topk_threshold' tensor; only `TrainingSAE.load_from_disk` reads it. Its inference save (`save_inference_model`,
the trainer's final output) writes a 'jumprelu' folder whose 'threshold' is topk_threshold repeated over the
latents (decoder norms folded in first), and keeps the training family in metadata.training_architecture and
metadata.training_architecture_details. `to_saelens` writes that inference form for saelab's BatchTopK and
Matryoshka SAEs (so `sae_lens.SAE.load_from_disk` reads it), with k and matryoshka_widths in those metadata
fields; `from_saelens` reads both forms back as activation 'batchtopk' (with the widths when recorded). A
trained JumpReLU is architecture 'jumprelu' in both of SAE Lens's saves (a per-latent 'threshold'); its
bandwidth and initial threshold are carried over, not its l0_coefficient (saelab's L0 term is relative to
normalised MSE, SAE Lens's to summed squared error).
"""

from __future__ import annotations

import json
import math
import warnings
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from saelab.files import atomic_write, atomic_write_text
from saelab.sae.config import SAEConfig
from saelab.sae.families import FAMILIES, family_of, saelens_architectures
from saelab.sae.families.matryoshka import check_widths
from saelab.sae.formats.build import sae_from_weights
from saelab.sae.formats.hooks import model_id, site_from_hook, transformerlens_hook
from saelab.sae.input_norm import PER_TOKEN
from saelab.sae.model import SAE

WEIGHTS, CONFIG = "sae_weights.safetensors", "cfg.json"
SAELENS_FORMAT = "6.54.12"  # the SAE Lens version whose layout `to_saelens` writes (and is tested against)
ARCHITECTURES = saelens_architectures()
"""SAE Lens architecture -> saelab activation, from the families' registry ('batchtopk' and 'matryoshka_batchtopk'
are training folders)."""
BATCHTOPK_FAMILY = tuple(arch for arch, act in ARCHITECTURES.items() if act == "batchtopk")
"""SAE Lens's training folders of BatchTopK SAEs (a scalar 'topk_threshold')."""
NO_EQUIVALENT = {
    "gated": "a gated SAE's separate gate and magnitude encoders have no saelab equivalent",
    "abstopk": "TopK of |pre| keeps negative activations, which saelab's activations do not",
    "matching_pursuit": "matching pursuit encodes iteratively, not with one encoder product",
    "temporal": "a temporal SAE attends over context, not one token at a time",
}
NORMALIZATIONS = {"none": "none", "layer_norm": "layernorm", "constant_norm_rescale": "constant_norm_rescale",
                  "expected_average_only_in": "none"}


def read_json(path: Path) -> dict:
    try:
        meta = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"{path} is damaged ({e}); fetch or export the SAE again") from None
    if not isinstance(meta, dict):
        raise ValueError(f"{path} is not an SAE config (a JSON {type(meta).__name__})")
    return meta


def read_safetensors(path: Path) -> dict[str, torch.Tensor]:
    try:
        return load_file(path, device="cpu")
    except Exception as e:  # noqa: BLE001 - safetensors raises its own error types for truncated files
        raise ValueError(f"{path} is damaged or truncated ({type(e).__name__}: {e}); fetch or export it again") \
            from None


def _pre_6_config(cfg: dict) -> dict:
    """A config written before SAE Lens 6, in 6's terms (as SAE Lens's own loader converts it)."""
    meta = cfg.get("metadata") or {}
    major = str(meta.get("sae_lens_version") or cfg.get("sae_lens_version") or "0").split(".")[0]
    if major.isdigit() and int(major) >= 6:
        return cfg
    cfg = {{"hook_point": "hook_name", "hook_point_head_index": "hook_head_index",
            "activation_fn_str": "activation_fn"}.get(k, k): v for k, v in cfg.items()}
    act = cfg.get("activation_fn") or "relu"
    k = (cfg.get("activation_fn_kwargs") or {}).get("k")
    if cfg.get("architecture", "standard") == "standard":
        if act == "topk" and k is not None:
            cfg["architecture"], cfg["k"] = "topk", k
        elif act != "relu":
            raise ValueError(f"SAE Lens activation_fn {act!r} is not supported for a standard SAE; saelab reads "
                             "relu, topk (with activation_fn_kwargs.k) and the jumprelu architecture")
    if isinstance(cfg.get("normalize_activations"), bool):
        cfg["normalize_activations"] = "expected_average_only_in" if cfg["normalize_activations"] else "none"
    hook = cfg.get("hook_name") or ""
    cfg.setdefault("reshape_activations", "hook_z" if "hook_z" in hook else "none")
    return cfg


def _unsupported(folder: Path, arch: str) -> ValueError:
    why = NO_EQUIVALENT.get(arch, "an architecture saelab does not know")
    return ValueError(f"{folder}: SAE Lens architecture {arch!r} is not supported ({why}); saelab reads "
                      f"{sorted(ARCHITECTURES)}. Use this SAE through sae_lens itself (SAE.load_from_disk, or "
                      "TrainingSAE.load_from_disk for a training folder)")


def _training_fields(cfg: dict) -> dict:
    """SAE Lens's training fields: a training folder's own cfg.json keys, over those an inference folder keeps
    in metadata.training_architecture_details."""
    details = (cfg.get("metadata") or {}).get("training_architecture_details")
    return {**(details if isinstance(details, dict) else {}), **cfg}


def _threshold(folder: Path, arch: str, w: dict[str, torch.Tensor], n: int) -> torch.Tensor | None:
    """The per-latent threshold [n]: a jumprelu folder's 'threshold' (or an older 'log_threshold'), a BatchTopK
    training folder's scalar 'topk_threshold' repeated; None for the other architectures."""
    if arch in BATCHTOPK_FAMILY:
        t = w.get("topk_threshold")
        if t is None or t.numel() != 1:
            raise ValueError(f"{folder}/{WEIGHTS}: an SAE Lens {arch!r} training folder needs a scalar "
                             f"'topk_threshold' (found {sorted(w)}); save it again with SAE Lens's save_model, or "
                             "with save_inference_model for its jumprelu form")
        return torch.full((n,), float(t.double()))
    if not arch.startswith("jumprelu"):
        return None
    if "threshold" in w:
        t = w["threshold"].float()
    elif "log_threshold" in w:
        t = w["log_threshold"].float().exp()
    else:
        raise ValueError(f"{folder}/{WEIGHTS}: a jumprelu SAE without 'threshold'; found {sorted(w)}")
    if t.numel() != n:
        raise ValueError(f"{folder}/{WEIGHTS}: 'threshold' has shape {tuple(t.shape)}, expected ({n},)")
    return t.reshape(n)


def _family(cfg: dict, arch: str, threshold: torch.Tensor | None) -> str:
    """saelab's activation: a jumprelu folder that SAE Lens saved from a BatchTopK or Matryoshka SAE (one
    threshold over all latents) reads as BatchTopK; the same inference either way."""
    trained = (cfg.get("metadata") or {}).get("training_architecture")
    if arch == "jumprelu" and trained in BATCHTOPK_FAMILY and threshold is not None \
            and bool((threshold == threshold[0]).all()):
        return "batchtopk"
    return ARCHITECTURES[arch]


def _widths(folder: Path, fields: dict, activation: str, n: int) -> list[int] | None:
    widths = fields.get("matryoshka_widths") if FAMILIES[activation].nests else None
    if not widths:
        return None
    try:
        return check_widths(widths, n)
    except (TypeError, ValueError) as e:
        raise ValueError(f"{folder}/{CONFIG}: matryoshka_widths {widths!r} do not fit d_sae={n} ({e}); fix them "
                         "there, or delete them to load the SAE as plain BatchTopK (inference is the same)") from None


def _read_config(folder: Path) -> tuple[dict, str, str]:
    """(cfg.json in SAE Lens 6's terms, its architecture, its normalize_activations), checked for what saelab reads."""
    cfg = _pre_6_config(read_json(folder / CONFIG))
    arch = cfg.get("architecture", "standard")
    if arch not in ARCHITECTURES:
        raise _unsupported(folder, arch)
    norm = cfg.get("normalize_activations", "none") or "none"
    if norm not in NORMALIZATIONS:
        raise ValueError(f"{folder}: normalize_activations={norm!r} is not supported; saelab reads "
                         f"{sorted(NORMALIZATIONS)}")
    if norm == "expected_average_only_in":
        warnings.warn(f"{folder}: normalize_activations='expected_average_only_in' without its scaling factor; "
                      "like SAE Lens's own loader, saelab applies no scaling (fold the factor into the weights "
                      "to use it)", stacklevel=3)
    if cfg.get("reshape_activations", "none") not in ("none", None):
        raise ValueError(f"{folder}: reshape_activations={cfg['reshape_activations']!r} (attention hook_z SAEs) "
                         "is not supported; saelab's sites are resid_post, mlp_out and attn_out")
    return cfg, arch, norm


def _read_weights(folder: Path, cfg: dict, arch: str) -> dict[str, torch.Tensor]:
    """The weights as saelab uses them (W_enc [d, n] here): apply_b_dec_to_input=False folded into b_enc (for a family
    whose encoder subtracts b_pre), a TopK SAE's rescale_acts_by_decoder_norm into the encoder; the raw tensors'
    other keys kept (the threshold's, a family's own)."""
    family = FAMILIES[ARCHITECTURES[arch]]
    w = read_safetensors(folder / WEIGHTS)
    missing = [k for k in ("W_enc", "W_dec", "b_enc", "b_dec") if k not in w]
    if missing:
        raise ValueError(f"{folder}/{WEIGHTS} lacks {missing}; found {sorted(w)}")
    scaling = w.pop("scaling_factor", None)
    if scaling is not None and not torch.allclose(scaling.float(), torch.ones_like(scaling.float())):
        raise ValueError(f"{folder}: a 'scaling_factor' that is not all ones (SAE Lens's fine-tuning scale) is not "
                         "supported; fold it into W_dec first")
    known = {"W_enc", "W_dec", "b_enc", "b_dec", "threshold", "log_threshold", "topk_threshold",
             *family.saelens_tensors}
    if set(w) - known:
        raise ValueError(f"{folder}/{WEIGHTS} has tensors saelab does not know how to use: {sorted(set(w) - known)}")
    W_enc, W_dec = w["W_enc"].float(), w["W_dec"].float()  # [d, n], [n, d]
    b_enc, b_dec = w["b_enc"].float(), w["b_dec"].float()
    d, n = W_enc.shape
    if tuple(W_dec.shape) != (n, d):
        raise ValueError(f"{folder}: W_dec has shape {tuple(W_dec.shape)}, expected {(n, d)} from W_enc (saelab's "
                         "SAEs and transcoders write as wide as they read: d_out = d_in)")
    if family.centres_input and not cfg.get("apply_b_dec_to_input", True):
        # pre = x W_enc + b_enc = (x - b_dec) W_enc + (b_enc + b_dec W_enc)
        b_enc = b_enc + b_dec @ W_enc
    if arch in ("topk", *BATCHTOPK_FAMILY) and cfg.get("rescale_acts_by_decoder_norm"):
        # BatchTopK's topk_threshold is in units of the rescaled pre-activations: unchanged by the fold
        norms = W_dec.norm(dim=-1)
        W_enc, b_enc, W_dec = W_enc * norms, b_enc * norms, W_dec / norms[:, None]
    return {**w, "W_enc": W_enc, "W_dec": W_dec, "b_enc": b_enc, "b_dec": b_dec}


def _location(folder: Path, cfg: dict, norm: str) -> dict:
    """{model, site, layer, hook} from the folder's metadata, with a warning where saelab cannot splice it as is."""
    meta = cfg.get("metadata") or {}
    hook = meta.get("hook_name") or cfg.get("hook_name")
    site_layer = site_from_hook(hook)
    if site_layer is None:
        warnings.warn(f"{folder}: hook {hook!r} is not a site saelab knows (resid_post, mlp_out, attn_out of a "
                      "GPT-2 or Llama-style block); pass site= and layer= to load_sae to splice it", stacklevel=3)
    tl_kwargs = meta.get("model_from_pretrained_kwargs") or cfg.get("model_from_pretrained_kwargs") or {}
    if tl_kwargs.get("center_writing_weights") and NORMALIZATIONS[norm] == "none":
        warnings.warn(f"{folder}: trained on a TransformerLens model with center_writing_weights=True (block outputs "
                      "centred over d_model); saelab hooks the unprocessed Hugging Face model, so its inputs here "
                      "keep the mean that training removed", stacklevel=3)
    return {"model": model_id(meta.get("model_name") or cfg.get("model_name")),
            "site": site_layer[0] if site_layer else None, "layer": site_layer[1] if site_layer else None,
            "hook": hook}


def from_saelens(folder: str | Path, device=None) -> SAE:
    """Load an SAE Lens folder (standard/ReLU, TopK, JumpReLU, and BatchTopK / Matryoshka BatchTopK in either of
    SAE Lens's saves; normalize_activations none, layer_norm or constant_norm_rescale)."""
    folder = Path(folder)
    cfg, arch, norm = _read_config(folder)
    w = _read_weights(folder, cfg, arch)
    d, n = w["W_enc"].shape
    where = _location(folder, cfg, norm)
    threshold = _threshold(folder, arch, w, n)
    activation = _family(cfg, arch, threshold)
    fields = _training_fields(cfg)
    k = fields.get("k") or (cfg.get("activation_fn_kwargs") or {}).get("k") or 0
    # BatchTopK's k is a mean over the batch (a float in SAE Lens); a ReLU / JumpReLU SAE has no k: 32 sets
    # test-time TopK sweeps' default
    family = FAMILIES[activation]
    k = round(float(k)) if k and family.has_k else 32
    return sae_from_weights(folder, w["W_enc"], w["b_enc"], w["W_dec"], w["b_dec"], activation=activation,
                            subtracts_b_dec=True, k=k, threshold_N=threshold,
                            matryoshka_widths=_widths(folder, fields, activation, n), normalize=NORMALIZATIONS[norm],
                            device=device, extra={t: w[t] for t in family.saelens_tensors if t in w},
                            **family.saelens_options(fields, site_from_hook), **where, source=f"sae_lens:{folder}")


def folded_weights(sae: SAE) -> dict[str, torch.Tensor]:
    """SAE Lens's tensors (W_enc [d, n]) with a constant input scale folded in: dataset_unit_norm's scale
    (the SAE then works on raw activations), or per_token_unit_norm's 1/sqrt(d-1) relative to layer norm (it
    then works on layer-normalised inputs, as SAE Lens's 'layer_norm' gives them; equal up to LN's eps)."""
    c = sae.cfg
    s = {"dataset_unit_norm": float(sae.input_scale),
         "per_token_unit_norm": 1 / math.sqrt(max(c.d_in - 1, 1))}.get(c.normalize, 1.0)
    with torch.no_grad():
        out = {"W_enc": (sae.W_enc * s).t().contiguous().cpu(), "b_enc": sae.b_enc.detach().cpu().clone(),
               "W_dec": (sae.W_dec / s).contiguous().cpu(), "b_dec": (sae.b_pre / s).detach().cpu()}
        if hasattr(sae, "threshold"):  # BatchTopK exports as SAE Lens does: a JumpReLU at its threshold
            out["threshold"] = sae.threshold.detach().cpu().clone()
    return out


def training_record(cfg: SAEConfig) -> dict:
    """What SAE Lens's inference save keeps of the training family in metadata: training_architecture (SAE
    Lens's name for it) and training_architecture_details, here only the fields that mean the same in both
    libraries (k, matryoshka_widths; JumpReLU's bandwidth and initial threshold): the family's own."""
    family = family_of(cfg)
    return {"training_architecture": family.training_architecture(cfg),
            "training_architecture_details": family.saelens_details(cfg)}


def to_saelens(sae: SAE, folder: str | Path, context_size: int = 64) -> Path:
    """Export SAE Lens's inference layout: cfg.json + sae_weights.safetensors (scales folded in); loads with
    `sae_lens.SAE.load_from_disk`. BatchTopK and Matryoshka BatchTopK go as SAE Lens's own inference save writes
    them: a 'jumprelu' folder at the threshold, the family and its widths in metadata (`training_record`). Not
    the training layout ('batchtopk' / 'matryoshka_batchtopk'): `SAE.load_from_disk` refuses that one."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    c, family = sae.cfg, family_of(sae.cfg)
    weights = family.saelens_weights(sae) or folded_weights(sae)
    arch = family.export_architecture(c)
    writes = family.writes(c)
    hook = c.hook if c.source and c.source.startswith("sae_lens") and c.hook else transformerlens_hook(c.site, c.layer)
    norm = {"constant_norm_rescale": "constant_norm_rescale"}.get(c.normalize,
                                                                  "layer_norm" if c.normalize in PER_TOKEN else "none")
    cfg = {
        "architecture": arch, "d_in": c.d_in, "d_sae": c.n_latents, "dtype": "float32", "device": "cpu",
        "apply_b_dec_to_input": family.centres_input, "normalize_activations": norm, "reshape_activations": "none",
        **({"d_out": int(sae.W_dec.shape[1]), "hook_name_out": transformerlens_hook(writes, c.layer)}
           if family.data_width(c) != c.d_in else {}),  # it reads one site and writes another (a transcoder)
        **({"k": c.k, "rescale_acts_by_decoder_norm": False} if arch == "topk" else {}),
        "model_name": c.model, "hook_name": hook, "hook_layer": c.layer,  # where SAE Lens < 6 reads them
        "metadata": {"sae_lens_version": SAELENS_FORMAT, "sae_lens_training_version": SAELENS_FORMAT,
                     "model_name": c.model, "hook_name": hook, "hook_head_index": None, "context_size": context_size,
                     "prepend_bos": False, "exported_by": "saelab", "tokens_seen": int(sae.tokens_seen),
                     **training_record(c)},
    }
    atomic_write(folder / WEIGHTS, lambda p: save_file(weights, p))
    atomic_write_text(folder / CONFIG, json.dumps(cfg, indent=2))
    return folder
