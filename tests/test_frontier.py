"""Matched comparisons: the L1 calibration finds a coefficient for a target L0; the frontier trains both families
for the same steps, scores them and reuses finished points."""

from dataclasses import replace

import pytest

from saelab.evals.absorption import AbsorptionConfig
from saelab.evals.spelling import SpellingConfig
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


def test_matched_points_refits_the_power_law_until_every_target_is_hit():
    from saelab.studies.frontier import matched_points

    calls = []

    def try_coef(c):  # a family whose L0 falls as 900 c^-0.7 (the guessed slope is 2.4: the first round misses)
        calls.append(c)
        return {"l1_coef": c, "l0": 900 * c ** -0.7}

    chosen, trials = matched_points(BASE, "relu", [8, 16, 32, 64], try_coef, tol=0.1, rounds=2)
    assert len(trials) == len(calls) > 4  # the guesses missed, the refit hit
    assert all(abs(chosen[t]["l0"] / t - 1) <= 0.1 for t in chosen), chosen
    assert all(float(f"{c:.3g}") == c for c in calls)
    chosen0, trials0 = matched_points(BASE, "relu", [8, 16, 32, 64], try_coef, tol=0.1, rounds=0)
    assert len(trials0) == 4  # guesses only


def test_frontier_trains_every_family_for_the_same_steps_and_reuses_points(tmp_path, caches, tiny_lm):
    import torch

    train, held = caches
    cfg = FrontierConfig(families="topk,batchtopk,matryoshka,jumprelu,relu", target_l0s="4,8", steps_frac=0.125,
                         rounds=1, probes=False,  # the byte tokenizer's 52 letters, prompts under its 256 positions
                         absorption_settings=AbsorptionConfig(spelling=SpellingConfig(max_words=52, icl_examples=4)))
    tokens = torch.randint(0, 100, (4, 16))
    df = run_frontier(cfg, BASE, train, held, tmp_path, lm=tiny_lm, tokens_NT=tokens, progress=False, log=lambda m: 0)
    assert list(df.family) == ["topk", "topk", "batchtopk", "batchtopk", "matryoshka", "matryoshka", "jumprelu",
                               "jumprelu", "relu", "relu"]
    assert df.steps.nunique() == 1 and df.steps.iloc[0] == 19  # 19 batches an epoch, 1 epoch
    topk = df[df.family == "topk"].set_index("target_l0")
    assert topk.l0[4] == pytest.approx(4) and topk.nmse[8] < topk.nmse[4]
    assert (topk.l0_p90 == topk.index).all()  # TopK: k per token at most (fewer only where a kept value is <= 0)
    bt = df[df.family == "batchtopk"].set_index("target_l0")
    assert (bt.l0_p90 > bt.l0_p10).all()  # BatchTopK: the count varies per token
    for fam in ("relu", "jumprelu"):  # a penalised family: a larger coefficient where the target is smaller
        part = df[df.family == fam].set_index("target_l0")
        assert part.coef[4] >= part.coef[8] and part.l0[4] <= part.l0[8], part
    assert df.delta_ce.notna().all() and df.dead_train_frac.notna().all()
    assert df.absorption_letters.between(0, 26).all() and not df.absorption_readable.any()  # 10 test words
    assert (tmp_path / "frontier.csv").exists() and (tmp_path / "trials.csv").exists()
    import pandas as pd

    from saelab.studies.frontier import at_l0

    trials = pd.read_csv(tmp_path / "trials.csv")
    relu = trials[trials.family == "relu"].sort_values("l0")
    lo, hi = relu.iloc[0], relu.iloc[-1]
    mid = (lo.l0 * hi.l0) ** 0.5  # halfway in log L0: the geometric mean of the two ends' nmse
    if len(relu) == 2:
        assert at_l0(trials, "relu", mid) == pytest.approx((lo.nmse * hi.nmse) ** 0.5)
    assert lo.nmse >= at_l0(trials, "relu", mid) >= hi.nmse or lo.nmse <= at_l0(trials, "relu", mid) <= hi.nmse
    assert at_l0(trials, "relu", hi.l0 * 2) != at_l0(trials, "relu", hi.l0 * 2)  # outside the trials: NaN
    # delta CE vs nmse; nmse, delta CE, dead, never fired, L0 spread against L0 (no probes here), and absorption
    # where any letter of the random tiny model passed the probe gate
    assert len(frontier_figures(df)) == 6 + bool(df.absorption.notna().any())
    before = (tmp_path / "topk-k4" / "sae" / "sae.safetensors").stat().st_mtime_ns
    again = run_frontier(cfg, BASE, train, held, tmp_path, progress=False, log=lambda m: 0)  # reused, not retrained
    assert (tmp_path / "topk-k4" / "sae" / "sae.safetensors").stat().st_mtime_ns == before
    assert again.nmse.tolist() == pytest.approx(df.nmse.tolist())
    with pytest.raises(ValueError, match="trained with other settings"):
        run_frontier(cfg, replace(BASE, lr=1e-3), train, held, tmp_path, progress=False, log=lambda m: 0)
    with pytest.raises(ValueError, match="families must be among"):
        run_frontier(replace(cfg, families="topk,gated"), BASE, train, held, tmp_path, progress=False)


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


