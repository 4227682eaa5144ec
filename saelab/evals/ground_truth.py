"""An SAE scored against features known to be there: synthetic activations x = c @ F with the truth kept.

    mcc               mean |cosine| of decoder rows and true features under the best one-to-one matching (the
                      Hungarian algorithm, scipy's `linear_sum_assignment` on 1 - |cos|), as SAE Lens's
                      `sae_lens.synthetic.evals.mean_correlation_coefficient` defines it: 1 for the true dictionary
    recovered         the share of true features with a decoder row at cosine >= 0.9 (signed)
    absorption        per parent/child pair of a hierarchy, over the samples where both fire: the share in which the
                      parent's latent (its best-matching decoder row) is silent while the child's latent fires and its
                      decoder row carries the parent's direction (cosine >= `carries`); a pair is fully absorbed when
                      that share is at least 0.9. Exact here, because the truth says where the parent is active.
                      Scored only over pairs whose parent and child both have a latent (best cosine >= MATCHED_AT);
                      `pairs_recovered` is their share of the co-firing pairs, `pairs_unrecovered` the count of the
                      others, and `absorption_all_pairs` the mean over every pair without the floor (saelab 0.3's
                      figure).
    dead, duplicates  latents that never fire on the samples; live latents whose best-matching true feature is also
                      another live latent's best match at cosine >= 0.9

Feature absorption is Chanin et al. 2024 ("A is for Absorption", arXiv 2409.14507); its language-model estimate
(SAEBench's first-letter task) is `saelab.evals.absorption`.
"""

from __future__ import annotations

import torch

from saelab.sae.model import encode_dense

RECOVERED_AT = 0.9
FULLY_ABSORBED_AT = 0.9
MATCHED_AT = 0.5
"""A true feature has a latent of its own for absorption when its best decoder row's cosine is at least this. Far above
chance between distinct directions (random unit features in 64 dimensions: the largest cosine among 512 is ~0.45) and
below what an absorbing child's row keeps (a child row that took in an orthogonal parent direction of equal weight has
cosine 1/sqrt(2) = 0.71 with the child), so the floor drops features that were never learned, not absorbing ones."""
CARRIES = 0.1
"""A latent 'carries' a direction when its decoder row's cosine with it is at least this (SAEBench's absorbing-latent
cosine bound, 0.1)."""


def _unit(W: torch.Tensor) -> torch.Tensor:
    W = W.detach().float()
    return W / W.norm(dim=1, keepdim=True).clamp_min(1e-12)


def cosines(W_dec_ND: torch.Tensor, features_FD: torch.Tensor) -> torch.Tensor:
    """[F, N] cosine of every true feature with every decoder row."""
    return _unit(features_FD) @ _unit(W_dec_ND).T


def mcc(W_dec_ND: torch.Tensor, features_FD: torch.Tensor) -> float:
    """Mean |cosine| over the best one-to-one matching of decoder rows to true features (min(N, F) pairs)."""
    from scipy.optimize import linear_sum_assignment

    cos = cosines(W_dec_ND, features_FD).abs().double().numpy()
    rows, cols = linear_sum_assignment(1.0 - cos)
    return float(cos[rows, cols].mean())


def recovered(W_dec_ND: torch.Tensor, features_FD: torch.Tensor, threshold: float = RECOVERED_AT) -> float:
    """Share of true features with a decoder row at (signed) cosine >= threshold."""
    return float((cosines(W_dec_ND, features_FD).max(1).values >= threshold).float().mean())


