"""Notebook 00 (toy data): feature recovery, and what each latent learned (feature, duplicate, dead or other)."""

from __future__ import annotations

import torch

from saelab.teach.exercises.base import close, diagnose, exercise, expect_shape, passed
from saelab.teach.toy import feature_recovery

ROLES = ("feature", "duplicate", "dead", "other")


def latent_roles(W_dec_ND: torch.Tensor, features_FD: torch.Tensor, acts_BN: torch.Tensor,
                 threshold: float = 0.9) -> list[str]:
    """One role per latent: "dead" (never fires on acts_BN), else matched to its best true feature by the
    (signed) cosine of its decoder row: "feature" (the best-aligned alive latent of that feature, cosine
    >= threshold), "duplicate" (another alive latent at >= threshold on a feature already taken), "other"."""
    W = W_dec_ND.detach().float()
    W = W / W.norm(dim=1, keepdim=True).clamp_min(1e-12)
    F = features_FD.float() / features_FD.float().norm(dim=1, keepdim=True)
    best_cos, best_f = (W @ F.T).max(dim=1)
    alive = (acts_BN > 0).any(dim=0)
    roles = ["dead" if not a else "other" for a in alive.tolist()]
    claimants = (alive & (best_cos >= threshold)).nonzero().squeeze(1).tolist()
    taken = set()
    for j in sorted(claimants, key=lambda j: (-float(best_cos[j]), j)):  # best-aligned first
        f = int(best_f[j])
        roles[j] = "duplicate" if f in taken else "feature"
        taken.add(f)
    return roles


@exercise("0.1", feature_recovery)
def check_feature_recovery(fn) -> None:
    """`fn(W_dec_ND, features_FD) -> [F]`: per true feature, the largest cosine with any decoder row."""
    F = torch.eye(3, 4)  # three true features along axes 0, 1, 2
    W = torch.tensor([[3.0, 0.0, 0.0, 0.0],   # feature 0, at norm 3
                      [0.0, -1.0, 0.0, 0.0],  # MINUS feature 1
                      [0.0, 0.6, 0.0, 0.8],   # partly feature 1
                      [0.0, 0.0, 0.5, 0.5],   # halfway to feature 2 (cosine 0.707)
                      [0.0, 0.0, 0.0, 1.0]])
    got = fn(W.clone(), F.clone())
    want = feature_recovery(W, F)
    diagnose(got, [(torch.tensor([3.0, 0.6, 0.5]),
                    "the values are dot products, not cosines: normalise the decoder rows (a row of norm 3 "
                    "is not 3x as similar)"),
                   (torch.tensor([1.0, 1.0, 0.7071]),
                    "feature 1 scores 1 because a row points the OPPOSITE way: do not take abs(); with "
                    "non-negative coefficients a flipped direction does not reconstruct the feature")], atol=1e-3)
    if tuple(torch.as_tensor(got).shape) == (5,):
        raise AssertionError("you returned one value per decoder row (5): return one per TRUE feature (3), the max "
                             "over the decoder rows")
    expect_shape(got, (3,), "one value per true feature")
    assert close(got, want, atol=1e-4), f"expected {want.tolist()}, got {torch.as_tensor(got).tolist()}"
    passed("feature_recovery")


def _roles_case():
    """Four true features on axes 0-3 of R^6 and eight latents, each with a known role (see the comments)."""
    F = torch.eye(4, 6)
    W = torch.zeros(8, 6)
    W[0, 0] = 3.0                         # feature 0 exactly, at norm 3                    -> feature
    W[1, 0], W[1, 5] = 0.95, 0.3122       # feature 0 again, cosine 0.95                    -> duplicate
    W[2, 1] = -1.0                        # MINUS feature 1                                 -> other
    W[3, 1], W[3, 5] = 1.2, 1.6           # norm 2, cosine 0.6 to feature 1 (dot 1.2)      -> other
    W[4, 2] = 1.0                         # feature 2 exactly, but never fires              -> dead
    W[5, 2], W[5, 4] = 0.97, 0.2431       # feature 2, cosine 0.97                          -> feature
    W[6, 3], W[6, 5] = 0.92, 0.3919       # feature 3, cosine 0.92, the lower index         -> duplicate
    W[7, 3] = 1.0                         # feature 3 exactly                               -> feature
    g = torch.Generator().manual_seed(0)
    acts = torch.rand(40, 8, generator=g) * (torch.rand(40, 8, generator=g) < 0.3)  # sparse codes: mostly zeros
    acts[0] = 0.5                         # every latent fires at least once ...
    acts[:, 4] = 0.0                      # ... except latent 4
    return W, F, acts


