"""Write the golden folders that tests/test_goldens.py compares against (run once, from the repository root):

    PYTHONPATH=. python tests/data/goldens/make_goldens.py

The committed files were written by this script at saelab 0.3 (commit 97562b2, before the SAE families moved
into one file each, issue 39), so they are also the fixtures of what 0.3 saved:

    data.safetensors        the training activations (toy features, d 16) and 64 fixed inputs
    <family>/sae/           a tiny SAE of each family after a 16-step fixed-seed run (0.3's cfg.json, with its
                            flat `train_config`: a 0.3 frontier point)
    <family>/curve.json     that run's training losses, step by step
    expected.safetensors    each SAE's reconstruction of the 64 fixed inputs, and its codes
    topk/checkpoint/        the TopK run's checkpoint at step 8 (0.3's trainer.json) and the final weights
    run_0.3.json            the run.json a 0.3 `saelab train` wrote in fast mode
    ids_0.3.json            the grid id and zoo folder names 0.3 computed for the fast and full recipes

It is kept as the record of how the files were made: it imports 0.3's modules (`saelab.presets.ZOO`,
`saelab.training.checkpoints.ADDED_AFTER_0_3`, the flat TrainConfig) and does not run on later saelab, which the
tests hold to these files instead.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import sys
import tempfile
from dataclasses import asdict, replace
from pathlib import Path

import torch
from safetensors.torch import save_file

HERE = Path(__file__).resolve().parent
D, N, K = 16, 128, 4
COMMON = dict(n_latents=N, k=K, batch_size=256, epochs=2.0, lr=3e-3, eval_every=10**9, checkpoint_every=0,
              keep_checkpoints=0, log_every=1, progress=False, dead_tokens=256, seed=3)
FAMILIES = {  # TrainConfig changes (0.3's flat fields) per golden family
    "topk": dict(normalize="per_token_unit_norm", k_aux=8),
    "multi_topk": dict(normalize="dataset_unit_norm", multi_topk=True, k_aux=8),
    "batchtopk": dict(normalize="per_token_unit_norm", activation="batchtopk", k_aux=8),
    "matryoshka": dict(normalize="per_token_unit_norm", activation="batchtopk", matryoshka_widths="16,48", k_aux=8),
    "jumprelu": dict(normalize="per_token_unit_norm", activation="jumprelu", l0_coef=0.01, k_aux=0,
                     rescale_encoder_init=True, l1_warmup_frac=0.25),
    "relu": dict(normalize="layernorm", activation="relu", l1_coef=0.01, l1_warmup_frac=0.25, k_aux=0),
}


def data() -> tuple[torch.Tensor, torch.Tensor]:
    """Toy activations: sparse non-negative sums of 48 unit directions in 16 dimensions, plus an offset."""
    from saelab.acts.synthetic import ToyConfig, make_toy

    x = make_toy(ToyConfig(d=D, n_features=48, mean_active=3.0, n_samples=2048 + 64, noise=0.01, seed=7)).x_BD
    x = x.float() * 3.0 + 0.5
    return x[64:].contiguous(), x[:64].contiguous()


def main() -> None:
    from saelab.acts.cache import cache_from_tensor
    from saelab.sae.model import SAE
    from saelab.training.trainer import TrainConfig, Trainer

    train, inputs = data()
    save_file({"train": train, "inputs": inputs}, HERE / "data.safetensors")
    expected = {}
    with tempfile.TemporaryDirectory() as tmp:
        cache = cache_from_tensor(train, Path(tmp) / "cache", name="goldens")
        for name, changes in FAMILIES.items():
            cfg = TrainConfig(**COMMON, **changes)
            run = Path(tmp) / name
            Trainer(cfg, cache, run).train()
            shutil.rmtree(HERE / name, ignore_errors=True)
            shutil.copytree(run / "sae", HERE / name / "sae")
            curve = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
            curve = [{k: v for k, v in rec.items() if k not in ("seconds", "lr", "tokens")} for rec in curve]
            (HERE / name / "curve.json").write_text(json.dumps(curve, indent=0))
            sae = SAE.load(HERE / name / "sae")
            with torch.no_grad():
                enc = sae.encode(inputs)
                expected[f"{name}.recon"] = sae.reconstruct(inputs).contiguous()
                expected[f"{name}.codes"] = torch.zeros(len(inputs), N).scatter_add(
                    1, enc.top_idx_BK, enc.top_acts_BK).contiguous()
        # a 0.3 checkpoint: the TopK run again, checkpointed at step 8 (of 16)
        cfg = TrainConfig(**{**COMMON, "checkpoint_every": 8, "keep_checkpoints": 100}, **FAMILIES["topk"])
        run = Path(tmp) / "ckpt"
        Trainer(cfg, cache, run).train()
        target = HERE / "topk" / "checkpoint"
        shutil.copytree(run / "checkpoints" / "step-0000008", target / "step-0000008")
        shutil.copytree(run / "sae", target / "final")
    save_file(expected, HERE / "expected.safetensors")
    write_run_and_ids()


def write_run_and_ids() -> None:
    """0.3's run.json of a fast `saelab train`, and the ids 0.3 gave grids and zoo folders (as 0.3 computed them)."""
    from saelab.acts.harvest import harvest_key
    from saelab.presets import ZOO, ZOO_FAST, harvest_defaults, train_defaults
    from saelab.studies.scaling_grid import ScaleConfig, grid_settings
    from saelab.training.checkpoints import ADDED_AFTER_0_3
    from saelab.training.runs import check_run_folder

    hcfg, tcfg = harvest_defaults(fast=True), train_defaults(fast=True)
    settings = {"harvest": asdict(hcfg), "train": asdict(tcfg), "eval_tokens": 4000, "on_the_fly": False,
                "train_cache": None, "eval_cache": None}
    with tempfile.TemporaryDirectory() as tmp:
        check_run_folder(tmp, settings, tcfg.epochs)
        shutil.copy(Path(tmp) / "run.json", HERE / "run_0.3.json")
    ids = {"zoo": {}, "grid": {}}
    for fast in (True, False):
        for kind in ZOO:  # presets.zoo_sae's folder name, as 0.3 computed it
            h = harvest_defaults(fast)
            t = replace(train_defaults(fast), **{**ZOO[kind], **(ZOO_FAST.get(kind, {}) if fast else {})},
                        progress=False, checkpoint_every=0)
            train = {k: v for k, v in asdict(t).items() if not (k in ADDED_AFTER_0_3 and v == ADDED_AFTER_0_3[k])}
            key = json.dumps({"harvest": harvest_key(h), "train": {**train, "progress": None}}, sort_keys=True)
            tag = hashlib.sha256(key.encode()).hexdigest()[:10]
            ids["zoo"][f"{kind}-{'fast' if fast else 'full'}"] = f"{h.model}-{kind}-{'fast' if fast else 'full'}-{tag}"

    class Cache:  # what grid_settings reads of a cache
        def __init__(self, split):
            self.manifest = {"model": "smollm2-135m", "model_hash": "abc", "site": "resid_post", "layer": 22,
                             "corpus": "english-mix", "corpus_hash": "def", "n_tokens": 400000 if split else 16000}

    for fast in (True, False):
        for schedule in ("constant", "decay"):
            s = grid_settings(replace(ScaleConfig(), schedule=schedule), replace(train_defaults(fast), progress=False),
                              Cache(True), Cache(False))
            tag = hashlib.sha256(json.dumps(s, sort_keys=True, default=str).encode()).hexdigest()[:10]
            ids["grid"][f"{schedule}-{'fast' if fast else 'full'}"] = f"grid-{tag}"
    (HERE / "ids_0.3.json").write_text(json.dumps(ids, indent=1))


if __name__ == "__main__":
    torch.set_num_threads(1)
    sys.exit(main())
