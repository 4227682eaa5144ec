"""Is it the same run? One answer, and one migration of old records, for every place that reuses training:
run folders (`runs.check_run_folder`), checkpoints (`checkpoints.check_resumable`), frontier points
(`saelab.studies.frontier.train_point`), the zoo (`saelab.presets.zoo_recipe`) and scaling grids
(`saelab.studies.scaling_grid.grid_settings`).

A training config is compared as its `train_record`: TrainConfig's fields with the SAE's flat (as saelab 0.3 wrote
them), old names and spellings migrated, fields that did not exist yet filled with the value that means "off".
Hashed names (zoo folders, grid ids) use `run_key`, which leaves out the fields added since the name's format was
fixed while they are off, so 0.2's grid ids and 0.3's zoo folders stay the same.
"""

from __future__ import annotations

from dataclasses import asdict, fields

from saelab.sae.config import SAEConfig
from saelab.sae.families.matryoshka import parse_widths
from saelab.sae.input_norm import RENAMED
from saelab.training.config import TrainConfig

RESUMABLE_CHANGES = ("progress", "eval_every", "log_every", "checkpoint_every", "keep_checkpoints", "tensorboard",
                     "epochs")
"""TrainConfig fields a resumed run may change: where it logs and how often, not what it learns (`epochs` may grow:
a warm restart)."""
PROVENANCE = ("d_in", "model", "site", "layer", "hook", "source")
"""SAEConfig fields set from the data, not asked: the data's identity is compared on its own."""
ADDED = {  # field: (when it was added, its value when off: what a record written before it meant)
    "ema_decay": ("0.3", None), "rescale_encoder_init": ("0.3", False),
    "matryoshka_widths": ("after 0.3", None), "l0_coef": ("after 0.3", 0.0),
    "jumprelu_bandwidth": ("issue 39", 0.001), "jumprelu_init_threshold": ("issue 39", 0.001),
    "multi_topk_factor": ("issue 39", 4), "multi_topk_coef": ("issue 39", 1 / 8), "dtype": ("issue 39", "float32"),
}
"""Fields added to the training config after saelab 0.2, in order of the formats that name runs by a hash."""
KEY_FORMATS = ("0.2", "0.3")
"""The hashed names: grids name themselves as 0.2 did, the zoo as 0.3 did (`run_key`)."""
_SINCE = {"0.2": ("0.3", "after 0.3", "issue 39"), "0.3": ("after 0.3", "issue 39")}


def train_record(config) -> dict:
    """A TrainConfig, or a record of one (0.3's flat dict, today's nested one), as one flat dict in today's terms:
    the SAE's fields beside the training's (provenance left out), normalisation names and Matryoshka widths
    migrated, fields a record predates filled with their "off" value."""
    if isinstance(config, TrainConfig):
        config = asdict(config)
    record = dict(config)
    sae = record.pop("sae", None) or {}
    record = {**{k: v for k, v in sae.items() if k not in PROVENANCE}, **record}
    record = {**{k: off for k, (_, off) in ADDED.items()}, **record}
    record["normalize"] = RENAMED.get(record.get("normalize"), record.get("normalize"))
    widths = record.get("matryoshka_widths")
    if isinstance(widths, str):  # 0.3 kept the command line's spelling ('doubling:5')
        record["matryoshka_widths"] = parse_widths(widths, record["n_latents"])
    return record


def differences(saved, now, free=()) -> dict:
    """{field: (saved, now)} where two configs (TrainConfigs or records) differ, except `free` fields."""
    a, b = train_record(saved), train_record(now)
    return {k: (a.get(k), b.get(k)) for k in sorted(a.keys() | b.keys()) if k not in free and a.get(k) != b.get(k)}


def run_key(config, format_: str) -> dict:
    """The record a hashed name is made of, as the `format_` ('0.2' or '0.3') of that name made it: fields added
    since then are left out while they are off (their values then are the ones runs of that version had)."""
    if format_ not in KEY_FORMATS:
        raise ValueError(f"format_ must be one of {KEY_FORMATS}")
    record = train_record(config)
    newer = {k: off for k, (when, off) in ADDED.items() if when in _SINCE[format_]}
    return {k: v for k, v in record.items() if not (k in newer and v == newer[k])}


def train_config_from_record(record: dict) -> TrainConfig:
    """The TrainConfig a record describes (0.3's flat train_config, or today's)."""
    flat = train_record(record)
    sae = {f.name for f in fields(SAEConfig)}
    return TrainConfig(sae=SAEConfig(**{k: v for k, v in flat.items() if k in sae}),
                       **{k: v for k, v in flat.items() if k not in sae})
