"""Means with 95% intervals over seeds (or tasks), and the verdict a comparison earns from them.

Every interval here is a **Student-t interval** over independent replicates: mean ± t(0.975, n-1) · s / √n, with s
the sample standard deviation (n-1 in the denominator). Replicates are seeds (each seed draws the SAE's
initialisation and the order of the training batches; the evaluation data stay fixed) or probe tasks. With one
replicate there is no interval (NaN bounds).

A comparison "A lower than B" is scored on the **paired** differences (same seed: same batches for both, so
the seed-to-seed spread of the data order cancels): `compare` gives the mean difference and its interval, and
`verdict` says 'reproduced' only when the interval excludes zero on the claimed side, 'opposite' when it
excludes zero on the other side, and 'within noise' otherwise.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

LEVEL = 0.95


def t_interval(values: Sequence[float], level: float = LEVEL) -> dict:
    """{'mean', 'lo', 'hi', 'sd', 'n'} of the finite `values`: the Student-t interval of their mean."""
    from scipy.stats import t

    vals = [float(v) for v in values if v is not None and math.isfinite(float(v))]
    n = len(vals)
    if n == 0:
        return {"mean": math.nan, "lo": math.nan, "hi": math.nan, "sd": math.nan, "n": 0}
    mean = sum(vals) / n
    if n == 1:
        return {"mean": mean, "lo": math.nan, "hi": math.nan, "sd": math.nan, "n": 1}
    sd = math.sqrt(sum((v - mean) ** 2 for v in vals) / (n - 1))
    half = float(t.ppf(0.5 + level / 2, n - 1)) * sd / math.sqrt(n)
    return {"mean": mean, "lo": mean - half, "hi": mean + half, "sd": sd, "n": n}


def compare(a: Sequence[float], b: Sequence[float], level: float = LEVEL) -> dict:
    """The paired difference a - b (replicate i of a with replicate i of b): t_interval of the differences, plus
    'relative' (mean difference over the mean of b)."""
    if len(a) != len(b):
        raise ValueError(f"a paired comparison needs as many replicates on both sides ({len(a)} and {len(b)})")
    diffs = [float(x) - float(y) for x, y in zip(a, b)]
    out = t_interval(diffs, level)
    mean_b = t_interval(b)["mean"]
    out["relative"] = out["mean"] / mean_b if mean_b and math.isfinite(mean_b) else math.nan
    return out


def verdict(diff: dict, claimed: str) -> str:
    """'reproduced', 'opposite' or 'within noise' for a claimed sign of the difference a - b ('<' or '>')."""
    if claimed not in ("<", ">"):
        raise ValueError(f"claimed must be '<' or '>', got {claimed!r}")
    lo, hi = diff["lo"], diff["hi"]
    if not (math.isfinite(lo) and math.isfinite(hi)):
        return "within noise"  # one replicate: no interval, no verdict
    below, above = hi < 0, lo > 0
    if (claimed == "<" and below) or (claimed == ">" and above):
        return "reproduced"
    if below or above:
        return "opposite"
    return "within noise"


def summarize(df, by: Sequence[str], metrics: Sequence[str], level: float = LEVEL):
    """One row per group of `by` with n_seeds and, for each metric present, its mean, lo and hi (t-interval over the
    group's rows, one row a seed). Returns a pandas DataFrame."""
    import pandas as pd

    present = [m for m in metrics if m in df]
    rows = []
    for key, part in df.groupby(list(by), sort=False, dropna=False):
        key = key if isinstance(key, tuple) else (key,)
        row = dict(zip(by, key))
        row["n_seeds"] = len(part)
        for m in present:
            ci = t_interval(pd.to_numeric(part[m], errors="coerce").tolist(), level)
            row.update({f"{m}_mean": ci["mean"], f"{m}_lo": ci["lo"], f"{m}_hi": ci["hi"]})
        rows.append(row)
    return pd.DataFrame(rows)


def format_interval(ci: dict, digits: int = 3) -> str:
    """'0.209 [0.205, 0.213]' (or the mean alone when there is no interval)."""
    if not math.isfinite(ci.get("lo", math.nan)):
        return f"{ci['mean']:.{digits}g}"
    return f"{ci['mean']:.{digits}g} [{ci['lo']:.{digits}g}, {ci['hi']:.{digits}g}]"


def seed_list(n: int, first: int = 0) -> list[int]:
    """The seeds of a `--seeds n` run: first, first + 1, ... (first is the run's own seed)."""
    if n < 1:
        raise ValueError(f"--seeds must be at least 1, got {n}")
    return list(range(first, first + n))


def bootstrap_medians(rows: Sequence[dict], keys: Sequence[str], group: Sequence[str], n_boot: int = 2000,
                      seed: int = 0, level: float = LEVEL) -> dict:
    """Percentile bootstrap of the median of each of `keys` over `rows`, resampling whole groups (rows sharing the
    `group` fields, e.g. the ablations at one sampled token position, which are not independent of each other), and
    of the difference of the first two keys' medians. Returns {key: (lo, hi), 'difference': (lo, hi)}."""
    import numpy as np

    groups: dict[tuple, list[dict]] = {}
    for r in rows:
        groups.setdefault(tuple(r.get(g) for g in group), []).append(r)
    blocks = list(groups.values())
    out: dict = {}
    if len(blocks) < 2:
        return {**{k: (math.nan, math.nan) for k in keys}, "difference": (math.nan, math.nan)}
    rng = np.random.default_rng(seed)
    stats = {k: [] for k in keys}
    diffs = []
    for _ in range(n_boot):
        pick = [r for i in rng.integers(0, len(blocks), len(blocks)) for r in blocks[i]]
        meds = {}
        for k in keys:
            vals = np.array([r[k] for r in pick if r.get(k) is not None and r[k] == r[k]], float)
            meds[k] = float(np.median(vals)) if len(vals) else math.nan
            stats[k].append(meds[k])
        if len(keys) >= 2:
            diffs.append(meds[keys[0]] - meds[keys[1]])
    q = [(1 - level) / 2 * 100, (1 + level) / 2 * 100]
    for k in keys:
        out[k] = tuple(float(v) for v in np.nanpercentile(stats[k], q))
    out["difference"] = tuple(float(v) for v in np.nanpercentile(diffs, q)) if diffs else (math.nan, math.nan)
    return out
