"""Notebook 02 (training): the TopK activation, the paper's normalized MSE and the AuxK loss."""

from __future__ import annotations

import torch

from saelab.teach.exercises.base import diagnose, exercise, expect_gradient, passed, run_case, same_output


def topk_activation(pre_BN: torch.Tensor, k: int) -> torch.Tensor:
    """Dense TopK: keep the k largest pre-activations of each row, ReLU them, zero the rest."""
    top = pre_BN.topk(k, dim=-1)
    return torch.zeros_like(pre_BN).scatter(-1, top.indices, top.values.relu())


def normalized_mse(recon_BD: torch.Tensor, x_BD: torch.Tensor) -> torch.Tensor:
    """MSE divided by the MSE of always predicting the mean of x (the paper's definition)."""
    mse = (recon_BD - x_BD).pow(2).sum(-1).mean()
    return mse / (x_BD - x_BD.mean(0)).pow(2).sum(-1).mean()


def auxk_loss(x_BD, recon_BD, pre_BN, dead_N, W_dec_ND, k_aux: int) -> torch.Tensor:
    """Reconstruct the residual x - recon with the top-k_aux dead latents (no decoder bias)."""
    resid = (x_BD - recon_BD).detach()
    masked = pre_BN.masked_fill(~dead_N, float("-inf"))
    top = masked.topk(min(k_aux, int(dead_N.sum())), dim=-1)
    z = torch.zeros_like(pre_BN).scatter(-1, top.indices, top.values.relu())
    return normalized_mse(z @ W_dec_ND, resid)


@exercise("2.1", topk_activation)
def check_topk_activation(fn) -> None:
    """`fn(pre_BN, k) -> [B, n]`. Varies k (1, 4, 5, 6, n - 1, n), the batch (16 rows, 3 rows, a batch of one),
    rows of only negative values, ties (only where the answer does not depend on which tied entry topk picks);
    the gradient must reach pre_BN (your SAE trains through it) and pre_BN must come back unchanged."""
    torch.manual_seed(0)
    pre = torch.randn(16, 40)
    pre[0] = -torch.rand(40) - 0.1  # a row with only negative pre-activations
    pre[1, :6] = torch.tensor([5.0, 4.0, 3.0, 2.0, -0.1, -0.2]) + 10  # a row with clear top 5
    out = _topk_case(fn, pre, 5, "with k = 5")
    assert tuple(out.shape) == tuple(pre.shape), \
        f"expected a dense [batch, n] tensor of shape {tuple(pre.shape)}, got {tuple(out.shape)}"
    top = pre.topk(5, dim=-1)
    no_relu = torch.zeros_like(pre).scatter(-1, top.indices, top.values)
    diagnose(out, [(no_relu, "some outputs are negative: apply a ReLU to the kept values (TopK, then ReLU)"),
                   (topk_activation(pre, 4), "rows have 4 non-zeros: keep k (=5) per row, not k - 1"),
                   (topk_activation(pre, 6), "rows have 6 non-zeros: keep k (=5) per row, not k + 1"),
                   (torch.zeros_like(pre).scatter(0, pre.topk(5, dim=0).indices, pre.topk(5, dim=0).values.relu()),
                    "you took the top k of each COLUMN (dim=0): TopK keeps the k largest latents of each token "
                    "(dim=-1)"),
                   (torch.zeros_like(pre).scatter(-1, (-pre).topk(5, dim=-1).indices,
                                                  pre.gather(-1, (-pre).topk(5, dim=-1).indices).relu()),
                    "you kept the SMALLEST pre-activations: TopK keeps the largest")])
    assert (out[0] == 0).all(), "a row of negative pre-activations must give all zeros (TopK, then ReLU)"
    want = topk_activation(pre, 5)
    assert torch.equal(out != 0, want != 0), "you kept the wrong latents: TopK keeps the LARGEST pre-activations"
    assert torch.allclose(out, want), "the kept values should be the pre-activations themselves (after ReLU)"
    g = torch.Generator().manual_seed(1)
    small = torch.randn(3, 7, generator=g)
    for what, p, k in (("with k = 1", pre, 1), ("with k = 39 (n - 1)", pre, 39), ("with k = 40 (= n)", pre, 40),
                       ("with a batch of one row (shape (1, 40)), k = 5", pre[2:3], 5),
                       ("with pre_BN of shape (3, 7), k = 3", small, 3)):
        got, want = _topk_case(fn, p, k, what), topk_activation(p, k)
        nnz, nnz_want = (got != 0).sum(-1), (want != 0).sum(-1)
        if got.shape == want.shape and not torch.equal(nnz, nnz_want):
            r = int((nnz != nnz_want).nonzero()[0])
            raise AssertionError(f"{what}: row {r} has {int(nnz[r])} non-zeros, expected {int(nnz_want[r])}: keep the "
                                 "k largest of each row, k the argument (fewer only where they are negative)")
        same_output(got, want, what)
    ties = torch.tensor([[3.0, 2.0, 2.0, 2.0, 1.0, 0.5],      # the 2nd place is a three-way tie
                         [1.5, 1.5, -2.0, 0.7, 1.5, 0.2],     # three equal largest values, k = 2 keeps two of them
                         [-1.0, -1.0, -1.0, -1.0, -1.0, -1.0],  # equal negatives: all zero whatever topk picks
                         [0.0, 0.0, 0.0, 0.0, 0.0, 0.0]])
    what = "with ties at the k-th value (k = 2, rows such as [3, 2, 2, 2, 1, 0.5])"
    got = _topk_case(fn, ties, 2, what)
    assert tuple(got.shape) == tuple(ties.shape), f"{what}: expected shape {tuple(ties.shape)}, got {tuple(got.shape)}"
    nnz = (got != 0).sum(-1)
    if bool((nnz > 2).any()):
        raise AssertionError(f"{what}: a row kept {int(nnz.max())} values: keep exactly k even when several entries "
                             "tie with the k-th largest (a threshold `pre >= k-th value` keeps them all; topk picks k)")
    kept = got != 0
    assert torch.equal(got[kept], ties[kept]), f"{what}: the kept values must be the pre-activations themselves"
    same_output(got.sort(-1).values, topk_activation(ties, 2).sort(-1).values, f"{what}, each row's sorted values")
    pre_g = pre.clone().requires_grad_(True)
    expect_gradient(run_case("with pre_BN requiring grad", fn, pre_g, 5), {"pre_BN": pre_g},
                    "topk_activation (your SAE's forward pass and its training backpropagate through it)")
    passed("topk_activation")


