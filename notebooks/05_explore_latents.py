# ---
# jupyter:
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 05 · Exploring latents
#
# After training comes looking. This notebook opens a dashboard over the TopK SAE's latents (in the spirit of
# Neuronpedia's feature pages and sae_vis), helps you find latents worth reading, and teaches how to judge whether one is
# *interpretable* rather than a story you told yourself.
#
# **Prerequisites**: notebooks 02 and 03 (a trained SAE; N2G explanations, precision and recall).
#
# **What you will learn**
# 1. what the explorer shows: activation density over all latents, a latent's activation histogram, its direct effect
#    on the output logits, its top examples and samples from every activation range, its N2G explanation;
# 2. how to find candidate latents (search by token, by a text's strongest latents, or by N2G score);
# 3. a checklist for judging a latent, and how to share one as a static HTML page;
# 4. in exercises: a latent's top activations by hand (5.1), then find a latent for a concept and test that
#    explanation on text from another corpus (5.2).
#
# **Paper**: Gao et al. (2024), section 4.3 (N2G explanations: precision and recall of an explanation on held-out
# text) and appendix on visualisations; the dashboards follow Neuronpedia and sae_vis.
#
# **Time** (measured on a 2-core CPU, 2026-11-29; `scripts/run_series.py`): about a minute in fast mode (`SAELAB_FAST=1`) and 2.8 minutes at full size, computing the latent statistics
# (stored next to the SAE, then reused).
# GPU: not measured yet (no GPU was lent while these were measured); `DEVICE = "auto"` uses one when present.
# **Data**: the figures quoted here were measured on saelab 0.2's Wikipedia-only zoo; since 0.3 the zoo trains
# on the English mixture (README, "Training data and other registers"), so a full-size run's numbers will differ.

# %% tags=["parameters"]
# Parameters
import os

FAST = os.environ.get("SAELAB_FAST", "") not in ("", "0", "false")
SAE_FOLDER = None                          # None: the zoo's TopK SAE; or e.g. "runs/default/sae"
STATS_CONTEXTS = 48 if FAST else 512       # held-out contexts of 64 tokens for the statistics
N2G_LATENTS = 64 if FAST else 512          # latents given an N2G explanation
START_LATENT = None                        # None: start at the densest latent
NEW_TEXT_CONTEXTS = 32 if FAST else 128    # news contexts to test an explanation on (exercise 5.2)
DEVICE = "auto"                            # "auto": CUDA when present, else CPU

# %%
from pathlib import Path

import torch

from saelab.interp.latent_stats import StatsConfig, latent_stats_for
from saelab import SAE, load_lm, resolve_device, zoo_sae

device = resolve_device(DEVICE)
if SAE_FOLDER:
    sae, sae_dir = SAE.load(SAE_FOLDER, device=device), Path(SAE_FOLDER)
else:
    sae, run_dir = zoo_sae("topk", device=device)
    sae_dir = run_dir / "sae"
lm = load_lm(sae.cfg.model, device=device)
stats = latent_stats_for(lm, sae, sae_dir, StatsConfig(n_contexts=STATS_CONTEXTS))
print(f"{stats.n_latents} latents; statistics over {stats.config['n_valid_tokens']} held-out tokens; "
      f"dead (never fired there): {int((stats.density_N == 0).sum())}")

# %% [markdown]
# ## N2G explanations for a sample of latents
#
# Notebook 03 explains N2G: the shortest n-grams that make a latent fire, checked on held-out text. Here they label the
# dashboard. They are built on training text and scored on the statistics' held-out text.

# %%
from saelab import ContextConfig, build_contexts, encode_contexts, load_corpus
from saelab.evals.n2g import n2g_evaluation

build_tokens = torch.from_numpy(build_contexts(load_corpus("wiki-en"), lm.tokenizer, ContextConfig(), "train",
                                               96 if FAST else 512).tokens_NT).long()
n2g = n2g_evaluation(encode_contexts(lm, sae, build_tokens), stats.codes, n_latents=N2G_LATENTS, tokenizer=lm.tokenizer)
explanations = {r["latent"]: f"{r['explanation']}  (held-out F1 {r['f1']:.2f})" for r in n2g["rows"] if r["n_ngrams"]}
print(f"{len(explanations)} of {len(n2g['rows'])} sampled latents have an n-gram explanation")

# %% [markdown]
# ## The explorer
#
# Type an index or use ◀ ▶; search latents by a token (`' Paris'`) or type a sentence in *by text* to jump to its
# strongest latent. The *Try your own text* box runs the model and the SAE live and highlights the chosen latent.
# Hover a token to see its activation.

# %%
from saelab import LatentExplorer

explorer = LatentExplorer(lm, sae, stats, explanations=explanations, start=START_LATENT)
explorer

