"""Notebook 06 (scaling laws): fit L(n) = a n^-b + c (6.1) and the lower envelope of loss against compute (6.2)."""

from __future__ import annotations

from saelab.teach.exercises.base import exercise, passed


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


@exercise("6.1", fit_power_law)
def check_fit_power_law(fn) -> None:
    """`fn(n, loss) -> (a, b, c)` must fit L(n) = a n^-b + c by least squares on log L, with the irreducible c."""
    n, loss = _noisy_law()
    got = fn(n, loss)
    assert len(got) == 3, "return the three numbers (a, b, c) of L(n) = a n^-b + c"
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
    assert abs(b - want_b) < 0.02 and abs(c - want_c) < 0.005, \
        f"(a, b, c) = ({a:.3g}, {b:.3f}, {c:.4f}); least squares on log L gives " \
        f"({want_a:.3g}, {want_b:.3f}, {want_c:.4f})"
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


def _as_pairs(frame) -> set:
    return {(round(float(f), -3), round(float(v), 6)) for f, v in zip(frame["flops"], frame["nmse"])}


@exercise("6.2", compute_envelope)
def check_compute_envelope(fn) -> None:
    """`fn(curves) -> DataFrame (flops, nmse, n)` must be the Pareto front of loss against compute."""
    curves = _toy_curves()
    got = fn(curves.copy())
    for col in ("flops", "nmse", "n"):
        assert col in getattr(got, "columns", ()), f"return a DataFrame with columns flops, nmse and n; no {col!r}"
    want = compute_envelope(curves)
    assert len(got), "your envelope is empty: the cheapest evaluation is always on it"
    mine = _as_pairs(got)
    if mine == _as_pairs(want):
        assert list(got["flops"]) == sorted(got["flops"]), "return the envelope in order of compute (flops)"
        passed(f"compute_envelope ({len(want)} points, n on it: {sorted(set(int(n) for n in want.n))})")
        return
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
        raise AssertionError(f"{len(mine)} points, {len(want)} expected: keep an evaluation only if its loss is lower "
                             "than every evaluation with less compute (a running minimum over flops)")
    raise AssertionError(f"your envelope has {len(mine)} points, {len(mine & _as_pairs(want))} of them on the "
                         f"expected one ({len(want)} points)")