def _topk_case(fn, pre, k, what):
    """Run the learner's topk_activation on a copy of pre; pre must come back unchanged."""
    p = pre.clone()
    got = run_case(what, fn, p, k)
    assert torch.equal(p, pre), f"{what}: your function changed pre_BN in place: work on a new tensor (the SAE's " \
        "forward pass returns pre for AuxK, which needs it unchanged)"
    assert isinstance(got, torch.Tensor), f"{what}: return a tensor, got a {type(got).__name__}"
    return got.detach()


@exercise("2.2", normalized_mse)
def check_normalized_mse(fn) -> None:
    """`fn(recon_BD, x_BD) -> 0-dim tensor`. Varies the batch (64, 4, 2 rows), d (8, 3, 1), the mean and scale of x,
    the argument order (the baseline is the mean of x, the second argument); predicting the mean must score 1 and a
    perfect reconstruction 0; the result must be a tensor whose gradient reaches recon_BD (the loss trains through
    it: exercises 2.3 and 2.6)."""
    torch.manual_seed(0)
    x = torch.randn(64, 8) * 2 + 5
    recon = x + 0.3 * torch.randn(64, 8)
    got = _nmse_case(fn, recon, x, "on 64 rows of d = 8")
    err = (recon - x).pow(2).sum(-1).mean()
    diagnose(float(got), [(float(err / x.pow(2).sum(-1).mean()),
                           "you divided by the mean of the uncentred ||x||^2 (close to openai/sparse_autoencoder's "
                           "loss.py, which divides each token's error by its own ||x||^2; their issue #8); the paper "
                           "divides by the MSE of predicting the MEAN of x"),
                          (float(err / (x - x.mean()).pow(2).sum(-1).mean()),
                           "you subtracted one scalar mean of all entries: the baseline predicts the mean VECTOR "
                           "x.mean(0) for every token"),
                          (float(err), "that is the plain MSE: divide by the MSE of always predicting the mean of x"),
                          (float(((recon - x).pow(2).sum(-1) / (x - x.mean(0)).pow(2).sum(-1)).mean()),
                           "you averaged per-token ratios: divide the mean error by the mean baseline error (one "
                           "ratio)"),
                          (float(err / (recon - recon.mean(0)).pow(2).sum(-1).mean()),
                           "your baseline is the mean of recon_BD: it is the mean of x_BD, the SECOND argument"),
                          (float(normalized_mse(recon, x)) * 63 / 64,
                           "your result is off by the factor (B - 1) / B = 63/64: torch.var divides by B - 1 "
                           "(unbiased); the baseline is the MEAN squared distance to x.mean(0)"),
                          (float(err / (x - x.mean(-1, keepdim=True)).pow(2).sum(-1).mean()),
                           "you took each token's mean over d (dim=-1): the baseline predicts the mean over the BATCH "
                           "(x.mean(0)), one vector for every token")],
             atol=1e-6, rtol=1e-5)
    same_output(got, normalized_mse(recon, x), "on 64 rows of d = 8")
    mean_pred = _nmse_case(fn, x.mean(0).expand_as(x).clone(), x, "predicting the mean of x")
    assert abs(float(mean_pred) - 1.0) < 1e-5, \
        f"predicting the mean of x must score exactly 1.0, got {float(mean_pred)}"
    assert abs(float(_nmse_case(fn, x.clone(), x, "a perfect reconstruction"))) < 1e-7, \
        "a perfect reconstruction must score 0"
    g = torch.Generator().manual_seed(1)
    for what, (B, d, loc, scale) in {"with a batch of 4 rows, d = 3": (4, 3, 0.0, 1.0),
                                     "with a batch of 2 rows (the fewest for a baseline), d = 5": (2, 5, 1.0, 3.0),
                                     "with d = 1": (32, 1, -2.0, 0.5),
                                     "with x far from zero (mean 100)": (16, 6, 100.0, 2.0)}.items():
        xc = loc + scale * torch.randn(B, d, generator=g)
        rc = xc + 0.5 * scale * torch.randn(B, d, generator=g)
        got, want = _nmse_case(fn, rc, xc, what), normalized_mse(rc, xc)
        diagnose(got, [(want * (B - 1) / B,
                        f"{what}: your result is off by the factor (B - 1) / B: torch.var divides by B - 1 (unbiased); "
                        "the baseline is the MEAN squared distance to x.mean(0)")], atol=1e-7, rtol=1e-5)
        same_output(got, want, what)
    rg = recon.clone().requires_grad_(True)
    expect_gradient(run_case("with recon_BD requiring grad", fn, rg, x.clone()), {"recon_BD": rg},
                    "normalized_mse (the training loss: exercise 2.6 backpropagates through it)")
    passed("normalized_mse")


