"""Notebook 06 (scaling laws): fit L(n) = a n^-b + c (6.1) and the lower envelope of loss against compute (6.2)."""

from __future__ import annotations

import math

from saelab.teach.exercises.base import exercise, passed, same_output


def fit_power_law(n, loss) -> tuple[float, float, float]:
    """(a, b, c) of L(n) = a n^-b + c, least squares on log L (c: the irreducible loss)."""
    from saelab.studies.scaling_laws import fit_power_law as fit

    f = fit(n, loss)
    return f["a"], f["b"], f["c"]


def _noisy_law():
    """A law with an irreducible term, measured with a few percent of fixed multiplicative noise: the first point
    (the smallest n, the largest loss) is 20% high. In log space it is one point among eleven; a fit on L itself
    weighs it like the rest of the curve together and bends the law (b 0.54 instead of 0.45)."""
    import numpy as np

    n = 2.0 ** np.arange(6, 17)
    noise = np.array([1.20, 0.97, 1.03, 0.98, 1.02, 0.96, 1.04, 0.99, 1.03, 0.97, 1.02])
    return n, (2.5 * n ** -0.4 + 0.02) * noise


def _law_cases():
    """(what, n, loss) after the noisy law: exact laws that vary a, b and c, the number of points (four, as the
    notebook fits), the range of n (up to 10^6), integer n (what the notebook's DataFrame passes) and no floor
    (c = 0)."""
    import numpy as np

    n7 = 2.0 ** np.arange(8, 15)
    n4 = np.array([100.0, 300.0, 1000.0, 3000.0])
    n_int = np.array([128, 256, 512, 1024, 2048])
    n_big = np.geomspace(1e3, 1e6, 8)
    wobble = np.array([1.01, 0.99, 1.02, 0.98, 1.0, 1.01, 0.99, 1.0])
    return [("the exact law L = 5 n^-0.7 + 0.05 (7 points, n 256 to 16384)", n7, 5.0 * n7 ** -0.7 + 0.05),
            ("the exact law L = 0.8 n^-0.3 + 0.1 on four points", n4, 0.8 * n4 ** -0.3 + 0.1),
            ("L = 3 n^-0.5 with no floor (c = 0), n as integers", n_int, 3.0 * n_int.astype(float) ** -0.5),
            ("L = 40 n^-0.6 + 0.2 with 2% noise, n from 10^3 to 10^6", n_big, (40 * n_big ** -0.6 + 0.2) * wobble)]


def _same_law(got, n, loss, what: str) -> None:
    """The learner's (a, b, c) against the reference fit on the same points, each parameter by name."""
    assert hasattr(got, "__len__") and len(got) == 3, \
        f"{what}: return the three numbers (a, b, c) of L(n) = a n^-b + c; got {got!r}"
    a, b, c = (float(v) for v in got)
    want_a, want_b, want_c = (float(v) for v in fit_power_law(n, loss))
    fit = f"least squares on log L gives (a, b, c) = ({want_a:.4g}, {want_b:.4f}, {want_c:.4g}); yours " \
          f"({a:.4g}, {b:.4f}, {c:.4g})"
    assert abs(b - want_b) <= 0.003, f"{what}: the exponent b differs: {fit}"
    assert abs(c - want_c) <= 5e-4 + 0.01 * want_c, f"{what}: the irreducible loss c differs: {fit}"
    if abs(want_a - 1) > 0.1 and abs(a - math.log(want_a)) <= 0.02 * abs(math.log(want_a)):
        raise AssertionError(f"{what}: a = {a:.4g} is log a ({fit}): if you fitted log a (to keep a positive), "
                             "return exp(log a)")
    n0 = float(min(n))
    if abs(a - want_a * n0 ** -want_b) <= 0.02 * want_a * n0 ** -want_b:
        raise AssertionError(f"{what}: a = {a:.4g} is the coefficient for n / {n0:g} (n relative to its first "
                             f"value), not for n itself: L = a' (n / n0)^-b + c means a = a' n0^b ({fit})")
    assert abs(a - want_a) <= 0.01 * want_a, f"{what}: the coefficient a differs (b and c are right): {fit}"


