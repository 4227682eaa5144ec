"""The zoo: SAEs of a few families trained with the main job's settings (`saelab.presets`) on its data, once, then
loaded from $SAELAB_HOME/saes (the evaluation, recovery and explorer notebooks compare them).

Each folder is named by a hash of its settings (`saelab.training.identity.run_key`: 0.3's names are kept), so a
changed recipe trains a new SAE instead of loading an old one. Several processes may ask at once: the first trains,
the others wait (`saelab.files.file_lock` with wait=True).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import replace

from saelab import assets
from saelab.files import file_lock
from saelab.presets import default_caches, fast_mode, harvest_defaults, train_defaults
from saelab.sae.families import FAMILIES

# All trained on the same tokens for the same number of steps as the main job (batch 2048, 13 epochs).
# relu: ReLU + L1 at the L0 of TopK's k = 32 (the paper compares at matched sparsity).
# `saelab.studies.frontier.calibrate_l1` at 1/4 of the steps gave 0.183 (held-out L0 50.5 at 0.15, 30.6 at 0.183, 10.2
# at 0.3); the full run at 0.183 ended at L0 38.6 (L1 keeps pruning after the short runs' end), so the coefficient was
# corrected with the short runs' slope (L0 ~ coef^-2.4) to 0.198: full-run held-out L0 33.5 (within 5% of 32),
# normalized MSE 0.267. That was on 0.2's Wikipedia-only data; on the English mixture (0.3) 0.198 gave validation L0
# 35.1 (test 35.0, normalized MSE 0.279), so the coefficient was corrected with the same slope to 0.206.
# lr 2e-3 (ReLU + L1 at 3e-3 and above collapsed in earlier runs); L1 warmed up over the first quarter of steps.
L1_MATCHED = 0.206
ZOO = {
    "topk": {},
    "multi_topk": {"multi_topk": True},
    "relu": {**FAMILIES["relu"].recipe, "l1_coef": L1_MATCHED},  # the ReLU family's study recipe, matched
}
# Fast mode (CI-sized): 14 steps are too few for L1 to settle at any coefficient that leaves latents alive, so the
# fast ReLU SAE is not matched (0.1 gives L0 ~130; 0.3 kills every latent).
ZOO_FAST = {"relu": {"l1_coef": 0.1, "l1_warmup_frac": 0.0}}


def zoo_recipe(kind: str = "topk", fast: bool | None = None, progress: bool = True, **overrides):
    """(the TrainConfig of zoo SAE `kind`, its folder under $SAELAB_HOME/saes, named by a hash of the settings)."""
    from saelab.acts.harvest import harvest_key
    from saelab.training.identity import run_key

    if kind not in ZOO:
        raise ValueError(f"unknown zoo SAE {kind!r}; choose from {sorted(ZOO)}")
    fast = fast_mode() if fast is None else fast
    settings = {**ZOO[kind], **(ZOO_FAST.get(kind, {}) if fast else {}), **overrides}
    tcfg = replace(train_defaults(fast), **settings, progress=progress, checkpoint_every=0)
    hcfg = harvest_defaults(fast)
    key = json.dumps({"harvest": harvest_key(hcfg), "train": {**run_key(tcfg, "0.3"), "progress": None}},
                     sort_keys=True)  # 0.3's folder names stay: fields added since then count only when on
    tag = hashlib.sha256(key.encode()).hexdigest()[:10]
    return tcfg, assets.home() / "saes" / f"{hcfg.model}-{kind}-{'fast' if fast else 'full'}-{tag}"


def zoo_sae(kind: str = "topk", fast: bool | None = None, progress: bool = True, device: str = "cpu", **overrides):
    """An SAE of the zoo trained on the main job's data (trained once, then loaded from the cache).

    kind: 'topk' (the main job's SAE), 'multi_topk' or 'relu' (ReLU + L1 at an L0 near 32).
    device: where it is trained (the first time) and returned ('auto': CUDA when present).
    Returns (sae, folder). Safe to call from several processes at once (a file lock).
    """
    from saelab.lm.models import resolve_device
    from saelab.sae.model import SAE
    from saelab.training.trainer import Trainer

    device = resolve_device(device)
    fast = fast_mode() if fast is None else fast
    tcfg, folder = zoo_recipe(kind, fast, progress=progress, **overrides)
    with file_lock(folder.with_suffix(".lock"), "zoo training", wait=True):
        if not (folder / "sae" / "cfg.json").exists():
            if assets.cached_only():
                raise assets.missing_from_cache(f"the course's {kind} SAE", folder)
            train, held = default_caches(fast, progress=progress)
            Trainer(tcfg, train, folder, eval_cache=held, device=device).train()
    return SAE.load(folder / "sae", device=device), folder