# %% [markdown]
# ## Finding interpretable latents
#
# Good candidates fire rarely (density well under 10%) and have a precise N2G explanation on held-out text. The table
# ranks the explained latents; pick one and show it in the explorer above.

# %%
import pandas as pd

rows = [dict(r, density=float(stats.density_N[r["latent"]])) for r in n2g["rows"]
        if r["n_ngrams"] and r["heldout_active"] >= 3 and r["f1"] == r["f1"]]
table = pd.DataFrame(rows)
if len(table):
    table = table[table.density < 0.1].sort_values("f1", ascending=False)
    best = int(table.latent.iloc[0]) if len(table) else int(stats.density_N.argmax())
else:
    best = int(stats.density_N.argmax())
explorer.show(best)
table.head(10)[["latent", "f1", "precision", "recall", "density", "explanation"]].round(3) if len(table) else table

# %% [markdown]
# ### Exercise 5.1 — a latent's top activations (5 min, easy)
# The dashboard's *top examples* are just the largest entries of the latent's activations over all contexts,
# `acts_NT` of shape `[contexts, positions]`. Return the `m` largest as (context, position) pairs, strongest first.

# %%
from saelab.teach.exercises import check_top_activations, graded, solutions, todo


def top_activations(acts_NT: torch.Tensor, m: int) -> list[tuple[int, int]]:
    """The m (context, position) pairs with the largest activations, strongest first."""
    # YOUR CODE HERE (about 3 lines), then delete the next line
    todo("5.1")


check_top_activations(graded(top_activations, solutions.top_activations))
acts_NT = stats.latent_values(best)
tok = lm.tokenizer
for c, t in graded(top_activations, solutions.top_activations)(acts_NT, 5):
    ids = stats.codes.tokens_NT[c]
    print(f"{float(acts_NT[c, t]):6.2f}  ...{tok.decode(ids[max(0, t - 8):t])!r} [{tok.decode(ids[t:t + 1])!r}]")

# %% [markdown]
# <details><summary>Solution</summary>
#
# ```python
# T = acts_NT.shape[1]
# flat = acts_NT.flatten().topk(m).indices
# return [(int(i) // T, int(i) % T) for i in flat]
# ```
# </details>
#
# ### Exercise 5.2 — find a latent for a concept, then test it on new text (20 min, medium)
# An explanation is a prediction: "this latent fires on digits". Score it like N2G does, with **precision** (of the
# tokens the explanation predicts, the fraction where the latent fires) and **recall** (of the tokens where the latent
# fires, the fraction the explanation predicted). Write `precision_recall`, then the cells below use it to pick the
# best latent for a concept on the statistics' Wikipedia text and to test that choice on held-out news articles
# (another corpus, and documents the SAE never trained on: a stricter test than held-out Wikipedia).

# %%
from saelab.teach.exercises import check_precision_recall


def precision_recall(acts_T: torch.Tensor, predicted_T: torch.Tensor) -> tuple[float, float]:
    """(precision, recall) of a per-token prediction (bool) against where the latent fires (activation > 0)."""
    # YOUR CODE HERE (about 4 lines), then delete the next line
    todo("5.2")


check_precision_recall(graded(precision_recall, solutions.precision_recall))

# %% [markdown]
# <details><summary>Solution</summary>
#
# ```python
# fires, pred = acts_T > 0, predicted_T.bool()
# both = float((fires & pred).sum())
# return both / max(1, int(pred.sum())), both / max(1, int(fires.sum()))
# ```
# </details>

# %%
import numpy as np

pr = graded(precision_recall, solutions.precision_recall)


def concept(token: str) -> bool:
    """The concept to look for; change it (e.g. a capitalised word start, a month name)."""
    return token.strip().isdigit()


def concept_mask(tokens_NT) -> torch.Tensor:
    is_c = np.array([concept(tok.decode([i])) for i in range(len(tok))])
    return torch.from_numpy(is_c[np.asarray(tokens_NT)])


def latent_acts(codes, latent: int) -> torch.Tensor:
    """One latent's activation at every valid position of `codes` (0 where it did not fire)."""
    return codes.latent_values(latent)[codes.valid_NT]


def mean_acts(codes, rows: torch.Tensor) -> torch.Tensor:
    """Every latent's mean activation over the chosen valid positions [n] (sparse sums, no dense matrix)."""
    v = codes.valid_NT
    idx, acts = codes.idx_NTK[v][rows], codes.acts_NTK[v][rows].float()
    return torch.zeros(sae.cfg.n_latents).index_add_(0, idx.flatten(), acts.flatten()) / max(1, int(rows.sum()))


