"""The command line as a newcomer meets it: resume checks before any model runs, flag spellings and
choices, device flags, clean errors, help for every flag, and the README's Python snippet."""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from saelab.cli import build_parser, main
from saelab.flags import normalize_flag_spellings
from saelab.training.runs import check_run_folder

ROOT = Path(__file__).resolve().parents[1]
TINY_TRAIN = ["--harvest.model", "tiny-gpt2", "--harvest.corpus", "synthetic", "--harvest.max_tokens", "6300",
              "--harvest.store_dtype", "float32", "--eval-tokens", "1260", "--train.n_latents", "128",
              "--train.k", "4", "--train.batch_size", "256", "--train.epochs", "1", "--train.progress", "false",
              "--train.checkpoint_every", "5", "--device", "cpu"]


def _saelab(args, env, timeout=600):
    return subprocess.run([sys.executable, "-m", "saelab", *args], env=env, capture_output=True, text=True,
                          timeout=timeout)


def _subparsers():
    return build_parser()._subparsers._group_actions[0].choices


def test_a_used_run_folder_refuses_other_settings_before_any_model_runs(tmp_path):
    env = {**os.environ, "SAELAB_HOME": str(tmp_path / "home"), "OMP_NUM_THREADS": "1"}
    run = tmp_path / "run"
    first = _saelab(["train", "--out", str(run), *TINY_TRAIN], env)
    assert first.returncode == 0, first.stderr[-3000:]
    caches = sorted(p.name for p in (tmp_path / "home" / "acts").iterdir())
    # the README's own example: another layer on the same --out
    other_layer = _saelab(["train", "--out", str(run), *TINY_TRAIN, "--harvest.layer", "1"], env, timeout=120)
    assert other_layer.returncode == 2
    assert "--harvest.layer: the default there, 1 asked" in other_layer.stderr
    assert "another --out folder" in other_layer.stderr
    assert "Traceback" not in other_layer.stderr
    other_lr = _saelab(["train", "--out", str(run), *TINY_TRAIN, "--train.lr", "0.01"], env, timeout=120)
    assert other_lr.returncode == 2 and "--train.lr" in other_lr.stderr
    same = _saelab(["train", "--out", str(run), *TINY_TRAIN], env, timeout=120)
    assert same.returncode == 2 and "holds a finished run" in same.stderr and "--train.epochs" in same.stderr
    assert sorted(p.name for p in (tmp_path / "home" / "acts").iterdir()) == caches  # nothing was harvested
    assert not re.search(r"harvest .*tok", other_layer.stderr + other_lr.stderr + same.stderr)


def test_run_folder_check_resumes_extends_and_reopens_an_untrained_folder(tmp_path):
    settings = {"harvest": {"layer": 2, "device": "cpu"}, "train": {"lr": 1e-3, "epochs": 1.0, "progress": True}}
    assert check_run_folder(tmp_path, settings, 1.0) == "new"
    # nothing trained yet: other settings replace the record
    assert check_run_folder(tmp_path, {**settings, "harvest": {"layer": 3}}, 1.0) == "new"
    (tmp_path / "checkpoints" / "step-0000002").mkdir(parents=True)
    with pytest.raises(ValueError, match="--harvest.layer: 3 there, 2 asked"):
        check_run_folder(tmp_path, settings, 1.0)
    moved = {"harvest": {"layer": 3, "device": "cuda"}, "train": {**settings["train"], "progress": False}}
    assert check_run_folder(tmp_path, moved, 1.0) == "resume"  # device and progress bars may change
    longer = {**moved, "train": {**moved["train"], "epochs": 2.0}}
    assert check_run_folder(tmp_path, longer, 2.0) == "extend"
    (tmp_path / "sae").mkdir()
    (tmp_path / "sae" / "cfg.json").write_text("{}")
    with pytest.raises(ValueError, match="finished run .* larger --train.epochs .it was 2"):
        check_run_folder(tmp_path, longer, 2.0)
    assert check_run_folder(tmp_path, {**longer, "train": {**longer["train"], "epochs": 3.0}}, 3.0) == "extend"
    (tmp_path / "checkpoints" / "step-0000002").rmdir()
    with pytest.raises(ValueError, match="kept no checkpoint"):
        check_run_folder(tmp_path, {**longer, "train": {**longer["train"], "epochs": 4.0}}, 4.0)