def absorption(z_BN: torch.Tensor, W_dec_ND: torch.Tensor, features_FD: torch.Tensor, coeffs_BF: torch.Tensor,
               parent_F: torch.Tensor, carries: float = CARRIES, floor: float = MATCHED_AT) -> dict:
    """Absorption per parent/child pair (see the module docstring), scored only over the pairs whose parent and child
    each have a latent: their best-matching decoder row at cosine >= `floor`. A pair whose parent (or child) was never
    learned has no latent of its own; its argmax row is some other feature's, whose silence would count as absorption
    (saelab 0.3 did so), so such pairs are counted apart, as unrecovered.

    Returns {'mean': mean share over recovered pairs that co-fire, 'fully_absorbed': share of those at >=
    FULLY_ABSORBED_AT, 'recovered_pairs' / 'unrecovered_pairs': counts of co-firing pairs, 'mean_all_pairs': the mean
    over every co-firing pair as scored before the floor (for comparison), 'pairs': [(parent, child, share, n)],
    'recovered': [whether each of those pairs passed the floor]}."""
    cos = cosines(W_dec_ND, features_FD)  # [F, N]
    best, latent_of = cos.max(1)  # each true feature's latent and its cosine
    fires = z_BN > 0
    on = coeffs_BF > 0
    pairs, recovered = [], []
    for child in (parent_F >= 0).nonzero().squeeze(1).tolist():
        par = int(parent_F[child])
        both = on[:, par] & on[:, child]
        n = int(both.sum())
        if n == 0:
            continue
        lp, lc = int(latent_of[par]), int(latent_of[child])
        absorbed = both & ~fires[:, lp] & fires[:, lc] if lc != lp and float(cos[par, lc]) >= carries else \
            torch.zeros_like(both)
        recovered.append(float(best[par]) >= floor and float(best[child]) >= floor)
        pairs.append((par, child, float(absorbed.sum()) / n, n))
    shares = [p[2] for p, ok in zip(pairs, recovered) if ok]
    nan = float("nan")
    return {"mean": sum(shares) / len(shares) if shares else nan,
            "fully_absorbed": sum(s >= FULLY_ABSORBED_AT for s in shares) / len(shares) if shares else nan,
            "recovered_pairs": len(shares), "unrecovered_pairs": len(pairs) - len(shares),
            "mean_all_pairs": sum(p[2] for p in pairs) / len(pairs) if pairs else nan, "pairs": pairs,
            "recovered": recovered}


def dead_and_duplicates(z_BN: torch.Tensor, W_dec_ND: torch.Tensor, features_FD: torch.Tensor) -> dict:
    """Dead latents (never fire on the samples) and duplicates (live latents sharing a best-matching true feature at
    cosine >= RECOVERED_AT with another live latent), as fractions of the latents."""
    live = (z_BN > 0).any(0)
    cos = cosines(W_dec_ND, features_FD)  # [F, N]
    best, match = cos.max(0)  # per latent
    good = live & (best >= RECOVERED_AT)
    counts = torch.bincount(match[good], minlength=features_FD.shape[0])
    dup = good & (counts[match] > 1)
    n = W_dec_ND.shape[0]
    return {"dead": float((~live).sum()) / n, "duplicates": float(dup.sum()) / n}


@torch.no_grad()
def ground_truth_scores(sae, x_BD: torch.Tensor, features_FD: torch.Tensor, coeffs_BF: torch.Tensor,
                        parent_F: torch.Tensor | None = None, keep_pairs: bool = False) -> dict:
    """Every ground-truth score of `sae` (saelab's `SAE` or anything with `encode` and `W_dec`) on samples x whose
    true features and coefficients are known. keep_pairs: also return the per-pair absorption under 'pair_shares'
    ({(parent, child): share} of the co-firing pairs whose features both have a latent), for comparing two SAEs on
    the pairs both recovered (`shared_pair_absorption`)."""
    z = encode_dense(sae, x_BD)
    W = sae.W_dec.detach().cpu()
    out = {"mcc": mcc(W, features_FD), "recovered": recovered(W, features_FD), **dead_and_duplicates(z, W, features_FD),
           "l0": float((z > 0).sum(1).float().mean())}
    if parent_F is not None and bool((parent_F >= 0).any()):
        a = absorption(z, W, features_FD, coeffs_BF, parent_F)
        n_pairs = a["recovered_pairs"] + a["unrecovered_pairs"]
        out.update(absorption=a["mean"], fully_absorbed=a["fully_absorbed"],
                   pairs_recovered=a["recovered_pairs"] / n_pairs if n_pairs else float("nan"),
                   pairs_unrecovered=a["unrecovered_pairs"], absorption_all_pairs=a["mean_all_pairs"])
        if keep_pairs:
            out["pair_shares"] = {(p[0], p[1]): p[2] for p, ok in zip(a["pairs"], a["recovered"]) if ok}
    return out


def shared_pair_absorption(shares_a: dict, shares_b: dict) -> dict:
    """Absorption of two SAEs over the same pairs: the parent/child pairs that both recovered (`pair_shares` of
    `ground_truth_scores(..., keep_pairs=True)`). Each SAE's own mean is over its own recovered pairs, so two means
    can differ only because one SAE learned fewer (or easier) pairs; this is the same-pairs control.
    Returns {'n_pairs', 'a', 'b'} (NaN means when no pair is shared)."""
    shared = sorted(set(shares_a) & set(shares_b))
    nan = float("nan")
    return {"n_pairs": len(shared), "a": sum(shares_a[p] for p in shared) / len(shared) if shared else nan,
            "b": sum(shares_b[p] for p in shared) / len(shared) if shared else nan}
