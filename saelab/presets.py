"""The main job's settings (full size, or fast mode for CI and notebooks) and a small zoo of SAEs
trained with them, cached under $SAELAB_HOME/saes so notebooks 03-05 reuse what was trained once.

    SAELAB_FAST=1   tiny sizes: the tests, CI and every notebook finish in minutes
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path

from saelab import assets
from saelab.sae.families import FAMILIES

FAST_ENV = "SAELAB_FAST"


def fast_mode() -> bool:
    """True when SAELAB_FAST=1: tiny sizes so CI and notebooks finish in minutes."""
    return os.environ.get(FAST_ENV, "") not in ("", "0", "false")


def harvest_defaults(fast: bool | None = None):
    """The main job's harvest: SmolLM2 layer 22 residual stream, 400k tokens of the English mixture (8k fast)."""
    from saelab.acts.harvest import HarvestConfig

    cfg = HarvestConfig()
    if fast_mode() if fast is None else fast:
        cfg = replace(cfg, max_tokens=8_000)
    return cfg


def eval_tokens_default(fast: bool | None = None) -> int:
    return 4_000 if (fast_mode() if fast is None else fast) else 16_000


def train_defaults(fast: bool | None = None):
    """The main job's training settings (n 4096, k 32, AuxK; fast: n 1024)."""
    from saelab.training.trainer import TrainConfig

    # Tuned on saelab 0.2.0's Wikipedia-only data, on its held-out documents (the validation and test halves
    # together, before the split existed); the mixture's figures (README) are on the test half, never tuned on.
    # Short CPU runs (hundreds of steps) need a larger step than the paper's lr for billions of
    # tokens: at n=4096 on 120k SmolLM2 tokens, lr 4e-4 (the paper's scaling) reached held-out
    # normalized MSE 0.31 and 2e-3 reached 0.22 in the same 232 steps. On the 396k-token default
    # cache in shuffled document order (held-out normalized MSE, all with decay over the last 50%):
    # batch 4096 / lr 4e-3 / 14 epochs 0.1559 (0.4 s a step); batch 2048 / lr 3e-3 / 13 epochs 0.1556
    # (0.18 s a step: the same quality in 7% fewer tokens, and 2048-row products stay in cache).
    # At 4 epochs: batch 4096 / 4e-3 0.1735, beta2 0.99 0.1722, Multi-TopK 0.1735 (1.6x the time),
    # batch 2048 / 3e-3 0.1686; batch 2048 / 4e-3 kills latents (3.4% dead, 9.6% never fire on held-out).
    cfg = TrainConfig(lr=3e-3, batch_size=2048, epochs=13.0, decay_frac=0.5)
    if fast_mode() if fast is None else fast:
        cfg = replace(cfg, n_latents=1024, batch_size=1024, epochs=2.0, eval_every=50, checkpoint_every=0)
    return cfg


# The zoo: the SAEs the evaluation, recovery and explorer notebooks compare, all trained on the same tokens for
# the same number of steps as the main job (batch 2048, 13 epochs).
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


def default_caches(fast: bool | None = None, lm=None, progress: bool = True, heldout: str = "validation"):
    """(train cache, held-out cache) of the main job, harvested on first use. `heldout`: 'validation' (what
    training curves, calibrations and the studies' choices read) or 'test' (what reports state)."""
    from saelab.acts.harvest import harvest, load_harvest_lm

    hcfg = harvest_defaults(fast)
    lm = lm or load_harvest_lm(hcfg)
    train = harvest(hcfg, lm=lm, progress=progress)
    held = harvest(replace(hcfg, split=heldout, max_tokens=eval_tokens_default(fast)), lm=lm, progress=progress)
    return train, held


@contextmanager
def _lock(path: Path):
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


# The course (notebooks 02-07) trains the same zoo recipe for fewer epochs, so that the whole series runs in under an
# hour from an empty cache on a 2-core CPU: 4 epochs of the main job's 400k tokens (781 steps of 2048) instead of 13
# (measured per step there: TopK 0.11 s, Multi-TopK 0.17 s, ReLU + L1 0.29 s, so 1.4 / 2.2 / 3.8 minutes instead of
# 4.6 / 7.2 / 12). Fast mode keeps the zoo's fast sizes. The ReLU + L1 coefficient is re-matched for the shorter run,
# which ends sparser at the same coefficient: at 4 epochs (776 steps) on the mixture, validation L0 25.0 (normalized
# MSE 0.449) at L1_MATCHED's 0.206 (L0 35.1 at 13 epochs), then 32.6 (0.424) at 0.186, chosen with the slope
# L0 ~ coef^-2.4 (2026-12-02). A ReLU + L1 SAE converges more slowly than TopK: its 0.424 at 4 epochs against 0.279
# at 13, where TopK goes from ~0.17 to 0.156.
COURSE_EPOCHS = 4.0
L1_MATCHED_COURSE = 0.186


def course_overrides(kind: str, fast: bool | None = None) -> dict:
    """The TrainConfig fields the course changes in the zoo's recipe for SAE `kind` (none in fast mode)."""
    if fast_mode() if fast is None else fast:
        return {}
    return {"epochs": COURSE_EPOCHS, **({"l1_coef": L1_MATCHED_COURSE} if kind == "relu" else {})}


def course_sae(kind: str = "topk", fast: bool | None = None, progress: bool = True, device: str = "cpu"):
    """The zoo SAE `kind` at the course's budget (COURSE_EPOCHS; notebooks 02-07 share it): (sae, folder)."""
    return zoo_sae(kind, fast=fast, progress=progress, device=device, **course_overrides(kind, fast))


def course_folder(name: str, fast: bool | None = None) -> Path:
    """Where the course keeps what a learner made for later notebooks (02's own SAE for 03-05):
    $SAELAB_HOME/course/{fast,full}/name."""
    return assets.home() / "course" / ("fast" if (fast_mode() if fast is None else fast) else "full") / name


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
    with _lock(folder.with_suffix(".lock")):
        if not (folder / "sae" / "cfg.json").exists():
            train, held = default_caches(fast, progress=progress)
            Trainer(tcfg, train, folder, eval_cache=held, device=device).train()
    return SAE.load(folder / "sae", device=device), folder
