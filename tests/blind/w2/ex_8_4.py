"""Exercise 8.4: pair_absorption, the share of co-firing samples where the child's latent absorbs the parent."""
import torch


def _unit(m):
    return m / m.norm(dim=-1, keepdim=True).clamp_min(1e-12)


def _cos(W_dec_ND, features_FD):
    return _unit(features_FD.float()) @ _unit(W_dec_ND.float()).T  # [F, N]


def _share(hit_B, over_B):
    return float(hit_B[over_B].sum().float() / over_B.sum().float())  # 0/0 -> nan


# ---- my honest attempt ---------------------------------------------------------------------------
def pair_absorption_mine(z_BN, W_dec_ND, features_FD, coeffs_BF, parent, child, carries=0.1):
    cos = _cos(W_dec_ND, features_FD)
    lp, lc = int(cos[parent].argmax()), int(cos[child].argmax())
    both = (coeffs_BF[:, parent] > 0) & (coeffs_BF[:, child] > 0)
    hit = (z_BN[:, lp] == 0) & (z_BN[:, lc] > 0) & bool(cos[parent, lc] >= carries)
    return _share(hit, both)


# ---- wrong 1: latents matched by raw dot products: decoder rows of large norm win -------------------------
def pair_absorption_unnormalized(z_BN, W_dec_ND, features_FD, coeffs_BF, parent, child, carries=0.1):
    dots = _unit(features_FD.float()) @ W_dec_ND.float().T
    lp, lc = int(dots[parent].argmax()), int(dots[child].argmax())
    both = (coeffs_BF[:, parent] > 0) & (coeffs_BF[:, child] > 0)
    hit = (z_BN[:, lp] == 0) & (z_BN[:, lc] > 0) & bool(dots[parent, lc] >= carries)
    return _share(hit, both)


# ---- wrong 2: "carries" tested on the child's own feature (always high), not the parent's ---------------
def pair_absorption_carries_child(z_BN, W_dec_ND, features_FD, coeffs_BF, parent, child, carries=0.1):
    cos = _cos(W_dec_ND, features_FD)
    lp, lc = int(cos[parent].argmax()), int(cos[child].argmax())
    both = (coeffs_BF[:, parent] > 0) & (coeffs_BF[:, child] > 0)
    hit = (z_BN[:, lp] == 0) & (z_BN[:, lc] > 0) & bool(cos[child, lc] >= carries)
    return _share(hit, both)


# ---- wrong 3: divides by every sample, not by the samples where both features fire ------------------------
def pair_absorption_all_samples(z_BN, W_dec_ND, features_FD, coeffs_BF, parent, child, carries=0.1):
    cos = _cos(W_dec_ND, features_FD)
    lp, lc = int(cos[parent].argmax()), int(cos[child].argmax())
    both = (coeffs_BF[:, parent] > 0) & (coeffs_BF[:, child] > 0)
    hit = both & (z_BN[:, lp] == 0) & (z_BN[:, lc] > 0) & bool(cos[parent, lc] >= carries)
    return float(hit.sum()) / len(hit)


# ---- wrong 4: over the samples where the parent fires (with or without the child) ------------------------
def pair_absorption_parent_samples(z_BN, W_dec_ND, features_FD, coeffs_BF, parent, child, carries=0.1):
    cos = _cos(W_dec_ND, features_FD)
    lp, lc = int(cos[parent].argmax()), int(cos[child].argmax())
    on = coeffs_BF[:, parent] > 0
    hit = (z_BN[:, lp] == 0) & (z_BN[:, lc] > 0) & bool(cos[parent, lc] >= carries)
    return _share(hit, on)


# ---- wrong 5: returns 0.0 when the two features never fire together, not nan -----------------------------
def pair_absorption_zero_not_nan(z_BN, W_dec_ND, features_FD, coeffs_BF, parent, child, carries=0.1):
    both = (coeffs_BF[:, parent] > 0) & (coeffs_BF[:, child] > 0)
    if not bool(both.any()):
        return 0.0
    return pair_absorption_mine(z_BN, W_dec_ND, features_FD, coeffs_BF, parent, child, carries)


# ---- wrong 6: a feature's latent chosen by column: for each latent its best feature, then the first latent ---
# ---- whose best feature it is (argmax over the wrong axis)                                                  ---
def pair_absorption_wrong_axis(z_BN, W_dec_ND, features_FD, coeffs_BF, parent, child, carries=0.1):
    cos = _cos(W_dec_ND, features_FD)
    best_feature_N = cos.argmax(0)

    def latent_of(f):
        hits = torch.nonzero(best_feature_N == f).flatten()
        return int(hits[0]) if len(hits) else int(cos[f].argmax())

    lp, lc = latent_of(parent), latent_of(child)
    both = (coeffs_BF[:, parent] > 0) & (coeffs_BF[:, child] > 0)
    hit = (z_BN[:, lp] == 0) & (z_BN[:, lc] > 0) & bool(cos[parent, lc] >= carries)
    return _share(hit, both)


CANDIDATES = [
    ("unnormalized_rows", pair_absorption_unnormalized, "matches latents by raw dot products, decoder rows not normalised", False),
    ("carries_child", pair_absorption_carries_child, "tests the child's latent's cosine with the child's feature, not the parent's", False),
    ("all_samples", pair_absorption_all_samples, "divides by all samples instead of the co-firing ones", False),
    ("parent_samples", pair_absorption_parent_samples, "counts over samples where the parent fires, child or not", False),
    ("zero_not_nan", pair_absorption_zero_not_nan, "returns 0.0 instead of nan when the features never fire together", False),
    ("wrong_axis", pair_absorption_wrong_axis, "picks a feature's latent through the argmax over features (per latent), not over latents", False),
    ("mine", pair_absorption_mine, "my honest attempt at a correct solution", True),
]
