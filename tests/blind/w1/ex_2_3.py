"""Exercise 2.3 — auxk_loss: blind candidates."""
import torch


def normalized_mse(recon_BD, x_BD):
    err = (recon_BD - x_BD).pow(2).sum(-1).mean()
    base = (x_BD - x_BD.mean(0, keepdim=True)).pow(2).sum(-1).mean()
    return err / base


def _dead_code(pre_BN, dead_N, k_aux, relu=True):
    kk = min(int(k_aux), int(dead_N.sum()))
    if kk == 0:
        return None
    masked = pre_BN.masked_fill(~dead_N.bool(), float("-inf"))
    vals, idx = masked.topk(kk, dim=-1)
    if relu:
        vals = vals.relu()
    return torch.zeros_like(pre_BN).scatter(-1, idx, vals)


def auxk_right(x_BD, recon_BD, pre_BN, dead_N, W_dec_ND, k_aux):
    e_BD = (x_BD - recon_BD).detach()
    z_BN = _dead_code(pre_BN, dead_N, k_aux)
    if z_BN is None:
        return pre_BN.new_zeros(())
    return normalized_mse(z_BN @ W_dec_ND, e_BD)


def auxk_not_detached(x_BD, recon_BD, pre_BN, dead_N, W_dec_ND, k_aux):
    # residual not detached: the aux loss pushes the main reconstruction too
    e_BD = x_BD - recon_BD
    z_BN = _dead_code(pre_BN, dead_N, k_aux)
    if z_BN is None:
        return pre_BN.new_zeros(())
    return normalized_mse(z_BN @ W_dec_ND, e_BD)


def auxk_no_mask(x_BD, recon_BD, pre_BN, dead_N, W_dec_ND, k_aux):
    # top k_aux over ALL latents: live latents win the slots
    e_BD = (x_BD - recon_BD).detach()
    if not bool(dead_N.any()):
        return pre_BN.new_zeros(())
    vals, idx = pre_BN.topk(int(k_aux), dim=-1)
    z_BN = torch.zeros_like(pre_BN).scatter(-1, idx, vals.relu())
    return normalized_mse(z_BN @ W_dec_ND, e_BD)


def auxk_no_relu(x_BD, recon_BD, pre_BN, dead_N, W_dec_ND, k_aux):
    # keeps negative pre-activations of the selected dead latents
    e_BD = (x_BD - recon_BD).detach()
    z_BN = _dead_code(pre_BN, dead_N, k_aux, relu=False)
    if z_BN is None:
        return pre_BN.new_zeros(())
    return normalized_mse(z_BN @ W_dec_ND, e_BD)


def auxk_alpha_inside(x_BD, recon_BD, pre_BN, dead_N, W_dec_ND, k_aux):
    # multiplies by alpha = 1/32 inside the function (the training loop adds it again)
    e_BD = (x_BD - recon_BD).detach()
    z_BN = _dead_code(pre_BN, dead_N, k_aux)
    if z_BN is None:
        return pre_BN.new_zeros(())
    return normalized_mse(z_BN @ W_dec_ND, e_BD) / 32


def auxk_plain_mse(x_BD, recon_BD, pre_BN, dead_N, W_dec_ND, k_aux):
    # plain MSE of the residual instead of the normalized MSE
    e_BD = (x_BD - recon_BD).detach()
    z_BN = _dead_code(pre_BN, dead_N, k_aux)
    if z_BN is None:
        return pre_BN.new_zeros(())
    return (z_BN @ W_dec_ND - e_BD).pow(2).mean()


def auxk_flipped_residual(x_BD, recon_BD, pre_BN, dead_N, W_dec_ND, k_aux):
    # residual taken as recon - x: the dead latents are asked to rebuild the negated error
    e_BD = (recon_BD - x_BD).detach()
    z_BN = _dead_code(pre_BN, dead_N, k_aux)
    if z_BN is None:
        return pre_BN.new_zeros(())
    return normalized_mse(z_BN @ W_dec_ND, e_BD)


CANDIDATES = [
    ("not_detached", auxk_not_detached, "the residual keeps its graph: AuxK's gradient reaches the main recon", False),
    ("no_dead_mask", auxk_no_mask, "top k_aux over all latents, live ones not masked to -inf", False),
    ("no_relu", auxk_no_relu, "negative pre-activations of selected dead latents are kept", False),
    ("alpha_inside", auxk_alpha_inside, "multiplies by alpha = 1/32 inside auxk_loss", False),
    ("plain_mse", auxk_plain_mse, "plain MSE (mean over all entries) instead of normalized MSE", False),
    ("flipped_residual", auxk_flipped_residual, "residual = recon - x (sign flipped)", False),
    ("mine", auxk_right, "my honest attempt at a correct solution", True),
]
