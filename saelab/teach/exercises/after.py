"""Notebook 08 (after the paper): BatchTopK's selection and inference threshold (8.1), JumpReLU's straight-through
threshold gradient (8.2) and the Matryoshka loss (8.3). Reference solutions and checks that name the mistake."""

from __future__ import annotations

import torch

from saelab.teach.exercises.base import close, diagnose, expect_shape, passed


# ---- 8.1 BatchTopK ------------------------------------------------------------------------------------------
def batchtopk(pre_BN: torch.Tensor, k: int) -> torch.Tensor:
    """Dense codes: the batch's B*k largest positive pre-activations kept, everything else 0."""
    flat = pre_BN.flatten()
    cut = flat.topk(k * pre_BN.shape[0]).values[-1]
    return torch.where((pre_BN >= cut) & (pre_BN > 0), pre_BN, torch.zeros_like(pre_BN))


def inference_threshold(codes: list[torch.Tensor]) -> float:
    """The mean, over training batches, of the smallest positive activation each batch's selection kept."""
    return float(torch.stack([c[c > 0].min() for c in codes]).mean())


def _pre(seed: int, B: int = 24, n: int = 64) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(B, n, generator=g) * torch.rand(B, 1, generator=g).mul(2).add(0.2)  # tokens of different scale


def check_batchtopk(select, threshold) -> None:
    """`select(pre_BN, k)` (dense codes) and `threshold(list of codes) -> float`, on batches whose tokens differ."""
    for seed, k in ((0, 4), (1, 7)):
        pre = _pre(seed)
        got = select(pre.clone(), k)
        expect_shape(got, pre.shape, "dense codes [B, n]")
        diagnose(got, [(torch.where(pre >= pre.topk(k, dim=-1).values[:, -1:], pre, 0.0).clamp_min(0),
                        "every token kept exactly k: that is TopK; BatchTopK keeps the B*k largest of the WHOLE batch, "
                        "so some tokens get more than k and some fewer"),
                       (torch.where(pre >= pre.flatten().topk(k).values[-1], pre, 0.0),
                        "you kept k values in all; the batch keeps B*k (k per token on average)")])
        kept = got != 0
        assert not bool((got < 0).any()), "a kept value is negative: keep positive pre-activations only (a ReLU)"
        assert int(kept.sum()) == k * len(pre), f"{int(kept.sum())} values kept; a batch of {len(pre)} keeps B*k = " \
                                                f"{k * len(pre)}"
        assert close(got[kept], pre[kept]), "kept values must be the pre-activations themselves (no rescaling)"
        assert float(pre[~kept].max()) <= float(pre[kept].min()), \
            "a larger pre-activation was dropped for a smaller one"
    codes = [batchtopk(_pre(s), 4) for s in range(2, 6)]
    want = inference_threshold(codes)
    got = float(threshold([c.clone() for c in codes]))
    diagnose(got, [(0.0, "the threshold is 0: take the smallest POSITIVE kept activation (zeros are not kept)"),
                   (float(torch.stack([c[c > 0].mean() for c in codes]).mean()),
                    "you averaged the kept activations; the threshold is each batch's SMALLEST kept activation"),
                   (float(min(c[c > 0].min() for c in codes)),
                    "you took the smallest over all batches; the papers average each batch's minimum"),
                   (float(max(c[c > 0].min() for c in codes)), "you took the largest minimum; average them")])
    assert abs(got - want) < 1e-5, f"threshold {got:.5f}, expected {want:.5f}"
    passed("batchtopk and inference_threshold")


# ---- 8.3 the Matryoshka loss ----------------------------------------------------------------------------------
def matryoshka_loss(z_BN: torch.Tensor, W_dec_ND: torch.Tensor, b_dec_D: torch.Tensor, x_BD: torch.Tensor,
                    widths: list[int]) -> torch.Tensor:
    """Sum over prefix widths m of the normalized MSE of x_hat_m = z[:, :m] W_dec[:m] + b_dec."""
    base = (x_BD - x_BD.mean(0)).pow(2).sum(-1).mean()
    return sum((z_BN[:, :m] @ W_dec_ND[:m] + b_dec_D - x_BD).pow(2).sum(-1).mean() / base for m in widths)


def _matryoshka_case(seed: int):
    g = torch.Generator().manual_seed(seed)
    B, n, d = 32, 48, 12
    z = torch.relu(torch.randn(B, n, generator=g)) * (torch.rand(B, n, generator=g) < 0.2)
    W = torch.randn(n, d, generator=g)
    W = W / W.norm(dim=1, keepdim=True)
    b = torch.randn(d, generator=g)
    x = z @ W + b + 0.3 * torch.randn(B, d, generator=g)
    return z, W, b, x, [6, 18, 48]


