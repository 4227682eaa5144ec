"""Exercise 5.2: find_concept_latent (best F1 on build; precision and recall on test, in N2G's sense)."""
import torch


def _div(a, b):
    a, b = float(a), float(b)
    return a / b if b else 0.0


def _build_counts(idx_TK, acts_TK, concept_T, n_latents, fire_rule="positive"):
    fires_TK = acts_TK > 0 if fire_rule == "positive" else torch.ones_like(acts_TK, dtype=torch.bool)
    fires_N = torch.bincount(idx_TK[fires_TK].long(), minlength=n_latents)
    hits_N = torch.bincount(idx_TK[fires_TK & concept_T[:, None].bool()].long(), minlength=n_latents)
    return fires_N.double(), hits_N.double(), float(concept_T.sum())


def _test_fires(idx_TK, acts_TK, latent, fire_rule="positive"):
    sel = idx_TK == latent
    if fire_rule == "positive":
        sel = sel & (acts_TK > 0)
    return sel.any(dim=1)


def _test_scores(test, latent, fire_rule="positive"):
    idx_TK, acts_TK, concept_T = test
    fires_T = _test_fires(idx_TK, acts_TK, latent, fire_rule)
    concept_T = concept_T.bool()
    both = (fires_T & concept_T).sum()
    precision = _div(both, concept_T.sum())   # of the concept's tokens, the share where it fires
    recall = _div(both, fires_T.sum())        # of the tokens where it fires, the share where the concept holds
    return precision, recall


# ---- my honest attempt ---------------------------------------------------------------------------
def find_concept_latent_mine(build, test, n_latents):
    idx_TK, acts_TK, concept_T = build
    fires_N, hits_N, n_concept = _build_counts(idx_TK, acts_TK, concept_T, n_latents)
    denom = fires_N + n_concept
    f1_N = torch.where(denom > 0, 2 * hits_N / denom.clamp_min(1), torch.zeros_like(denom))
    best = int(f1_N.argmax())
    precision, recall = _test_scores(test, best)
    return best, float(f1_N[best]), precision, recall


# ---- wrong 1: the usual ML meaning of precision and recall, swapped against the statement's N2G meaning -----
def find_concept_latent_swapped(build, test, n_latents):
    best, f1, precision, recall = find_concept_latent_mine(build, test, n_latents)
    return best, f1, recall, precision


# ---- wrong 2: every slot counts as firing, the zeroed and padding slots included --------------------------
def find_concept_latent_zero_slots(build, test, n_latents):
    idx_TK, acts_TK, concept_T = build
    fires_N, hits_N, n_concept = _build_counts(idx_TK, acts_TK, concept_T, n_latents, fire_rule="any")
    f1_N = 2 * hits_N / (fires_N + n_concept).clamp_min(1)
    best = int(f1_N.argmax())
    precision, recall = _test_scores(test, best, fire_rule="any")
    return best, float(f1_N[best]), precision, recall


# ---- wrong 3: arithmetic mean of precision and recall instead of their harmonic mean ----------------------
def find_concept_latent_arith_mean(build, test, n_latents):
    idx_TK, acts_TK, concept_T = build
    fires_N, hits_N, n_concept = _build_counts(idx_TK, acts_TK, concept_T, n_latents)
    p_N = hits_N / max(n_concept, 1.0)
    r_N = hits_N / fires_N.clamp_min(1)
    score_N = (p_N + r_N) / 2
    best = int(score_N.argmax())
    precision, recall = _test_scores(test, best)
    return best, float(score_N[best]), precision, recall


# ---- wrong 4: chooses the latent with the most concept hits (precision only): dense latents win ------------
def find_concept_latent_most_hits(build, test, n_latents):
    idx_TK, acts_TK, concept_T = build
    fires_N, hits_N, n_concept = _build_counts(idx_TK, acts_TK, concept_T, n_latents)
    best = int(hits_N.argmax())
    f1 = float(2 * hits_N[best] / (fires_N[best] + n_concept)) if fires_N[best] + n_concept else 0.0
    precision, recall = _test_scores(test, best)
    return best, f1, precision, recall


# ---- wrong 5: the F1 returned is the test text's, not the build text's ------------------------------------
def find_concept_latent_test_f1(build, test, n_latents):
    best, _, precision, recall = find_concept_latent_mine(build, test, n_latents)
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return best, f1, precision, recall


CANDIDATES = [
    ("swapped_pr", find_concept_latent_swapped, "precision and recall in the usual ML sense, swapped against N2G's", False),
    ("zero_slots_fire", find_concept_latent_zero_slots, "counts every slot as firing, including zeroed and padding slots", False),
    ("arith_mean", find_concept_latent_arith_mean, "scores latents by the arithmetic mean of precision and recall, not F1", False),
    ("most_hits", find_concept_latent_most_hits, "chooses the latent with the most concept hits (ignores how often it fires elsewhere)", False),
    ("test_f1", find_concept_latent_test_f1, "returns the F1 on the test text instead of the build text's", False),
    ("mine", find_concept_latent_mine, "my honest attempt at a correct solution", True),
]
