"""A run folder's record of what it was asked (`run.json`), checked before any model runs.

`saelab train --out DIR` resumes DIR from its last checkpoint. Resuming is right only when the
run asks for the same data and training as DIR holds, so the command line writes the settings to
DIR/run.json when a run starts and compares them on every later start, before harvesting: a
different layer, corpus or learning rate on a used folder is refused with a message naming --out.
"""

from __future__ import annotations

import json
from pathlib import Path

from saelab.files import atomic_write_text
from saelab.training.identity import RESUMABLE_CHANGES, train_record

RUN_FILE = "run.json"
# Settings that may differ when a run is resumed: they change where and how fast it runs, not what it learns.
FREE = {"harvest": {"device", "batch_size"}, "train": set(RESUMABLE_CHANGES)}


def _comparable(settings: dict) -> dict:
    """The settings as compared: the training config as `train_record` reads it (one flat record: 0.3's run.json
    and today's say the same thing the same way), without the fields a resumed run may change."""
    settings = {**settings, **({"train": train_record(settings["train"])} if "train" in settings else {})}
    return {part: ({k: v for k, v in values.items() if k not in FREE.get(part, ())} if isinstance(values, dict)
                   else values) for part, values in settings.items()}


def _shown(value) -> str:
    return "the default" if value is None else repr(value)


def _flat(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        out.update(_flat(v, f"{prefix}{k}.") if isinstance(v, dict) else {f"{prefix}{k}": v})
    return out


def check_run_folder(out: str | Path, settings: dict, epochs: float) -> str:
    """Check `out` against `settings` ({'harvest': ..., 'train': ..., ...}) before any model runs.

    Records them when nothing was trained there yet (no checkpoint, no SAE: a run stopped before its
    first checkpoint may change them). Returns 'new', 'resume' or 'extend'; raises ValueError (naming
    --out and the folder) when the folder holds a run with other settings, or a finished run that
    `epochs` would not lengthen."""
    out = Path(out)
    path = out / RUN_FILE
    finished = (out / "sae" / "cfg.json").exists()
    trained = finished or any((out / "checkpoints").glob("step-*"))
    if trained and path.exists():
        saved = json.loads(path.read_text())["settings"]
        now = _flat(_comparable(json.loads(json.dumps(settings, default=str))))
        then = _flat(_comparable(saved))
        diff = sorted((k, then.get(k), now.get(k)) for k in then.keys() | now.keys() if then.get(k) != now.get(k))
        if diff:
            listed = "; ".join(f"--{k}: {_shown(a)} there, {_shown(b)} asked" for k, a, b in diff[:6])
            raise ValueError(f"{out} holds a run with other settings ({listed}). Resuming it would mix the two. "
                             f"Pass another --out folder for this run, or delete {out}.")
        done_epochs = saved.get("train", {}).get("epochs", epochs)
        can_extend = any((out / "checkpoints").glob("step-*")) and not settings.get("on_the_fly")
        if finished and (epochs <= done_epochs or not can_extend):
            longer = (f"; to train this one longer pass a larger --train.epochs (it was {done_epochs:g}: a warm "
                      "restart from its last checkpoint)") if can_extend else \
                " (it kept no checkpoint to continue from)" if not settings.get("on_the_fly") else ""
            raise ValueError(f"{out} holds a finished run (its SAE is {out / 'sae'}). For a new run pass another "
                             f"--out folder{longer}.")
        if epochs > done_epochs:
            atomic_write_text(path, json.dumps({"settings": settings}, indent=1, default=str))
            return "extend"
        return "resume"
    if trained:  # a folder from before run.json: the trainer still checks the training settings
        return "resume"
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, json.dumps({"settings": settings}, indent=1, default=str))
    return "new"
