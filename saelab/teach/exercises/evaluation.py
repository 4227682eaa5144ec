"""Notebook 03 (evaluation): loss recovered, a 1-D probe and the sparsity of ablation effects (section 4.5)."""

from __future__ import annotations

import math

import torch

from saelab.evals.ablation import effect_sparsity  # the reference solution and the check's answer
from saelab.evals.downstream import loss_recovered  # noqa: F401 - the reference solution (solutions.loss_recovered)
from saelab.evals.probes import fit_logistic_1d, logistic_loss
from saelab.teach.exercises.base import diagnose, passed


def probe_loss_1d(x_M: torch.Tensor, y_M: torch.Tensor) -> float:
    """Mean binary cross-entropy (nats) of the best logistic probe sigmoid(a x + b) on one feature."""
    a, b, mu, sd = fit_logistic_1d(x_M[:, None], y_M, iters=100, ridge=0.0)
    return float(logistic_loss(x_M[:, None], y_M, a, b, mu, sd)[0])




def check_loss_recovered(fn) -> None:
    clean, spliced, ablated = 3.0, 3.5, 8.0
    got = float(fn(spliced, clean, ablated))
    diagnose(got, [(0.1, "that is the fraction LOST, (spliced - clean) / (ablated - clean); loss recovered is 1 "
                          "minus it"),
                   (-0.9, "wrong sign: the SAE's loss sits between clean and ablated, so the answer is in [0, 1]"),
                   (clean / spliced, "a ratio of losses ignores the baseline: measure against ablating the site"),
                   (spliced - clean, "that is delta CE in nats; loss recovered divides the gap closed by the "
                                     "ablation's gap")], atol=1e-9)
    assert abs(got - 0.9) < 1e-9, f"with clean 3.0, spliced 3.5, ablated 8.0 the answer is 0.9; got {got}"
    assert abs(float(fn(clean, clean, ablated)) - 1.0) < 1e-9, "a spliced loss equal to the clean one recovers 1.0"
    assert abs(float(fn(ablated, clean, ablated))) < 1e-9, "a spliced loss equal to the ablated one recovers 0.0"
    passed("loss_recovered")


def _bce(p: float, y: torch.Tensor, log=math.log) -> float:
    p = min(max(p, 1e-12), 1 - 1e-12)
    return float(-(y * log(p) + (1 - y) * log(1 - p)).mean())


def check_probe_loss_1d(fn) -> None:
    """`fn(x_M, y_M) -> float`: the cross-entropy in nats of the best 1-D logistic probe."""
    g = torch.Generator().manual_seed(0)
    y = (torch.rand(2000, generator=g) < 0.2).float()  # 20% positives
    useless = torch.randn(2000, generator=g)
    got = float(fn(useless.clone(), y.clone()))
    prior = float(y.mean())
    entropy = _bce(prior, y)
    if abs(got - math.log(2)) < 0.01:
        raise AssertionError(f"{got:.3f} nats = ln 2: a probe with no bias b predicts 0.5 for an uninformative "
                             f"feature; with the bias it learns the base rate and scores the label entropy "
                             f"{entropy:.3f}")
    if abs(got - entropy / math.log(2)) < 0.01:
        raise AssertionError("you reported bits (log2); the paper's probe loss is in nats (natural log)")
    if 0.75 <= got <= 0.85:
        raise AssertionError(f"{got:.3f} looks like an accuracy: return the binary cross-entropy")
    assert abs(got - entropy) < 0.01, f"a feature unrelated to the labels should score about the label entropy " \
        f"{entropy:.3f} nats (the probe learns only the base rate); got {got:.3f}"
    good = 3.0 * y + torch.randn(2000, generator=g)
    got_good = float(fn(good.clone(), y.clone()))
    want_good = probe_loss_1d(good, y)
    if got_good > entropy - 0.05:
        raise AssertionError(f"a feature that separates the classes well scores {got_good:.3f}, no better than the "
                             f"base rate ({entropy:.3f}): is the probe fitted (a and b learned)?")
    flipped = float(fn(-good, y.clone()))
    assert abs(flipped - want_good) < 0.02, f"the same feature negated must score the same ({want_good:.3f}), got " \
        f"{flipped:.3f}: let the weight a be negative"
    assert abs(got_good - want_good) < 0.02, f"the best probe scores {want_good:.3f} nats, yours {got_good:.3f}: fit " \
        "longer or with a larger learning rate (or Newton's method)"
    passed("probe_loss_1d")


def check_effect_sparsity(fn) -> None:
    """`fn(logit_diff_TV) -> float`: section 4.5's sparsity of an ablation's effect on the logits."""
    g = torch.Generator().manual_seed(0)
    T, V = 4, 51  # odd V: every median convention (lower middle, average of the two middle) agrees
    diff = torch.zeros(T, V)
    diff[:, :3] = torch.randn(T, 3, generator=g) * 2  # a few tokens move
    diff[1] += 0.7  # position 1's logits all shift by a constant: no probability changes
    diff[2, 10:] += torch.randn(V - 10, generator=g).abs() * 0.01
    got = float(fn(diff.clone()))
    e = diff.double()
    mean_c = (e - e.mean(-1, keepdim=True)).flatten()
    raw = e.flatten()
    med = (e - e.median(-1, keepdim=True).values).flatten()
    diagnose(got, [(float((raw.abs().sum() / raw.norm()) ** 2 / raw.numel()),
                    "position 1's logits all moved by 0.7, which changes no probability: subtract each position's "
                    "median (over the vocabulary) first"),
                   (float((mean_c.abs().sum() / mean_c.norm()) ** 2 / mean_c.numel()),
                    "you subtracted each position's MEAN; the paper subtracts the median (robust to the few large "
                    "effects)"),
                   (float(med.abs().sum() / med.norm() / med.numel()), "square the ratio: (L1 / L2)^2"),
                   (float((med.abs().sum() / med.norm()) ** 2), "divide by the number of entries T * V, so that 1 "
                                                                "means every entry moved by the same amount"),
                   (float((med.abs().sum() / med.norm()) ** 2 / V), "divide by T * V (all positions' entries), "
                                                                    "not V alone")], atol=1e-6)
    want = effect_sparsity(diff)
    assert abs(got - want) < 1e-6, f"expected {want:.5f}, got {got:.5f}"
    one = torch.zeros(T, V)
    one[0, 0] = 5.0
    assert abs(float(fn(one)) - 1 / (T * V)) < 1e-9, "an effect on a single logit has sparsity 1 / (T V)"
    passed("effect_sparsity")
