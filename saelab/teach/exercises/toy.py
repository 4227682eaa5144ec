"""Notebook 00 (toy data): feature recovery, and what each latent learned (feature, duplicate, dead or other)."""

from __future__ import annotations

import torch

from saelab.teach.exercises.base import diagnose, exercise, passed, run_case, same_output
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
    return _assign_roles(W @ F.T, acts_BN, threshold)


def _assign_roles(cos_NF: torch.Tensor, acts_BN: torch.Tensor, threshold: float) -> list[str]:
    """latent_roles from the [latents, features] cosines."""
    best_cos, best_f = cos_NF.max(dim=1)
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
    """`fn(W_dec_ND, features_FD) -> [F]`: per true feature, the largest cosine with any decoder row.

    Varies: decoder rows of different norms and signs, true features that are not unit vectors, one feature and one
    row, more features than rows, a random case; the input tensors must come back unchanged (the notebook passes the
    SAE's own decoder)."""
    F = torch.eye(3, 4)  # three true features along axes 0, 1, 2
    W = torch.tensor([[3.0, 0.0, 0.0, 0.0],   # feature 0, at norm 3
                      [0.0, -1.0, 0.0, 0.0],  # MINUS feature 1
                      [0.0, 0.6, 0.0, 0.8],   # partly feature 1
                      [0.0, 0.0, 0.5, 0.5],   # halfway to feature 2 (cosine 0.707)
                      [0.0, 0.0, 0.0, 1.0]])
    got = _recovery(fn, W, F, "on the first case")
    want = feature_recovery(W, F)
    Wc = W / W.norm(dim=0, keepdim=True).clamp_min(1e-12)
    diagnose(got, [(torch.tensor([3.0, 0.6, 0.5]),
                    "the values are dot products, not cosines: normalise the decoder rows (a row of norm 3 "
                    "is not 3x as similar)"),
                   (torch.tensor([1.0, 1.0, 0.7071]),
                    "feature 1 scores 1 because a row points the OPPOSITE way: do not take abs(); with "
                    "non-negative coefficients a flipped direction does not reconstruct the feature"),
                   ((F @ Wc.T).max(1).values,
                    "you normalised the decoder's COLUMNS (dim=0): each row is one latent's direction, so divide each "
                    "row by its own norm (dim=1)")], atol=1e-3)
    if tuple(torch.as_tensor(got).shape) == (5,):
        raise AssertionError("you returned one value per decoder row (5): return one per TRUE feature (3), the max "
                             "over the decoder rows")
    same_output(got, want, "on the first case (3 features along axes 0-2, 5 decoder rows)", atol=1e-4)
    scale = torch.tensor([[2.0], [0.5], [1.0]])
    got = _recovery(fn, W, F * scale, "with true features of norms 2, 0.5 and 1")
    diagnose(got, [(((F * scale) @ (W / W.norm(dim=1, keepdim=True)).T).max(1).values,
                   "with true features of norms 2, 0.5 and 1 your values scale with those norms: normalise the true "
                   "features too (a cosine divides by both norms)")], atol=1e-4)
    same_output(got, want, "with true features of norms 2, 0.5 and 1 (the cosines do not change)", atol=1e-4)
    g = torch.Generator().manual_seed(0)
    for what, (f, n, d) in {"with one true feature and one decoder row": (1, 1, 4),
                            "with more true features (9) than decoder rows (4)": (9, 4, 5),
                            "on a random case (12 features, 40 rows of random norms, d = 8)": (12, 40, 8)}.items():
        Wr = torch.randn(n, d, generator=g) * (0.2 + 3 * torch.rand(n, 1, generator=g))
        Fr = torch.randn(f, d, generator=g)
        same_output(_recovery(fn, Wr, Fr, what), feature_recovery(Wr, Fr), what, atol=1e-4)
    passed("feature_recovery")