@exercise("6.1", fit_power_law)
def check_fit_power_law(fn) -> None:
    """`fn(n, loss) -> (a, b, c)` must fit L(n) = a n^-b + c by least squares on log L, with the irreducible c.

    Varies the law (a, b and c, c = 0 included), the noise, the number of points (4 to 11), the range of n and its
    type (floats, integers), and compares every returned parameter, a included, with the reference fit."""
    n, loss = _noisy_law()
    got = fn(n.copy(), loss.copy())
    assert hasattr(got, "__len__") and len(got) == 3, "return the three numbers (a, b, c) of L(n) = a n^-b + c"
    a, b, c = (float(v) for v in got)
    want_a, want_b, want_c = fit_power_law(n, loss)
    if abs(c) < 1e-3 and b < want_b - 0.05:
        raise AssertionError(f"b = {b:.3f} and c = {c:.3f}: a straight line through log L against log n has no "
                             "irreducible term, so it bends the exponent down; fit a n^-b + c")
    assert b > 0, f"b = {b:.3f}: the loss falls with n, so L = a n^-b needs b > 0 (check the sign)"
    if b > want_b + 0.05:
        raise AssertionError(f"b = {b:.3f}, c = {c:.4f}: that is the least-squares fit of L itself, which the first, "
                             "largest loss dominates; a scaling law spans orders of magnitude, so fit log L against "
                             "log(a n^-b + c) and every point counts by its relative error")
    _same_law(got, n, loss, "on the noisy law (11 points, the first 20% high)")
    for what, n, loss in _law_cases():
        _same_law(fn(n.copy(), loss.copy()), n, loss, f"on {what}")
    passed("fit_power_law")


def compute_envelope(curves):
    """The reference solution of exercise 6.2: the evaluations that no evaluation with less or equal compute beats
    (a running minimum of the held-out loss over compute). `curves`: DataFrame with n, flops, nmse (one k); returns
    the envelope's rows (flops, nmse, n) in order of compute."""
    from saelab.studies.scaling_laws import compute_envelope as envelope

    return envelope(curves.assign(k=curves.get("k", 0)), skip_frac=0.0)[["flops", "nmse", "n"]]


def _toy_curves():
    """Held-out curves of three n on the same tokens: small n learn fast and stall, large n start slow and end low."""
    import numpy as np
    import pandas as pd

    rows = []
    for n in (256, 1024, 4096):
        for tokens in np.geomspace(2e5, 2e7, 20):
            nmse = 0.1 + 1.5 * n ** -0.4 + 0.2 * (tokens / (200.0 * n)) ** -0.6
            rows.append({"n": n, "k": 32, "tokens": tokens, "flops": 6 * 2 * 576 * n * tokens, "nmse": nmse})
    return pd.DataFrame(rows)


def _envelope_cases():
    """(what, curves) after the toy curves: the same rows shuffled; noisy curves (an evaluation can be worse than an
    earlier one of the same run, so only a running minimum over every run is right); one run alone; and two
    evaluations at the same compute, the worse one first."""
    import numpy as np
    import pandas as pd

    toy = _toy_curves()
    shuffled = toy.sample(frac=1.0, random_state=0).reset_index(drop=True)
    wobble = 1 + 0.04 * np.sin(np.arange(len(toy)) * 2.3)
    noisy = toy.assign(nmse=toy.nmse * wobble).sample(frac=1.0, random_state=1).reset_index(drop=True)
    one = toy[toy.n == 1024].reset_index(drop=True)
    tie = pd.DataFrame({"n": [512, 2048, 512, 2048, 512, 2048], "k": 32,
                        "tokens": [1e6, 2.5e5, 2e6, 5e5, 4e6, 1e6],
                        "flops": [1e12, 1e12, 2e12, 2e12, 4e12, 4e12],
                        "nmse": [0.50, 0.62, 0.40, 0.38, 0.36, 0.30]})
    return [("the same curves with their rows shuffled", shuffled),
            ("noisy curves (an evaluation can be worse than an earlier one of its run), shuffled", noisy),
            ("a single run (n = 1024 alone)", one),
            ("two runs evaluated at the same FLOPs (at 2e12 the better one comes second)", tie)]


def _as_pairs(frame) -> set:
    return {(round(float(f), -3), round(float(v), 6)) for f, v in zip(frame["flops"], frame["nmse"])}


