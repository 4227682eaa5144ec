"""Notebook 04 (progressive recovery): the TopK(k') curve and where it turns, and a JumpReLU threshold for a target
L0."""

from __future__ import annotations

import torch

from saelab.teach.exercises.base import close, diagnose, exercise, passed
from saelab.teach.exercises.training import normalized_mse, topk_activation


def recovery_curve(pre_BN: torch.Tensor, x_BD: torch.Tensor, W_dec_ND: torch.Tensor, b_pre_D: torch.Tensor,
                   ks) -> tuple[list[float], int]:
    """The TopK(k') curve: the normalized MSE of decoding with k' latents, for each k' in `ks` (x_BD in the SAE's
    normalised input space), and the k' where it turns: the lowest point (the first one on a tie)."""
    ks = [int(k) for k in ks]
    top = pre_BN.topk(max(ks), dim=-1)  # sorted, so TopK(k') keeps the first k' of these
    curve = []
    for k in ks:
        z = torch.zeros_like(pre_BN).scatter(-1, top.indices[:, :k], top.values[:, :k].relu())
        curve.append(float(normalized_mse(z @ W_dec_ND + b_pre_D, x_BD)))
    best = min(range(len(ks)), key=lambda i: (curve[i], i))
    return curve, ks[best]


def threshold_for_l0(pre_BN: torch.Tensor, target_l0: float) -> float:
    """The JumpReLU threshold theta with, on average, target_l0 pre-activations above it per row."""
    n = pre_BN.shape[-1]
    values = pre_BN.flatten().double()
    if values.numel() > 2**24:  # torch.quantile's limit: a random subsample of 2^24 values
        values = values[torch.randperm(values.numel(), generator=torch.Generator().manual_seed(0))[: 2**24]]
    return float(torch.quantile(values, 1 - target_l0 / n))




def _curve_case(turn: int):
    """Pre-activations with 11-20 positive values per row (so TopK(20) lets negatives in) and inputs built from
    exactly `turn` latents, so the curve's lowest point is at k' = turn."""
    g = torch.Generator().manual_seed(0)
    pre = torch.randn(64, 24, generator=g) + 0.3
    W = torch.randn(24, 6, generator=g)
    b = torch.randn(6, generator=g) + 3
    x = topk_activation(pre, turn) @ W + b + 0.05 * torch.randn(64, 6, generator=g)
    return pre, x, W, b


def _curve_variant(pre, x, W, b, ks, relu=True, bias=True, baseline="mean vector", per_token=False):
    out = []
    for k in ks:
        top = pre.topk(k, dim=-1)
        z = torch.zeros_like(pre).scatter(-1, top.indices, top.values.relu() if relu else top.values)
        err = (z @ W + (b if bias else 0) - x).pow(2).sum(-1)
        base = {"mean vector": (x - x.mean(0)).pow(2).sum(-1), "none": torch.ones(len(x)),
                "norm": x.pow(2).sum(-1), "scalar mean": (x - x.mean()).pow(2).sum(-1)}[baseline]
        out.append(float((err / base).mean()) if per_token else float(err.mean() / base.mean()))
    return out


