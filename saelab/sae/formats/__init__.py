"""SAE files across the ecosystem, one module each, and `load_sae`, which recognises them.

    (saelab's own folder, cfg.json with format_version + sae.safetensors: `saelab.sae.folder`, SAE.save/load)
    saelens    SAE Lens (cfg.json + sae_weights.safetensors): standard, topk, jumprelu, and its batchtopk /
               matryoshka_batchtopk training folders (as saelab's 'batchtopk'); exports BatchTopK and
               Matryoshka as SAE Lens's inference save writes them (jumprelu at the threshold)
    sparsify   EleutherAI sparsify (cfg.json + sae.safetensors, one folder per hook point)
    openai     the paper's released .pt state dicts (torch's weights_only loader: tensors, no code)
    gemmascope Gemma Scope's params.npz and Gemma Scope 2's params.safetensors (JumpReLU)
    llamascope Llama Scope's hyperparams.json + checkpoints/final.safetensors (JumpReLU)
    dictionary_learning  dictionary_learning / SAEBench ae.pt + config.json (ReLU, TopK, BatchTopK, Matryoshka,
               JumpReLU)
    build      an SAE from another library's tensors (the shared step of the loaders above)
    hub        hf://owner/repo[/subfolder] on the Hugging Face Hub
    registry   saelens:RELEASE/SAE_ID names, through SAE Lens's registry of pretrained SAEs
    push       `saelab push`: a model card and a folder SAE Lens and saelab both read, uploaded to the Hub
    hooks      the other libraries' hook names as saelab's (site, layer)
"""

from __future__ import annotations

from pathlib import Path

from saelab.sae.folder import FORMAT_VERSION
from saelab.sae.formats.dictionary_learning import from_dictionary_learning, trainer_folders
from saelab.sae.formats.gemmascope import from_gemmascope, params_file
from saelab.sae.formats.hub import PREFIX as HUB_PREFIX
from saelab.sae.formats.hub import download
from saelab.sae.formats.llamascope import from_llamascope, is_llamascope
from saelab.sae.formats.openai import from_openai
from saelab.sae.formats.registry import PREFIX as SAELENS_PREFIX
from saelab.sae.formats.saelens import folded_weights, from_saelens, to_saelens
from saelab.sae.formats.sparsify import from_sparsify, hookpoints, is_sparsify_config, to_sparsify
from saelab.sae.model import SAE

__all__ = ["FORMAT_VERSION", "detect_format", "folded_weights", "from_dictionary_learning", "from_gemmascope",
           "from_llamascope", "from_openai", "from_saelens", "from_sparsify", "load_sae", "to_saelens", "to_sparsify"]

SUPPORTED = ("a saelab folder (cfg.json with format_version + sae.safetensors), an SAE Lens folder (cfg.json + "
             "sae_weights.safetensors), an EleutherAI sparsify folder or checkpoint (cfg.json + sae.safetensors, "
             "one subfolder per hook point), a Gemma Scope folder (params.npz or params.safetensors), a Llama Scope "
             "folder (hyperparams.json + checkpoints/final.safetensors), a dictionary_learning folder (ae.pt + "
             "config.json, or its trainer_N subfolders), an OpenAI .pt state dict, hf://owner/repo[/subfolder or "
             "/file.pt], or saelens:RELEASE/SAE_ID (SAE Lens's registry)")


def _is_pushed(path: Path) -> bool:
    """A folder `saelab push` wrote: SAE Lens's files, and saelab's own (exact) folder in saelab/."""
    return (path / "saelab" / "cfg.json").is_file() and (path / "saelab" / "sae.safetensors").is_file()


def detect_format(path: str | Path) -> str:
    """'saelab', 'sae_lens', 'sparsify', 'sparsify_checkpoint', 'gemma_scope', 'llama_scope', 'dictionary_learning'
    or 'openai' for a local path; else a ValueError naming what the path holds and what is supported."""
    from saelab.sae.formats.saelens import read_json

    path = Path(path)
    if path.is_file():
        if path.suffix == ".npz" or path.name == "params.safetensors":
            return "gemma_scope"
        if path.name == "ae.pt":
            return "dictionary_learning"
        if path.suffix in (".pt", ".pth"):
            return "openai"
        raise ValueError(f"{path} is a file saelab does not read ({path.suffix or 'no suffix'}); pass {SUPPORTED}")
    if not path.is_dir():
        raise FileNotFoundError(f"{path} does not exist; pass {SUPPORTED}")
    names = {p.name for p in path.iterdir()}
    if {"cfg.json", "sae_weights.safetensors"} <= names:
        return "saelab" if _is_pushed(path) else "sae_lens"
    if params_file(path) is not None:
        return "gemma_scope"
    if is_llamascope(path):
        return "llama_scope"
    if "ae.pt" in names or trainer_folders(path):
        return "dictionary_learning"
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
    """Load an SAE from any supported layout into saelab's `SAE`: a local path, hf://owner/repo[/subfolder], or
    saelens:RELEASE/SAE_ID (resolved through the installed SAE Lens's registry; the `peers` extra).

    A saelab run folder (`saelab train --out`, a `saelab frontier` point: one holding `sae/`) loads its SAE.
    `hookpoint` picks one SAE of a sparsify checkpoint (e.g. 'layers.8') or of a dictionary_learning save_dir
    ('trainer_0'). `provenance` overrides what the files say or lack (model=, site=, layer=), e.g. for a folder
    whose hook name saelab cannot read.
    The result keeps where it came from in `sae.cfg` (source, hook, model, site, layer).
    """
    norm_factor = entry = None
    if str(source).startswith(SAELENS_PREFIX):
        from saelab.sae.formats.registry import layout_of, resolve

        entry = resolve(str(source))
        layout_of(entry)  # refuses converters saelab does not read, before any download
        path = download(f"{HUB_PREFIX}{entry.repo_id}/{entry.folder}", revision)
        provenance = {"source": str(source), **provenance}
        norm_factor = entry.norm_scaling_factor
        hookpoint = None
    elif str(source).startswith(HUB_PREFIX):
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
        sae = SAE.load(path / "saelab" if _is_pushed(path) else path, device)
    elif kind == "gemma_scope":
        sae = from_gemmascope(path, device)
    elif kind == "llama_scope":
        sae = from_llamascope(path, device, norm_scaling_factor=norm_factor)
    elif kind == "dictionary_learning":
        sae = from_dictionary_learning(path, hookpoint, device)
    elif kind == "sae_lens":
        sae = from_saelens(path, device)
    else:
        sae = from_sparsify(path, hookpoint, device)
    if str(source).startswith(HUB_PREFIX) and kind != "saelab":
        sae.cfg.source = f"{kind}:{source}"
    if entry is not None and sae.cfg.model is None and entry.model:
        from saelab.sae.formats.hooks import model_id

        sae.cfg.model = model_id(entry.model)
    for key, value in provenance.items():
        if not hasattr(sae.cfg, key):
            raise ValueError(f"unknown provenance field {key!r}; use model=, site=, layer=, hook=")
        setattr(sae.cfg, key, value)
    return sae
