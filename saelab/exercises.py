"""Exercises for notebooks 02, 06 and 07: reference solutions and checks that explain a wrong answer.

Each `check_*` takes the learner's function, runs it on small cases and raises `AssertionError`
with a hint naming the likely mistake; it prints a short confirmation when all cases pass.
A stub the learner must fill calls `todo("7.1")`, which stops the notebook with a clear message;
`graded(learner_fn, solution_fn)` hands the reference solution to the check instead when the
environment variable SAELAB_SOLUTIONS=1 is set (how CI runs the notebooks).
"""

from __future__ import annotations

import os

import torch


class NotWrittenYet(NotImplementedError):
    """An exercise stub the learner has not filled in."""


def solutions_on() -> bool:
    return os.environ.get("SAELAB_SOLUTIONS", "") not in ("", "0", "false", "False")


def todo(exercise: str):
    """Stop here: the learner has not written exercise `exercise` yet."""
    raise NotWrittenYet(f"exercise {exercise}: not written yet. Fill in the function in this cell and run it "
                        "again (or run the series with SAELAB_SOLUTIONS=1 to use the reference solutions)")


def graded(learner_fn, solution_fn):
    """The function a check should grade: the reference solution under SAELAB_SOLUTIONS=1, else the learner's."""
    return solution_fn if solutions_on() else learner_fn


class solutions:  # noqa: N801 - a namespace the notebook reads as `solutions.topk_activation`
    @staticmethod
    def topk_activation(pre_BN: torch.Tensor, k: int) -> torch.Tensor:
        """Dense TopK: keep the k largest pre-activations of each row, ReLU them, zero the rest."""
        top = pre_BN.topk(k, dim=-1)
        return torch.zeros_like(pre_BN).scatter(-1, top.indices, top.values.relu())

    @staticmethod
    def normalized_mse(recon_BD: torch.Tensor, x_BD: torch.Tensor) -> torch.Tensor:
        """MSE divided by the MSE of always predicting the mean of x (the paper's definition)."""
        mse = (recon_BD - x_BD).pow(2).sum(-1).mean()
        return mse / (x_BD - x_BD.mean(0)).pow(2).sum(-1).mean()

    @staticmethod
    def auxk_loss(x_BD, recon_BD, pre_BN, dead_N, W_dec_ND, k_aux: int) -> torch.Tensor:
        """Reconstruct the residual x - recon with the top-k_aux dead latents (no decoder bias)."""
        resid = (x_BD - recon_BD).detach()
        masked = pre_BN.masked_fill(~dead_N, float("-inf"))
        top = masked.topk(min(k_aux, int(dead_N.sum())), dim=-1)
        z = torch.zeros_like(pre_BN).scatter(-1, top.indices, top.values.relu())
        return solutions.normalized_mse(z @ W_dec_ND, resid)


    @staticmethod
    def concept_scores(acts_pos_TN: torch.Tensor, acts_neg_TN: torch.Tensor) -> torch.Tensor:
        """Per latent: mean activation on the concept's tokens minus mean activation on other tokens."""
        return acts_pos_TN.mean(0) - acts_neg_TN.mean(0)

    @staticmethod
    def steer_rows(x_RD: torch.Tensor, W_dec_ND: torch.Tensor, latent: int, alpha: float) -> torch.Tensor:
        """Add alpha times the latent's decoder row to every activation row (an SAE on raw activations)."""
        return x_RD + alpha * W_dec_ND[latent]

    @staticmethod
    def ablation_attribution(acts_RK: torch.Tensor, grad_RK: torch.Tensor, idx_RK: torch.Tensor,
                             n_latents: int) -> torch.Tensor:
        """Per latent, the first-order change of the metric when it is ablated everywhere: -sum a * dm/da."""
        out = torch.zeros(n_latents, dtype=acts_RK.dtype)
        return out.index_add_(0, idx_RK.reshape(-1), (-acts_RK * grad_RK).reshape(-1))

    @staticmethod
    def fit_power_law(n, loss) -> tuple[float, float, float]:
        """(a, b, c) of L(n) = a n^-b + c, least squares on log L (c: the irreducible loss)."""
        from .scaling_laws import fit_power_law

        f = fit_power_law(n, loss)
        return f["a"], f["b"], f["c"]


