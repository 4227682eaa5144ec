"""Golden folders (tests/data/goldens, written by saelab 0.3 before the SAE families moved into one file each): every
family's saved SAE loads and reconstructs fixed inputs as 0.3 did, a fixed-seed run of each family gives 0.3's loss
curve, and 0.3's checkpoints, run folders, grid ids and zoo folders are still read and reused."""

import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from saelab.sae.model import SAE

GOLDENS = Path(__file__).parent / "data" / "goldens"
FAMILIES = ("topk", "multi_topk", "batchtopk", "matryoshka", "jumprelu", "relu")
DATA = load_file(GOLDENS / "data.safetensors")
EXPECTED = load_file(GOLDENS / "expected.safetensors")


def golden_config(name: str):
    """The TrainConfig a golden run was made with, read back from its saved cfg.json (0.3's flat train_config)."""
    from saelab.training.identity import train_config_from_record

    return train_config_from_record(json.loads((GOLDENS / name / "sae" / "cfg.json").read_text())["train_config"])


def trainer(cfg, out=None):
    """0.3 trained the goldens from a cache on disk (`cache_from_tensor`); the tensor itself reads the same."""
    from saelab.training.trainer import Trainer

    return Trainer(cfg, DATA["train"], out)


@pytest.mark.parametrize("name", FAMILIES)
def test_golden_sae_reconstructs_as_saved(name):
    sae = SAE.load(GOLDENS / name / "sae")
    x = DATA["inputs"]
    with torch.no_grad():
        enc = sae.encode(x)
        codes = torch.zeros(len(x), sae.cfg.n_latents).scatter_add(1, enc.top_idx_BK, enc.top_acts_BK)
        torch.testing.assert_close(codes, EXPECTED[f"{name}.codes"], atol=1e-6, rtol=0)
        torch.testing.assert_close(sae.reconstruct(x), EXPECTED[f"{name}.recon"], atol=1e-6, rtol=0)


def _curve(records):
    return [{k: v for k, v in r.items() if k not in ("seconds", "lr", "tokens")} for r in records]


@pytest.mark.parametrize("name", FAMILIES)
def test_golden_run_gives_the_same_loss_curve(name, tmp_path):
    run = trainer(golden_config(name))  # in memory: no run folder
    run.train()
    assert not list(tmp_path.iterdir())
    got, want = _curve(run.history), json.loads((GOLDENS / name / "curve.json").read_text())
    assert [r["step"] for r in got] == [r["step"] for r in want]
    for g, w in zip(got, want):
        assert set(g) == set(w), (g, w)
        for key in w:
            assert g[key] == pytest.approx(w[key], abs=1e-5, rel=1e-5), (name, w["step"], key)
    with torch.no_grad():
        torch.testing.assert_close(run.sae.reconstruct(DATA["inputs"]), EXPECTED[f"{name}.recon"], atol=1e-5,
                                   rtol=1e-5)


def test_a_0_3_checkpoint_resumes_to_0_3s_weights(tmp_path):
    from dataclasses import replace

    run = tmp_path / "run"
    shutil.copytree(GOLDENS / "topk" / "checkpoint" / "step-0000008", run / "checkpoints" / "step-0000008")
    cfg = replace(golden_config("topk"), checkpoint_every=8, keep_checkpoints=100)
    from saelab.acts.cache import TensorActivations
    from saelab.training.trainer import Trainer

    resumed = Trainer(cfg, TensorActivations(DATA["train"], name="goldens"), run)  # 0.3 named its cache so
    assert resumed.step == 8
    resumed.train()
    final, want = SAE.load(run / "sae").state_dict(), SAE.load(GOLDENS / "topk" / "checkpoint" / "final").state_dict()
    for k in want:
        torch.testing.assert_close(final[k], want[k], atol=1e-6, rtol=1e-6, msg=k)


COMMON = dict(n_latents=128, k=4, batch_size=256, epochs=2.0, lr=3e-3, eval_every=10**9, checkpoint_every=0,
              keep_checkpoints=0, log_every=1, progress=False, dead_tokens=256, seed=3)
