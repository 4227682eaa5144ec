"""Exercise 3.2 — probe_loss_1d: blind candidates."""
import math

import torch
import torch.nn.functional as F


def _standardise(x_M):
    x = x_M.double().flatten()
    return (x - x.mean()) / x.std().clamp_min(1e-12)


def _fit_lbfgs(x, y, intercept=True, l2=0.0):
    a = torch.zeros((), dtype=torch.float64, requires_grad=True)
    b = torch.zeros((), dtype=torch.float64, requires_grad=True)
    params = [a, b] if intercept else [a]
    opt = torch.optim.LBFGS(params, lr=1.0, max_iter=200, tolerance_grad=1e-10, tolerance_change=1e-12,
                            line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = F.binary_cross_entropy_with_logits(a * x + b, y) + l2 * a * a
        loss.backward()
        return loss

    opt.step(closure)
    with torch.no_grad():
        return float(F.binary_cross_entropy_with_logits(a * x + b, y))


def probe_right(x_M, y_M) -> float:
    x = _standardise(x_M)
    y = y_M.double().flatten()
    return _fit_lbfgs(x, y)


def probe_no_intercept(x_M, y_M) -> float:
    # fits only the slope a (b fixed at 0): a useless feature scores ln 2, not the label entropy
    return _fit_lbfgs(_standardise(x_M), y_M.double().flatten(), intercept=False)


def probe_bits(x_M, y_M) -> float:
    # reports the loss in bits (log base 2) instead of nats
    return probe_right(x_M, y_M) / math.log(2)


def probe_short_adam(x_M, y_M) -> float:
    # Adam at the default-ish lr 0.01 for 100 steps: stops far from the optimum
    x = _standardise(x_M).float()
    y = y_M.float().flatten()
    a = torch.zeros((), requires_grad=True)
    b = torch.zeros((), requires_grad=True)
    opt = torch.optim.Adam([a, b], lr=0.01)
    for _ in range(100):
        opt.zero_grad()
        loss = F.binary_cross_entropy_with_logits(a * x + b, y)
        loss.backward()
        opt.step()
    with torch.no_grad():
        return float(F.binary_cross_entropy_with_logits(a * x + b, y))


def probe_ridge(x_M, y_M) -> float:
    # adds an L2 penalty on a "for stability" (like sklearn's default C=1 scaled to a mean loss): the slope shrinks
    return _fit_lbfgs(_standardise(x_M), y_M.double().flatten(), l2=0.1)


CANDIDATES = [
    ("no_intercept", probe_no_intercept, "no bias b: cannot learn the base rate, useless feature gives ln 2", False),
    ("bits", probe_bits, "loss in bits (divided by ln 2) instead of nats", False),
    ("short_adam", probe_short_adam, "Adam lr 0.01 x 100 steps: not converged", False),
    ("ridge_penalty", probe_ridge, "fits with an L2 penalty on the slope, so the probe is not the best one", False),
    ("mine", probe_right, "my honest attempt at a correct solution", True),
]