def _ok(name: str) -> None:
    print(f"{name}: all checks passed")


def check_topk_activation(fn) -> None:
    torch.manual_seed(0)
    pre = torch.randn(16, 40)
    pre[0] = -torch.rand(40) - 0.1  # a row with only negative pre-activations
    out = fn(pre.clone(), 5)
    assert out.shape == pre.shape, \
        f"expected a dense [batch, n] tensor of shape {tuple(pre.shape)}, got {tuple(out.shape)}"
    assert (out >= 0).all(), "some outputs are negative: did you forget the ReLU on the kept values?"
    nz = (out[1:] != 0).sum(-1)
    assert (nz == 5).all(), f"rows should have exactly k=5 non-zeros, got {nz.tolist()[:5]}...: keep k per ROW (dim=-1)"
    assert (out[0] == 0).all(), "a row of negative pre-activations must give all zeros (TopK, then ReLU)"
    want = solutions.topk_activation(pre, 5)
    assert torch.equal(out != 0, want != 0), "you kept the wrong latents: TopK keeps the LARGEST pre-activations"
    assert torch.allclose(out, want), "the kept values should be the pre-activations themselves (after ReLU)"
    _ok("topk_activation")


def check_normalized_mse(fn) -> None:
    torch.manual_seed(0)
    x = torch.randn(64, 8) * 2 + 5
    recon = x + 0.3 * torch.randn(64, 8)
    got = float(fn(recon, x))
    want = float(solutions.normalized_mse(recon, x))
    by_sq = float((recon - x).pow(2).sum(-1).mean() / x.pow(2).sum(-1).mean())
    if abs(got - by_sq) < 1e-6 * max(1, by_sq):
        raise AssertionError("you divided by the mean of ||x||^2 (the variant in openai/sparse_autoencoder's code, "
                             "their issue #8); the paper divides by the MSE of predicting the MEAN of x")
    mean_recon = x.mean(0).expand_as(x)
    assert abs(float(fn(mean_recon, x)) - 1.0) < 1e-5, "predicting the mean of x must score exactly 1.0"
    assert abs(float(fn(x, x))) < 1e-7, "a perfect reconstruction must score 0"
    assert abs(got - want) < 1e-5 * max(1, want), f"got {got:.5f}, expected {want:.5f}"
    _ok("normalized_mse")


def check_auxk_loss(fn) -> None:
    torch.manual_seed(0)
    d, n = 8, 16
    W = torch.eye(n, d)
    b_pre = torch.full((d,), 50.0)
    x = b_pre + torch.randn(32, d)
    recon = b_pre + 0.5 * (x - b_pre)
    recon[:, 5] = b_pre[5]  # the residual sits on axis 5 ...
    pre = torch.zeros(32, n)
    pre[:, 5] = (x - recon)[:, 5]  # ... and dead latent 5 fires with exactly that value
    dead = torch.zeros(n, dtype=torch.bool)
    dead[5] = True
    got = float(fn(x, recon, pre, dead, W, 4))
    want = float(solutions.auxk_loss(x, recon, pre, dead, W, 4))
    if got > 10:
        raise AssertionError("the loss is huge: did you add the decoder bias b_pre to the dead latents' "
                             "reconstruction? The residual x - recon has no bias (EleutherAI sparsify #132)")
    assert abs(got - want) < 1e-4 + 1e-4 * abs(want), f"got {got:.5f}, expected {want:.5f}"
    alive = ~dead
    big = float(fn(x, recon, pre * 0 + 10 * alive, dead, W, 4))
    assert big >= 0.99, "only DEAD latents may model the residual; mask the others out before the top-k"
    _ok("auxk_loss")


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
    _ok("fit_power_law")


def check_prediction(predicted: float, fit: tuple, n_new: int) -> None:
    """The prediction for `n_new` from the learner's fitted (a, b, c)."""
    a, b, c = fit
    want = a * n_new ** -b + c
    assert predicted > c, f"{predicted:.4f} is below the irreducible loss c = {c:.4f}: no n gets there"
    assert abs(predicted - want) < 1e-6 * max(abs(want), 1), \
        f"a n^-b + c at n = {n_new} is {want:.4f}, you predicted {predicted:.4f} (is n the new one, b negated?)"
    _ok("prediction")


