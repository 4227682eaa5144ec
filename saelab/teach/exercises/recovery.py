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


def _plateau_case():
    """Pre-activations with exactly 3 positive values per row and inputs built from those 3 latents: from k' = 3 on,
    the ReLU zeroes every extra latent, so the curve is flat there (equal values: its turn is the first of them)."""
    g = torch.Generator().manual_seed(1)
    pre = -torch.rand(48, 16, generator=g) - 0.1
    for row in pre:
        row[torch.randperm(16, generator=g)[:3]] = torch.rand(3, generator=g) + 0.5
    W = torch.randn(16, 5, generator=g)
    b = torch.randn(5, generator=g)
    x = topk_activation(pre, 3) @ W + b + 0.05 * torch.randn(48, 5, generator=g)
    return pre, x, W, b


def _small_case():
    """Two rows (the fewest a normalized MSE needs), n = 40, d = 10."""
    g = torch.Generator().manual_seed(2)
    pre = torch.randn(2, 40, generator=g)
    W = torch.randn(40, 10, generator=g)
    b = torch.randn(10, generator=g)
    return pre, topk_activation(pre, 4) @ W + b + 0.1 * torch.randn(2, 10, generator=g), W, b


def _first_lowest(curve: list[float], ks: list[int]) -> int:
    """The k' of the lowest point, the first (in the order of ks) of values equal to it up to rounding."""
    low = min(curve)
    return next(k for k, v in zip(ks, curve) if v <= low + 1e-6 * max(1.0, abs(low)))


def _same_curve(out, case, ks: list[int], what: str) -> None:
    """The learner's (curve, turn) on one case against the reference, every value and the turn."""
    pre, x, W, b = case
    assert isinstance(out, tuple | list) and len(out) == 2, \
        f"{what}: return two things: (the curve, the k' where it turns)"
    curve, turn = list(out[0]), out[1]
    want = recovery_curve(pre, x, W, b, ks)[0]
    want_turn = _first_lowest(want, ks)
    assert len(curve) == len(ks), f"{what}: return one normalized MSE per k' in ks ({len(ks)}), got {len(curve)}"
    curve = [float(v) for v in curve]
    if ks != sorted(ks) and close(curve, recovery_curve(pre, x, W, b, sorted(ks))[0], atol=1e-5, rtol=1e-3):
        raise AssertionError(f"{what}: your scores come in the order of sorted(ks); return them in the order of ks "
                             f"itself ({ks})")
    short = [recovery_curve(pre, x, W, b, [min(k, ks[-1])])[0][0] for k in ks]
    if max(ks) != ks[-1] and close(curve, short, atol=1e-5, rtol=1e-3):
        raise AssertionError(f"{what}: the k' larger than the last one in ks, {ks[-1]}, score as TopK({ks[-1]}): "
                             "one topk at max(ks) serves every k' (ks need not be sorted)")
    for k, c, w in zip(ks, curve, want):
        assert close(c, w, atol=1e-5, rtol=1e-3), \
            f"{what}: at k' = {k} your normalized MSE is {c:.5f}, expected {w:.5f} (the curve: " \
            f"{[round(v, 4) for v in want]} for ks = {ks})"
    if turn is not None and int(turn) != want_turn and int(turn) in ks and \
            want[ks.index(int(turn))] <= min(want) + 1e-6 * max(1.0, abs(min(want))):
        raise AssertionError(f"{what}: the curve {[round(v, 4) for v in want]} is equally low at several k' (from "
                             f"k' = {want_turn} on, the ReLU zeroes every extra latent); you returned {turn}: on a "
                             "tie return the FIRST of the lowest k'")
    assert turn is not None and int(turn) == want_turn, \
        f"{what}: the curve {[round(v, 4) for v in want]} is lowest at k' = {want_turn}; you returned {turn}"


@exercise("4.1", recovery_curve)
def check_recovery_curve(fn) -> None:
    """`fn(pre_BN, x_BD, W_dec_ND, b_pre_D, ks) -> (normalized MSE per k', the k' of the lowest one)`.

    Varies ks (sorted and not, k' = 1 and k' = n), the data (a curve that turns, one that keeps falling, one flat
    from k' = 3 on, where the turn is the first of equal points) and the shapes (B = 2 to 64, n = 16 to 40, d = 5
    to 10); compares every score and the turn with the reference."""
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
    for what, case, ks in (("with ks = [12, 1, 24, 5] (not sorted; k' = 1 and k' = n = 24)", _curve_case(8),
                            [12, 1, 24, 5]),
                           ("on a curve that is flat from k' = 3 on (3 positive pre-activations a row)",
                            _plateau_case(), [2, 3, 6, 10]),
                           ("on a batch of 2 rows, n = 40, d = 10, ks = [1, 4, 40]", _small_case(), [1, 4, 40])):
        _same_curve(fn(*(t.clone() for t in case), list(ks)), case, ks, what)
    passed("recovery_curve")


