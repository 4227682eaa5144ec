# ---
# jupyter:
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 04 · Progressive recovery and activation shrinkage
#
# Section 5 of Gao et al. (2024) asks what happens when an SAE trained at one sparsity is *run* at another:
#
# - **TopK(k′)** — keep the k′ largest pre-activations instead of k. Does reconstruction keep improving as more latents
#   are let in (*progressive recovery*)? The paper (section 5.3, Figure 10) finds that a plain TopK SAE gives a
#   progressive code only up to the k it was trained with: past k, more latents stop improving its reconstruction (it
#   has learned to work with exactly k latents). In saelab's own runs the curve still falls a little past k, to its
#   lowest near 2k, and then rises: that 2k is our measurement, not the paper's.
# - **JumpReLU(θ)** — keep every pre-activation above a threshold θ: a variable number of latents per token.
# - **Multi-TopK** — train with $L(k) + L(4k)/8$ so the SAE must also be good at 4k. The paper (section 5.3) finds
#   this gives a progressive code over all k′.
# - **Shrinkage** (section 5.1) — with the set of active latents fixed, are the activations the best ones? An L1 penalty
#   pulls them toward zero; TopK has no such pull, though its activations need not be exactly optimal either.
#
# You will train (or load) TopK, Multi-TopK and ReLU + L1 SAEs, plot the L0–MSE curves (the paper's Figure 10), measure
# shrinkage, and read which of the paper's findings reproduce at this small scale.
#
# **Prerequisites**: notebooks 02 (TopK, AuxK, normalized MSE) and 03 (how SAEs are compared).
#
# **What you will learn**: test-time activations (TopK(k′), JumpReLU) and what progressive recovery means;
# Multi-TopK; activation shrinkage; and, in exercises, to decode an SAE at another k yourself (4.1) and to set a
# JumpReLU threshold for a target L0 (4.2).
#
# **Paper**: Gao et al. (2024), section 5 (5.1 shrinkage, 5.3 progressive recovery and Multi-TopK, Figure 10). What
# 5.3 says about TopK(k′) and Multi-TopK follows third-party quotations of its text; the claims of 5.1 (shrinkage) and
# that Multi-TopK costs a little at k we could not check against the paper's text.
#
# **Learner time**: about 29 minutes (14 reading at ~130 words a minute, 15 for the essential exercises; the optional ones add 10), beside the compute time below.
#
# **Time** (measured on a 2-core CPU, 2026-12-02; `scripts/run_series.py` from an empty cache): about 3 minutes in
# fast mode (`SAELAB_FAST=1`) and 4.6 minutes at full size after notebooks 02 and 03, of which 2.3 minutes train the
# course's Multi-TopK SAE the first time (cached under `$SAELAB_HOME/saes`; the TopK and ReLU + L1 SAEs come from
# notebooks 02 and 03).
# GPU: not measured yet (no GPU was lent while these were measured); `DEVICE = "auto"` uses one when present.
# The same tables come from `saelab sweep --zoo topk,multi_topk` (on the 13-epoch zoo, or any `--sae DIR`).
# **Data**: the course's SAEs (the main job's recipe on the English mixture for 4 epochs, notebook 02); the figures
# quoted below are from our full-size run of this notebook (2026-12-02).

# %% tags=["parameters"]
# Parameters
import os

FAST = os.environ.get("SAELAB_FAST", "") not in ("", "0", "false")
KS = None                  # None: k/4 .. 8k on a half-octave grid; or a list that includes k, 4k and 8k
DELTA_LOSS_CONTEXTS = 0 if FAST else 16   # also splice each point into the LM (0: skip; slow on CPU)
SHRINKAGE_TOKENS = 500 if FAST else 2000
DEVICE = "auto"            # "auto": CUDA when present, else CPU

# %%
import torch

from saelab import resolve_device
from saelab.course import course_sae
from saelab.presets import default_caches