def test_a_two_seed_frontier_summarises_its_per_seed_rows(tmp_path, caches, tiny_lm):
    """--seeds 2 (fast sizes): every point once per seed, the penalised family at the first seed's coefficient, and a
    summary whose means and t-intervals are those of the per-seed rows."""
    import math

    import pandas as pd
    import torch

    train, held = caches
    cfg = FrontierConfig(families="topk,relu", target_l0s="4,8", steps_frac=0.125, rounds=1, probes=False,
                         absorption=False)
    tokens = torch.randint(0, 100, (4, 16))
    df = run_frontier(cfg, BASE, train, held, tmp_path, lm=tiny_lm, tokens_NT=tokens, progress=False,
                      log=lambda m: 0, seeds=2)
    assert sorted(df.seed.unique()) == [0, 1] and len(df) == 8
    assert (tmp_path / "seed-1" / "topk-k4" / "sae" / "cfg.json").exists()
    relu = df[df.family == "relu"].pivot(index="target_l0", columns="seed", values="coef")
    assert (relu[0] == relu[1]).all()  # later seeds keep the first seed's coefficient
    topk = df[df.family == "topk"].pivot(index="target_l0", columns="seed", values="nmse")
    assert (topk[0] != topk[1]).all()  # another seed: another initialisation and batch order
    summary = pd.read_csv(tmp_path / "frontier_summary.csv")
    for row in summary.itertuples():
        part = df[(df.family == row.family) & (df.target_l0 == row.target_l0)]
        assert row.n_seeds == 2
        for m in ("nmse", "l0", "delta_ce"):
            a, b = part[m].tolist()
            half = 12.706205 * abs(a - b) / 2  # t(0.975, 1) * (|a - b| / sqrt 2) / sqrt 2
            assert getattr(row, f"{m}_mean") == pytest.approx((a + b) / 2)
            assert getattr(row, f"{m}_hi") == pytest.approx((a + b) / 2 + half, rel=1e-6, abs=1e-9)
            assert getattr(row, f"{m}_lo") == pytest.approx((a + b) / 2 - half, rel=1e-6, abs=1e-9)
    comp = pd.read_csv(tmp_path / "frontier_comparisons.csv")
    assert set(comp.family) == {"relu"} and set(comp.metric) == {"nmse", "delta_ce"}
    c = comp[(comp.metric == "nmse") & (comp.target_l0 == 8)].iloc[0]
    diffs = [df[(df.family == "relu") & (df.target_l0 == 8) & (df.seed == s)].nmse.item()
             - df[(df.family == "topk") & (df.target_l0 == 8) & (df.seed == s)].nmse.item() for s in (0, 1)]
    assert c.diff_mean == pytest.approx(sum(diffs) / 2)
    assert c.verdict_lower in ("reproduced", "opposite", "within noise")
    assert not math.isnan(c.diff_lo)
    figs = frontier_figures(df)  # means over seeds with their intervals as error bars
    assert figs and figs[0].data[0].error_y.array is not None
