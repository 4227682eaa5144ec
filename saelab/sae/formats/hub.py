"""SAEs on the Hugging Face Hub, named ``hf://owner/repo[/subfolder]`` (or ``.../file.pt``): only the files
an SAE needs are downloaded (with `huggingface_hub`), then read like a local path."""

from __future__ import annotations

from pathlib import Path

PREFIX = "hf://"
SAE_FILES = ("cfg.json", "sae.safetensors", "sae_weights.safetensors")


def parse_hub_source(source: str) -> tuple[str, str | None]:
    """('owner/repo', 'sub/folder' or None) from 'hf://owner/repo[/sub/folder]'."""
    parts = [p for p in source[len(PREFIX):].strip("/").split("/") if p]
    if len(parts) < 2:
        raise ValueError(f"{source!r}: a Hub SAE is written hf://owner/repo[/subfolder], e.g. "
                         "hf://EleutherAI/sae-pythia-70m-32k/layers.4")
    return "/".join(parts[:2]), "/".join(parts[2:]) or None


def download(source: str, revision: str | None = None, hookpoint: str | None = None) -> Path:
    """The local path of hf://owner/repo[/subfolder]'s SAE files (downloaded once, then cached): a folder, or
    the file itself for hf://owner/repo/path/file.pt. `hookpoint`: a sparsify checkpoint's subfolder."""
    from huggingface_hub import snapshot_download

    repo_id, sub = parse_hub_source(source)
    if hookpoint:
        sub = f"{sub}/{hookpoint}" if sub else hookpoint
    if sub and sub.endswith((".pt", ".pth")):
        patterns = [sub]
    else:
        patterns = [f"{sub}/{name}" if sub else name for name in SAE_FILES]
    try:
        root = Path(snapshot_download(repo_id, revision=revision, allow_patterns=patterns))
    except Exception as e:  # noqa: BLE001 - offline, private, missing: huggingface_hub has many error types
        raise ValueError(f"could not download {source} from the Hugging Face Hub ({type(e).__name__}: {e}); "
                         "check the name and your connection (HF_HUB_OFFLINE=1 uses the local cache only), or "
                         "download the folder yourself and pass its path") from None
    folder = root / sub if sub else root
    if folder.is_file():
        return folder
    if not any((folder / name).is_file() for name in SAE_FILES):
        raise ValueError(f"{source}: no SAE files ({', '.join(SAE_FILES)}) at that path of the repo; name the "
                         "subfolder that holds one SAE, e.g. hf://owner/repo/layers.8")
    return folder
