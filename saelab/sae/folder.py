"""saelab's own SAE folder, as files: what `SAE.save` writes and `SAE.load` reads (no model code here).

saelab folder: ``cfg.json`` ({"format_version", "config": SAEConfig, training extras}) and
``sae.safetensors`` (parameters and buffers). Written atomically; read with checks that name the fix.
Format history: 1 kept `input_scale` and `tokens_seen` in the config (read and moved into the
buffers); 2 keeps them as buffers, so a config says only what was asked.
"""

from __future__ import annotations

import json
import typing
from dataclasses import asdict, fields
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from saelab.files import atomic_write, atomic_write_text
from saelab.sae.config import SAEConfig

FORMAT_VERSION = 2
_MOVED_TO_BUFFERS = {"input_scale": torch.float32, "tokens_seen": torch.long}  # format 1: config fields


def write_folder(folder: str | Path, cfg: SAEConfig, tensors: dict[str, torch.Tensor], extra: dict | None = None
                 ) -> Path:
    """Write sae.safetensors (`tensors`: parameters and buffers) and cfg.json, each atomically (temp file then
    rename)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().contiguous().cpu() for k, v in tensors.items()}
    atomic_write(folder / "sae.safetensors", lambda p: save_file(tensors, p))
    meta = {"format_version": FORMAT_VERSION, "config": asdict(cfg), **(extra or {})}
    atomic_write_text(folder / "cfg.json", json.dumps(meta, indent=2))
    return folder


def read_folder(folder: str | Path, device=None) -> tuple[SAEConfig, dict[str, torch.Tensor], dict]:
    """The config, tensors and the rest of cfg.json (training extras, the data record) of a folder written by
    `write_folder`; other layouts and damaged files get an error naming the fix. Format 1's config fields that
    are buffers now come back as tensors."""
    folder = Path(folder)
    _check_saelab_folder(folder)
    try:
        meta = json.loads((folder / "cfg.json").read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"{folder}/cfg.json is damaged ({e}); re-save the SAE, or retrain it with "
                         "`saelab train --out` on that run folder") from None
    version = meta.get("format_version") if isinstance(meta, dict) else None
    if not isinstance(version, int) or "config" not in meta:
        raise ValueError(f"{folder}/cfg.json is not a saelab SAE config ({_foreign_format(meta)}); "
                         "SAE.load reads folders written by SAE.save or `saelab train`: use saelab.load_sae, "
                         "which reads SAE Lens, sparsify and OpenAI files too")
    if version > FORMAT_VERSION:
        raise ValueError(f"{folder}/cfg.json has format_version {version}, newer than this saelab reads "
                         f"({FORMAT_VERSION}); upgrade saelab (pip install -U saelab)")
    config = dict(meta["config"])
    moved = {k: config.pop(k) for k in _MOVED_TO_BUFFERS if k in config} if version == 1 else {}
    unknown = set(config) - {f.name for f in fields(SAEConfig)}
    if unknown:
        raise ValueError(f"{folder}/cfg.json has unknown config fields {sorted(unknown)}; upgrade saelab")
    _check_types(folder, config)
    try:
        cfg = SAEConfig(**config)
    except ValueError as e:
        raise ValueError(f"{folder}/cfg.json: {e}; fix that value in cfg.json or re-save the SAE") from None
    try:
        state = load_file(folder / "sae.safetensors", device=str(device or "cpu"))
    except Exception as e:  # noqa: BLE001 - safetensors raises its own error types for truncated files
        raise ValueError(f"{folder}/sae.safetensors is damaged or truncated ({type(e).__name__}: {e}); "
                         "re-save the SAE, or retrain it") from None
    for name, value in moved.items():
        state.setdefault(name, torch.tensor(value, dtype=_MOVED_TO_BUFFERS[name]))
    return cfg, state, {k: v for k, v in meta.items() if k not in ("format_version", "config")}


def check_shapes(folder: str | Path, expected: dict[str, torch.Tensor], got: dict[str, torch.Tensor]) -> None:
    """Raise when the tensors read from `folder` are not the shapes its config builds."""
    expected = {k: tuple(v.shape) for k, v in expected.items()}
    got = {k: tuple(v.shape) for k, v in got.items()}
    if expected != got:
        raise ValueError(f"{folder}/sae.safetensors does not match its cfg.json: expected {expected}, got {got}")


def _check_types(folder: Path, config: dict) -> None:
    """Every config field of the JSON type its SAEConfig annotation says (ints for int, numbers for float,
    null only where None is allowed), or an error naming the field, the folder and the fix."""
    hints = typing.get_type_hints(SAEConfig)
    for name, value in config.items():
        allowed = typing.get_args(hints[name]) or (hints[name],)
        ok = any(value is None if t is type(None) else
                 isinstance(value, (int, float)) and not isinstance(value, bool) if t is float else
                 isinstance(value, list) and all(isinstance(v, int) and not isinstance(v, bool) for v in value)
                 if typing.get_origin(t) is list else
                 isinstance(value, t) and not (t is int and isinstance(value, bool)) for t in allowed)
        if not ok:
            want = " or ".join("null" if t is type(None) else "a list of integers" if typing.get_origin(t) is list
                               else t.__name__ for t in allowed)
            raise ValueError(f"{folder}/cfg.json: config field {name!r} is {value!r} ({type(value).__name__}), "
                             f"expected {want}; fix that value in cfg.json (e.g. write numbers without quotes) "
                             "or re-save the SAE")


def _foreign_format(meta) -> str:
    """Name the library that wrote a cfg.json that is not saelab's, from its keys."""
    keys = set(meta) if isinstance(meta, dict) else set()
    if {"d_sae", "d_in"} <= keys or "architecture" in keys and "hook_name" in keys:
        return "it looks like an SAE Lens config"
    if keys & {"expansion_factor", "num_latents", "normalize_decoder"}:
        return "it looks like an EleutherAI sparsify config"
    return f"keys: {sorted(keys)[:8]}"


def _check_saelab_folder(folder: Path) -> None:
    """Raise a clear error when `folder` is missing, or holds another library's SAE layout."""
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder} is not a folder: pass a folder written by SAE.save or `saelab train` "
                                "(e.g. runs/default/sae)")
    if (folder / "sae_weights.safetensors").is_file():
        raise ValueError(f"{folder} holds an SAE Lens SAE (sae_weights.safetensors); SAE.load reads saelab's own "
                         "folders (cfg.json + sae.safetensors): use saelab.load_sae, which reads SAE Lens too")
    missing = [n for n in ("cfg.json", "sae.safetensors") if not (folder / n).is_file()]
    if missing:
        raise FileNotFoundError(f"{folder} is not a saved SAE: missing {', '.join(missing)} "
                                "(write one with SAE.save or `saelab train`)")
