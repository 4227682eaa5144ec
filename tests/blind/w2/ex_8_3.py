"""Exercise 8.3: matryoshka_loss, the sum over nested prefixes of each prefix's normalized MSE."""
import torch


def _nmse(recon_BD, x_BD):
    """Notebook 02's normalized MSE: MSE / MSE of always predicting the mean of x."""
    return (recon_BD - x_BD).pow(2).mean() / (x_BD - x_BD.mean(0)).pow(2).mean()


# ---- my honest attempt ---------------------------------------------------------------------------
def matryoshka_loss_mine(z_BN, W_dec_ND, b_dec_D, x_BD, widths):
    return sum(_nmse(z_BN[:, :m] @ W_dec_ND[:m] + b_dec_D, x_BD) for m in widths)


# ---- wrong 1: averages the prefixes' errors instead of summing them ---------------------------------------
def matryoshka_loss_mean(z_BN, W_dec_ND, b_dec_D, x_BD, widths):
    return sum(_nmse(z_BN[:, :m] @ W_dec_ND[:m] + b_dec_D, x_BD) for m in widths) / len(widths)


# ---- wrong 2: each group on its own (latents m_{i-1}..m_i), not the nested prefix 0..m_i ----------------------
def matryoshka_loss_groups(z_BN, W_dec_ND, b_dec_D, x_BD, widths):
    total, start = 0, 0
    for m in widths:
        total = total + _nmse(z_BN[:, start:m] @ W_dec_ND[start:m] + b_dec_D, x_BD)
        start = m
    return total


# ---- wrong 3: normalised by the mean squared norm of x (uncentred), not the mean predictor's error -----------
def matryoshka_loss_uncentred(z_BN, W_dec_ND, b_dec_D, x_BD, widths):
    denom = x_BD.pow(2).mean()
    return sum((z_BN[:, :m] @ W_dec_ND[:m] + b_dec_D - x_BD).pow(2).mean() / denom for m in widths)


# ---- wrong 4: the decoder bias only in the full reconstruction, prefixes decoded without it ---------------
def matryoshka_loss_bias_last_only(z_BN, W_dec_ND, b_dec_D, x_BD, widths):
    n = W_dec_ND.shape[0]
    return sum(_nmse(z_BN[:, :m] @ W_dec_ND[:m] + (b_dec_D if m == n else 0), x_BD) for m in widths)


# ---- wrong 5: returns a Python float (.item()): not differentiable -------------------------------------
def matryoshka_loss_float(z_BN, W_dec_ND, b_dec_D, x_BD, widths):
    return float(matryoshka_loss_mine(z_BN, W_dec_ND, b_dec_D, x_BD, widths).item())


# ---- wrong 6: mean over tokens of each token's own squared error / ||x_t - mean||^2 (a per-token ratio) -----
def matryoshka_loss_per_token_ratio(z_BN, W_dec_ND, b_dec_D, x_BD, widths):
    var_B = (x_BD - x_BD.mean(0)).pow(2).sum(-1)
    return sum(((z_BN[:, :m] @ W_dec_ND[:m] + b_dec_D - x_BD).pow(2).sum(-1) / var_B).mean() for m in widths)


CANDIDATES = [
    ("mean_over_prefixes", matryoshka_loss_mean, "averages the prefix losses instead of summing them", False),
    ("disjoint_groups", matryoshka_loss_groups, "reconstructs from each group alone, not the nested prefix", False),
    ("uncentred_norm", matryoshka_loss_uncentred, "divides by mean ||x||^2 (uncentred), not the mean predictor's MSE", False),
    ("bias_last_only", matryoshka_loss_bias_last_only, "adds the decoder bias only to the full reconstruction", False),
    ("python_float", matryoshka_loss_float, "returns .item(): the loss is no longer differentiable", False),
    ("per_token_ratio", matryoshka_loss_per_token_ratio, "averages per-token ratios instead of a ratio of means", False),
    ("mine", matryoshka_loss_mine, "my honest attempt at a correct solution", True),
]
