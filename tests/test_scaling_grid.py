"""Scaling laws: fits recover known laws; grids resume after a kill, separate changed settings and
report failed points."""

import os
import subprocess
import sys
import time
from dataclasses import replace

import numpy as np
import pandas as pd

from saelab.studies import scaling_grid
from saelab.studies.scaling_grid import ScaleConfig, read_points, run_grid
from saelab.studies.scaling_laws import (
    compute_envelope,
    fit_grid,
    fit_joint_law,
    fit_power_law,
    holdout_prediction,
    joint_law,
    power_law,
)
from saelab.training.trainer import TrainConfig

BASE = TrainConfig(n_latents=64, k=4, batch_size=512, epochs=1.0, lr=2e-3, progress=False, log_every=1)
GRID = ScaleConfig(ns="32,64", ks="4", epochs=0.5, eval_every=2, lr_ref=2e-3, lr_ref_n=64)


def test_power_law_fit_recovers_a_known_law_with_its_uncertainty():
    rng = np.random.default_rng(0)
    n = 2.0 ** np.arange(7, 15)
    loss = power_law(n, 3.0, 0.35, 0.06) * np.exp(rng.normal(0, 0.003, len(n)))
    f = fit_power_law(n, loss)
    assert abs(f["b"] - 0.35) < 3 * f["b_err"] + 0.01 and f["b_err"] < 0.05
    assert abs(f["c"] - 0.06) < 0.01 and f["r2_log"] > 0.999
    h = holdout_prediction(n, loss)
    assert h["held_out_n"] == 2 ** 14 and abs(h["relative_error"]) < 0.02
    wrong = holdout_prediction(n, power_law(n, 3.0, 0.35, 0.06) * np.where(n == n.max(), 1.3, 1.0))
    assert wrong["relative_error"] < -0.15  # a point off the law is caught by the prediction


def test_joint_law_fit_recovers_the_papers_form():
    true = (-0.5, 0.25, -0.2, -0.01, -2.5, -0.1)
    n, k = np.meshgrid(2.0 ** np.arange(8, 14), [8.0, 16.0, 32.0, 64.0])
    n, k = n.ravel(), k.ravel()
    loss = joint_law((n, k), *true)
    f = fit_joint_law(n, k, loss)
    assert f["rms_residual_log"] < 1e-3
    assert np.allclose(joint_law((n, k), *[f[x] for x in ("alpha", "beta_k", "beta_n", "gamma", "zeta", "eta")]),
                       loss, rtol=1e-3)
    assert abs(f["beta_n"] - true[2]) < 0.02


def test_compute_envelope_is_the_pareto_front_of_the_evaluations():
    curves = pd.DataFrame({"n": [1, 1, 1, 2, 2, 2, 3, 3], "k": [4] * 8, "flops": [1, 2, 4, 2, 4, 8, 1.5, 3],
                           "nmse": [0.5, 0.4, 0.35, 0.6, 0.3, 0.2, 0.45, 0.7]})  # run 3 gets worse: never used
    env = compute_envelope(curves, skip_frac=0.0)
    assert list(zip(env.flops, env.nmse, env.n)) == [(1, 0.5, 1), (1.5, 0.45, 3), (2, 0.4, 1), (4, 0.3, 2),
                                                     (8, 0.2, 2)]
    assert list(compute_envelope(curves, skip_frac=0.5).flops) == [1.5, 2, 4, 8]  # each run's first half left out


def test_compute_law_is_fitted_back_from_training_curves():
    rows = []
    for n in (256, 512, 1024, 2048):  # each run follows L = 3 C^-0.3 + 0.1 until its own floor 0.1 + 2/n
        for c in np.geomspace(1e6, 1e6 * n, 30):
            rows.append({"n": n, "k": 8, "tokens": 0, "flops": c, "nmse": max(3 * c ** -0.3 + 0.1, 0.1 + 2 / n)})
    points = pd.DataFrame([{"n": n, "k": 8, "nmse": 0.1 + 2 / n + 0.01, "status": "ok"} for n in (256, 512, 1024)])
    fits = fit_grid(points, pd.DataFrame(rows))
    c = fits["compute"][8]
    assert abs(c["b"] - 0.3) < 0.03 and abs(c["c"] - 0.1) < 0.01 and not fits["errors"]


