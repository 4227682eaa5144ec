"""SAE files across the ecosystem, one module each, and `load_sae`, which recognises them.

    (saelab's own folder, cfg.json with format_version + sae.safetensors: `saelab.sae.folder`, SAE.save/load)
    saelens    SAE Lens (cfg.json + sae_weights.safetensors): standard, topk, jumprelu, and its batchtopk /
               matryoshka_batchtopk training folders (as saelab's 'batchtopk'); exports BatchTopK and
               Matryoshka as SAE Lens's inference save writes them (jumprelu at the threshold)
    sparsify   EleutherAI sparsify (cfg.json + sae.safetensors, one folder per hook point)
    openai     the paper's released .pt state dicts (torch's weights_only loader: tensors, no code)
    hub        hf://owner/repo[/subfolder] on the Hugging Face Hub
    hooks      the other libraries' hook names as saelab's (site, layer)
"""

from __future__ import annotations

from pathlib import Path

from saelab.sae.folder import FORMAT_VERSION
from saelab.sae.formats.hub import PREFIX as HUB_PREFIX
from saelab.sae.formats.hub import download
from saelab.sae.formats.openai import from_openai
from saelab.sae.formats.saelens import folded_weights, from_saelens, to_saelens
from saelab.sae.formats.sparsify import from_sparsify, hookpoints, is_sparsify_config, to_sparsify
from saelab.sae.model import SAE

__all__ = ["FORMAT_VERSION", "detect_format", "folded_weights", "from_openai", "from_saelens", "from_sparsify",
           "load_sae", "to_saelens", "to_sparsify"]

SUPPORTED = ("a saelab folder (cfg.json with format_version + sae.safetensors), an SAE Lens folder (cfg.json + "
             "sae_weights.safetensors), an EleutherAI sparsify folder or checkpoint (cfg.json + sae.safetensors, "
             "one subfolder per hook point), an OpenAI .pt state dict, or hf://owner/repo[/subfolder or /file.pt]")


def detect_format(path: str | Path) -> str:
    """'saelab', 'sae_lens', 'sparsify', 'sparsify_checkpoint' or 'openai' for a local path; else a
    ValueError naming what the path holds and what is supported."""
    from saelab.sae.formats.saelens import read_json

    path = Path(path)
    if path.is_file():
        if path.suffix in (".pt", ".pth"):
            return "openai"
        raise ValueError(f"{path} is a file saelab does not read ({path.suffix or 'no suffix'}); pass {SUPPORTED}")
    if not path.is_dir():
        raise FileNotFoundError(f"{path} does not exist; pass {SUPPORTED}")
    names = {p.name for p in path.iterdir()}
    if {"cfg.json", "sae_weights.safetensors"} <= names:
        return "sae_lens"
    if {"cfg.json", "sae.safetensors"} <= names:
        meta = read_json(path / "cfg.json")
        if "format_version" in meta and "config" in meta:
            return "saelab"
        if is_sparsify_config(meta):
            return "sparsify"
        raise ValueError(f"{path}/cfg.json is neither saelab's nor sparsify's (keys {sorted(meta)[:10]}); "
                         f"saelab reads {SUPPORTED}")
    if hookpoints(path):
        return "sparsify_checkpoint"
    shown = sorted(names)[:10]
    raise ValueError(f"{path} holds no SAE saelab recognises (found {shown}{' ...' if len(names) > 10 else ''}); "
                     f"saelab reads {SUPPORTED}")


def load_sae(source: str | Path, hookpoint: str | None = None, device=None, revision: str | None = None,
             **provenance) -> SAE:
    """Load an SAE from any supported layout into saelab's `SAE`: a local path, or hf://owner/repo[/subfolder].

    A saelab run folder (`saelab train --out`, a `saelab frontier` point: one holding `sae/`) loads its SAE.
    `hookpoint` picks one SAE of a sparsify checkpoint (e.g. 'layers.8'). `provenance` overrides what the
    files say or lack (model=, site=, layer=), e.g. for a folder whose hook name saelab cannot read.
    The result keeps where it came from in `sae.cfg` (source, hook, model, site, layer).
    """
    if str(source).startswith(HUB_PREFIX):
        path = download(str(source), revision, hookpoint)
        hookpoint = None  # the download went straight to that subfolder
    else:
        path = Path(source)
        if not path.exists() and not str(source).startswith((".", "/")) and str(source).count("/") >= 1:
            raise FileNotFoundError(f"{source} does not exist (for a Hugging Face Hub repo write "
                                    f"{HUB_PREFIX}{source})")
    kind = detect_format(path)
    if kind == "sparsify_checkpoint" and hookpoint is None and hookpoints(path) == ["sae"] \
            and detect_format(path / "sae") == "saelab":
        path, kind = path / "sae", "saelab"  # a saelab run folder (`saelab train --out`, a frontier point)
    if kind == "openai":
        sae = from_openai(path, device=device)
    elif kind == "saelab":
        sae = SAE.load(path, device)
    elif kind == "sae_lens":
        sae = from_saelens(path, device)
    else:
        sae = from_sparsify(path, hookpoint, device)
    if str(source).startswith(HUB_PREFIX) and kind != "saelab":
        sae.cfg.source = f"{kind}:{source}"
    for key, value in provenance.items():
        if not hasattr(sae.cfg, key):
            raise ValueError(f"unknown provenance field {key!r}; use model=, site=, layer=, hook=")
        setattr(sae.cfg, key, value)
    return sae