def _recovery(fn, W, F, what):
    """Run the learner's feature_recovery on copies; the inputs must come back unchanged."""
    W_in, F_in = W.clone(), F.clone()
    got = run_case(what, fn, W_in, F_in)
    assert torch.equal(W_in, W), f"{what}: your function changed W_dec_ND in place (e.g. W /= norm): normalise a " \
        "copy, since the notebook passes the SAE's own decoder"
    assert torch.equal(F_in, F), f"{what}: your function changed features_FD in place: normalise a copy"
    return got


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
    """`fn(W_dec_ND, features_FD, acts_BN, threshold) -> [N] roles`, each one of ROLES.

    Varies: a hand-made case where each latent has a known role (at thresholds 0.9 and 0.5), a latent that fires on
    one row of 512 (alive), a cosine exactly at the threshold (1.0), every latent dead, a single latent and a single
    row of codes, and a random case with true features of random norms; the inputs must come back unchanged."""
    W, F, acts = _roles_case()
    got = _roles(fn, W, F, acts, 0.9, "on the hand-made case")
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
    low = _roles(fn, W, F, acts, 0.5, "with threshold=0.5")
    if low[3] != "feature":
        raise AssertionError("with threshold=0.5, latent 3 (cosine 0.6 to feature 1) is feature 1's latent, but you "
                             f"labelled it {low[3]!r}: use the threshold argument, not a fixed 0.9")
    assert low == latent_roles(W, F, acts, 0.5), f"threshold 0.5: expected {latent_roles(W, F, acts, 0.5)}, got {low}"
    rare = acts.repeat(13, 1)[:512]  # 512 rows; latent 5 now fires on exactly one of them
    rare[:, 5] = 0.0
    rare[100, 5] = 0.3
    got_rare = _roles(fn, W, F, rare, 0.9, "with 512 rows of codes, latent 5 firing on one of them")
    if got_rare[5] == "dead":
        raise AssertionError("latent 5 fires on one of the 512 rows of acts_BN (0.2%) and you called it dead: a latent "
                             "is dead only when it NEVER fires; a rare latent is alive")
    assert got_rare == want, f"with latent 5 firing on one row of 512: expected {want}, got {got_rare}"
    Fx, Wx = torch.eye(2, 3), torch.tensor([[2.0, 0.0, 0.0], [0.0, 0.0, 1.0], [0.0, 1.0, 0.0]])  # cosines exactly 1
    ax = torch.ones(5, 3)
    exact = _roles(fn, Wx, Fx, ax, 1.0, "with threshold=1.0 and rows exactly on the features")
    if exact != latent_roles(Wx, Fx, ax, 1.0):
        raise AssertionError(f"with threshold=1.0, latents 0 and 2 lie exactly on features 0 and 1 (cosine 1.0): "
                             f"expected {latent_roles(Wx, Fx, ax, 1.0)}, got {exact}. A cosine of at least the "
                             "threshold counts (>=, not >)")
    for what, (Wc, Fc, ac) in {
        "with every latent dead (acts_BN all zero)": (W, F, torch.zeros_like(acts)),
        "with a single latent and a single row of codes": (Wx[:1], Fx, ax[:1, :1]),
    }.items():
        got_c, want_c = _roles(fn, Wc, Fc, ac, 0.9, what), latent_roles(Wc, Fc, ac, 0.9)
        assert got_c == want_c, f"{what}: expected {want_c}, got {got_c}"
    g = torch.Generator().manual_seed(1)  # a random case: more latents than features, some dead
    Wr, Fr = torch.randn(40, 8, generator=g), torch.randn(12, 8, generator=g)
    Fr = Fr / Fr.norm(dim=1, keepdim=True)
    Wr[:12] = Fr + 0.15 * torch.randn(12, 8, generator=g)
    Wr[12:20] = 2.0 * Fr[:8] + 0.3 * torch.randn(8, 8, generator=g)
    Fr = Fr * (0.3 + 2.0 * torch.rand(12, 1, generator=g))  # true features of random norms: cosines do not change
    ar = torch.rand(64, 40, generator=g) * (torch.rand(64, 40, generator=g) < 0.2)
    ar[:, [3, 15, 30]] = 0.0
    what = "on a random case (40 latents, 12 true features of random norms, 3 latents dead)"
    got_r, want_r = _roles(fn, Wr, Fr, ar, 0.9, what), latent_roles(Wr, Fr, ar, 0.9)
    W_unit = Wr / Wr.norm(dim=1, keepdim=True)
    if got_r != want_r and got_r == _assign_roles(W_unit @ Fr.T, ar, 0.9):
        raise AssertionError(f"{what}: your roles follow the true features' norms: normalise the features too (a "
                             "cosine divides by both norms; make_toy's happen to be unit vectors, others need not be)")
    assert got_r == want_r, f"{what}: you disagree at latents " \
        f"{[j for j, (a, b) in enumerate(zip(got_r, want_r)) if a != b]}: expected {want_r}, got {got_r}"
    passed("latent_roles")


def _roles(fn, W, F, acts, threshold, what) -> list[str]:
    """Run the learner's latent_roles on copies; the inputs must come back unchanged."""
    W_in, F_in, a_in = W.clone(), F.clone(), acts.clone()
    got = [str(r) for r in run_case(what, fn, W_in, F_in, a_in, threshold)]
    assert torch.equal(W_in, W) and torch.equal(F_in, F) and torch.equal(a_in, acts), \
        f"{what}: your function changed its inputs in place (e.g. W /= norm): work on copies, since the notebook " \
        "passes the SAE's own decoder"
    return got