device = resolve_device(DEVICE)
saes = {"TopK": course_sae("topk", device=device)[0], "Multi-TopK": course_sae("multi_topk", device=device)[0]}
relu = course_sae("relu", device=device)[0]
_, held_cache = default_caches()
x = torch.cat([held_cache.read_shard(i)["acts"].float() for i in range(len(held_cache.shard_sizes))]).to(device)
print(f"{len(x)} held-out activations; SAEs: n={saes['TopK'].cfg.n_latents}, trained k={saes['TopK'].cfg.k}")

# %% [markdown]
# ### Exercise 4.1 — the TopK(k′) curve and where it turns (medium, essential, 15 min)
# A TopK SAE trained at k can be *run* at any k′: keep its k′ largest pre-activations instead of k. Progressive
# recovery is a question about the curve this traces, normalized MSE against k′: does it keep falling as more
# latents are let in, and if not, where does it turn?
#
# Write `recovery_curve`: for each k′ in `ks`, decode the batch with k′ latents exactly as the SAE's own TopK would,
# score the reconstruction against `x_BD` (the SAE's normalised input) with notebook 02's normalized MSE, and return
# a pair: the list of scores (Python floats), one per k′ in the order of `ks` as given (which need not be sorted, and
# may include 1 and n), and the k′ where the curve turns (an int taken from `ks`, not its position in `ks`): its
# lowest point. When several k′ share the lowest score (equal up to rounding, e.g. a curve that is flat once the ReLU
# zeroes every extra latent), return the one that comes first in `ks` as given. You get the pre-activations, so the
# encoder is done for you; saelab stores $W_{dec}$ as `[n, d]`, one row
# per latent. The cell then draws the curve of both SAEs over the sweep's grid (k/4 to 8k).

# %%
from saelab.teach.exercises import check_recovery_curve, todo
from saelab.sae.losses import normalized_mse
from saelab.studies.progressive_recovery import default_ks


def recovery_curve(pre_BN, x_BD, W_dec_ND, b_pre_D, ks):
    """(list of floats: the normalized MSE at each k' of ks, in ks's order; int: the k' of the lowest one, the first
    in ks's order on a tie); x_BD in the SAE's normalised space."""
    # YOUR CODE HERE (about 8 lines), then delete the next line
    todo("4.1")


# The check returns the function it graded (yours; the reference under SAELAB_SOLUTIONS=1).
curve_of = check_recovery_curve(recovery_curve)
k = saes["TopK"].cfg.k
ks = KS or default_ks(k, saes["TopK"].cfg.n_latents)
with torch.no_grad():
    for name, s in saes.items():
        x_s, _ = s.preprocess(x)
        curve, turn = curve_of(s.pre_acts(x_s), x_s, s.W_dec, s.b_pre, ks)
        lib = float(normalized_mse(s.decode_normalized(*s.encode(x, k=turn)[:2]), x_s))
        print(f"{name:10s} " + "  ".join(f"{k2}: {v:.3f}" for k2, v in zip(ks, curve)))
        print(f"{'':10s} turns at k'={turn} (trained k={k}); saelab's own TopK({turn}) decode: {lib:.3f}")
    sae = saes["TopK"]
    x_n, _ = sae.preprocess(x)
    pre = sae.pre_acts(x_n)  # the TopK SAE's pre-activations, for exercise 4.2