RECIPES = {  # the TrainConfig calls that made the goldens under 0.3 (tests/data/goldens/make_goldens.py)
    "topk": dict(normalize="per_token_unit_norm", k_aux=8),
    "multi_topk": dict(normalize="dataset_unit_norm", multi_topk=True, k_aux=8),
    "batchtopk": dict(normalize="per_token_unit_norm", activation="batchtopk", k_aux=8),
    "matryoshka": dict(normalize="per_token_unit_norm", activation="batchtopk", matryoshka_widths="16,48", k_aux=8),
    "jumprelu": dict(normalize="per_token_unit_norm", activation="jumprelu", l0_coef=0.01, k_aux=0,
                     rescale_encoder_init=True, l1_warmup_frac=0.25),
    "relu": dict(normalize="layernorm", activation="relu", l1_coef=0.01, l1_warmup_frac=0.25, k_aux=0),
}


def test_0_3_frontier_points_are_reused_by_todays_configs(tmp_path):
    """Each golden folder is a 0.3 frontier point (sae/ with 0.3's flat train_config): today's TrainConfig, written
    as 0.3's call was, reuses it instead of retraining; another setting is refused."""
    from dataclasses import replace

    from saelab.studies.frontier import train_point
    from saelab.training.trainer import TrainConfig

    for name, changes in RECIPES.items():
        shutil.copytree(GOLDENS / name / "sae", tmp_path / name / "sae")
        weights = tmp_path / name / "sae" / "sae.safetensors"
        before = weights.stat().st_mtime_ns
        cfg = TrainConfig(**COMMON, **changes)
        sae = train_point(cfg, DATA["train"], tmp_path / name)
        assert weights.stat().st_mtime_ns == before, name  # reused, not retrained
        torch.testing.assert_close(sae.reconstruct(DATA["inputs"]), EXPECTED[f"{name}.recon"], atol=1e-6, rtol=0)
        with pytest.raises(ValueError, match="trained with other settings"):
            train_point(replace(cfg, lr=1e-3), DATA["train"], tmp_path / name)


def test_a_0_3_run_folder_is_resumed_by_todays_command_line_and_refused_for_another(tmp_path):
    from dataclasses import asdict

    from saelab.cli import build_parser
    from saelab.flags import build_dataclass
    from saelab.presets import harvest_defaults, train_defaults
    from saelab.training.runs import check_run_folder
    from saelab.training.trainer import TrainConfig

    def train_settings(args, fast):  # as `saelab train` builds them
        from saelab.acts.harvest import HarvestConfig, harvest_settings

        hcfg = build_dataclass(HarvestConfig, args, "harvest.", base=harvest_defaults(fast))
        tcfg = build_dataclass(TrainConfig, args, "train.", base=train_defaults(fast))
        return {"harvest": harvest_settings(hcfg), "train": asdict(tcfg), "eval_tokens": 4000, "on_the_fly": False,
                "train_cache": None, "eval_cache": None}, tcfg.epochs

    shutil.copy(GOLDENS / "run_0.3.json", tmp_path / "run.json")
    (tmp_path / "checkpoints" / "step-0000010").mkdir(parents=True)  # a trained folder, not finished

    def settings(*flags):
        args = build_parser().parse_args(["train", *flags])
        return train_settings(args, fast=True)

    now, epochs = settings()
    assert check_run_folder(tmp_path, now, epochs) == "resume"
    other, epochs = settings("--train.k", "16")
    with pytest.raises(ValueError, match=r"--train\.k: 32 there, 16 asked"):
        check_run_folder(tmp_path, other, epochs)


def test_0_3_grid_ids_and_zoo_folders_are_kept(tmp_path):
    from dataclasses import replace

    from saelab.presets import train_defaults
    from saelab.studies.scaling_grid import ScaleConfig, grid_folder, grid_settings
    from saelab.zoo import ZOO, zoo_recipe

    ids = json.loads((GOLDENS / "ids_0.3.json").read_text())
    for fast in (True, False):
        for kind in ZOO:
            name = f"{kind}-{'fast' if fast else 'full'}"
            assert zoo_recipe(kind, fast, progress=False)[1].name == ids["zoo"][name], name

    class Cache:
        def __init__(self, split):
            self.manifest = {"model": "smollm2-135m", "model_hash": "abc", "site": "resid_post", "layer": 22,
                             "corpus": "english-mix", "corpus_hash": "def", "n_tokens": 400000 if split else 16000}

    for fast in (True, False):
        for schedule in ("constant", "decay"):
            s = grid_settings(replace(ScaleConfig(), schedule=schedule), replace(train_defaults(fast), progress=False),
                              Cache(True), Cache(False))
            assert grid_folder(tmp_path, s).name == ids["grid"][f"{schedule}-"
                                                                                       f"{'fast' if fast else 'full'}"]
