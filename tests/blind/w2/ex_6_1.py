"""Exercise 6.1: fit_power_law, L(n) = a n^-b + c with 0 <= c < min(loss)."""
import numpy as np
from scipy.optimize import curve_fit


def _start(n, loss):
    c0 = 0.5 * loss.min()
    b0 = 0.5
    a0 = max(loss[0] - c0, 1e-12) * n[0] ** b0
    return a0, b0, c0


# ---- my honest attempt: fit log L (relative errors), log a for a > 0, c bounded ---------------------------
def fit_power_law_mine(n, loss):
    n = np.asarray(n, dtype=float)
    loss = np.asarray(loss, dtype=float)
    a0, b0, c0 = _start(n, loss)

    def log_model(n_, log_a, b, c):
        return np.log(np.exp(log_a) * n_ ** -b + c)

    hi_c = loss.min() * (1 - 1e-9)
    (log_a, b, c), _ = curve_fit(log_model, n, np.log(loss), p0=(np.log(a0), b0, c0),
                                 bounds=([-np.inf, 0.0, 0.0], [np.inf, 10.0, hi_c]), maxfev=20000)
    return float(np.exp(log_a)), float(b), float(c)


# ---- wrong 1: least squares on L itself: the largest (first) losses dominate, a 20% error bends the law ------
def fit_power_law_linear(n, loss):
    n = np.asarray(n, dtype=float)
    loss = np.asarray(loss, dtype=float)

    def model(n_, a, b, c):
        return a * n_ ** -b + c

    (a, b, c), _ = curve_fit(model, n, loss, p0=_start(n, loss),
                             bounds=([0.0, 0.0, 0.0], [np.inf, 10.0, loss.min() * (1 - 1e-9)]), maxfev=20000)
    return float(a), float(b), float(c)


# ---- wrong 2: a straight line through log L against log n: no irreducible term (c = 0) -----------------
def fit_power_law_loglog_line(n, loss):
    slope, intercept = np.polyfit(np.log(np.asarray(n, float)), np.log(np.asarray(loss, float)), 1)
    return float(np.exp(intercept)), float(-slope), 0.0


# ---- wrong 3: fixes the floor by eye at 90% of the smallest loss, then a straight line through log(L - c) ------
def fit_power_law_fixed_floor(n, loss):
    n = np.asarray(n, float)
    loss = np.asarray(loss, float)
    c = 0.9 * loss.min()
    slope, intercept = np.polyfit(np.log(n), np.log(loss - c), 1)
    return float(np.exp(intercept)), float(-slope), float(c)


# ---- wrong 4: fits L = a n^b + c and returns that b (negative), not the b of a n^-b -----------------------
def fit_power_law_sign(n, loss):
    n = np.asarray(n, dtype=float)
    loss = np.asarray(loss, dtype=float)
    a0, b0, c0 = _start(n, loss)

    def log_model(n_, log_a, b, c):
        return np.log(np.exp(log_a) * n_ ** b + c)

    (log_a, b, c), _ = curve_fit(log_model, n, np.log(loss), p0=(np.log(a0), -b0, c0),
                                 bounds=([-np.inf, -10.0, 0.0], [np.inf, 0.0, loss.min() * (1 - 1e-9)]), maxfev=20000)
    return float(np.exp(log_a)), float(b), float(c)


CANDIDATES = [
    ("linear_space", fit_power_law_linear, "least squares on L itself: absolute errors, the first (largest) losses dominate", False),
    ("loglog_line", fit_power_law_loglog_line, "straight line in log-log: no irreducible floor (c = 0)", False),
    ("fixed_floor", fit_power_law_fixed_floor, "floor fixed at 0.9 x the smallest loss instead of fitted", False),
    ("exponent_sign", fit_power_law_sign, "fits a n^b + c and returns the negative b", False),
    ("mine", fit_power_law_mine, "my honest attempt at a correct solution", True),
]