# %% [markdown]
# <details><summary>Hint</summary>
#
# The top-k sets are nested: the k′ largest values of a row are the first k′ of its k″ largest for any k″ ≥ k′, and
# `topk` returns them sorted. So one `topk` at `max(ks)` serves every k′: slice the first k′ columns of its values and
# indices. What the SAE does after the top-k (one activation function, then the decoder with its bias) you know from
# notebook 02, and so does `normalized_mse` (imported above; it divides by the error of predicting the mean of x).
# </details>
#
# <details><summary>Solution</summary>
#
# ```python
# top = pre_BN.topk(max(ks), dim=-1)                # sorted: TopK(k') is the first k' of them
# curve = []
# for k in ks:
#     z = torch.zeros_like(pre_BN).scatter(-1, top.indices[:, :k], top.values[:, :k].relu())
#     curve.append(float(normalized_mse(z @ W_dec_ND + b_pre_D, x_BD)))
# lowest = min(range(len(ks)), key=lambda i: (curve[i], i))
# return curve, ks[lowest]
# ```
# </details>
#
# **Reading it.** The paper (section 5.3) finds the plain TopK code progressive only up to the trained k: the SAE
# learned to rebuild activations from exactly k latents, and past k the extra ones stop helping. The Multi-TopK SAE
# was also trained at 4k, and the paper finds its code progressive over all k′. In our run (saelab's measurement,
# not the paper's) the TopK SAE went from 0.182 at k = 32 to its lowest, 0.166, at k′ = 64 = 2k and back up to 0.176
# at 256: it turns, but past k, not at k. The Multi-TopK SAE, 0.182 at k, kept falling to 0.126 at 256. Part 2
# tests both claims on the sweep's numbers.
#
# ### Exercise 4.2 — a JumpReLU threshold for a target L0 (medium, optional, 10 min)
# JumpReLU keeps every pre-activation above one threshold θ, so tokens get different numbers of latents. Write
# `threshold_for_l0`: the single θ (shared by all tokens and latents) that gives a target L0 **on average over the
# tokens** of a batch, not on every token. A pre-activation counts as active when it is strictly above θ
# (`pre > θ`, as JumpReLU keeps it); `target_l0` may be fractional (an average), and n is `pre_BN.shape[-1]`. Return a
# Python float. The check's values are continuous (no ties), so `>` or `≥` and any quantile convention agree: it
# accepts one value more or fewer above θ over the whole batch. The cell sets it on calibration tokens and measures
# the L0 it gives on
# other tokens.

# %%
from saelab.teach.exercises import check_threshold_for_l0
from saelab.studies.progressive_recovery import jumprelu_thresholds


def threshold_for_l0(pre_BN: torch.Tensor, target_l0: float) -> float:
    """One threshold theta with, on average, target_l0 pre-activations above it per row."""
    # YOUR CODE HERE (2 lines), then delete the next line
    todo("4.2")


