"""Notebook 08, section 8 (transcoders): exercise 8.5, a skip transcoder's loss. The reference solution and a check
that names the mistake; under SAELAB_SOLUTIONS=1 the check grades the reference solution itself (`exercise`)."""

from __future__ import annotations

import torch

from saelab.teach.exercises.base import close, diagnose, exercise, expect_gradient, passed, run_case, unlike


# ---- 8.5 a skip transcoder's loss ------------------------------------------------------------------------------
def transcoder_loss(x_BD: torch.Tensor, y_BD: torch.Tensor, W_enc_ND: torch.Tensor, b_enc_N: torch.Tensor,
                    W_dec_ND: torch.Tensor, b_dec_D: torch.Tensor, W_skip_DD: torch.Tensor, k: int) -> torch.Tensor:
    """The normalized MSE of a TopK skip transcoder's prediction of the MLP's output y from its input x:
    z = ReLU(TopK_k(x W_enc^T + b_enc)), y_hat = z W_dec + b_dec + x W_skip^T, divided by the MSE of predicting y's
    mean."""
    pre = x_BD @ W_enc_ND.t() + b_enc_N
    top = pre.topk(k, dim=-1)
    z = torch.zeros_like(pre).scatter(-1, top.indices, top.values.relu())
    y_hat = z @ W_dec_ND + b_dec_D + x_BD @ W_skip_DD.t()
    return (y_hat - y_BD).pow(2).sum(-1).mean() / (y_BD - y_BD.mean(0)).pow(2).sum(-1).mean()


def _case(seed: int, B: int = 48, k: int = 4):
    g = torch.Generator().manual_seed(seed)
    d, n = 10, 40
    x = torch.randn(B, d, generator=g) * 2 + 0.5
    W_enc = torch.randn(n, d, generator=g) / d**0.5
    W_dec = torch.randn(n, d, generator=g) / 3
    b_enc, b_dec = 0.1 * torch.randn(n, generator=g) - 1.5, torch.randn(d, generator=g)  # some top-k values < 0
    W_skip = 0.3 * torch.randn(d, d, generator=g)  # not symmetric: x W_skip^T and x W_skip differ
    y = torch.tanh(x @ torch.randn(d, d, generator=g) / 3) * 4 + 1  # an "MLP" of x, another scale than x
    return x, y, W_enc, b_enc, W_dec, b_dec, W_skip, k


def _variant(x, y, W_enc, b_enc, W_dec, b_dec, W_skip, k, target=None, centre=False, skip="right", base=None,
             relu=True, norm="centred", top_dim=-1, ratio="of_means"):
    pre = (x - b_dec if centre else x) @ W_enc.t() + b_enc
    if top_dim == -1:
        top = pre.topk(k, dim=-1)
        z = torch.zeros_like(pre).scatter(-1, top.indices, top.values.relu() if relu else top.values)
    else:  # the k largest of each latent over the batch
        top = pre.topk(min(k, len(pre)), dim=0)
        z = torch.zeros_like(pre).scatter(0, top.indices, top.values.relu() if relu else top.values)
    y_hat = z @ W_dec + b_dec + {"right": x @ W_skip.t(), "transposed": x @ W_skip, "none": 0.0}[skip]
    t = y if target is None else target
    b = t if base is None else base
    centre_of = {"centred": b.mean(0), "zero": torch.zeros_like(b[0]), "features": b.mean(-1, keepdim=True)}[norm]
    err, var = (y_hat - t).pow(2).sum(-1), (b - centre_of).pow(2).sum(-1)
    return (err / var).mean() if ratio == "per_row" else err.mean() / var.mean()


@exercise("8.5", transcoder_loss)
def check_transcoder_loss(fn) -> None:
    """`fn(x, y, W_enc, b_enc, W_dec, b_dec, W_skip, k)` -> the normalized MSE of the skip transcoder's y_hat, as a
    tensor that backpropagates to every weight (training takes its gradient). Varies the seed, k (1 .. n) and the
    batch (2 .. 48 rows)."""
    for seed, B, k in ((0, 48, 4), (1, 48, 4), (2, 2, 1), (3, 16, 40), (4, 30, 7)):
        what = f"with {B} rows and k = {k}"
        case = _case(seed, B, k)
        x = case[0]
        leaves = [t.clone().requires_grad_(i >= 2) if isinstance(t, torch.Tensor) else t for i, t in enumerate(case)]
        out = run_case(what, fn, *leaves)
        got = out.detach() if isinstance(out, torch.Tensor) else torch.as_tensor(out, dtype=torch.float32)
        assert got.numel() == 1, f"{what}: return one number, the loss of the whole batch (got shape " \
                                 f"{tuple(got.shape)})"
        want = transcoder_loss(*case)
        diagnose(got, unlike(want, [
            (_variant(*case, target=x, base=x), "you compared the prediction with x, the MLP's input: that "
                                                "is an SAE's loss; a transcoder predicts the MLP's output y"),
            (_variant(*case, centre=True), "you subtracted b_dec from x before encoding, as an SAE does: a "
                                           "transcoder's b_dec lives in the output's space, not the input's"),
            (_variant(*case, skip="none"), "the skip connection is missing: add x W_skip^T to the "
                                           "prediction"),
            (_variant(*case, skip="transposed"), "W_skip is [d_out, d_in]: the prediction gets x @ W_skip.T, "
                                                 "not x @ W_skip"),
            (_variant(*case, base=x), "the normalizer is the MSE of predicting y's mean (the target's), not "
                                      "x's"),
            (_variant(*case, relu=False), "TopK's kept values go through a ReLU (a negative value among the "
                                          "top k is dropped), as in notebook 02"),
            (_variant(*case, norm="zero"), "the normalizer predicts y's mean over the batch, not zero: "
                                           "subtract y.mean(0) before squaring"),
            (_variant(*case, norm="features"), "y's mean is over the batch (one mean per output "
                                               "dimension, y.mean(0)), not over each row's features"),
            (_variant(*case, top_dim=0), "TopK picks each row's k largest latents (along the latent "
                                         "dimension), not each latent's k largest rows"),
            (_variant(*case, ratio="per_row"), "divide the batch's mean squared error by the batch's mean "
                                               "normalizer (a ratio of means), not each row's error by its own"),
        ], what))
        expect_gradient(out, {n: t for n, t in zip(("W_enc", "b_enc", "W_dec", "b_dec", "W_skip"), leaves[2:7])}, what)
        assert close(got, want, atol=1e-5, rtol=1e-4), f"{what}: loss {float(got):.5f}, expected {float(want):.5f}"
    passed("transcoder_loss")