_ROLE_HINTS = {
    4: "latent 4 never fires in acts_BN: it is 'dead' whatever its direction (its row points exactly at feature 2)",
    5: "latent 5 is the only ALIVE latent on feature 2 (cosine 0.97): it is its 'feature'; the dead latent 4 "
       "cannot claim a feature, so leave dead latents out before picking each feature's best latent",
    2: "latent 2 points the OPPOSITE way to feature 1 (cosine -1): keep the sign, do not take abs(); with non-negative "
       "coefficients a flipped row does not reconstruct the feature",
    3: "latent 3 is a row of norm 2 at cosine 0.6 to feature 1: its dot product 1.2 passes the threshold, its cosine "
       "does not; normalise the decoder rows (and the features)",
    1: "latents 0 and 1 both match feature 0: the best-aligned alive latent (0, cosine 1.0) is its 'feature', every "
       "other alive latent above the threshold on the same feature is a 'duplicate'",
    0: "latent 0 is feature 0 exactly (cosine 1.0, at norm 3): it is its 'feature'",
}


@exercise("0.2", latent_roles)
def check_latent_roles(fn) -> None:
    """`fn(W_dec_ND, features_FD, acts_BN, threshold) -> [N] roles`, each one of ROLES."""
    W, F, acts = _roles_case()
    got = [str(r) for r in fn(W.clone(), F.clone(), acts.clone(), 0.9)]
    want = latent_roles(W, F, acts, 0.9)
    if len(got) == F.shape[0]:
        raise AssertionError(f"you returned {len(got)} roles, one per true feature: return one per LATENT (decoder "
                             f"row), {W.shape[0]} here")
    assert len(got) == len(want), f"return one role per latent ({len(want)}), got {len(got)}"
    bad = sorted(set(got) - set(ROLES))
    assert not bad, f"roles are {ROLES}; got {bad}"
    if any(g == "dead" and w != "dead" for g, w in zip(got, want)):
        raise AssertionError("you marked latents dead that fire on some rows: a latent is dead when it is zero on "
                             "EVERY row of acts_BN (never fires), not when it is zero on some")
    if got[6] == "feature" and got[7] == "duplicate":
        raise AssertionError("latents 6 and 7 both match feature 3 and you gave it to 6, the lower index: the "
                             "feature goes to the best-aligned alive latent (7, cosine 1.0 against 0.92), the other "
                             "is the duplicate")
    for j in (4, 5, 2, 3, 1, 0):
        if got[j] != want[j]:
            raise AssertionError(f"latent {j}: expected {want[j]!r}, got {got[j]!r}. {_ROLE_HINTS[j]}")
    assert got == want, f"expected {want}, got {got}"
    low = [str(r) for r in fn(W.clone(), F.clone(), acts.clone(), 0.5)]
    if low[3] != "feature":
        raise AssertionError("with threshold=0.5, latent 3 (cosine 0.6 to feature 1) is feature 1's latent, but you "
                             f"labelled it {low[3]!r}: use the threshold argument, not a fixed 0.9")
    assert low == latent_roles(W, F, acts, 0.5), f"threshold 0.5: expected {latent_roles(W, F, acts, 0.5)}, got {low}"
    g = torch.Generator().manual_seed(1)  # a random case: more latents than features, some dead
    Wr, Fr = torch.randn(40, 8, generator=g), torch.randn(12, 8, generator=g)
    Fr = Fr / Fr.norm(dim=1, keepdim=True)  # true features are unit vectors, as in make_toy
    Wr[:12] = Fr + 0.15 * torch.randn(12, 8, generator=g)
    Wr[12:20] = 2.0 * Fr[:8] + 0.3 * torch.randn(8, 8, generator=g)
    ar = torch.rand(64, 40, generator=g) * (torch.rand(64, 40, generator=g) < 0.2)
    ar[:, [3, 15, 30]] = 0.0
    got_r, want_r = [str(r) for r in fn(Wr, Fr, ar, 0.9)], latent_roles(Wr, Fr, ar, 0.9)
    assert got_r == want_r, "a random case (40 latents, 12 features, 3 dead) disagrees at latents " \
        f"{[j for j, (a, b) in enumerate(zip(got_r, want_r)) if a != b]}: expected {want_r}, got {got_r}"
    passed("latent_roles")