threshold_of = check_threshold_for_l0(threshold_for_l0)
half = min(len(pre) // 2, 4096)  # torch.quantile takes at most 2^24 values: 4096 tokens x 4096 latents
calib, rest = pre[:half].cpu(), pre[half:].cpu()
theta = threshold_of(calib, float(k))
l0_rest = (rest > theta).sum(-1).float()
print(f"theta {theta:.4f} (saelab: {jumprelu_thresholds(sae, x[:half], [float(k)])[0]:.4f}); "
      f"L0 on the other half: mean {float(l0_rest.mean()):.1f}, from {int(l0_rest.min())} to {int(l0_rest.max())} per token")

# %% [markdown]
# <details><summary>Hint</summary>
#
# Count what should end up above θ: a batch of B tokens has B·n pre-activations, and an average L0 means B·L0 of them
# above θ, a fixed fraction of all the values whatever B is. Which statistic of a set of numbers has a given fraction
# of them above it? Flatten first, so the threshold is shared by every token.
# </details>
#
# <details><summary>Solution</summary>
#
# ```python
# n = pre_BN.shape[-1]
# return float(torch.quantile(pre_BN.flatten().double(), 1 - target_l0 / n))
# ```
# (`torch.quantile` accepts at most 2^24 elements: the cell above calibrates on 4,096 tokens; subsample larger batches.)
# </details>
#
# ## 1 · TopK(k′) and JumpReLU sweeps
#
# `sweep` evaluates every SAE at each test-time activation and returns one row per point. JumpReLU thresholds are
# picked from the quantiles of the pre-activations so that its L0 covers the same range as the TopK sweep; they are
# chosen on calibration tokens (the first 4,096 held-out activations, or a quarter of them if fewer) that are left out of the scoring, so
# no threshold is fitted on the tokens it is judged on (`n_scored` in the table).

# %%
from saelab.studies.progressive_recovery import sweep, sweep_figure

lm = tokens = None
if DELTA_LOSS_CONTEXTS:
    from saelab import ContextConfig, build_contexts, load_corpus, load_lm

    lm = load_lm(saes["TopK"].cfg.model, device=device)
    tokens = torch.from_numpy(build_contexts(load_corpus("wiki-en"), lm.tokenizer, ContextConfig(), "heldout",
                                             DELTA_LOSS_CONTEXTS).tokens_NT).long()
df = sweep(saes, x, ks=KS, lm=lm, tokens_NT=tokens)
sweep_figure(df).show()
df.pivot_table(index="param", columns=["sae", "activation"], values=["l0", "nmse"]).round(4).head(12)

# %% [markdown]
# ## 2 · Which findings reproduce?
#
# The cell below checks the paper's claims on *these* curves and says so in words, so the conclusion follows the data
# you just computed (rerun at full size and it may change). It compares the **shape** of each curve, not Multi-TopK
# against TopK at 4k: Multi-TopK is trained at 4k, so it wins there by construction.

# %%
import numpy as np


def curve(name, act):
    d = df[(df.sae == name) & (df.activation == act)].sort_values("l0")
    return d.l0.to_numpy(), d.nmse.to_numpy(), d.param.to_numpy()


k = saes["TopK"].cfg.k
missing = {k, 4 * k, 8 * k} - set(int(v) for v in df.param[df.activation == "topk"])
if missing:
    raise ValueError(f"the findings compare k, 4k and 8k; add {sorted(missing)} to KS (or set KS = None)")
findings = []
for name in saes:
    l0, nmse, ks = curve(name, "topk")
    at = dict(zip(ks, nmse))
    within = ks[(ks >= k) & (ks <= 8 * k)]
    best_k = int(within[np.argmin([at[v] for v in within])])
    findings.append(f"{name}: normalized MSE {at[k]:.3f} at k={k}, best {at[best_k]:.3f} at k'={best_k}, "
                    f"{at[ks.max()]:.3f} at k'={int(ks.max())}.")
t_l0, t_nmse, t_ks = curve("TopK", "topk")
t_at = dict(zip(t_ks, t_nmse))
t_best = int(t_ks[(t_ks >= k)][np.argmin(t_nmse[t_ks >= k])])
turns = t_at[8 * k] > t_at[t_best]
findings.append(f"Paper 5.3: plain TopK gives a progressive code only up to the k it was trained with. Here its best k' "
                f"is {t_best} ({t_at[t_best]:.3f} vs {t_at[k]:.3f} at k) and 8k gives {t_at[8 * k]:.3f} -> "
                + ("reproduced: it stops improving at k." if turns and t_best == k else
                   f"partly reproduced: it turns, but past k, at {t_best / k:g}k (saelab's own runs turned near 2k)."
                   if turns else "NOT reproduced: it keeps improving up to 8k."))
m_l0, m_nmse, m_ks = curve("Multi-TopK", "topk")
m_at = dict(zip(m_ks, m_nmse))
upto = [m_at[v] for v in m_ks if k <= v <= 4 * k]
m_mono = bool(np.all(np.diff(upto) <= 0.01 * m_at[k]))
findings.append("Paper 5.3: Multi-TopK keeps improving as k' grows (progressive recovery). Here from k to 4k it "
                + ("keeps falling" if m_mono else "does not keep falling")
                + f" ({m_at[k]:.3f} -> {m_at[4 * k]:.3f}); beyond its training range, at 8k: {m_at[8 * k]:.3f} -> "
                + ("reproduced." if m_mono and m_at[8 * k] <= m_at[4 * k] * 1.01 else "partly reproduced."
                   if m_mono else "NOT reproduced."))
costs = m_at[k] > t_at[k] * 1.005  # more than half a percent: below that, one seed cannot tell them apart
findings.append(f"Paper (as saelab reads 5.3; not checked against its text): Multi-TopK costs a little at k itself. Here at k: TopK {t_at[k]:.4f} vs Multi-TopK {m_at[k]:.4f}"
                " -> " + ("reproduced." if costs else "not seen at this scale (within 0.5%, one seed)."
                          if m_at[k] >= t_at[k] * 0.995 else "not seen (Multi-TopK is better at k)."))
for name in saes:
    l0_t, n_t, _ = curve(name, "topk")
    l0_j, n_j, _ = curve(name, "jumprelu")
    at = np.interp(np.log(l0_j), np.log(l0_t), n_t)
    share = float(np.mean(n_j < at))
    findings.append(f"{name}: JumpReLU beats TopK(k') at equal L0 on {share:.0%} of the points.")
print("\n".join(findings))

# %% [markdown]
# ## 3 · Activation shrinkage (paper section 5.1)
#
# Fix each token's support (the latents that fire) and re-fit their activations by projected gradient descent on the
# reconstruction error with $z \ge 0$. If the SAE's activations were already optimal, nothing moves. An L1 penalty
# systematically *shrinks* activations, so the refined ones grow and MSE drops; the paper finds TopK shows much less of
# this.

# %%
from saelab.studies.progressive_recovery import shrinkage_table

shrink = shrinkage_table({**saes, "ReLU+L1": relu}, x[:SHRINKAGE_TOKENS])
shrink.round(4)

# %%
import plotly.graph_objects as go

fig = go.Figure(go.Bar(x=shrink.sae, y=shrink.act_growth, text=[f"MSE -{v:.0%}" for v in shrink.nmse_improvement],
                       textposition="outside"))
fig.add_hline(y=1.0, line_dash="dash", annotation_text="no shrinkage")
fig.update_layout(yaxis_title="refined / original activation mass", title="How much activations grow when refined",
                  height=380)
fig.show()

# %% [markdown]
# **Reading it.** `act_growth` is the total refined activation divided by the SAE's own (1 means no shrinkage);
# `nmse_improvement` is how much of the reconstruction error the refinement removes with the *same* latents. A large
# growth for ReLU + L1 and a small one for TopK is the paper's finding; the refinement never changes which latents fire,
# so it says nothing about the choice of support (section 5.1; the paper's own numbers are not quoted here). In our run:
# TopK 1.020 (median 1.013), Multi-TopK 1.032, ReLU + L1
# 1.881 (median 3.21), and the refinement removed 6% of TopK's error against 21% of ReLU + L1's.
#
# ## Recap
# - A TopK SAE is tuned to its k: the paper finds its code progressive only up to k (section 5.3); in our runs it
#   still improved a little past k, to about 2k, and then worsened (saelab's measurement). A Multi-TopK SAE keeps
#   improving over a range of sparsities, which lets one SAE serve several L0 budgets at test time.
# - JumpReLU on a TopK-trained SAE gives a variable number of latents per token at a matched average L0.
# - TopK shows far less activation shrinkage than an L1 penalty causes (a percent or two against tens of percent).
# - Small SAEs trained on a few hundred thousand tokens show these effects more weakly than the paper's; rerun with
#   `FAST=False` and compare the words the analysis cell prints.
#
# ## Check your understanding
# 1. Why is "Multi-TopK beats TopK at k′ = 4k" no evidence for progressive recovery?
#    <details><summary>Answer</summary>Multi-TopK is trained with a loss at 4k, so it is expected to be better
#    there; progressive recovery is about the shape of the curve (does more budget keep helping?), beyond the
#    points the loss trained.</details>
# 2. Why does a plain TopK SAE get worse at large k′?
#    <details><summary>Answer</summary>Its decoder learned to rebuild activations from exactly k latents; the
#    extra latents it lets in have pre-activations the training never had to make harmless, and they add error.</details>
# 3. A JumpReLU threshold is set for an average L0 of 32. Why do individual tokens get very different L0s?
#    <details><summary>Answer</summary>One threshold applies to all tokens; tokens with many large
#    pre-activations (dense contexts) exceed it more often than simple ones.</details>
# 4. After refining activations on a fixed support, the ReLU + L1 SAE's activations grow by 88% and TopK's by 2%.
#    What does that say?
#    <details><summary>Answer</summary>The L1 penalty shrinks activations below their best values; TopK has no such
#    penalty, so its activations are already close to the best for its chosen latents.</details>
