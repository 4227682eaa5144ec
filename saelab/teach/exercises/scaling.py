"""Notebook 06 (scaling laws): fit L(n) = a n^-b + c and predict a larger SAE."""

from __future__ import annotations

from saelab.teach.exercises.base import passed


def fit_power_law(n, loss) -> tuple[float, float, float]:
    """(a, b, c) of L(n) = a n^-b + c, least squares on log L (c: the irreducible loss)."""
    from saelab.studies.scaling_laws import fit_power_law as fit

    f = fit(n, loss)
    return f["a"], f["b"], f["c"]


def check_fit_power_law(fn) -> None:
    """`fn(n, loss) -> (a, b, c)` must recover a known law with an irreducible term."""
    import numpy as np

    n = 2.0 ** np.arange(8, 15)
    loss = 2.5 * n ** -0.4 + 0.08
    got = fn(n, loss)
    assert len(got) == 3, "return the three numbers (a, b, c) of L(n) = a n^-b + c"
    a, b, c = (float(v) for v in got)
    if abs(c) < 1e-3 and b < 0.3:
        raise AssertionError(f"b = {b:.3f} and c = {c:.3f}: a straight line through log L against log n has no "
                             "irreducible term, so it bends the exponent down; fit a n^-b + c")
    assert b > 0, f"b = {b:.3f}: the loss falls with n, so L = a n^-b needs b > 0 (check the sign)"
    assert abs(b - 0.4) < 0.02 and abs(c - 0.08) < 0.005, \
        f"(a, b, c) = ({a:.3g}, {b:.3f}, {c:.4f}); this data is exactly 2.5 n^-0.4 + 0.08"
    passed("fit_power_law")


def check_prediction(predicted: float, fit: tuple, n_new: int) -> None:
    """The prediction for `n_new` from the learner's fitted (a, b, c)."""
    a, b, c = fit
    want = a * n_new ** -b + c
    assert predicted > c, f"{predicted:.4f} is below the irreducible loss c = {c:.4f}: no n gets there"
    assert abs(predicted - want) < 1e-6 * max(abs(want), 1), \
        f"a n^-b + c at n = {n_new} is {want:.4f}, you predicted {predicted:.4f} (is n the new one, b negated?)"
    passed("prediction")
