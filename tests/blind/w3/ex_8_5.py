"""Exercise 8.5 (a skip transcoder's loss): blind candidates, written from the notebook's statement and Hint."""

import torch


def _codes(x_BD, W_enc_ND, b_enc_N, k):
    pre_BN = x_BD @ W_enc_ND.T + b_enc_N
    vals_BK, idx_BK = pre_BN.topk(k, dim=-1)
    return torch.zeros_like(pre_BN).scatter(-1, idx_BK, vals_BK.relu())


def _nmse(y_hat_BD, y_BD):
    err = (y_hat_BD - y_BD).pow(2).sum(-1).mean()
    base = (y_BD - y_BD.mean(dim=0, keepdim=True)).pow(2).sum(-1).mean()
    return err / base


def tc_correct(x_BD, y_BD, W_enc_ND, b_enc_N, W_dec_ND, b_dec_D, W_skip_DD, k):
    z_BN = _codes(x_BD, W_enc_ND, b_enc_N, k)
    y_hat_BD = z_BN @ W_dec_ND + b_dec_D + x_BD @ W_skip_DD.T
    return _nmse(y_hat_BD, y_BD)


def tc_skip_untransposed(x_BD, y_BD, W_enc_ND, b_enc_N, W_dec_ND, b_dec_D, W_skip_DD, k):
    z_BN = _codes(x_BD, W_enc_ND, b_enc_N, k)
    y_hat_BD = z_BN @ W_dec_ND + b_dec_D + x_BD @ W_skip_DD  # forgets that W_skip is [d_out, d_in]
    return _nmse(y_hat_BD, y_BD)


def tc_no_skip(x_BD, y_BD, W_enc_ND, b_enc_N, W_dec_ND, b_dec_D, W_skip_DD, k):
    z_BN = _codes(x_BD, W_enc_ND, b_enc_N, k)
    y_hat_BD = z_BN @ W_dec_ND + b_dec_D  # plain transcoder: the skip term is left out
    return _nmse(y_hat_BD, y_BD)


def tc_sae_centering(x_BD, y_BD, W_enc_ND, b_enc_N, W_dec_ND, b_dec_D, W_skip_DD, k):
    z_BN = _codes(x_BD - b_dec_D, W_enc_ND, b_enc_N, k)  # SAE habit: subtracts b_dec before the encoder
    y_hat_BD = z_BN @ W_dec_ND + b_dec_D + x_BD @ W_skip_DD.T
    return _nmse(y_hat_BD, y_BD)


def tc_normalize_by_x(x_BD, y_BD, W_enc_ND, b_enc_N, W_dec_ND, b_dec_D, W_skip_DD, k):
    z_BN = _codes(x_BD, W_enc_ND, b_enc_N, k)
    y_hat_BD = z_BN @ W_dec_ND + b_dec_D + x_BD @ W_skip_DD.T
    err = (y_hat_BD - y_BD).pow(2).sum(-1).mean()
    base = (x_BD - x_BD.mean(0)).pow(2).sum(-1).mean()  # SAE habit: the normalizer of the input
    return err / base


def tc_uncentered_normalizer(x_BD, y_BD, W_enc_ND, b_enc_N, W_dec_ND, b_dec_D, W_skip_DD, k):
    z_BN = _codes(x_BD, W_enc_ND, b_enc_N, k)
    y_hat_BD = z_BN @ W_dec_ND + b_dec_D + x_BD @ W_skip_DD.T
    err = (y_hat_BD - y_BD).pow(2).sum(-1).mean()
    base = y_BD.pow(2).sum(-1).mean()  # normalizes by predicting zero, not y's mean
    return err / base


def tc_mean_wrong_axis(x_BD, y_BD, W_enc_ND, b_enc_N, W_dec_ND, b_dec_D, W_skip_DD, k):
    z_BN = _codes(x_BD, W_enc_ND, b_enc_N, k)
    y_hat_BD = z_BN @ W_dec_ND + b_dec_D + x_BD @ W_skip_DD.T
    err = (y_hat_BD - y_BD).pow(2).sum(-1).mean()
    base = (y_BD - y_BD.mean(-1, keepdim=True)).pow(2).sum(-1).mean()  # each row's own mean over features
    return err / base


def tc_topk_over_batch(x_BD, y_BD, W_enc_ND, b_enc_N, W_dec_ND, b_dec_D, W_skip_DD, k):
    pre_BN = x_BD @ W_enc_ND.T + b_enc_N
    vals, idx = pre_BN.topk(k, dim=0)  # wrong axis: k rows per latent instead of k latents per row
    z_BN = torch.zeros_like(pre_BN).scatter(0, idx, vals.relu())
    y_hat_BD = z_BN @ W_dec_ND + b_dec_D + x_BD @ W_skip_DD.T
    return _nmse(y_hat_BD, y_BD)


def tc_per_row_ratio(x_BD, y_BD, W_enc_ND, b_enc_N, W_dec_ND, b_dec_D, W_skip_DD, k):
    z_BN = _codes(x_BD, W_enc_ND, b_enc_N, k)
    y_hat_BD = z_BN @ W_dec_ND + b_dec_D + x_BD @ W_skip_DD.T
    err_B = (y_hat_BD - y_BD).pow(2).sum(-1)
    base_B = (y_BD - y_BD.mean(0)).pow(2).sum(-1)
    return (err_B / base_B).mean()  # mean of per-row ratios instead of ratio of means


def tc_float_result(x_BD, y_BD, W_enc_ND, b_enc_N, W_dec_ND, b_dec_D, W_skip_DD, k):
    return float(tc_correct(x_BD, y_BD, W_enc_ND, b_enc_N, W_dec_ND, b_dec_D, W_skip_DD, k))  # detached: no grad


CANDIDATES = [
    # (name, object, mistake, correct)
    ("skip_untransposed", tc_skip_untransposed, "x @ W_skip instead of x @ W_skip^T (W_skip is [d_out, d_in])", False),
    ("no_skip", tc_no_skip, "leaves the skip term x W_skip^T out of y_hat", False),
    ("sae_centering", tc_sae_centering, "subtracts b_dec from x before the encoder, as an SAE does", False),
    ("normalize_by_x", tc_normalize_by_x, "normalizer is the variance of x (the input), not of y", False),
    ("uncentered_normalizer", tc_uncentered_normalizer, "normalizer is mean ||y||^2 (predicting 0), not y's mean", False),
    ("mean_wrong_axis", tc_mean_wrong_axis, "y's mean taken over features (dim -1) instead of over the batch", False),
    ("topk_over_batch", tc_topk_over_batch, "TopK along the batch axis (dim 0) instead of over latents", False),
    ("per_row_ratio", tc_per_row_ratio, "mean of per-row error/variance ratios instead of ratio of means", False),
    ("float_result", tc_float_result, "returns a Python float: detached, no gradient for training", False),
    ("mine", tc_correct, "my honest attempt at a correct solution", True),
]