@exercise("4.1", recovery_curve)
def check_recovery_curve(fn) -> None:
    """`fn(pre_BN, x_BD, W_dec_ND, b_pre_D, ks) -> (normalized MSE per k', the k' of the lowest one)`."""
    ks = [3, 5, 8, 12, 20]
    pre, x, W, b = _curve_case(8)
    out = fn(pre.clone(), x.clone(), W.clone(), b.clone(), list(ks))
    assert isinstance(out, tuple | list) and len(out) == 2, "return two things: (the curve, the k' where it turns)"
    curve, turn = out
    curve = [float(v) for v in curve]
    assert len(curve) == len(ks), f"return one normalized MSE per k' in ks ({len(ks)}), got {len(curve)}"
    v = lambda **kw: _curve_variant(pre, x, W, b, ks, **kw)  # noqa: E731
    diagnose(curve, [(v(relu=False), "at k' = 20 some kept pre-activations are negative: TopK(k') keeps the k' "
                                     "largest and THEN applies the ReLU, as the SAE does"),
                     (v(bias=False), "add the decoder bias b_pre to the reconstruction, as the SAE's decoder does"),
                     (v(baseline="none"), "that is the plain MSE: score with the normalized MSE of notebook 02 "
                                          "(divide by the MSE of always predicting the mean of x)"),
                     (v(baseline="norm"), "you divided by the mean of ||x||^2: the normalized MSE divides by the MSE "
                                          "of predicting the MEAN of x (notebook 02)"),
                     (v(baseline="scalar mean"), "you subtracted one scalar mean of all entries: the baseline "
                                                 "predicts the mean VECTOR x.mean(0)"),
                     (v(per_token=True), "you averaged per-token ratios: divide the mean error by the mean "
                                         "baseline error (one ratio per k')")], atol=1e-5, rtol=1e-3)
    want, want_turn = recovery_curve(pre, x, W, b, ks)
    assert close(curve, want, atol=1e-5, rtol=1e-3), \
        f"expected the curve {[round(w, 4) for w in want]}, got {[round(c, 4) for c in curve]}"
    if isinstance(turn, float) and not float(turn).is_integer():
        raise AssertionError(f"the turn is a k' (an int from ks), not a normalized MSE: got {turn}")
    if turn is not None and int(turn) == ks.index(want_turn):
        raise AssertionError(f"you returned {int(turn)}, the POSITION of the lowest point in ks: return the k' "
                             f"itself ({want_turn})")
    if turn is not None and int(turn) == ks[ks.index(want_turn) + 1]:
        raise AssertionError(f"you returned k' = {int(turn)}, the first point AFTER the curve turned up: return the "
                             "k' of the lowest normalized MSE")
    if turn is not None and int(turn) == ks[int(torch.tensor(want).argmax())]:
        raise AssertionError(f"k' = {int(turn)} has the HIGHEST normalized MSE: the curve turns at its lowest point")
    assert turn is not None and int(turn) == want_turn, \
        f"the curve {[round(w, 4) for w in want]} is lowest at k' = {want_turn}; you returned {turn}"
    pre, x, W, b = _curve_case(20)  # a curve that keeps falling, as a Multi-TopK SAE's should
    curve2, turn2 = fn(pre.clone(), x.clone(), W.clone(), b.clone(), list(ks))
    want2, want_turn2 = recovery_curve(pre, x, W, b, ks)
    assert close([float(c) for c in curve2], want2, atol=1e-5, rtol=1e-3), \
        f"a second case: expected the curve {[round(w, 4) for w in want2]}, got {[round(float(c), 4) for c in curve2]}"
    assert turn2 is not None and int(turn2) == want_turn2, \
        f"a curve that keeps falling {[round(w, 4) for w in want2]} turns at its last point, k' = {want_turn2}; you " \
        f"returned {turn2} (when no later point is higher, the lowest is the last)"
    passed("recovery_curve")


@exercise("4.2", threshold_for_l0)
def check_threshold_for_l0(fn) -> None:
    """`fn(pre_BN, target_l0) -> float`: rows have, on average, target_l0 pre-activations above it."""
    g = torch.Generator().manual_seed(0)
    pre = torch.randn(400, 256, generator=g) * torch.linspace(0.2, 2.0, 256)  # latents of different scales
    for target in (8.0, 32.0):
        theta = float(fn(pre.clone(), target))
        l0 = float((pre > theta).sum(-1).float().mean())
        if abs(l0 - (256 - target)) < 0.02 * target + 1:
            raise AssertionError(f"theta = {theta:.3f} leaves {l0:.1f} latents active, about n - L0: take the "
                                 "(1 - L0 / n) quantile, not the L0 / n one")
        if l0 < 0.1 * target:
            raise AssertionError(f"theta = {theta:.3f} leaves {l0:.2f} active per row: L0 counts active latents PER "
                                 "ROW; over a batch of B rows that is B * L0 values above theta (a fraction L0 / n)")
        per_row = float(pre.topk(int(target), dim=-1).values[:, -1].mean())
        if abs(theta - per_row) < 1e-6:
            raise AssertionError("you averaged each row's k-th largest value: one global threshold must give L0 on "
                                 f"AVERAGE over rows; yours gives {l0:.2f}; use a quantile of all pre-activations")
        assert abs(l0 - target) <= 0.02 * target + 0.05, f"theta = {theta:.3f} gives L0 {l0:.2f}, target {target}"
    passed("threshold_for_l0")
