"""Notebook 02 (training): the TopK activation, the paper's normalized MSE and the AuxK loss."""

from __future__ import annotations

import torch

from saelab.teach.exercises.base import diagnose, exercise, passed


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
    torch.manual_seed(0)
    pre = torch.randn(16, 40)
    pre[0] = -torch.rand(40) - 0.1  # a row with only negative pre-activations
    pre[1, :6] = torch.tensor([5.0, 4.0, 3.0, 2.0, -0.1, -0.2]) + 10  # a row with clear top 5
    out = fn(pre.clone(), 5)
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
    passed("topk_activation")


@exercise("2.2", normalized_mse)
def check_normalized_mse(fn) -> None:
    torch.manual_seed(0)
    x = torch.randn(64, 8) * 2 + 5
    recon = x + 0.3 * torch.randn(64, 8)
    got = float(fn(recon, x))
    err = (recon - x).pow(2).sum(-1).mean()
    diagnose(got, [(float(err / x.pow(2).sum(-1).mean()),
                    "you divided by the mean of the uncentred ||x||^2 (close to openai/sparse_autoencoder's loss.py, "
                    "which divides each token's error by its own ||x||^2; their issue #8); the paper divides by the "
                    "MSE of predicting the MEAN of x"),
                   (float(err / (x - x.mean()).pow(2).sum(-1).mean()),
                    "you subtracted one scalar mean of all entries: the baseline predicts the mean VECTOR x.mean(0) "
                    "for every token"),
                   (float(err), "that is the plain MSE: divide by the MSE of always predicting the mean of x"),
                   (float(((recon - x).pow(2).sum(-1) / (x - x.mean(0)).pow(2).sum(-1)).mean()),
                    "you averaged per-token ratios: divide the mean error by the mean baseline error (one ratio)")],
             atol=1e-6, rtol=1e-5)
    assert abs(float(fn(x.mean(0).expand_as(x), x)) - 1.0) < 1e-5, "predicting the mean of x must score exactly 1.0"
    assert abs(float(fn(x, x))) < 1e-7, "a perfect reconstruction must score 0"
    want = float(normalized_mse(recon, x))
    assert abs(got - want) < 1e-5 * max(1, want), f"got {got:.5f}, expected {want:.5f}"
    passed("normalized_mse")


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
    x, recon, pre, dead, W, b_pre = _auxk_case()
    recon_g = recon.clone().requires_grad_(True)
    loss = fn(x, recon_g, pre * 0.5, dead, W, 2)  # a case with a non-zero loss, so a gradient would show
    if isinstance(loss, torch.Tensor) and loss.requires_grad:
        loss.backward()
        if recon_g.grad is not None and float(recon_g.grad.abs().max()) > 0:
            raise AssertionError("the AuxK loss sends gradient into the main reconstruction: detach the residual "
                                 "x - recon (AuxK trains only the dead latents to model what the SAE missed)")
    got = float(torch.as_tensor(fn(x, recon, pre, dead, W, 2)).detach())
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
    got = float(torch.as_tensor(fn(x, recon, pre, dead, W, 2)).detach())
    resid = x - recon
    masked = pre.masked_fill(~dead, float("-inf"))
    top = masked.topk(2, dim=-1)
    no_relu = torch.zeros_like(pre).scatter(-1, top.indices, top.values) @ W
    all_dead = torch.zeros_like(pre).scatter(-1, masked.topk(int(dead.sum()), dim=-1).indices,
                                             masked.topk(int(dead.sum()), dim=-1).values.relu()) @ W
    z = topk_activation(masked, 2) @ W
    diagnose(got, [(float((z - resid).pow(2).sum(-1).mean()),
                    "that is the plain MSE of the residual's reconstruction: normalise it as the main loss is "
                    "(divide by the MSE of predicting the residual's mean)"),
                   (float(normalized_mse(all_dead, resid)),
                    "all dead latents were used: AuxK keeps only the top k_aux of them per token"),
                   (float(normalized_mse(no_relu, resid)),
                    "negative pre-activations reached the reconstruction: apply the ReLU after the dead latents' "
                    "top-k_aux, as in the main TopK")], atol=1e-5, rtol=1e-4)
    want = float(auxk_loss(x, recon, pre, dead, W, 2))
    assert abs(got - want) < 1e-5 + 1e-4 * abs(want), \
        f"got {got:.5f}, expected {want:.5f} on a case with 6 dead latents firing, k_aux = 2 and negative " \
        "pre-activations"