def _nmse_case(fn, recon, x, what):
    """Run the learner's normalized_mse on copies; it must return a tensor and leave the inputs unchanged."""
    r, xx = recon.clone(), x.clone()
    got = run_case(what, fn, r, xx)
    assert torch.equal(r, recon) and torch.equal(xx, x), f"{what}: your function changed its inputs in place"
    assert isinstance(got, torch.Tensor), \
        f"{what}: return a tensor, not a {type(got).__name__}: a Python number (.item(), float()) carries no " \
        "gradient, and the training loss of exercise 2.6 needs one"
    return got.detach()


def _auxk_case():
    """A case where the right answer is exactly 0 and each classic mistake is far from it."""
    torch.manual_seed(0)
    d, n = 8, 16
    W = torch.eye(n, d)
    W[8:] = torch.eye(8)[torch.arange(8).roll(1)]  # latents 8-15: the same axes, shifted
    b_pre = torch.full((d,), 50.0)
    x = b_pre + torch.randn(32, d)
    recon = x.clone()
    recon[:, 5] -= 1.0 + torch.rand(32)  # the residual x - recon sits on axis 5 only
    pre = torch.zeros(32, n)
    pre[:, 5] = (x - recon)[:, 5]  # dead latent 5 fires with exactly the residual
    pre[:, 2] = 10.0  # a LIVE latent with larger pre-activations, on an axis with no residual
    dead = torch.zeros(n, dtype=torch.bool)
    dead[[5, 11, 13]] = True  # dead latents 11 and 13 have pre-activation 0
    return x, recon, pre, dead, W, b_pre