def _l0_cases():
    """(what, pre_BN, target) beyond the main case: L0 = 1, a fractional average, L0 near n, a batch of one row, and
    another n; values are continuous (no ties), so any threshold between the right two values is right."""
    g = torch.Generator().manual_seed(1)
    pre = torch.randn(400, 256, generator=g) * torch.linspace(0.2, 2.0, 256)
    wide = torch.randn(50, 1000, generator=g) + torch.linspace(-1.0, 1.0, 1000)
    return [("target_l0 = 1", pre, 1.0), ("target_l0 = 12.5 (an average need not be whole)", pre, 12.5),
            ("target_l0 = 250 of n = 256", pre, 250.0), ("a batch of one row, target_l0 = 8", pre[:1], 8.0),
            ("n = 1000 latents, 50 rows, target_l0 = 3", wide, 3.0)]


@exercise("4.2", threshold_for_l0)
def check_threshold_for_l0(fn) -> None:
    """`fn(pre_BN, target_l0) -> float`: rows have, on average, target_l0 pre-activations above it.

    Varies target_l0 (1, 8, 12.5, 32, 250 of 256), the batch (400 rows, one row) and n (256, 1000); checks the L0
    each returned threshold gives (one value more or fewer above it over the batch is allowed: quantile conventions
    differ there)."""
    g = torch.Generator().manual_seed(0)
    pre = torch.randn(400, 256, generator=g) * torch.linspace(0.2, 2.0, 256)  # latents of different scales
    thetas = {target: float(fn(pre.clone(), target)) for target in (8.0, 32.0)}
    l0s = {target: float((pre > theta).sum(-1).float().mean()) for target, theta in thetas.items()}
    for target, theta in thetas.items():
        l0 = l0s[target]
        if abs(l0 - (256 - target)) < 0.02 * target + 1:
            raise AssertionError(f"theta = {theta:.3f} leaves {l0:.1f} latents active, about n - L0: take the "
                                 "(1 - L0 / n) quantile, not the L0 / n one")
        if abs(l0 - target / len(pre)) < 0.01 * target:
            raise AssertionError(f"theta = {theta:.3f} leaves {l0:.2f} active per row: L0 counts active latents PER "
                                 "ROW; over a batch of B rows that is B * L0 values above theta (a fraction L0 / n)")
        per_row = float(pre.topk(int(target), dim=-1).values[:, -1].mean())
        if abs(theta - per_row) < 1e-6:
            raise AssertionError("you averaged each row's k-th largest value: one global threshold must give L0 on "
                                 f"AVERAGE over rows; yours gives {l0:.2f}; use a quantile of all pre-activations")
    ratios = [l0s[t] / t for t in l0s]
    if all(abs(r - ratios[0]) < 0.05 * ratios[0] for r in ratios) and abs(ratios[0] - 1) > 0.1:
        raise AssertionError(f"your L0 is {ratios[0]:.3g} times the target at L0 = 8 and at 32: the fraction of "
                             "values above theta must be target_l0 / n, with n the number of latents of THIS batch "
                             f"(pre_BN.shape[-1] = {pre.shape[-1]}), not another SAE's")
    for target, theta in thetas.items():
        assert abs(l0s[target] - target) <= 0.02 * target + 0.05, \
            f"theta = {theta:.3f} gives L0 {l0s[target]:.2f} on the check's [400, 256] batch, target {target}: B * " \
            "target_l0 of its B * n values (all n latents of all B rows) must lie above theta"
    for what, p, target in _l0_cases():
        theta = float(fn(p.clone(), target))
        B, n = p.shape
        l0 = float((p > theta).sum(-1).float().mean())
        if target != int(target) and abs(l0 - int(target)) <= 1.0 / B + 1e-9:
            raise AssertionError(f"with {what}: your theta gives L0 {l0:.3f}, the target rounded down: keep "
                                 "target_l0 as it is (a float), B * target_l0 values above theta")
        assert abs(l0 - target) <= 1.0 / B + 0.01 * target, \
            f"with {what} on a [{B}, {n}] batch: theta = {theta:.4f} gives L0 {l0:.3f} on average, target {target}"
    passed("threshold_for_l0")
