"""Is it the same run? One answer, and one migration of old records, for every place that reuses training:
run folders (`runs.check_run_folder`), checkpoints (`checkpoints.check_resumable`), frontier points
(`saelab.studies.frontier.train_point`), the zoo (`saelab.zoo.zoo_recipe`) and scaling grids
(`saelab.studies.scaling_grid.grid_settings`).

A training config is compared as its `train_record`: TrainConfig's fields with the SAE's flat (as saelab 0.3 wrote
them), old names and spellings migrated, and the fields a record predates filled with today's defaults, which mean
"off" (a family's options are off at their defaults: `saelab.sae.families.base.Family.options`). Hashed names (zoo
folders, grid ids) use `run_key`, which leaves out every field the name's format did not have while it is at its
default, so 0.2's grid ids and 0.3's zoo folders stay the same, and a family added later changes no name.
"""

from __future__ import annotations

from dataclasses import asdict, fields

from saelab.sae.config import SAEConfig
from saelab.sae.families.matryoshka import parse_widths
from saelab.sae.input_norm import RENAMED
from saelab.training.config import TrainConfig

RESUMABLE_CHANGES = ("progress", "eval_every", "log_every", "checkpoint_every", "keep_checkpoints", "tensorboard",
                     "epochs", "compile", "data_parallel", "shard_latents")
"""TrainConfig fields a resumed run may change: where it logs and how often, how the same step runs (`compile`), how
ranks average gradients (the same sums in another order) or split the latents (`shard_latents`: checkpoints are
whole, whatever the world size that wrote them), not what it learns (`epochs` may grow: a warm restart)."""
PROVENANCE = ("d_in", "model", "site", "layer", "hook", "source")
"""SAEConfig fields set from the data, not asked: the data's identity is compared on its own."""
FIELDS_0_3 = frozenset({
    "n_latents", "k", "activation", "multi_topk", "k_aux", "aux_coef", "l1_coef", "l1_warmup_frac", "normalize",
    "bias_init", "tied_init", "rescale_encoder_init", "ema_decay", "batch_size", "epochs", "lr", "adam_eps", "beta1",
    "beta2", "warmup_frac", "decay_frac", "grad_clip", "dead_tokens", "eval_every", "log_every", "checkpoint_every",
    "keep_checkpoints", "seed", "kernel", "tensorboard", "progress"})
"""The training config's fields in saelab 0.3 (flat); `matryoshka_widths` and `l0_coef` came after its release."""
KEY_FIELDS = {"0.2": FIELDS_0_3 - {"ema_decay", "rescale_encoder_init"}, "0.3": FIELDS_0_3}
"""The fields each hashed name's format was made of: grids name themselves as 0.2 did, the zoo as 0.3 did."""


def train_record(config) -> dict:
    """A TrainConfig, or a record of one (0.3's flat dict, today's nested one), as one flat dict in today's terms:
    the SAE's fields beside the training's (provenance left out), normalisation names and Matryoshka widths
    migrated, fields a record predates filled with their "off" value."""
    if isinstance(config, TrainConfig):
        config = asdict(config)
    record = dict(config)
    sae = record.pop("sae", None) or {}
    record = {**_defaults(), **{k: v for k, v in sae.items() if k not in PROVENANCE}, **record}
    record["normalize"] = RENAMED.get(record.get("normalize"), record.get("normalize"))
    widths = record.get("matryoshka_widths")
    if isinstance(widths, str):  # 0.3 kept the command line's spelling ('doubling:5')
        record["matryoshka_widths"] = parse_widths(widths, record["n_latents"])
    return record


def _defaults() -> dict:
    """Today's training config's fields at their defaults, flat (a field a record lacks was off when it was written)."""
    config = asdict(TrainConfig())
    sae = config.pop("sae")
    return {**{k: v for k, v in sae.items() if k not in PROVENANCE}, **config}


def differences(saved, now, free=()) -> dict:
    """{field: (saved, now)} where two configs (TrainConfigs or records) differ, except `free` fields."""
    a, b = train_record(saved), train_record(now)
    return {k: (a.get(k), b.get(k)) for k in sorted(a.keys() | b.keys()) if k not in free and a.get(k) != b.get(k)}


def run_key(config, format_: str) -> dict:
    """The record a hashed name is made of, as the `format_` ('0.2' or '0.3') of that name made it: fields it did
    not have are left out while they are at their defaults (off: the values runs of that version had)."""
    if format_ not in KEY_FIELDS:
        raise ValueError(f"format_ must be one of {tuple(KEY_FIELDS)}")
    record, defaults = train_record(config), _defaults()
    return {k: v for k, v in record.items() if k in KEY_FIELDS[format_] or v != defaults.get(k)}


def train_config_from_record(record: dict) -> TrainConfig:
    """The TrainConfig a record describes (0.3's flat train_config, or today's)."""
    flat = train_record(record)
    sae = {f.name for f in fields(SAEConfig)}
    return TrainConfig(sae=SAEConfig(**{k: v for k, v in flat.items() if k in sae}),
                       **{k: v for k, v in flat.items() if k not in sae})
