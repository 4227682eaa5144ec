"""Matched comparisons: the L1 calibration finds a coefficient for a target L0; the frontier trains both families
for the same steps, scores them and reuses finished points."""

from dataclasses import replace

import pytest

from saelab.studies.frontier import FrontierConfig, calibrate_l1, frontier_figures, run_frontier
from saelab.training.trainer import TrainConfig

BASE = TrainConfig(n_latents=128, k=8, batch_size=512, epochs=8.0, lr=4e-3, progress=False, dead_tokens=2048,
                   decay_frac=0.5)
RELU = {"activation": "relu", "k_aux": 0, "l1_warmup_frac": 0.25}


def test_calibrate_l1_reaches_the_target_l0(tmp_path, caches):
    train, held = caches
    logs = []
    r = calibrate_l1(BASE, RELU, 8, train, held, tmp_path, start=0.3, steps_frac=0.5, tol=0.15, log=logs.append)
    assert r["converged"], r["trials"]
    assert abs(r["l0"] / 8 - 1) <= 0.15 and len(logs) == len(r["trials"]) >= 2
    l0s = {t["l1_coef"]: t["l0"] for t in r["trials"]}
    coefs = sorted(l0s)
    assert l0s[coefs[0]] > l0s[coefs[-1]]  # a larger L1 coefficient gives a smaller L0
    assert all(float(f"{c:.3g}") == c for c in coefs)  # rounded, so the frontier can reuse the trials


def test_frontier_trains_both_families_for_the_same_steps_and_reuses_points(tmp_path, caches, tiny_lm):
    import torch

    train, held = caches
    cfg = FrontierConfig(ks="4,8", l1_coefs="0.01,0.1", steps_frac=0.25)
    tokens = torch.randint(0, 100, (4, 16))
    df = run_frontier(cfg, BASE, RELU, train, held, tmp_path, lm=tiny_lm, tokens_NT=tokens, progress=False)
    assert list(df.point) == ["topk-k4", "topk-k8", "relu-l1-0.01", "relu-l1-0.1"]
    assert df.steps.nunique() == 1 and df.steps.iloc[0] == 19 * 2  # 19 batches an epoch, 2 epochs
    topk = df[df.family == "topk"].set_index("k")
    assert topk.l0[4] == pytest.approx(4) and topk.nmse[8] < topk.nmse[4]
    relu = df[df.family == "relu"].set_index("l1_coef")
    assert relu.l0[0.1] < relu.l0[0.01]
    assert df.delta_ce.notna().all() and (tmp_path / "frontier.csv").exists()
    assert len(frontier_figures(df)) == 2
    before = (tmp_path / "topk-k4" / "sae" / "sae.safetensors").stat().st_mtime_ns
    again = run_frontier(cfg, BASE, RELU, train, held, tmp_path, progress=False)  # reused, not retrained
    assert (tmp_path / "topk-k4" / "sae" / "sae.safetensors").stat().st_mtime_ns == before
    assert again.nmse.tolist() == pytest.approx(df.nmse.tolist())
    with pytest.raises(ValueError, match="trained with other settings"):
        run_frontier(cfg, replace(BASE, lr=1e-3), RELU, train, held, tmp_path, progress=False)


def test_a_point_saved_before_the_ema_options_is_reused(tmp_path, caches):
    import json

    from saelab.studies.frontier import train_point

    tcfg = TrainConfig(n_latents=64, k=4, batch_size=512, epochs=1.0, progress=False, checkpoint_every=0,
                       eval_every=10**6)
    train_point(tcfg, caches[0], tmp_path / "p")
    cfg_path = tmp_path / "p" / "sae" / "cfg.json"
    cfg = json.loads(cfg_path.read_text())
    for name in ("ema_decay", "rescale_encoder_init"):
        del cfg["train_config"][name]
    cfg_path.write_text(json.dumps(cfg))
    before = cfg_path.stat().st_mtime_ns
    train_point(tcfg, caches[0], tmp_path / "p")  # read as trained with both off: reused, not refused
    assert cfg_path.stat().st_mtime_ns == before
    with pytest.raises(ValueError, match="other settings"):
        train_point(replace(tcfg, ema_decay=0.99), caches[0], tmp_path / "p")