@exercise("2.3", auxk_loss)
def check_auxk_loss(fn) -> None:
    """`fn(x_BD, recon_BD, pre_BN, dead_N, W_dec_ND, k_aux) -> 0-dim tensor`. Varies k_aux (1, 2, 3, the number of
    dead latents, more than that, more than n), which latents are dead (one, three, six, all), the batch (32, 24 and
    2 rows); the residual must be detached (no gradient into recon_BD), and the gradient must reach the dead latents'
    pre-activations and decoder rows (that is how AuxK revives them in exercise 2.6)."""
    x, recon, pre, dead, W, b_pre = _auxk_case()
    recon_g = recon.clone().requires_grad_(True)
    loss = run_case("with recon_BD requiring grad", fn, x, recon_g, pre * 0.5, dead, W, 2)  # a non-zero loss
    if isinstance(loss, torch.Tensor) and loss.requires_grad:
        loss.backward()
        if recon_g.grad is not None and float(recon_g.grad.abs().max()) > 0:
            raise AssertionError("the AuxK loss sends gradient into the main reconstruction: detach the residual "
                                 "x - recon (AuxK trains only the dead latents to model what the SAE missed)")
    got = float(torch.as_tensor(_auxk_run(fn, (x, recon, pre, dead, W, 2), "on the first case")).detach())
    unmasked = topk_activation(pre, 2) @ W
    resid = x - recon
    diagnose(got, [(float(normalized_mse(topk_activation(pre.masked_fill(~dead, float("-inf")), 2) @ W + b_pre, resid)),
                    "you added the decoder bias b_pre to the dead latents' reconstruction: the residual "
                    "x - recon has no bias (EleutherAI sparsify #132)"),
                   (float(normalized_mse(unmasked, resid)),
                    "live latent 2 entered the top-k: only DEAD latents may model the residual; set the live "
                    "latents' pre-activations to -inf before the top-k"),
                   (float(normalized_mse(unmasked + b_pre, resid)),
                    "live latent 2 entered the top-k and b_pre was added: mask the live latents to -inf, and "
                    "decode without the bias")], atol=1e-4, rtol=1e-3)
    want = float(auxk_loss(x, recon, pre, dead, W, 2))
    assert abs(got - want) < 1e-4 + 1e-4 * abs(want), f"got {got:.5f}, expected {want:.5f} (here the dead latent 5 " \
        "models the residual exactly)"
    _check_auxk_nonzero(fn)
    passed("auxk_loss")


def _auxk_run(fn, args, what):
    """Run the learner's auxk_loss on copies of the inputs, which must come back unchanged."""
    copies = [a.clone() if isinstance(a, torch.Tensor) else a for a in args]
    got = run_case(what, fn, *copies)
    names = ("x_BD", "recon_BD", "pre_BN", "dead_N", "W_dec_ND")
    for name, a, c in zip(names, args, copies):
        assert torch.equal(a, c), f"{what}: your function changed {name} in place (e.g. masked_fill_): work on a new " \
            "tensor (in training, pre_BN and the decoder are still needed by the backward pass)"
    return got


