# ---
# jupyter:
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 00 · A sparse autoencoder on toy data with known features
#
# Before touching a language model, train a TopK sparse autoencoder (SAE) where we **know the answer**: data
# built from a few hundred known directions ("features"), more of them than dimensions, a handful active at a
# time. If the SAE works, its decoder rows should line up with the true features, and we can count how many
# it found.
#
# **Prerequisites**: Python and a little PyTorch (tensors, `@`, `topk`). No transformer knowledge needed.
#
# **What you will learn**
# 1. superposition in miniature: 256 directions in 64 dimensions, readable because only a few are active at a time;
# 2. what an SAE is: encode to a sparse code (TopK keeps k latents), decode as a sum of decoder rows;
# 3. how to score an SAE against ground truth (feature recovery) and what the choice of k does;
# 4. what a *dead latent* is, and why latents die when there are more latents than things to learn; how to tell,
#    latent by latent, a found feature from a duplicate, a dead latent or something else.
#
# **Learner time**: about 37 minutes (17 reading at ~130 words a minute, 20 for the essential exercises), beside the compute time below.
#
# **Time** (measured on a 2-core CPU, 2026-12-04; `scripts/run_series.py`): about 30 s in fast mode (`SAELAB_FAST=1`, as in CI) and 18 s at full size.
# GPU: not measured yet (no GPU was lent while these were measured); `DEVICE = "auto"` uses one when present.
#
# **Paper**: Gao et al. (2024), *Scaling and evaluating sparse autoencoders*: section 1 (why SAEs), section 2.3
# (the TopK activation), section 2.4 (dead latents). The toy-model idea is from Elhage et al. (2022), *Toy
# Models of Superposition*, and Sharkey et al. (2022), *Taking features out of superposition with sparse
# autoencoders*. What this notebook quotes from sections 2.3 and 2.4 (the TopK encoder; up to 90% dead latents with
# no mitigation, its Figure 15; 7% dead in its 16M-latent SAE) was checked against a third-party verbatim excerpt
# of the arXiv text; that L(N, k) is in section 3 could not be checked there. Every other number here is saelab's
# own measurement and says so.

# %% tags=["parameters"]
# Parameters
import os

FAST = os.environ.get("SAELAB_FAST", "") not in ("", "0", "false")
DEVICE = "auto"            # "auto": CUDA when present, else CPU
D = 64                     # dimensions of the toy activations
N_FEATURES = 256           # true features (more than D: superposition)
MEAN_ACTIVE = 4.0          # true features active per sample, on average
N_SAMPLES = 16_384 if FAST else 65_536
EPOCHS = 4.0 if FAST else 8.0
LR = 1e-2                  # Adam's learning rate (1e-3 leaves this small SAE half-trained in 8 epochs: ~55% found)
KS = (1, 2, 4, 8, 16)      # the k values compared in part 3

# %% [markdown]
# ## 1 · The data
#
# Each sample is $x = \sum_i c_i f_i$: a non-negative combination of unit directions $f_i$, where each
# feature is on with probability `MEAN_ACTIVE / N_FEATURES` and has a magnitude in [0.5, 1.5]. With 256
# features in 64 dimensions the directions cannot be orthogonal; they overlap a little, as the features of
# a language model are thought to.

# %%
import torch

from saelab import resolve_device
from saelab.teach.toy import ToyConfig, make_toy

device = resolve_device(DEVICE)
data = make_toy(ToyConfig(d=D, n_features=N_FEATURES, mean_active=MEAN_ACTIVE, n_samples=N_SAMPLES))
F = data.features_FD
overlap = (F @ F.T - torch.eye(N_FEATURES)).abs()
print(f"x: {tuple(data.x_BD.shape)}; true features: {tuple(F.shape)} on {device}")
print(f"active features per sample: mean {float((data.coeffs_BF > 0).sum(1).float().mean()):.2f}")
print(f"largest |cosine| between two true features: {float(overlap.max()):.2f} (orthogonal would be 0)")

# %% [markdown]
# ## 2 · Did the SAE find the true features?
#
# ### Exercise 0.1 — score an SAE against the truth (easy, essential, 5 min)
#
# An SAE's decoder has one row per latent, $W_{dec} \in \mathbb{R}^{n \times d}$. A true feature is
# *recovered* when some decoder row points the same way. Write `feature_recovery`: for each true feature,
# the largest cosine similarity with any decoder row (one number per true feature). Careful: rows are not
# guaranteed to have the same norm, and a row pointing the *opposite* way does not count (the coefficients
# are non-negative, so it cannot reconstruct the feature).