def test_both_flag_spellings_and_suggestions():
    parser = build_parser()
    got = normalize_flag_spellings(parser, ["train", "--train.n-latents", "64", "--eval_tokens=10", "--on_the_fly"])
    assert got == ["train", "--train.n_latents", "64", "--eval-tokens=10", "--on-the-fly"]
    args = parser.parse_args(got)
    assert getattr(args, "train.sae.n_latents") == 64 and args.eval_tokens == 10 and args.on_the_fly  # an alias


def test_each_command_keeps_its_own_spelling_of_a_flag_another_command_spells_otherwise():
    # `train --delta-ce-contexts` and `frontier --delta_ce_contexts` share a spelling key; train's flag was rewritten
    # to frontier's and refused ("unknown flag(s): --delta_ce_contexts") until the lookup became per command
    parser = build_parser()
    for argv, want in ((["train", "--delta-ce-contexts", "0"], "--delta-ce-contexts"),
                       (["train", "--delta_ce_contexts", "0"], "--delta-ce-contexts"),
                       (["frontier", "--delta-ce-contexts", "0"], "--delta_ce_contexts"),
                       (["train", "--harvest.corpus", "synthetic", "--delta_ce_contexts", "0"], "--delta-ce-contexts")):
        got = normalize_flag_spellings(parser, argv)
        assert got[-2] == want, argv
        assert parser.parse_args(got).delta_ce_contexts == 0


def test_unknown_flag_gets_a_suggestion_and_no_traceback(capsys):
    assert main(["train", "--train.n-latentz", "64"]) == 2
    err = capsys.readouterr().err
    assert "did you mean --train.n_latents?" in err and "saelab train --help" in err


@pytest.mark.parametrize("flag, value", [("--harvest.site", "resid_pre"), ("--train.normalize", "unit_norm"),
                                         ("--train.activation", "gelu"), ("--device", "gpu"),
                                         ("--harvest.compute_dtype", "fp16")])
def test_fixed_choices_are_checked_when_parsed(flag, value, capsys):
    with pytest.raises(SystemExit) as e:
        build_parser().parse_args(["train", flag, value])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert "invalid choice" in err or "device must be" in err


def test_configs_check_their_choices_in_python():
    from saelab.acts.harvest import HarvestConfig
    from saelab.training.trainer import TrainConfig

    with pytest.raises(ValueError, match="normalize must be one of .*per_token_unit_norm"):
        TrainConfig(normalize="unit_norm")
    with pytest.raises(ValueError, match="HarvestConfig.site must be one of"):
        HarvestConfig(site="resid_pre")
    with pytest.raises(ValueError, match="device must be 'auto', 'cpu', 'cuda' or 'cuda:N'"):
        HarvestConfig(device="gpu")
    assert TrainConfig(normalize="unit_msn").normalize == "dataset_unit_norm"  # the old name still reads


def test_every_command_that_runs_a_model_has_a_device_flag():
    from saelab.lm.models import resolve_device

    for name, sub in _subparsers().items():
        dests = {a.dest for a in sub._actions}
        assert ("device" in dests) == (name not in ("assets", "course", "push")), name  # push uploads files only
    assert resolve_device("auto") == ("cuda" if torch.cuda.is_available() else "cpu")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="sees no CUDA GPU"):
            resolve_device("cuda")


def test_errors_a_user_causes_print_one_line_and_debug_shows_the_traceback(tmp_path):
    env = {**os.environ, "SAELAB_HOME": str(tmp_path / "home"), "HF_HUB_OFFLINE": "0"}
    r = _saelab(["demo", "--model", "tiny-gpt", "--device", "cpu"], env, timeout=120)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert "Did you mean 'tiny-gpt2'?" in r.stderr and "--debug" in r.stderr
    r = _saelab(["demo", "--model", "tiny-gpt", "--device", "cpu", "--debug"], env, timeout=120)
    assert r.returncode != 0 and "Traceback" in r.stderr
    r = _saelab(["sweep", "--sae", str(tmp_path / "nothing")], env, timeout=120)
    assert r.returncode == 2 and "no SAE at" in r.stderr and "Traceback" not in r.stderr