pred = concept_mask(stats.codes.tokens_NT)[stats.codes.valid_NT]
# candidates: the 20 latents whose mean activation is highest on the concept's tokens relative to the rest
candidates = (mean_acts(stats.codes, pred) - mean_acts(stats.codes, ~pred)).topk(20).indices.tolist()
f1 = lambda p, r: 2 * p * r / (p + r) if p + r else 0.0
scored = sorted(((f1(*pr(latent_acts(stats.codes, j), pred)), j) for j in candidates), reverse=True)
chosen = scored[0][1]
p_in, r_in = pr(latent_acts(stats.codes, chosen), pred)
print(f"{int(pred.sum())} concept tokens of {len(pred)}; best latent {chosen}: precision {p_in:.2f}, recall {r_in:.2f} "
      "on the Wikipedia text it was chosen on")

# %%
from saelab import ContextConfig, build_contexts, encode_contexts, load_corpus

news = torch.from_numpy(build_contexts(load_corpus("news"), lm.tokenizer, ContextConfig(), "heldout",
                                       NEW_TEXT_CONTEXTS).tokens_NT).long()
news_codes = encode_contexts(lm, sae, news)
nv = news_codes.valid_NT
p_new, r_new = pr(latent_acts(news_codes, chosen), concept_mask(news)[nv])
print(f"on {int(nv.sum())} news tokens: precision {p_new:.2f}, recall {r_new:.2f} (chosen on Wikipedia: "
      f"{p_in:.2f}, {r_in:.2f})")
explorer.show(chosen)

# %% [markdown]
# **Reading it.** If precision and recall hold on the news text, "latent `chosen` = the concept" is a prediction
# that generalises; if recall drops, the latent covers only part of the concept (check its quantile samples above);
# if precision drops, it also fires elsewhere, and the concept names only its most common case. The latent was picked
# on the same text that first scored it, so the Wikipedia numbers are optimistic: the news numbers are the honest
# ones.
#
# ## How to judge a latent
#
# Ask these questions of the dashboard, in this order; a latent earns the word *interpretable* only if it passes them.
#
# 1. **Top examples agree.** Do the top activations share one thing you can name (a token, a phrase, a topic, a syntactic
#    role)? If they are a mix, stop: it is polysemantic or you are seeing noise.
# 2. **The name holds at low activations.** Open *quantile intervals*: the lowest intervals are where explanations fail.
#    If only the top decile fits your name, your name describes the tail, not the latent.
# 3. **It predicts, not just describes.** Write text that should and should not activate it in *Try your own text*. A
#    good explanation lets you predict both; the N2G F1 is the automated version of this test (low recall = the latent
#    does more than its n-grams).
# 4. **Density is plausible.** A latent firing on more than ~10% of tokens (dense, right of the red line) is rarely a
#    single concept; one firing almost never is hard to evaluate from a sample this size.
# 5. **Its output makes sense.** The logit effects show what the decoder direction pushes the model toward directly. A
#    "year" latent that promotes digits is coherent; unrelated tokens suggest the latent's role is indirect.
#
# Beware of confirmation: look at the quantile samples *before* reading the N2G explanation.
#
# ## Sharing one latent
#
# Widgets need a live kernel. `export_latent_html` writes one latent's dashboard as a self-contained HTML file
# (plotly inlined) that opens anywhere.

# %%
import tempfile

from saelab.interp.dashboard import export_latent_html

page = export_latent_html(lm, sae, stats, explorer.current, Path(tempfile.mkdtemp()) / f"latent_{explorer.current}.html",
                          explanation=explanations.get(explorer.current))
print(f"wrote {page} ({page.stat().st_size // 1024} KiB)")

# %% [markdown]
# ## Recap
# - The explorer shows density, activation histogram, logit effects, top and quantile examples and an N2G
#   explanation for each latent; candidates are rare latents with precise explanations.
# - A latent's name is a hypothesis: test it with precision and recall on text it was not chosen on.
# - Judge latents with the checklist (top examples agree, the name holds at low activations, it predicts, density is
#   plausible, the output makes sense), looking at samples before explanations.
#
# ## Check your understanding
# 1. Why are a latent's top examples not enough to name it?
#    <details><summary>Answer</summary>They show only the strongest tail; most of the latent's firing is at lower
#    activations, where the name often fails (quantile samples show it).</details>
# 2. A latent has precision 0.9 and recall 0.3 for "digits". Is it a "digit latent"?
#    <details><summary>Answer</summary>Precision 0.9: of the digit tokens, 90% make it fire, so "digits make it
#    fire" holds. Recall 0.3: only 30% of its firing is on digits, so it is not a digit latent: 70% of what it does is
#    something else, which the quantile samples should show.</details>
# 3. Why test on news text after choosing on Wikipedia text?
#    <details><summary>Answer</summary>Choosing the best of 20 latents on one text overfits to it; a different
#    corpus tests whether the description generalises beyond the text and style it was found on.</details>
# 4. What does a latent with density 30% usually turn out to be?
#    <details><summary>Answer</summary>Rarely one concept: dense latents often track position, formatting or broad
#    context, and are hard to name or to test.</details>
