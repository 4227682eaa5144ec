"""Notebook 06 (scaling laws): fit L(n) = a n^-b + c and predict a larger SAE."""

from __future__ import annotations

from saelab.teach.exercises.base import passed


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


def check_prediction(predicted: float, fit: tuple, n_new: int) -> None:
    """The prediction for `n_new` from the learner's fitted (a, b, c)."""
    a, b, c = fit
    want = a * n_new ** -b + c
    assert predicted > c, f"{predicted:.4f} is below the irreducible loss c = {c:.4f}: no n gets there"
    assert abs(predicted - want) < 1e-6 * max(abs(want), 1), \
        f"a n^-b + c at n = {n_new} is {want:.4f}, you predicted {predicted:.4f} (is n the new one, b negated?)"
    passed("prediction")
