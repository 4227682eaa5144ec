"""Exercise 7.2: ablate_rows, remove one latent's contribution to the SAE's output, error term kept."""
import torch


def _scale(sae, x_RD):
    _, undo = sae.preprocess(x_RD.to(sae.W_dec.device, sae.W_dec.dtype))
    s = undo.scale
    return s if torch.is_tensor(s) else torch.tensor(float(s), device=sae.W_dec.device, dtype=sae.W_dec.dtype)


def _latent_act(sae, x_RD, latent):
    out = sae.encode(x_RD)
    acts, idx = out.top_acts_BK, out.top_idx_BK
    return (acts * (idx == latent)).sum(-1)  # [R]: 0 where the latent is not selected


# ---- my honest attempt: x - a_j * W_dec[j] * s (per row) ------------------------------------------
@torch.no_grad()
def ablate_rows_mine(sae, x_RD, latent):
    a_R = _latent_act(sae, x_RD, latent).to(sae.W_dec.device, sae.W_dec.dtype)
    change = a_R[:, None] * sae.W_dec[latent] * _scale(sae, x_RD)
    return (x_RD.to(change.device, change.dtype) - change).to(x_RD.device, x_RD.dtype)


# ---- wrong 1: returns the reconstruction without the latent: the error term is gone too ----------------
@torch.no_grad()
def ablate_rows_recon(sae, x_RD, latent):
    out = sae.encode(x_RD)
    acts = out.top_acts_BK.masked_fill(out.top_idx_BK == latent, 0)
    return sae.decode(acts, out.top_idx_BK, x_like=x_RD).to(x_RD.dtype)


# ---- wrong 2: subtracts a * W_dec[j] in the residual stream, forgetting each row's normalisation scale -----
@torch.no_grad()
def ablate_rows_no_scale(sae, x_RD, latent):
    a_R = _latent_act(sae, x_RD, latent).to(sae.W_dec.device, sae.W_dec.dtype)
    return (x_RD.to(a_R.device, a_R.dtype) - a_R[:, None] * sae.W_dec[latent]).to(x_RD.device, x_RD.dtype)


# ---- wrong 3: uses the latent's ReLU'd pre-activation, so rows where TopK did not select it change too ------
@torch.no_grad()
def ablate_rows_pre_acts(sae, x_RD, latent):
    x_n, undo = sae.preprocess(x_RD.to(sae.W_dec.device, sae.W_dec.dtype))
    a_R = sae.pre_acts(x_n)[:, latent].clamp_min(0)
    change = a_R[:, None] * sae.W_dec[latent] * _scale(sae, x_RD)
    return (x_RD.to(change.device, change.dtype) - change).to(x_RD.device, x_RD.dtype)


# ---- wrong 4: maps the change back with undo() itself, so the mean shift is subtracted as well -------------
@torch.no_grad()
def ablate_rows_with_shift(sae, x_RD, latent):
    a_R = _latent_act(sae, x_RD, latent).to(sae.W_dec.device, sae.W_dec.dtype)
    _, undo = sae.preprocess(x_RD.to(sae.W_dec.device, sae.W_dec.dtype))
    change = undo(a_R[:, None] * sae.W_dec[latent])
    return (x_RD.to(change.device, change.dtype) - change).to(x_RD.device, x_RD.dtype)


# ---- wrong 5: subtracts the latent's decoder row (scaled) wherever it is selected, not times its activation ---
@torch.no_grad()
def ablate_rows_unit_act(sae, x_RD, latent):
    out = sae.encode(x_RD)
    sel_R = ((out.top_idx_BK == latent) & (out.top_acts_BK > 0)).any(-1).to(sae.W_dec.dtype).to(sae.W_dec.device)
    change = sel_R[:, None] * sae.W_dec[latent] * _scale(sae, x_RD)
    return (x_RD.to(change.device, change.dtype) - change).to(x_RD.device, x_RD.dtype)


CANDIDATES = [
    ("recon_without", ablate_rows_recon, "returns the reconstruction without the latent: drops the error term", False),
    ("no_scale", ablate_rows_no_scale, "subtracts a x decoder row without each row's normalisation scale", False),
    ("pre_acts", ablate_rows_pre_acts, "uses the ReLU'd pre-activation: rows where TopK did not select the latent change", False),
    ("with_shift", ablate_rows_with_shift, "maps the change back with the full undo (shift too), not only the scale", False),
    ("unit_act", ablate_rows_unit_act, "subtracts the decoder row (scaled) where selected, not times the activation", False),
    ("mine", ablate_rows_mine, "my honest attempt at a correct solution", True),
]
