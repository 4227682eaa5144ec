"""Fail fast, with the fix, when a name is neither built in nor reachable on the Hugging Face hub.

Without this a typo such as `--model smollm2-135` waits out the hub client's retries (~50 s
offline) and ends in a traceback.
"""

from __future__ import annotations

import difflib
import os
from pathlib import Path


def check_hub_name(name: str, kind: str, built_in: tuple[str, ...]) -> None:
    """Raise ValueError unless `name` is a local folder, already in the hub cache, or found on the hub.
    kind: 'model' or 'dataset'."""
    if Path(name).is_dir() or os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on"):
        return
    import huggingface_hub as hf
    from huggingface_hub.errors import RepositoryNotFoundError

    cached = (hf.try_to_load_from_cache(name, "config.json") if kind == "model" else
              hf.try_to_load_from_cache(name, "README.md", repo_type="dataset"))
    if isinstance(cached, str):  # a path: the file is in the local hub cache
        return
    near = difflib.get_close_matches(name, built_in, n=1, cutoff=0.6)
    hint = f"Did you mean {near[0]!r}? " if near else ""
    label, plural = ("model", "models") if kind == "model" else ("corpus", "corpora")
    names = f"saelab's built-in {plural}: {', '.join(built_in)}"
    try:
        (hf.model_info if kind == "model" else hf.dataset_info)(name, timeout=10)
    except RepositoryNotFoundError:
        raise ValueError(f"{label} {name!r}: no such {kind} on the Hugging Face hub. {hint}({names})") from None
    except Exception as e:  # noqa: BLE001 - connection errors come in many types
        raise ValueError(f"{label} {name!r} is not built in and the Hugging Face hub cannot be reached "
                         f"({type(e).__name__}). {hint}({names}; any other name is a hub id and needs the hub, "
                         "or its local cache)") from None
