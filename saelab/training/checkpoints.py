"""A training run's checkpoints: written atomically (a killed run never leaves a half-written one), read back
only for the same training config and the same activations, so a resume continues the run it claims to.

A checkpoint folder `checkpoints/step-NNNNNNN/` holds the live SAE (cfg.json + weights), the optimiser's
state (`optim.safetensors`), the weight average when the run keeps one (`ema.safetensors`) and `trainer.json`
(step, config, schedule length, the data identity, the EMA's step count).
"""

from __future__ import annotations

import json
import shutil
from dataclasses import asdict
from pathlib import Path
from typing import NamedTuple

import torch
from safetensors.torch import load_file, save_file

from saelab.files import atomic_dir
from saelab.sae.model import SAE
from saelab.training.identity import RESUMABLE_CHANGES, differences


class TrainingState(NamedTuple):
    """What a checkpoint holds besides its trainer.json (under `shard_latents`: gathered on rank 0)."""

    sae: SAE
    opt_state: dict
    """The optimiser's `state_dict()`."""
    ema_tensors: dict[str, torch.Tensor] | None = None
    """The weight average's `state_tensors()`, when the run keeps one."""
    ema_steps: int | None = None

    @classmethod
    def of(cls, sae: SAE, opt: torch.optim.Optimizer, ema=None) -> TrainingState:
        return cls(sae, opt.state_dict(), ema.state_tensors() if ema is not None else None,
                   ema.steps if ema is not None else None)


def checkpoint_folders(root: Path) -> list[Path]:
    return sorted(root.glob("step-*")) if root.exists() else []


def write_checkpoint(root: Path, step: int, saved: TrainingState, cfg, total_steps: int, data_identity: dict
                     ) -> Path:
    """Write `root/step-NNNNNNN` atomically and keep the newest `cfg.keep_checkpoints` (at least 1)."""
    final = root / f"step-{step:07d}"
    state = saved.opt_state
    tensors = {f"{i}.{k}": v.contiguous().cpu() for i, st in state["state"].items() for k, v in st.items()}
    meta = {"step": step, "config": asdict(cfg), "param_groups": state["param_groups"], "total_steps": total_steps,
            "data": data_identity, "ema_steps": saved.ema_steps}
    with atomic_dir(final) as tmp:
        saved.sae.save(tmp)
        save_file(tensors, tmp / "optim.safetensors")
        if saved.ema_tensors is not None:
            save_file(saved.ema_tensors, tmp / "ema.safetensors")
        (tmp / "trainer.json").write_text(json.dumps(meta, indent=1))
    for old in checkpoint_folders(root)[: -max(cfg.keep_checkpoints, 1)]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def check_resumable(path: Path, meta: dict, cfg, data_identity: dict) -> None:
    """Refuse, naming the difference and the fix, a checkpoint of another config or other activations (a 0.3
    checkpoint's flat config is migrated: `saelab.training.identity`)."""
    if cfg.epochs < meta["config"].get("epochs", 0):
        raise ValueError(f"{path} belongs to a run of {meta['config']['epochs']} epochs; resuming can extend "
                         f"a run, not shorten it (asked {cfg.epochs}); pass another --out folder "
                         "(Python: another out_dir)")
    diff = differences(meta["config"], cfg, free=RESUMABLE_CHANGES)
    if diff:
        raise ValueError(f"{path} was written with another training config ({diff}); pass another --out folder "
                         f"(Python: another out_dir) for a new run, or the same settings to resume it")
    saved_data = meta.get("data", {})
    data_diff = {k: (v, data_identity.get(k)) for k, v in saved_data.items()
                 if v is not None and data_identity.get(k) is not None and data_identity[k] != v}
    if data_diff:
        raise ValueError(f"{path} was trained on other activations ({data_diff}); pass another --out folder "
                         "(Python: another out_dir) for a new run, or the same data to resume it")


def read_checkpoint(path: Path, sae: SAE, opt: torch.optim.Optimizer, device, ema=None) -> dict:
    """Load `path` into `sae`, `opt` (and `ema`); returns its trainer.json."""
    meta = json.loads((path / "trainer.json").read_text())
    loaded = SAE.load(path, device=device)
    sae.load_state_dict(loaded.state_dict())
    sae.cfg = loaded.cfg
    tensors = load_file(path / "optim.safetensors", device=str(device))
    state: dict = {}
    for key, v in tensors.items():
        i, name = key.split(".", 1)
        state.setdefault(int(i), {})[name] = v
    opt.load_state_dict({"state": state, "param_groups": meta["param_groups"]})
    if ema is not None:
        ema.load_state_tensors(load_file(path / "ema.safetensors", device=str(device)), meta["ema_steps"])
    return meta


def read_meta(path: Path) -> dict:
    return json.loads((path / "trainer.json").read_text())


def read_log(path: Path) -> list[dict]:
    """The records of a JSONL training log; a line torn by a kill (not valid JSON) is dropped."""
    records = []
    for line in path.read_text().splitlines():
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(rec, dict) and "step" in rec:
            records.append(rec)
    return records