def _same_envelope(got, curves, what: str) -> None:
    """Every column of the learner's envelope (flops, nmse and n), row by row, against the reference's."""
    import numpy as np

    for col in ("flops", "nmse", "n"):
        assert col in getattr(got, "columns", ()), \
            f"{what}: return a DataFrame with columns flops, nmse and n; no {col!r}"
    want = compute_envelope(curves)
    flops = np.asarray(got["flops"], float)
    if len(flops) != len(set(flops.tolist())):
        raise AssertionError(f"{what}: your envelope has two points at the same compute: of evaluations with equal "
                             "FLOPs only the lower loss can be on it (an evaluation must beat every one with less OR "
                             "EQUAL compute; sort by flops, then nmse)")
    best, rows = float("inf"), []
    for i, v in enumerate(curves.nmse):
        if v < best:
            best = v
            rows.append(i)
    if len(curves) > 1 and _as_pairs(got) == _as_pairs(curves.iloc[rows]) != _as_pairs(want):
        raise AssertionError(f"{what}: you took the evaluations in the order the rows come: sort them by flops "
                             "first (rows can come in any order)")
    if len(got) and list(flops) != sorted(flops):
        raise AssertionError(f"{what}: return the envelope in order of compute (flops)")
    by_flops = curves.sort_values(["flops", "nmse"]).nmse.to_numpy()
    local = [0] + [i for i in range(1, len(by_flops)) if by_flops[i] < by_flops[i - 1]]
    if _as_pairs(got) == _as_pairs(curves.sort_values(["flops", "nmse"]).iloc[local]) != _as_pairs(want):
        raise AssertionError(f"{what}: you compared each evaluation with the one just before it: keep it only if its "
                             "loss is lower than EVERY evaluation with less compute (a running minimum; here a run's "
                             "loss can go up between evaluations)")
    assert len(got) == len(want), f"{what}: your envelope has {len(got)} points, the expected one {len(want)} " \
        f"({len(_as_pairs(got) & _as_pairs(want))} of yours are on it)"
    same_output(got[["flops", "nmse"]].reset_index(drop=True), want[["flops", "nmse"]].reset_index(drop=True), what)
    n_got, n_want = np.asarray(got["n"], float), np.asarray(want["n"], float)
    if not np.array_equal(n_got, n_want):
        i = int(np.flatnonzero(n_got != n_want)[0])
        raise AssertionError(f"{what}: the envelope's flops and nmse are right, but its n column is not: point {i} "
                             f"(flops {float(want.flops.iloc[i]):.3g}) comes from the run with n = {int(n_want[i])}, "
                             f"you say {n_got[i]:g}; take each point's n from the same row as its flops and nmse")


@exercise("6.2", compute_envelope)
def check_compute_envelope(fn) -> None:
    """`fn(curves) -> DataFrame (flops, nmse, n)` must be the Pareto front of loss against compute.

    Varies the curves (three runs; their rows shuffled; noisy, non-monotone runs; one run alone; two evaluations at
    equal FLOPs) and compares every column (flops, nmse and the n each point comes from), row by row and in order."""
    curves = _toy_curves()
    got = fn(curves.copy())
    for col in ("flops", "nmse", "n"):
        assert col in getattr(got, "columns", ()), f"return a DataFrame with columns flops, nmse and n; no {col!r}"
    want = compute_envelope(curves)
    assert len(got), "your envelope is empty: the cheapest evaluation is always on it"
    mine = _as_pairs(got)
    if mine != _as_pairs(want):
        by_tokens = curves.sort_values("tokens")
        best, rows = float("inf"), []
        for r in by_tokens.itertuples():
            if r.nmse < best:
                best = r.nmse
                rows.append(r)
        final = curves.loc[curves.groupby("n").tokens.idxmax()]
        if mine == _as_pairs(curves.loc[[r.Index for r in rows]]):
            raise AssertionError("you ordered the evaluations by tokens: at the same tokens a larger n has spent more "
                                 "compute (FLOPs grow with n), so sort by flops")
        if mine <= _as_pairs(final):
            raise AssertionError("you kept only each run's final evaluation: the envelope uses every evaluation along "
                                 "each run (a run stopped early is a point of a cheaper budget)")
        if mine >= _as_pairs(want) and len(mine) > len(want):
            raise AssertionError(f"{len(mine)} points, {len(want)} expected: keep an evaluation only if its loss is "
                                 "lower than every evaluation with less compute (a running minimum over flops)")
    _same_envelope(got, curves, "on three runs (n = 256, 1024, 4096)")
    for what, case in _envelope_cases():
        _same_envelope(fn(case.copy()), case, f"on {what}")
    passed(f"compute_envelope ({len(want)} points, n on it: {sorted(set(int(n) for n in want.n))})")
