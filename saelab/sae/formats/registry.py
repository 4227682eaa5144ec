"""SAEs named the way the field names them: ``saelens:RELEASE/SAE_ID``, e.g.
``saelens:gemma-scope-2b-pt-res-canonical/layer_20/width_16k/canonical`` or ``saelens:llama_scope_lxr_8x/l20r_8x``.

The name is resolved through the installed SAE Lens's registry of pretrained SAEs (its pretrained_saes.yaml, ~170
releases: repository, folder, converter, and for some releases a norm scaling factor); saelab then downloads only
that folder's files (`hub.download`) and reads them with its own loader for the converter's layout. Needs the
`peers` extra (sae-lens); converters whose layout saelab does not read (transcoders, attention hook_z SAEs,
temporal SAEs, ...) get an error naming them.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass

PREFIX = "saelens:"
LAYOUTS = {"sae_lens": "sae_lens", "gemma_2": "gemma_scope", "gemma_3": "gemma_scope", "llama_scope": "llama_scope",
           "dictionary_learning_1": "dictionary_learning", "sparsify": "sparsify"}
"""SAE Lens converter -> the layout saelab reads its files as."""


@dataclass(frozen=True)
class Release:
    release: str
    sae_id: str
    repo_id: str
    folder: str
    converter: str
    model: str | None
    norm_scaling_factor: float | None


def _directory() -> dict:
    try:
        from sae_lens.loading.pretrained_saes_directory import get_pretrained_saes_directory
    except ImportError:
        raise ValueError("saelens:RELEASE/SAE_ID names are resolved through SAE Lens's registry of pretrained SAEs, "
                         "and sae_lens is not installed: pip install 'saelab[peers]' (or `bash scripts/bootstrap.sh "
                         "--peers`), or name the files directly, hf://OWNER/REPO/FOLDER") from None
    return get_pretrained_saes_directory()


def resolve(name: str) -> Release:
    """The registry's entry for 'saelens:RELEASE/SAE_ID' (an SAE id may itself hold slashes)."""
    directory = _directory()
    body = name[len(PREFIX):] if name.startswith(PREFIX) else name
    parts = body.strip("/").split("/")
    release = next(("/".join(parts[:i]) for i in range(len(parts) - 1, 0, -1) if "/".join(parts[:i]) in directory),
                   None)
    if release is None:
        near = difflib.get_close_matches(parts[0], list(directory), n=5, cutoff=0.5)
        raise ValueError(f"{name!r}: no SAE Lens release {parts[0]!r} (write saelens:RELEASE/SAE_ID; "
                         f"{len(directory)} releases are registered{', e.g. ' + ', '.join(near) if near else ''})")
    sae_id = body.strip("/")[len(release) + 1:]
    info = directory[release]
    if sae_id not in info.saes_map:
        ids = list(info.saes_map)
        near = difflib.get_close_matches(sae_id, ids, n=5, cutoff=0.3) or ids[:5]
        raise ValueError(f"{name!r}: release {release!r} has no SAE {sae_id!r}; it has {len(ids)}, e.g. {near}")
    converter = info.conversion_func or "sae_lens"
    factor = (info.norm_scaling_factor or {}).get(sae_id)
    return Release(release, sae_id, info.repo_id, info.saes_map[sae_id], converter, info.model,
                   float(factor) if factor is not None else None)


def layout_of(entry: Release) -> str:
    """The saelab layout for the entry's converter, or an error naming it."""
    if entry.converter not in LAYOUTS:
        raise ValueError(f"saelens:{entry.release}/{entry.sae_id} uses SAE Lens's {entry.converter!r} converter, "
                         f"whose files saelab does not read (it reads {sorted(LAYOUTS)}); use it through sae_lens "
                         "(SAE.from_pretrained)")
    return LAYOUTS[entry.converter]