def test_every_flag_has_a_meaning_and_a_default():
    for name, sub in _subparsers().items():
        formatter = sub._get_formatter()
        for action in sub._actions:
            if action.dest == "help":
                continue
            text = formatter._get_help_string(action) or ""
            assert text.strip() and not text.startswith(" (default"), f"saelab {name} {action.dest}: no meaning"
            if action.required:  # a required positional (course's action and file) has no default to show
                continue
            assert "default" in text, f"saelab {name} {action.dest}: no default shown"
        assert "usage:" in sub.format_help(), name  # argparse %-formats help: a stray % would raise here


def test_readme_python_snippet_runs(tmp_path, caches):
    """The README's "Python API" snippet, run on a tiny SAE in place of runs/default/sae."""
    from saelab.training.trainer import TrainConfig, Trainer

    readme = (ROOT / "README.md").read_text()
    section = readme.split("## Python API", 1)[1]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    Trainer(TrainConfig(n_latents=64, k=4, batch_size=512, epochs=0.2, progress=False, k_aux=0),
            caches[0], tmp_path / "run", provenance={"model": "tiny-gpt2", "site": "resid_post", "layer": 2}).train()
    code = code.replace("runs/default", str(tmp_path / "run")).replace("runs/saelens-export",
                                                                        str(tmp_path / "export"))
    scope: dict = {}
    exec(compile(code, "README.md", "exec"), scope)  # noqa: S102 - our own README
    assert (tmp_path / "export" / "cfg.json").exists()
    assert json.loads((tmp_path / "export" / "cfg.json").read_text())["d_sae"] == 64


def test_saelab_synthetic_writes_every_familys_ground_truth_scores(tmp_path):
    env = {**os.environ, "SAELAB_HOME": str(tmp_path / "home"), "OMP_NUM_THREADS": "1", "SAELAB_FAST": "1"}
    out = tmp_path / "syn"
    r = _saelab(["synthetic", "--out", str(out), "--families", "topk,relu", "--data.n_samples", "20480",
                 "--epochs", "1"], env)
    assert r.returncode == 0, r.stderr[-3000:]
    import pandas as pd

    df = pd.read_csv(out / "synthetic.csv")
    assert list(df.family) == ["topk", "relu"] and df.mcc.between(0, 1).all()
    # absorption is scored over recovered pairs only: NaN where this tiny run recovers none, with the count beside it
    assert (df.absorption.between(0, 1) | (df.absorption.isna() & (df.pairs_unrecovered > 0))).all()
    assert df.absorption_all_pairs.notna().all()
    bad = _saelab(["synthetic", "--out", str(out), "--generator", "sae-lens"], env)
    assert bad.returncode != 0 and "generator must be one of" in bad.stderr


def test_saelab_train_over_two_seeds_writes_each_seeds_run_and_a_summary_of_them(tmp_path):
    import pandas as pd

    env = {**os.environ, "SAELAB_HOME": str(tmp_path / "home"), "OMP_NUM_THREADS": "1"}
    out = tmp_path / "seeds"
    r = _saelab(["train", "--out", str(out), *TINY_TRAIN, "--seeds", "2", "--delta-ce-contexts", "2"], env)
    assert r.returncode == 0, r.stderr[-3000:]
    assert [json.loads((out / f"seed-{s}" / "run.json").read_text())["settings"]["train"]["seed"]
            for s in (0, 1)] == [0, 1]
    per_seed = pd.read_csv(out / "seeds.csv")
    assert list(per_seed.seed) == [0, 1]
    assert per_seed.nmse.nunique() == 2  # another initialisation and batch order, another SAE
    for s in (0, 1):  # each row is that seed's own report
        final = json.loads((out / f"seed-{s}" / "report" / "metrics.json").read_text())["final"]
        assert per_seed.nmse[s] == pytest.approx(final["nmse"])
    summary = pd.read_csv(out / "seeds_summary.csv").iloc[0]
    assert summary.n_seeds == 2
    for m in ("nmse", "delta_ce_trained_positions", "delta_ce_every_position"):
        assert summary[f"{m}_mean"] == pytest.approx(per_seed[m].mean())
        assert summary[f"{m}_lo"] < summary[f"{m}_mean"] < summary[f"{m}_hi"]
