"""`saelab train --harvest.layers A,B` and `saelab harvest --layers A,B`: one pass of the LM for all sites, one run
folder and SAE per site (each resumable and checked like any run), one summary table."""

import json
import os
import subprocess
import sys

import pandas as pd

from saelab.sae.formats import load_sae
from tests.test_cli import TINY_TRAIN


def _saelab(args, env, timeout=900):
    return subprocess.run([sys.executable, "-m", "saelab", *args], env=env, capture_output=True, text=True,
                          timeout=timeout)


def test_train_several_layers_gives_one_run_folder_per_site_and_a_summary(tmp_path):
    env = {**os.environ, "SAELAB_HOME": str(tmp_path / "home"), "OMP_NUM_THREADS": "1"}
    out = tmp_path / "run"
    done = _saelab(["train", "--out", str(out), *TINY_TRAIN, "--harvest.layers", "1,3"], env)
    assert done.returncode == 0, done.stderr[-3000:]
    table = pd.read_csv(out / "summary.csv")
    assert table[["site", "layer"]].values.tolist() == [["resid_post", 1], ["resid_post", 3]]
    assert (table.test_nmse > 0).all() and (table.test_l0 > 0).all()
    for layer in (1, 3):
        folder = out / f"resid_post{layer}"
        sae = load_sae(folder)
        assert (sae.cfg.site, sae.cfg.layer, sae.cfg.n_latents) == ("resid_post", layer, 128)
        metrics = json.loads((folder / "report" / "metrics.json").read_text())
        assert metrics["harvest"]["layer"] == layer and (folder / "report" / "curves.html").exists()
        assert json.loads((folder / "run.json").read_text())["settings"]["harvest"]["layer"] == layer
    assert "resid_post" in done.stdout and "summary.csv" in done.stdout
    # each site's folder is a run folder: the same request again is refused as finished, before any harvest
    acts = sorted(p.name for p in (tmp_path / "home" / "acts").iterdir())
    assert len(acts) == 6  # train, validation and test caches of two layers: each where a single-layer run looks
    again = _saelab(["train", "--out", str(out), *TINY_TRAIN, "--harvest.layers", "1,3"], env, timeout=300)
    assert again.returncode == 2 and "holds a finished run" in again.stderr and "resid_post1" in again.stderr
    single = _saelab(["train", "--out", str(tmp_path / "one"), *TINY_TRAIN, "--harvest.layer", "3"], env)
    assert single.returncode == 0, single.stderr[-3000:]
    assert sorted(p.name for p in (tmp_path / "home" / "acts").iterdir()) == acts  # reused, not harvested again
    fly = _saelab(["train", "--out", str(tmp_path / "fly"), *TINY_TRAIN, "--harvest.layers", "1,3", "--on-the-fly"],
                  env, timeout=300)
    assert fly.returncode == 2 and "drop --on-the-fly" in fly.stderr


def test_harvest_command_with_several_layers_writes_one_cache_each(tmp_path):
    env = {**os.environ, "SAELAB_HOME": str(tmp_path / "home"), "OMP_NUM_THREADS": "1"}
    done = _saelab(["harvest", "--model", "tiny-gpt2", "--corpus", "synthetic", "--max_tokens", "2000", "--layers",
                    "0,2", "--sites", "resid_post,attn_out", "--out", str(tmp_path / "acts"), "--device", "cpu"], env)
    assert done.returncode == 0, done.stderr[-3000:]
    assert sorted(p.name for p in (tmp_path / "acts").iterdir()) == ["attn_out0", "attn_out2", "resid_post0",
                                                                      "resid_post2"]
    assert done.stdout.count('"n_tokens"') == 4
