"""Notebook 08, section 8 (transcoders): exercise 8.5, a skip transcoder's loss. The reference solution and a check
that names the mistake; under SAELAB_SOLUTIONS=1 the check grades the reference solution itself (`exercise`)."""

from __future__ import annotations

import torch

from saelab.teach.exercises.base import close, diagnose, exercise, passed


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


def _case(seed: int):
    g = torch.Generator().manual_seed(seed)
    B, d, n, k = 48, 10, 40, 4
    x = torch.randn(B, d, generator=g) * 2 + 0.5
    W_enc = torch.randn(n, d, generator=g) / d**0.5
    W_dec = torch.randn(n, d, generator=g) / 3
    b_enc, b_dec = 0.1 * torch.randn(n, generator=g) - 1.5, torch.randn(d, generator=g)  # some top-k values < 0
    W_skip = 0.3 * torch.randn(d, d, generator=g)  # not symmetric: x W_skip^T and x W_skip differ
    y = torch.tanh(x @ torch.randn(d, d, generator=g) / 3) * 4 + 1  # an "MLP" of x, another scale than x
    return x, y, W_enc, b_enc, W_dec, b_dec, W_skip, k


def _variant(x, y, W_enc, b_enc, W_dec, b_dec, W_skip, k, target=None, centre=False, skip="right", base=None,
             relu=True):
    pre = (x - b_dec if centre else x) @ W_enc.t() + b_enc
    top = pre.topk(k, dim=-1)
    z = torch.zeros_like(pre).scatter(-1, top.indices, top.values.relu() if relu else top.values)
    y_hat = z @ W_dec + b_dec + {"right": x @ W_skip.t(), "transposed": x @ W_skip, "none": 0.0}[skip]
    t = y if target is None else target
    b = t if base is None else base
    return (y_hat - t).pow(2).sum(-1).mean() / (b - b.mean(0)).pow(2).sum(-1).mean()


@exercise("8.5", transcoder_loss)
def check_transcoder_loss(fn) -> None:
    """`fn(x, y, W_enc, b_enc, W_dec, b_dec, W_skip, k)` -> the normalized MSE of the skip transcoder's y_hat."""
    for seed in (0, 1):
        case = _case(seed)
        x = case[0]
        got = fn(*[t.clone() if isinstance(t, torch.Tensor) else t for t in case])
        assert torch.as_tensor(got).numel() == 1, "return one number: the loss of the whole batch"
        diagnose(got, [
            (_variant(*case, target=x, base=x), "you compared the prediction with x, the MLP's input: that is an "
                                                "SAE's loss; a transcoder predicts the MLP's output y"),
            (_variant(*case, centre=True), "you subtracted b_dec from x before encoding, as an SAE does: a "
                                           "transcoder's b_dec lives in the output's space, not the input's"),
            (_variant(*case, skip="none"), "the skip connection is missing: add x W_skip^T to the prediction"),
            (_variant(*case, skip="transposed"), "W_skip is [d_out, d_in]: the prediction gets x @ W_skip.T, not "
                                                 "x @ W_skip"),
            (_variant(*case, base=x), "the normalizer is the MSE of predicting y's mean (the target's), not x's"),
            (_variant(*case, relu=False), "TopK's kept values go through a ReLU (a negative value among the top k "
                                          "is dropped), as in notebook 02"),
        ])
        want = transcoder_loss(*case)
        assert close(got, want, atol=1e-5, rtol=1e-4), f"loss {float(got):.5f}, expected {float(want):.5f}"
    passed("transcoder_loss")
