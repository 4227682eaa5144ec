"""Other libraries' hook names, read as saelab's sites (`saelab.lm.sites`: resid_post, mlp_out, attn_out).

    TransformerLens (SAE Lens)   blocks.L.hook_resid_post   -> resid_post L
                                 blocks.L.hook_resid_pre    -> resid_post L-1 (the same stream, one block earlier)
                                 blocks.L.hook_mlp_out      -> mlp_out L
                                 blocks.L.hook_attn_out     -> attn_out L
                                 blocks.L.ln2.hook_normalized -> mlp_in L (the MLP's input, after its norm; SAE Lens's
                                                            Gemma-2 transcoders read it; hook_mlp_in is before the norm)
    Hugging Face module names    [model.]layers.L, [transformer.]h.L, gpt_neox.layers.L  -> resid_post L
    (sparsify, SAE Lens on HF)   ....L.mlp / .feed_forward                               -> mlp_out L
                                 ....L.self_attn / .attn / .attention                    -> attn_out L

Caveats: an SAE trained on a TransformerLens model loaded with center_writing_weights=True (SAE Lens's
default is off; the loader warns when the metadata says so) saw block outputs centred over d_model, which the
unprocessed Hugging Face model saelab hooks does not give. Gemma-2-style blocks put a norm after the MLP and
attention, before TransformerLens's hook_mlp_out / hook_attn_out: those are not mapped here.
"""

from __future__ import annotations

import re

_TL = re.compile(r"^blocks\.(\d+)\.(hook_resid_post|hook_resid_pre|hook_mlp_out|hook_attn_out|ln2\.hook_normalized)$")
_TL_SITES = {"ln2.hook_normalized": "mlp_in"}
_HF = re.compile(r"^(?:model\.|transformer\.|gpt_neox\.|base_model\.model\.)*(?:layers|h)\.(\d+)"
                 r"(?:\.(mlp|feed_forward|ffn|self_attn|attn|attention))?$")
_HF_SITES = {None: "resid_post", "mlp": "mlp_out", "feed_forward": "mlp_out", "ffn": "mlp_out",
             "self_attn": "attn_out", "attn": "attn_out", "attention": "attn_out"}


def site_from_hook(hook: str | None) -> tuple[str, int] | None:
    """(site, layer) for a hook name saelab understands, else None."""
    if not hook:
        return None
    m = _TL.match(hook)
    if m:
        layer, kind = int(m.group(1)), _TL_SITES.get(m.group(2), m.group(2).removeprefix("hook_"))
        if kind == "resid_pre":
            return ("resid_post", layer - 1) if layer >= 1 else None
        return kind, layer
    m = _HF.match(hook)
    if m:
        return _HF_SITES[m.group(2)], int(m.group(1))
    return None


def transformerlens_hook(site: str | None, layer: int | None) -> str:
    """SAE Lens's (TransformerLens's) name for a saelab site."""
    if layer is None:
        return "unknown"
    names = {v: k for k, v in _TL_SITES.items()}
    return f"blocks.{layer}.{names.get(site, 'hook_' + (site or 'resid_post'))}"


def hf_hookpoint(site: str | None, layer: int | None, model=None) -> str:
    """sparsify's name for a saelab site: the Hugging Face base model's module path ('layers.8' for
    Llama-style models, 'h.8' for GPT-2; '.mlp' / '.self_attn' / '.attn' for the other sites)."""
    if layer is None:
        return "unknown"
    gpt2 = model is not None and "gpt2" in str(model).lower()
    block = f"h.{layer}" if gpt2 else f"layers.{layer}"
    suffix = {"resid_post": "", "mlp_out": ".mlp", "attn_out": ".attn" if gpt2 else ".self_attn"}[site or "resid_post"]
    return block + suffix


_TL_MODELS = {"gpt2-small": "gpt2", "gpt2-medium": "gpt2-medium", "gpt2-large": "gpt2-large", "gpt2-xl": "gpt2-xl"}
_TL_PREFIXES = {"pythia-": "EleutherAI/", "gemma-": "google/", "Llama-": "meta-llama/", "Qwen": "Qwen/"}


def model_id(name: str | None) -> str | None:
    """The name saelab loads a model by, for a TransformerLens model name (SAE Lens records those):
    'gpt2-small' -> 'gpt2', 'pythia-70m-deduped' -> 'EleutherAI/pythia-70m-deduped'; others unchanged."""
    if not name or "/" in name:
        return name
    if name in _TL_MODELS:
        return _TL_MODELS[name]
    for prefix, org in _TL_PREFIXES.items():
        if name.startswith(prefix):
            return org + name
    return name