# %%
from saelab.teach.exercises import check_feature_recovery, todo


def feature_recovery(W_dec_ND: torch.Tensor, features_FD: torch.Tensor) -> torch.Tensor:
    """[F]: per true feature, the max cosine similarity with any decoder row."""
    # YOUR CODE HERE (about 3 lines), then delete the next line
    todo("0.1")


# The check runs your function on its own cases and returns the function it graded (yours; the reference
# solution when the series runs with SAELAB_SOLUTIONS=1): the notebook goes on with that one.
recover = check_feature_recovery(feature_recovery)

# %% [markdown]
# <details><summary>Hint</summary>
#
# A cosine is a dot product of unit vectors: divide each row (of both matrices) by its norm, then one matrix product
# gives every (feature, latent) cosine at once. Keep the sign, and reduce over the latents' dimension.
# </details>
#
# <details><summary>Solution</summary>
#
# ```python
# W = W_dec_ND / W_dec_ND.norm(dim=1, keepdim=True)
# F = features_FD / features_FD.norm(dim=1, keepdim=True)
# return (F @ W.T).max(dim=1).values
# ```
# </details>
#
# ## 3 · Train a TopK SAE
#
# The SAE encodes $z = \mathrm{ReLU}(\mathrm{TopK}_k(W_{enc}(x - b_{pre}) + b_{enc}))$ and decodes
# $\hat x = \sum_i z_i d_i + b_{pre}$ (in code `z @ W_dec + b_pre`, with the decoder rows $d_i$ stored as
# `W_dec` of shape `[n, d]`): each input is rebuilt from at most $k$ decoder rows. We train with
# saelab's `Trainer`, the same one the language-model notebooks use, on the toy data held in memory (it also
# takes a harvested activation cache, or a stream of batches). `normalize="none"`: toy samples need no input normalisation (notebook 02 explains the one
# used for language models).

# %%
from saelab.teach.diagrams import sae_diagram

sae_diagram()  # the "normalise" step is for language models (notebook 02); the toy SAE below skips it

# %%
from saelab import TrainConfig, Trainer


def train_toy(k: int, n_latents: int = N_FEATURES, k_aux: int | None = None) -> dict:
    cfg = TrainConfig(n_latents=n_latents, k=k, k_aux=k_aux, batch_size=1024, epochs=EPOCHS, lr=LR,
                      normalize="none", eval_every=10**9, checkpoint_every=0, progress=False)
    t = Trainer(cfg, data.x_BD, device=device)  # the samples in memory; no run folder: nothing is written
    t.train()
    rec = recover(t.sae.W_dec.cpu(), F)
    return {"k": k, "n_latents": n_latents, "nmse": t.history[-1]["nmse"],
            "recovered (cos >= 0.9)": float((rec >= 0.9).float().mean()), "mean max cos": float(rec.mean()),
            "sae": t.sae}


first = train_toy(k=4)
print({k: round(v, 3) if isinstance(v, float) else v for k, v in first.items() if k != "sae"})

# %%
import plotly.graph_objects as go

from saelab.teach.toy import feature_recovery

cos = feature_recovery(first["sae"].W_dec.cpu(), F).sort(descending=True).values
fig = go.Figure(go.Scatter(y=cos.tolist(), mode="lines", name="best latent"))
fig.add_hline(y=0.9, line_dash="dot", annotation_text="recovered (cos ≥ 0.9)")
fig.update_layout(title="each true feature's cosine to its best decoder row, sorted", xaxis_title="true feature (sorted)",
                  yaxis_title="max cosine", height=330, width=700)
fig.show()

# %% [markdown]
# The normalized MSE is the reconstruction error divided by that of always predicting the mean sample (0 is
# perfect, 1 is no better than the mean). A good SAE on this data finds nearly every true feature
# (cosine ≥ 0.9) although it was never told what they are: sparsity alone singles them out.
#
# ## 4 · What k does
#
# The true data has about 4 active features per sample. Train with several k and compare.

# %%
import pandas as pd

table = pd.DataFrame([{k: v for k, v in train_toy(k=k).items() if k != "sae"} for k in KS]).set_index("k")
table.round(3)

