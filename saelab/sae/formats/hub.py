"""SAEs on the Hugging Face Hub, named ``hf://owner/repo[/subfolder]`` (or ``.../file.pt``): only the files
an SAE needs are downloaded (with `huggingface_hub`), then read like a local path.

Offline (HF_HUB_OFFLINE=1, or no network) the files come from the local Hub cache only; when they are not there,
the error names the repository, the files to fetch and how.
"""

from __future__ import annotations

from pathlib import Path

PREFIX = "hf://"
SAE_FILES = ("cfg.json", "sae.safetensors", "sae_weights.safetensors",  # saelab, SAE Lens, sparsify
             "params.npz", "params.safetensors", "config.json",  # Gemma Scope 1 and 2
             "hyperparams.json", "checkpoints/final.safetensors",  # Llama Scope
             "ae.pt",  # dictionary_learning (with config.json)
             "saelab/cfg.json", "saelab/sae.safetensors")  # `saelab push`: saelab's own folder beside SAE Lens's
"""Every file of every layout `load_sae` reads, relative to the SAE's folder."""
WEIGHT_FILES = ("sae.safetensors", "sae_weights.safetensors", "params.npz", "params.safetensors",
                "checkpoints/final.safetensors", "ae.pt")


def parse_hub_source(source: str) -> tuple[str, str | None]:
    """('owner/repo', 'sub/folder' or None) from 'hf://owner/repo[/sub/folder]'."""
    parts = [p for p in source[len(PREFIX):].strip("/").split("/") if p]
    if len(parts) < 2:
        raise ValueError(f"{source!r}: a Hub SAE is written hf://owner/repo[/subfolder], e.g. "
                         "hf://EleutherAI/sae-pythia-70m-32k/layers.4")
    return "/".join(parts[:2]), "/".join(parts[2:]) or None


def fetch_hint(repo_id: str, patterns: list[str], revision: str | None = None) -> str:
    """How to get `patterns` of `repo_id` into the local cache on a connected machine."""
    rev = f" --revision {revision}" if revision else ""
    include = " ".join(f"--include '{p}'" for p in patterns)
    return (f"on a machine with network, `hf download {repo_id}{rev} {include}` fills the Hub cache (copy it "
            "here, HF_HUB_CACHE says where it lives); or download the folder and pass its local path")


def offline() -> bool:
    from huggingface_hub import constants

    return bool(constants.HF_HUB_OFFLINE)


def download(source: str, revision: str | None = None, hookpoint: str | None = None) -> Path:
    """The local path of hf://owner/repo[/subfolder]'s SAE files (downloaded once, then cached): a folder, or
    the file itself for hf://owner/repo/path/file.pt. `hookpoint`: a sparsify checkpoint's subfolder."""
    from huggingface_hub import snapshot_download

    repo_id, sub = parse_hub_source(source)
    if hookpoint:
        sub = f"{sub}/{hookpoint}" if sub else hookpoint
    if sub and sub.endswith((".pt", ".pth", ".npz")):
        patterns = [sub]
    else:
        patterns = [f"{sub}/{name}" if sub else name for name in SAE_FILES]
    try:
        root = Path(snapshot_download(repo_id, revision=revision, allow_patterns=patterns))
    except Exception as e:  # noqa: BLE001 - offline, private, missing: huggingface_hub has many error types
        mode = ("HF_HUB_OFFLINE=1 is set, so only the local Hub cache is read and these files are not in it"
                if offline() else "no network, a private or missing repository, or a wrong name; with no network "
                "set HF_HUB_OFFLINE=1 to read the local Hub cache only")
        rev = f" (revision {revision})" if revision else ""
        raise ValueError(f"could not get {source}: the SAE files of {repo_id}{rev} at {sub or 'its root'} "
                         f"({type(e).__name__}: {str(e).splitlines()[0][:200]}). {mode}; "
                         f"{fetch_hint(repo_id, [f'{sub}/*' if sub else '*'], revision)}") from None
    folder = root / sub if sub else root
    if folder.is_file():
        return folder
    if not any((folder / name).is_file() for name in WEIGHT_FILES):
        where = f"{repo_id}/{sub}" if sub else repo_id
        if offline():
            hint = fetch_hint(repo_id, [f"{sub}/*" if sub else "*"], revision)
            raise ValueError(f"{source}: HF_HUB_OFFLINE=1 and the local Hub cache holds none of the SAE files of "
                             f"{where} ({', '.join(WEIGHT_FILES)}); {hint}")
        raise ValueError(f"{source}: no SAE files ({', '.join(WEIGHT_FILES)}) at {where}; name the subfolder that "
                         "holds one SAE, e.g. hf://owner/repo/layers.8 or hf://google/gemma-scope-2b-pt-res/"
                         "layer_20/width_16k/average_l0_71")
    return folder