def _auxk_nonzero_case():
    """A case with a non-zero answer: 6 dead latents with positive pre-activations (more than k_aux = 2), some
    tokens whose dead latents are mostly negative, and a residual whose baseline MSE is far from 1."""
    g = torch.Generator().manual_seed(1)
    d, n = 8, 16
    W = torch.randn(n, d, generator=g)
    W = W / W.norm(dim=1, keepdim=True)
    x = 3.0 * torch.randn(24, d, generator=g)
    recon = x - 0.2 * torch.randn(24, d, generator=g)  # a small residual: its baseline MSE is ~0.3, not 1
    pre = torch.rand(24, n, generator=g) + 0.05
    dead = torch.zeros(n, dtype=torch.bool)
    dead[[1, 4, 6, 9, 12, 15]] = True
    pre[:8, [1, 4, 6, 9, 12]] = -torch.rand(8, 5, generator=g) - 0.05  # these tokens: one positive dead latent
    return x, recon, pre, dead, W


def _check_auxk_nonzero(fn) -> None:
    x, recon, pre, dead, W = _auxk_nonzero_case()
    what = "on a case with 6 dead latents, k_aux = 2"
    got = _auxk_run(fn, (x, recon, pre, dead, W, 2), what)
    resid = x - recon
    masked = pre.masked_fill(~dead, float("-inf"))
    top = masked.topk(2, dim=-1)
    no_relu = torch.zeros_like(pre).scatter(-1, top.indices, top.values) @ W
    all_dead = torch.zeros_like(pre).scatter(-1, masked.topk(int(dead.sum()), dim=-1).indices,
                                             masked.topk(int(dead.sum()), dim=-1).values.relu()) @ W
    z = topk_activation(masked, 2) @ W
    diagnose(float(torch.as_tensor(got).detach()),
             [(float((z - resid).pow(2).sum(-1).mean()),
               "that is the plain MSE of the residual's reconstruction: normalise it as the main loss is "
               "(divide by the MSE of predicting the residual's mean)"),
              (float(normalized_mse(all_dead, resid)),
               "all dead latents were used: AuxK keeps only the top k_aux of them per token"),
              (float(normalized_mse(no_relu, resid)),
               "negative pre-activations reached the reconstruction: apply the ReLU after the dead latents' "
               "top-k_aux, as in the main TopK")], atol=1e-5, rtol=1e-4)
    same_output(got, auxk_loss(x, recon, pre, dead, W, 2), f"{what} and negative pre-activations", atol=1e-5)
    one, three, every = (torch.zeros_like(dead) for _ in range(3))
    one[9], three[[1, 6, 12]], every[:] = True, True, True
    for what, d_mask, k, rows in (("with k_aux = 1", dead, 1, 24), ("with k_aux = 3", dead, 3, 24),
                                  ("with k_aux = 6, every dead latent", dead, 6, 24),
                                  ("with k_aux = 10, more than the 6 dead latents", dead, 10, 24),
                                  ("with k_aux = 40, more than the 16 latents", dead, 40, 24),
                                  ("with a single dead latent, k_aux = 2", one, 2, 24),
                                  ("with 3 dead latents, k_aux = 2", three, 2, 24),
                                  ("with every latent dead, k_aux = 4", every, 4, 24),
                                  ("with a batch of 2 rows, k_aux = 2", dead, 2, 2)):
        args = (x[:rows], recon[:rows], pre[:rows], d_mask, W, k)
        got = _auxk_run(fn, args, what)
        want = auxk_loss(*args)
        if isinstance(got, torch.Tensor) and not torch.allclose(got.detach(), want, atol=1e-5, rtol=1e-4):
            for other in (1, 2, 3, 4, 6, 32):
                if other != k and torch.allclose(got.detach(), auxk_loss(*args[:5], other), atol=1e-5, rtol=1e-4):
                    raise AssertionError(f"{what}: your result is the one for k_aux = {other}: use the k_aux argument")
        same_output(got, want, what, atol=1e-5)
    pre_g, W_g = pre.clone().requires_grad_(True), W.clone().requires_grad_(True)
    expect_gradient(run_case("with pre_BN and W_dec_ND requiring grad", fn, x, recon, pre_g, dead, W_g, 2),
                    {"pre_BN (the dead latents' pre-activations)": pre_g, "W_dec_ND (the dead latents' rows)": W_g},
                    "auxk_loss (exercise 2.6 trains the dead latents through it)")