# %% [markdown]
# Reading the table (the run above; your numbers may differ a little):
# - **Small k** (1-2) cannot rebuild samples with 4+ active features: the normalized MSE is high. Yet the
#   decoder rows can still point at true features: being forced to explain each sample with one latent is a
#   strong push towards the true directions.
# - **k near the true sparsity** gives low error *and* clean features.
# - **Large k** (16, four times the true sparsity): trained to convergence, the error keeps falling slowly as k
#   grows (the paper's L(N, k), section 3); if it rises in your table, the run was too short for the larger k to
#   settle (fast mode trains 4 epochs). The code is no longer forced to be sparse, so latents can share work and
#   feature recovery blurs a little (compare the mean max cosine at k = 4 and k = 16). This is the
#   sparsity-reconstruction trade-off the paper studies at scale.
#
# ## 5 · What did each latent learn?
#
# ### Exercise 0.2 — what did each latent learn? (medium, essential, 15 min)
#
# Feature recovery (0.1) asks, per true feature, "did some latent find it?". The other direction asks, per latent,
# "what is it?", and on toy data we can answer exactly. Give the SAE twice as many latents as there are true
# features: the extra latents have nothing left to learn, and each latent ends up in one of four roles:
#
# - **dead**: it never fires on the evaluation samples: its activation in `acts_BN` is zero (not > 0) on every row.
#   A latent that fires (> 0) on even one row of the batch is alive, however rare that is. A latent that does not
#   fire gets no gradient from the
#   reconstruction, so nothing pulls it back; under TopK it can still return when the other latents' weights (and
#   $b_{pre}$) change enough that its pre-activation climbs into the top k for some input, and AuxK (below, and
#   notebook 02) gives dead latents a gradient that pushes exactly that way;
# - **feature**: it fires, and of the alive latents it is the best aligned with some true feature, at a cosine of at
#   least `threshold`;
# - **duplicate**: it fires and passes the threshold on a true feature that a better-aligned alive latent already
#   took;
# - **other**: it fires but is close to no true feature (a blend of several, or a direction the data lacks).
#
# Write `latent_roles`: one role per latent (decoder row), from the decoder, the true features and a batch of codes
# `acts_BN` (`[samples, latents]`, zero where a latent did not fire). Match each latent to its single best true
# feature by the same signed cosine as in 0.1 (a true cosine: neither the decoder rows nor the true features need
# be unit vectors). A cosine equal to `threshold` passes. A dead latent is dead whatever its
# direction, and it cannot take a feature away from an alive one. If two alive latents reach the same feature with
# exactly the same cosine, the lower index is its "feature". Do not change the input tensors in place.

# %%
from saelab.teach.exercises import check_latent_roles


def latent_roles(W_dec_ND: torch.Tensor, features_FD: torch.Tensor, acts_BN: torch.Tensor,
                 threshold: float = 0.9) -> list[str]:
    """One of "feature", "duplicate", "dead", "other" per latent (row of W_dec_ND)."""
    # YOUR CODE HERE (about 10 lines), then delete the next line
    todo("0.2")


roles_of = check_latent_roles(latent_roles)

# %% [markdown]
# <details><summary>Hint</summary>
#
# Three tensors do most of the work: the `[latents, features]` matrix of cosines, its max and argmax over the
# features (each latent's best cosine and which feature that is), and an "alive" mask over the latents from
# `acts_BN`. Then visit the alive latents that pass the threshold from the best aligned down (`argsort`), keeping a
# `set` of the features already taken: the first latent to reach a feature is its "feature", later ones are
# duplicates.
# </details>
#
# <details><summary>Solution</summary>
#
# ```python
# W = W_dec_ND / W_dec_ND.norm(dim=1, keepdim=True)
# F = features_FD / features_FD.norm(dim=1, keepdim=True)
# best_cos, best_f = (W @ F.T).max(dim=1)        # per latent: its best true feature
# alive = (acts_BN > 0).any(dim=0)               # fired on at least one row
# roles = ["other" if a else "dead" for a in alive.tolist()]
# taken = set()
# for j in best_cos.argsort(descending=True, stable=True).tolist():  # best aligned first
#     if alive[j] and best_cos[j] >= threshold:
#         f = int(best_f[j])
#         roles[j] = "duplicate" if f in taken else "feature"
#         taken.add(f)
# return roles
# ```
# </details>
#
# Now sort the latents of two SAEs with 2x more latents than features and a small k: one with AuxK (the paper's
# auxiliary loss, which gives dead latents a gradient; the default), one without (`k_aux=0`).

# %%
from collections import Counter

