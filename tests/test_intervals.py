"""Intervals over seeds and tasks (saelab.evals.intervals), checked on hand-worked numbers."""

import math

import pandas as pd
import pytest

from saelab.evals.intervals import bootstrap_medians, compare, seed_list, summarize, t_interval, verdict


def test_t_interval_by_hand():
    # 1, 2, 3: mean 2, sd 1, t(0.975, 2) = 4.302653, half-width 4.302653 / sqrt(3) = 2.484138
    ci = t_interval([1.0, 2.0, 3.0])
    assert ci["mean"] == 2.0 and ci["sd"] == pytest.approx(1.0) and ci["n"] == 3
    assert (ci["lo"], ci["hi"]) == pytest.approx((2 - 2.484138, 2 + 2.484138), abs=1e-6)
    one = t_interval([5.0, float("nan")])  # one finite value: a mean, no interval
    assert one["mean"] == 5.0 and math.isnan(one["lo"]) and one["n"] == 1


def test_paired_comparison_and_its_verdict():
    # differences -0.2, -0.1, -0.05: mean -0.116667, sd 0.076376, half 4.302653 * 0.076376 / sqrt(3) = 0.189725
    d = compare([0.1, 0.2, 0.3], [0.3, 0.3, 0.35])
    assert d["mean"] == pytest.approx(-0.116667, abs=1e-6)
    assert (d["lo"], d["hi"]) == pytest.approx((-0.306392, 0.073058), abs=1e-5)
    assert verdict(d, "<") == "within noise"
    tight = compare([1.0, 1.1, 1.2], [2.0, 2.1, 2.25])  # differences -1, -1, -1.05: clearly below zero
    assert verdict(tight, "<") == "reproduced" and verdict(tight, ">") == "opposite"
    with pytest.raises(ValueError, match="as many replicates"):
        compare([1.0], [1.0, 2.0])


def test_summarize_gives_each_groups_mean_and_interval():
    df = pd.DataFrame({"family": ["a", "a", "b", "b"], "seed": [0, 1, 0, 1], "nmse": [0.2, 0.4, 0.1, 0.1]})
    s = summarize(df, ["family"], ["nmse", "missing"]).set_index("family")
    assert s.loc["a", "n_seeds"] == 2 and s.loc["a", "nmse_mean"] == pytest.approx(0.3)
    half = 12.706205 * (0.2 / math.sqrt(2)) / math.sqrt(2)  # t(0.975, 1) * sd / sqrt(n)
    assert s.loc["a", "nmse_hi"] - s.loc["a", "nmse_mean"] == pytest.approx(half, rel=1e-5)
    assert s.loc["b", "nmse_lo"] == s.loc["b", "nmse_hi"] == pytest.approx(0.1)  # no spread, no width
    assert "missing_mean" not in s and seed_list(3, 5) == [5, 6, 7]


def test_bootstrap_resamples_whole_groups():
    rows = [{"pos": p, "a": p + 0.1 * i, "b": p + 1.0} for p in range(20) for i in range(3)]
    boot = bootstrap_medians(rows, ("a", "b"), ("pos",), n_boot=300)
    lo, hi = boot["a"]
    assert lo <= 9.6 <= hi  # the median of a (9.6 here) lies in its interval
    assert boot["difference"][1] < 0  # a is below b in every resample: the interval excludes zero
    assert all(math.isnan(v) for v in bootstrap_medians(rows[:3], ("a", "b"), ("pos",))["a"])  # one group: none