def check_matryoshka_loss(fn) -> None:
    """`fn(z_BN, W_dec_ND, b_dec_D, x_BD, widths) -> scalar tensor`, against the definition and known mistakes."""
    for seed in (0, 1):
        z, W, b, x, widths = _matryoshka_case(seed)
        got = fn(z.clone(), W.clone(), b.clone(), x.clone(), list(widths))
        assert torch.is_tensor(got) and got.numel() == 1, "return one scalar tensor (the training loss)"
        base = (x - x.mean(0)).pow(2).sum(-1).mean()
        each = [(z[:, :m] @ W[:m] + b - x).pow(2).sum(-1).mean() / base for m in widths]
        groups = [(z[:, lo:m] @ W[lo:m] + b - x).pow(2).sum(-1).mean() / base
                  for lo, m in zip([0, *widths[:-1]], widths)]
        diagnose(got, [
            (sum((z[:, :m] @ W[:m] - x).pow(2).sum(-1).mean() / base for m in widths),
             "a prefix's reconstruction includes the decoder bias b_dec (each prefix is an SAE of its own)"),
            (sum(each) / len(widths), "you averaged the prefix losses; the paper sums them"),
            (sum(groups), "each term must decode the whole PREFIX z[:, :m], not only the group between two widths"),
            (sum(each[:-1]), "the last width (the full dictionary) is a prefix too: include it"),
            (sum((z[:, :m] @ W[:m] + b - x).pow(2).sum(-1).mean() for m in widths),
             "normalise each prefix's squared error by the mean predictor's (normalized MSE)")])
        assert close(got.detach(), sum(each), atol=1e-5), f"loss {float(got):.5f}, expected {float(sum(each)):.5f}"
    z, W, b, x, widths = _matryoshka_case(2)
    W.requires_grad_(True)
    loss = fn(z, W, b, x, widths)
    assert torch.is_tensor(loss) and loss.requires_grad, "the loss must keep its graph (no .item(), no float())"
    loss.backward()
    assert W.grad is not None and float(W.grad.abs().sum()) > 0, "the loss must keep its graph (no .item(), no float())"
    passed("matryoshka_loss")


# ---- 8.2 JumpReLU's threshold gradient -------------------------------------------------------------------------
def jumprelu_threshold_grad(pre_BN: torch.Tensor, theta_N: torch.Tensor, eps: float, grad_BN: torch.Tensor
                            ) -> torch.Tensor:
    """dL/dtheta through f = pre * H(pre - theta), with the paper's pseudo-derivative -(theta/eps) K((pre-theta)/eps),
    K the rectangle 1{|u| < 1/2}; `grad_BN` is dL/df."""
    u = (pre_BN - theta_N) / eps
    return (-(theta_N / eps) * ((u > -0.5) & (u < 0.5)).to(pre_BN.dtype) * grad_BN).sum(0)


def check_jumprelu_threshold_grad(fn) -> None:
    """`fn(pre_BN, theta_N, eps, grad_BN) -> [n]`, on values placed around the window's edges."""
    theta = torch.tensor([0.5, 0.2, 0.8])
    pre = torch.tensor([[0.52, 0.21, 0.70], [0.47, 0.28, 0.83], [0.90, 0.17, 0.79], [0.56, 0.05, 0.845]])
    g = torch.tensor([[2.0, -1.0, 3.0], [3.0, 5.0, 1.0], [7.0, 2.0, -4.0], [1.0, 1.0, 1.0]])
    eps = 0.1
    got = fn(pre.clone(), theta.clone(), eps, g.clone())
    expect_shape(got, (3,), "one gradient per latent, [n] (summed over the batch)")
    u = (pre - theta) / eps
    inside = ((u > -0.5) & (u < 0.5)).float()
    above = (((u >= 0) & (u < 0.5)).float())
    wide = ((u > -1) & (u < 1)).float()
    diagnose(got, [
        ((-(1 / eps) * inside * g).sum(0), "that is the Heaviside step's pseudo-derivative; JumpReLU's carries a "
                                           "factor theta: -(theta/eps) K((pre - theta)/eps)"),
        (((theta / eps) * inside * g).sum(0), "the sign: raising theta switches an active latent off, so the "
                                              "pseudo-derivative is negative"),
        ((-(theta / eps) * above * g).sum(0), "the window has two sides: pre-activations just BELOW theta count too "
                                              "(|pre - theta| < eps/2)"),
        ((-(theta / eps) * wide * g).sum(0), "K is 1 on (-1/2, 1/2): the window is eps wide in all, eps/2 each side"),
        (-(theta / eps) * (inside * g).mean(0), "sum over the batch's tokens, do not average")])
    want = jumprelu_threshold_grad(pre, theta, eps, g)
    assert close(got, want), f"gradient {got.tolist()}, expected {want.tolist()}"
    passed("jumprelu_threshold_grad")