x_eval = data.x_BD[:8192].to(device)
rows = []
for k_aux in (None, 0):
    run = train_toy(k=2, n_latents=2 * N_FEATURES, k_aux=k_aux)
    codes = run["sae"].encode(x_eval)
    dense = torch.zeros(len(x_eval), 2 * N_FEATURES, device=device).scatter(-1, codes.top_idx_BK, codes.top_acts_BK)
    roles = Counter(roles_of(run["sae"].W_dec.detach().cpu(), F, dense.detach().cpu()))
    rows.append({"AuxK": "on" if k_aux is None else "off",
                 **{role: roles[role] for role in ("feature", "duplicate", "dead", "other")},
                 "recovered (cos >= 0.9)": run["recovered (cos >= 0.9)"], "nmse": run["nmse"]})
pd.DataFrame(rows).round(3)

# %% [markdown]
# Reading it: the four counts add up to the 512 latents, and "feature" is at most 256 (one latent per true feature);
# compare it with 256 x the recovered fraction, which also counts a feature whose best-aligned row belongs to a dead
# latent. The 256 spare latents have to go somewhere. In our full-size run (2026-12-04) almost all of them died: with
# AuxK 256 features, 0 duplicates, 256 dead and 0 other; without it 256, 0, 245 and 11. No spare latent became a
# duplicate (a second latent on a feature already found): once a feature has its latent, TopK's competition for the
# k slots leaves a near-copy nothing to win, and the alive spares end as "other" (blends that match no single
# feature). Duplicates appear when k is large or the features are less distinct; try `ToyConfig` settings to find
# them.
#
# With 512 latents for 256 true features, some latents have nothing to do, and a large fraction never fires
# whether or not AuxK is on. Which of the two rows has fewer dead latents varies with the size and seed of this small run (it
# has gone both ways), so do not read a winner into it: here dead latents are *spare capacity*, not a failure. In a language
# model there is no such ceiling (more latents keep finding finer features), so a dead latent is wasted
# compute: the paper (section 2.4) finds up to 90% dead latents in its ablations when neither AuxK nor the
# transpose initialisation is used (Figure 15), and with both only 7% dead in its 16M-latent SAE. Notebook 02 trains
# the same settings on real activations.
#
# The same toy has options that are off here: `ToyConfig(n_parents=..., children_per_parent=...)` adds a hierarchy
# (child features that fire only inside their parent), `zipf_exponent` Zipf-like frequencies and `correlated_pairs`
# features that fire together. On such data one latent can do the work of two ("feature absorption"); notebook 08
# counts it exactly.
#
# ## Recap
# - An SAE rewrites each input as a sparse sum of decoder rows; TopK sets the sparsity (L0 ≤ k) directly.
# - On data with known features it finds them, measured by the max cosine between true features and decoder rows.
# - k trades reconstruction against clean features; too many latents for the data leaves the spares dead (255 of 256
#   in our run) or as blends, which the true features let us count latent by latent.
#
# ## Check your understanding
# 1. Why can 256 directions be stored in 64 dimensions at all, and what would break if every feature were
#    active in every sample?
#    <details><summary>Answer</summary>Nearly-orthogonal directions overlap only a little; when only a few are
#    active, the interference between them is small and a sparse code can tell them apart. If all were active,
#    the 64-dimensional vector could not determine 256 coefficients.</details>
# 2. Why is `feature_recovery` a max over decoder rows rather than over true features?
#    <details><summary>Answer</summary>The question is "did the SAE find feature i?": any one latent is
#    enough. The other direction ("is latent j a true feature?") is a different, also useful, score: exercise 0.2
#    answers it, and it is what tells a duplicate or a dead latent from a found feature.</details>
# 3. With k = 1 the error is high but features can still be recovered. Why?
#    <details><summary>Answer</summary>Each sample must be explained by a single decoder row, so each row is
#    pulled towards the feature that most often dominates the samples it wins: the directions are right even
#    though one row cannot rebuild a sum of several.</details>
# 4. What happens to a dead latent's weights under plain gradient descent, can it come back, and what does AuxK change?
#    <details><summary>Answer</summary>A latent that never fires has zero activation, so its own encoder and
#    decoder rows get no gradient and stay where they are. Under TopK it can still come back: its pre-activation
#    depends on $b_{pre}$, and whether it wins a place in the top k depends on every other latent's
#    pre-activation, so as those weights move it may enter the top k for some input; but nothing pushes it there.
#    AuxK makes the top dead latents reconstruct the main model's error, which gives them a gradient towards
#    inputs they can explain and raises their pre-activations until they win places in the top k. (Exercise 2.6's
#    check builds a case where 96 of 128 latents start dead: in our runs saelab's `Trainer` brought 94% of them back
#    with AuxK and none without.)</details>
#
# Next: **01 · Harvesting activations** takes the same idea to a real language model.
