"""Exercise 0.2 — latent_roles: blind candidates (written from the notebook statement only)."""
import torch


def _cos_NF(W_dec_ND, features_FD):
    W = W_dec_ND / W_dec_ND.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    F = features_FD / features_FD.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    return W @ F.T


def _assign(best_N, idx_N, alive_N, threshold, order):
    roles = ["dead" if not bool(a) else "other" for a in alive_N]
    taken = set()
    for i in order:
        i = int(i)
        if not bool(alive_N[i]) or float(best_N[i]) < threshold:
            continue
        f = int(idx_N[i])
        roles[i] = "duplicate" if f in taken else "feature"
        taken.add(f)
    return roles


def latent_roles_right(W_dec_ND, features_FD, acts_BN, threshold=0.9):
    cos = _cos_NF(W_dec_ND.float(), features_FD.float())
    best, idx = cos.max(dim=1)
    alive = (acts_BN != 0).any(dim=0)
    order = torch.argsort(best, descending=True, stable=True)
    return _assign(best, idx, alive, threshold, order)


def latent_roles_dead_take(W_dec_ND, features_FD, acts_BN, threshold=0.9):
    # dead latents also claim features (taken set filled before the alive check); they are relabelled dead after
    cos = _cos_NF(W_dec_ND.float(), features_FD.float())
    best, idx = cos.max(dim=1)
    alive = (acts_BN != 0).any(dim=0)
    roles = ["other"] * len(best)
    taken = set()
    for i in torch.argsort(best, descending=True, stable=True).tolist():
        if float(best[i]) >= threshold:
            f = int(idx[i])
            roles[i] = "duplicate" if f in taken else "feature"
            taken.add(f)
    return [r if bool(a) else "dead" for r, a in zip(roles, alive)]


def latent_roles_index_order(W_dec_ND, features_FD, acts_BN, threshold=0.9):
    # visits latents in index order: the lowest-index latent takes the feature even if a later one aligns better
    cos = _cos_NF(W_dec_ND.float(), features_FD.float())
    best, idx = cos.max(dim=1)
    alive = (acts_BN != 0).any(dim=0)
    return _assign(best, idx, alive, threshold, range(len(best)))


def latent_roles_abs_cos(W_dec_ND, features_FD, acts_BN, threshold=0.9):
    # |cosine|: a row pointing opposite to a feature counts as aligned with it
    cos = _cos_NF(W_dec_ND.float(), features_FD.float()).abs()
    best, idx = cos.max(dim=1)
    alive = (acts_BN != 0).any(dim=0)
    return _assign(best, idx, alive, threshold, torch.argsort(best, descending=True, stable=True))


def latent_roles_raw_dot(W_dec_ND, features_FD, acts_BN, threshold=0.9):
    # dot product of unnormalised decoder rows with the (unit) features instead of a cosine
    cos = W_dec_ND.float() @ features_FD.float().T
    best, idx = cos.max(dim=1)
    alive = (acts_BN != 0).any(dim=0)
    return _assign(best, idx, alive, threshold, torch.argsort(best, descending=True, stable=True))


def latent_roles_mean_alive(W_dec_ND, features_FD, acts_BN, threshold=0.9):
    # "alive" taken as firing on most samples (mean activation above a small level) instead of firing at least once
    cos = _cos_NF(W_dec_ND.float(), features_FD.float())
    best, idx = cos.max(dim=1)
    alive = (acts_BN != 0).float().mean(dim=0) > 0.01
    return _assign(best, idx, alive, threshold, torch.argsort(best, descending=True, stable=True))


CANDIDATES = [
    ("dead_take_features", latent_roles_dead_take,
     "dead latents enter the best-first pass and can take a feature, so a worse alive latent becomes 'duplicate'", False),
    ("index_order", latent_roles_index_order,
     "visits latents by index, not best-aligned first: the first index, not the best cosine, gets 'feature'", False),
    ("abs_cosine", latent_roles_abs_cos, "uses |cos|: an anti-aligned row counts as finding the feature", False),
    ("raw_dot", latent_roles_raw_dot, "dot product with unnormalised decoder rows instead of the cosine", False),
    ("fires_often", latent_roles_mean_alive,
     "calls a latent dead unless it fires on >1% of samples (rare latents wrongly 'dead')", False),
    ("mine", latent_roles_right, "my honest attempt at a correct solution", True),
]