def check_concept_scores(fn) -> None:
    """`fn(acts_pos_TN, acts_neg_TN) -> [n]`: concept latents score high, generic and opposite ones do not."""
    torch.manual_seed(0)
    n = 12
    pos, neg = torch.rand(30, n) * 0.1, torch.rand(90, n) * 0.1
    pos[:, 3] += 2.0  # the concept latent
    pos[:, 7] += 1.0
    neg[:, 7] += 1.0  # fires everywhere: not about the concept
    neg[:, 9] += 2.0  # fires on everything BUT the concept
    got = fn(pos.clone(), neg.clone())
    assert tuple(got.shape) == (n,), f"return one score per latent, shape ({n},), got {tuple(got.shape)}"
    if int(got.argmax()) == 9:
        raise AssertionError("latent 9 (silent on the concept) scores highest: subtract the OTHER tokens' mean from "
                             "the concept's, not the other way round")
    want = solutions.concept_scores(pos, neg)
    if not torch.allclose(got, want, atol=1e-5):
        sums = pos.sum(0) - neg.sum(0)
        if torch.allclose(got, sums, atol=1e-4):
            raise AssertionError("you summed activations; there are 3x more other tokens than concept tokens, so "
                                 "sums favour latents that fire everywhere: use means")
        raise AssertionError(f"latent 3's score is {float(got[3]):.3f}, expected {float(want[3]):.3f}: mean on the "
                             "concept's tokens minus mean on the others")
    assert int(got.argmax()) == 3 and abs(float(got[7])) < 0.1
    _ok("concept_scores")


def check_steer_rows(fn) -> None:
    """`fn(x_RD, W_dec_ND, latent, alpha) -> [R, D]`: x plus alpha times the latent's decoder row."""
    torch.manual_seed(0)
    x, W = torch.randn(5, 6), torch.randn(10, 6)
    got = fn(x.clone(), W.clone(), 4, 2.5)
    assert tuple(got.shape) == (5, 6), f"return the steered activations, shape (5, 6), got {tuple(got.shape)}"
    if torch.allclose(got, 2.5 * W[4].expand(5, 6)):
        raise AssertionError("you replaced the activations by the steering vector: ADD it to x (keep the rest)")
    if torch.allclose(got, x + 2.5 * W[:, 4][:6].expand(5, 6)) or not torch.allclose(got - x, (got - x)[0:1]):
        raise AssertionError("the same vector is added to every row, and it is row `latent` of W_dec [n, d] "
                             "(the latent's direction in activation space), not a column")
    assert torch.allclose(got, solutions.steer_rows(x, W, 4, 2.5), atol=1e-6), \
        "expected x + alpha * W_dec[latent]: check the sign and the scale"
    _ok("steer_rows")


def check_ablation_attribution(fn) -> None:
    """`fn(acts_RK, grad_RK, idx_RK, n) -> [n]`: -sum of activation x gradient per latent (attribution patching)."""
    acts = torch.tensor([[2.0, 1.0], [3.0, 0.0]])
    grad = torch.tensor([[0.5, -1.0], [0.25, 9.0]])
    idx = torch.tensor([[4, 1], [4, 2]])  # latent 4 at both positions; latent 2 selected but inactive (act 0)
    got = fn(acts.clone(), grad.clone(), idx.clone(), 6)
    assert tuple(got.shape) == (6,), f"return one estimate per latent, shape (6,), got {tuple(got.shape)}"
    want = solutions.ablation_attribution(acts, grad, idx, 6)
    if torch.allclose(got, -want):
        raise AssertionError("wrong sign: ablating sets a to 0, a change of -a, so the metric moves by -a * dm/da")
    if abs(float(got[2])) > 1e-6:
        raise AssertionError("latent 2 has activation 0: ablating it changes nothing; multiply by the ACTIVATION, "
                             "not just the gradient")
    if abs(float(got[4]) - float(want[4])) > 1e-6:
        raise AssertionError(f"latent 4 fires at two positions; its estimate is the SUM over them ({float(want[4]):g}),"
                             f" got {float(got[4]):g} (did scatter overwrite one? use index_add)")
    assert torch.allclose(got, want, atol=1e-6), f"expected {want.tolist()}, got {got.tolist()}"
    _ok("ablation_attribution")