GRID_SCRIPT = """
import sys, torch
torch.set_num_threads(1)
from saelab.acts.cache import ActivationCache
from saelab.studies.scaling_grid import ScaleConfig, run_grid
from saelab.training.trainer import TrainConfig
base = TrainConfig(n_latents=64, k=4, batch_size=512, epochs=1.0, lr=2e-3, progress=False, log_every=1)
grid = ScaleConfig(ns="32,64", ks="4", epochs=0.5, eval_every=2, lr_ref=2e-3, lr_ref_n=64)
run_grid(grid, base, ActivationCache(sys.argv[1]), ActivationCache(sys.argv[2]), sys.argv[3], progress=False,
         log=lambda *a: None)
"""


def test_a_constant_lr_grid_point_is_the_curve_that_L_of_C_reads(tmp_path, caches):
    """schedule='constant' (the default): after the warmup the point trains at its full learning rate to the
    end, and `loss_curves` reads exactly that run's held-out evaluations; 'decay' is another grid (the id
    of grids from before the option) whose point ends with the learning rate near zero."""
    from saelab.studies.scaling_grid import grid_folder, grid_settings, loss_curves, point_config
    from saelab.training.trainer import read_log

    train, held = caches
    grid = replace(GRID, ns="32")
    assert grid.schedule == "constant" and point_config(grid, BASE, 32, 4).decay_frac == 0.0
    _, folder = run_grid(grid, BASE, train, held, tmp_path, progress=False, log=lambda *a: None)
    log = [r for r in read_log(folder / "n32-k4" / "log.jsonl") if "lr" in r]
    warm = [r["lr"] for r in log if r["step"] > 1]
    assert max(warm) == min(warm) == point_config(grid, BASE, 32, 4).lr  # constant after the warmup
    evals = [(r["tokens"], r["eval_nmse"]) for r in read_log(folder / "n32-k4" / "log.jsonl") if "eval_nmse" in r]
    curves = loss_curves(folder, train.d_model)
    assert list(zip(curves.tokens, curves.nmse)) == evals
    decay = replace(grid, schedule="decay")
    assert point_config(decay, BASE, 32, 4).decay_frac == BASE.decay_frac > 0
    assert grid_folder(tmp_path, grid_settings(decay, BASE, train, held)) != folder
    assert "schedule" not in grid_settings(decay, BASE, train, held)["scale"]  # the pre-0.2 grid id


def test_a_killed_grid_resumes_skipping_finished_points_and_gives_the_same_csv(tmp_path, caches):
    import torch

    torch.set_num_threads(1)
    train, held = caches
    ref, _ = run_grid(GRID, BASE, train, held, tmp_path / "ref", progress=False, log=lambda *a: None)
    assert list(ref.status) == ["ok", "ok"] and ref.nmse.iloc[1] < ref.nmse.iloc[0]
    script = tmp_path / "grid.py"
    script.write_text(GRID_SCRIPT)
    out = tmp_path / "killed"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, str(script), str(train.folder), str(held.folder), str(out)], env=env)
    deadline = time.time() + 300
    while time.time() < deadline and not list(out.glob("grid-*/points.csv")):
        time.sleep(0.05)
    proc.kill()
    proc.wait()
    folder = next(out.glob("grid-*"))
    first = read_points(folder)
    assert len(first) == 1, "the grid finished before the kill; nothing was tested"
    trained = []
    original = scaling_grid.train_point

    def spy(tcfg, *a, **kw):
        trained.append(tcfg.n_latents)
        return original(tcfg, *a, **kw)

    scaling_grid.train_point = spy
    try:
        again, again_folder = run_grid(GRID, BASE, train, held, out, progress=False, log=lambda *a: None)
    finally:
        scaling_grid.train_point = original
    assert again_folder == folder and trained == [64]  # the finished point was skipped
    cols = ["n", "k", "lr", "tokens", "steps", "flops", "l0", "status"]
    pd.testing.assert_frame_equal(again[cols], ref[cols])
    np.testing.assert_allclose(again.nmse, ref.nmse, rtol=1e-4)


