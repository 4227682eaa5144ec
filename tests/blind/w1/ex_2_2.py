"""Exercise 2.2 — normalized_mse: blind candidates."""
import torch


def nmse_right(recon_BD, x_BD):
    err = (recon_BD - x_BD).pow(2).sum(-1).mean()
    base = (x_BD - x_BD.mean(0, keepdim=True)).pow(2).sum(-1).mean()
    return err / base


def nmse_per_token_uncentred(recon_BD, x_BD):
    # openai's loss.py version: each token's error over its own ||x||^2, averaged
    return ((recon_BD - x_BD).pow(2).sum(-1) / x_BD.pow(2).sum(-1)).mean()


def nmse_mean_over_d(recon_BD, x_BD):
    # baseline predicts each token's mean over d_model, not the mean activation over the batch
    err = (recon_BD - x_BD).pow(2).sum(-1).mean()
    base = (x_BD - x_BD.mean(-1, keepdim=True)).pow(2).sum(-1).mean()
    return err / base


def nmse_uncentred_baseline(recon_BD, x_BD):
    # baseline is predicting zero (||x||^2), not predicting the mean
    return (recon_BD - x_BD).pow(2).sum(-1).mean() / x_BD.pow(2).sum(-1).mean()


def nmse_float(recon_BD, x_BD):
    # right ratio but returned as a Python float: no gradient for training
    err = (recon_BD - x_BD).pow(2).sum(-1).mean()
    base = (x_BD - x_BD.mean(0, keepdim=True)).pow(2).sum(-1).mean()
    return (err / base).item()


CANDIDATES = [
    ("per_token_uncentred", nmse_per_token_uncentred, "openai loss.py: per-token error / own ||x||^2, averaged", False),
    ("mean_over_d", nmse_mean_over_d, "baseline mean taken over d_model (per token) instead of over the batch", False),
    ("zero_baseline", nmse_uncentred_baseline, "divides by E||x||^2 (predicting zero), not the mean predictor's error", False),
    ("float_result", nmse_float, "returns .item(): a float, so it cannot be used as a loss", False),
    ("mine", nmse_right, "my honest attempt at a correct solution", True),
]
