"""Exercise 7.2 (ablating a set of latents through the SAE's own decoder): blind candidates, written from the
notebook's statement, the Hint, and the docstrings of SAE.encode/decode."""

import torch


def _drop(idx_BK, latents):
    return torch.isin(idx_BK, torch.as_tensor(list(latents), dtype=idx_BK.dtype, device=idx_BK.device))


def ablate_correct(sae, x_RD, latents):
    enc = sae.encode(x_RD)
    acts_BK, idx_BK = enc.top_acts_BK, enc.top_idx_BK
    edited_BK = acts_BK.masked_fill(_drop(idx_BK, latents), 0.0)
    return x_RD - sae.decode(acts_BK, idx_BK, x_RD) + sae.decode(edited_BK, idx_BK, x_RD)


def ablate_no_error_term(sae, x_RD, latents):
    enc = sae.encode(x_RD)
    edited_BK = enc.top_acts_BK.masked_fill(_drop(enc.top_idx_BK, latents), 0.0)
    return sae.decode(edited_BK, enc.top_idx_BK, x_RD)  # returns the edited reconstruction: error term lost


def ablate_decode_dropped_part(sae, x_RD, latents):
    enc = sae.encode(x_RD)
    dropped_BK = enc.top_acts_BK * _drop(enc.top_idx_BK, latents)
    # subtracts the decode of the ablated latents alone: that decode also carries b_pre and the shift
    return x_RD - sae.decode(dropped_BK, enc.top_idx_BK, x_RD)


def ablate_no_x_like(sae, x_RD, latents):
    enc = sae.encode(x_RD)
    acts_BK, idx_BK = enc.top_acts_BK, enc.top_idx_BK
    edited_BK = acts_BK.masked_fill(_drop(idx_BK, latents), 0.0)
    return x_RD - sae.decode(acts_BK, idx_BK) + sae.decode(edited_BK, idx_BK)  # ignores decode's x_like


def ablate_manual_rows(sae, x_RD, latents):
    enc = sae.encode(x_RD)
    dropped_BK = enc.top_acts_BK * _drop(enc.top_idx_BK, latents)
    W_dec = sae.W_dec.to(x_RD)
    # 7.1's formula with s = 1: computes the change by hand and forgets the normalisation's scale
    return x_RD - torch.einsum("rk,rkd->rd", dropped_BK, W_dec[enc.top_idx_BK])


def ablate_reselect(sae, x_RD, latents):
    enc = sae.encode(x_RD, keep_pre=True)
    k = enc.top_idx_BK.shape[-1]
    pre_BN = enc.pre_acts_BN.to(x_RD.device).clone()
    if len(latents):
        pre_BN[:, list(latents)] = float("-inf")
    vals_BK, idx_BK = pre_BN.topk(k, dim=-1)  # selects again after the edit: other latents take the freed slots
    vals_BK = vals_BK.relu()
    return x_RD - sae.decode(enc.top_acts_BK, enc.top_idx_BK, x_RD) + sae.decode(vals_BK, idx_BK, x_RD)


def ablate_in_place(sae, x_RD, latents):
    enc = sae.encode(x_RD)
    acts_BK, idx_BK = enc.top_acts_BK, enc.top_idx_BK
    edited_BK = acts_BK.masked_fill(_drop(idx_BK, latents), 0.0)
    delta = sae.decode(acts_BK, idx_BK, x_RD) - sae.decode(edited_BK, idx_BK, x_RD)
    x_RD -= delta  # edits the caller's tensor in place
    return x_RD


def ablate_first_only(sae, x_RD, latents):
    enc = sae.encode(x_RD)
    acts_BK, idx_BK = enc.top_acts_BK, enc.top_idx_BK
    if not len(latents):
        return x_RD.clone()
    edited_BK = acts_BK.masked_fill(idx_BK == latents[0], 0.0)  # treats the set as one latent
    return x_RD - sae.decode(acts_BK, idx_BK, x_RD) + sae.decode(edited_BK, idx_BK, x_RD)


CANDIDATES = [
    # (name, object, mistake, correct)
    ("no_error_term", ablate_no_error_term, "returns the edited reconstruction, dropping the error term", False),
    ("decode_dropped_part", ablate_decode_dropped_part,
     "x - decode(ablated codes only): that decode carries b_pre and the shift, which do not cancel", False),
    ("no_x_like", ablate_no_x_like, "calls sae.decode without x_like (per-token normalisations not undone)", False),
    ("manual_rows", ablate_manual_rows, "subtracts a * W_dec[j] by hand, ignoring the normalisation's scale", False),
    ("reselect", ablate_reselect, "masks the pre-activations and selects top k again after the edit", False),
    ("in_place", ablate_in_place, "subtracts the change from x_RD in place (the caller's input changes)", False),
    ("first_only", ablate_first_only, "ablates only latents[0], not every latent of the list", False),
    ("mine", ablate_correct, "my honest attempt at a correct solution", True),
]