def test_a_changed_setting_starts_a_new_grid_and_a_failed_point_is_reported(tmp_path, caches, monkeypatch):
    train, held = caches
    one = replace(GRID, ns="32")
    table, folder = run_grid(one, BASE, train, held, tmp_path, progress=False, log=lambda *a: None)
    extended, same = run_grid(GRID, BASE, train, held, tmp_path, progress=False, log=lambda *a: None)
    assert same == folder and len(extended) == 2  # another n extends the grid
    again, _ = run_grid(one, BASE, train, held, tmp_path, progress=False, log=lambda *a: None)
    assert list(again.n) == [32]  # only the points asked for come back
    other, other_folder = run_grid(replace(GRID, epochs=0.25), BASE, train, held, tmp_path, progress=False,
                                   log=lambda *a: None)
    assert other_folder != folder and (other.tokens < extended.tokens).all()
    assert len(read_points(folder)) == 2  # the first grid is untouched

    def broken(tcfg, *a, **kw):
        raise RuntimeError("out of memory (simulated)")

    monkeypatch.setattr(scaling_grid, "train_point", broken)
    messages = []
    failed, _ = run_grid(replace(GRID, eval_every=3), BASE, train, held, tmp_path, progress=False,
                         log=messages.append)
    assert list(failed.status) == ["failed", "failed"] and "simulated" in failed.error.iloc[0]
    assert any("failed" in m for m in messages)
    monkeypatch.undo()
    fixed, _ = run_grid(replace(GRID, eval_every=3), BASE, train, held, tmp_path, progress=False,
                        log=lambda *a: None)
    assert list(fixed.status) == ["ok", "ok"]  # failed points are retried


def test_fit_grid_on_a_grid_table():
    rows = [{"n": n, "k": k, "nmse": float(joint_law((n, k), -0.5, 0.25, -0.2, -0.01, -2.5, -0.1)), "status": "ok"}
            for k in (8, 16) for n in (256, 512, 1024, 2048)]
    fits = fit_grid(pd.DataFrame(rows), pd.DataFrame(columns=["n", "k", "flops", "nmse"]))
    assert set(fits["per_k"]) == {8, 16} and set(fits["holdout"]) == {8, 16} and "joint" in fits
    assert abs(fits["holdout"][8]["relative_error"]) < 0.05


def test_scale_over_two_seeds_writes_each_seeds_grid_and_the_summary(tmp_path, caches):
    """`saelab scale --seeds 2`: one grid a seed (the seed is a grid setting), and a summary whose means are the
    per-seed rows'."""
    from saelab.cli import main

    train, held = caches
    rc = main(["scale", "--train-cache", str(train.folder), "--eval-cache", str(held.folder), "--out", str(tmp_path),
               "--ns", "32,64,128,256", "--ks", "4", "--epochs", "0.5", "--eval_every", "2", "--lr_ref", "2e-3",
               "--lr_ref_n", "64", "--seeds", "2", "--device", "cpu"])
    assert rc == 0
    assert len(list(tmp_path.glob("grid-*"))) == 2
    points = pd.read_csv(tmp_path / "seeds_points.csv")
    assert sorted(points.seed.unique()) == [0, 1] and len(points) == 8
    summary = pd.read_csv(tmp_path / "seeds_summary.csv")
    for row in summary.itertuples():
        part = points[(points.n == row.n) & (points.k == row.k)]
        assert row.n_seeds == 2 and abs(row.nmse_mean - part.nmse.mean()) < 1e-9
        assert row.nmse_lo <= row.nmse_mean <= row.nmse_hi
    assert (tmp_path / "seeds_fits.csv").exists() and (tmp_path / "seeds.html").exists()
