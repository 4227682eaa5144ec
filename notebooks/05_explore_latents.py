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
# text) and its appendix on visualisations; the dashboards follow Neuronpedia and sae_vis. How saelab scores an
# explanation (notebook 03) is its reading of section 4.3, not checked sentence by sentence against the paper's text;
# every figure quoted below is saelab's own measurement.
#
# **Learner time**: about 32 minutes (17 reading at ~130 words a minute, 15 for the essential exercises; the optional ones add 25), beside the compute time below.
#
# **Time** (measured on a 2-core CPU, 2026-12-02; `scripts/run_series.py` from an empty cache): about a minute in fast
# mode (`SAELAB_FAST=1`) and 1.1 minutes at full size after notebook 02, computing the latent statistics (stored next
# to the SAE, then reused).
# GPU: not measured yet (no GPU was lent while these were measured); `DEVICE = "auto"` uses one when present.
# **Data**: the course's TopK SAE (notebook 02: the main job's recipe on the English mixture for 4 epochs); the figures
# quoted below are from our full-size run of this notebook (2026-12-02).

# %% tags=["parameters"]
# Parameters
import os

FAST = os.environ.get("SAELAB_FAST", "") not in ("", "0", "false")
SAE_FOLDER = None                          # None: notebook 02's TopK SAE (the zoo's at the course's budget); or e.g. "runs/default/sae"
STATS_CONTEXTS = 48 if FAST else 512       # held-out contexts of 64 tokens for the statistics
N2G_LATENTS = 64 if FAST else 512          # latents given an N2G explanation
START_LATENT = None                        # None: start at the densest latent
NEW_TEXT_CONTEXTS = 32 if FAST else 128    # news contexts to test an explanation on (exercise 5.2)
DEVICE = "auto"                            # "auto": CUDA when present, else CPU

# %%
from pathlib import Path

import torch

from saelab.interp.latent_stats import StatsConfig, latent_stats_for
from saelab import SAE, course_sae, load_lm, resolve_device

device = resolve_device(DEVICE)
if SAE_FOLDER:
    sae, sae_dir = SAE.load(SAE_FOLDER, device=device), Path(SAE_FOLDER)
else:
    sae, run_dir = course_sae("topk", device=device)
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
# ### Exercise 5.1 — a dashboard's examples: the top and every activation range (medium, essential, 15 min)
# A dashboard shows two kinds of examples for a latent. Its **top examples** are its strongest activations; but a
# context where the latent fires on ten tokens in a row would fill them with one sentence, so each context appears
# once, at its strongest position. Its **quantile intervals** show the rest of the distribution, where names usually
# fail: rank the positions where the latent fires by activation, cut the ranking into `n_intervals` groups of equal
# size (lowest first), and show up to `per_interval` examples from each group, again at most one per context, chosen
# at random with a generator seeded by `seed` (the same seed shows the same examples).
#
# Write `dashboard_examples` for one latent's activations `acts_NT` (`[contexts, positions]`, 0 where it does not
# fire); examples are (context, position) pairs of ints. Return a pair `(top, intervals)`: `top` a list of at most
# `m` pairs (fewer when fewer contexts fire; never a position with activation 0), and `intervals` a list of exactly
# `n_intervals` lists of pairs. The details a dashboard has to settle:
# - Only positions with activation > 0 are ranked; when their number does not divide by `n_intervals`, the group
#   sizes differ by at most one (any placement of the extra ones is accepted).
# - "At most one per context" holds within each list: a context may appear in the top and in several intervals, but
#   twice in none. Each interval shows `min(per_interval, the number of distinct contexts in its group)` examples:
#   when a drawn position's context is already shown, draw another, so a burst in one context does not cost slots.
# - All the randomness comes from one `torch.Generator().manual_seed(seed)` (never torch's global random state): the
#   same seed gives the same examples, another seed (usually) other ones. The top examples are not random.
# - Ties between equal activations may be ordered either way.
#
# The cell then prints both for the latent picked above, as the explorer's *top examples* and *quantile intervals*
# panels show them.

# %%
from saelab.teach.exercises import check_dashboard_examples, todo


def dashboard_examples(acts_NT: torch.Tensor, m: int, n_intervals: int, per_interval: int, seed: int = 0):
    """(top: up to m (context, position) pairs, strongest first; intervals: n_intervals lists of pairs, lowest
    activations first); at most one pair per context in each list."""
    # YOUR CODE HERE (about 15 lines), then delete the next line
    todo("5.1")


# The check returns the function it graded (yours; the reference under SAELAB_SOLUTIONS=1).
examples_of = check_dashboard_examples(dashboard_examples)
acts_NT = stats.latent_values(best) * stats.codes.valid_NT
tok = lm.tokenizer
top, intervals = examples_of(acts_NT, 5, 4, 2)


def snippet(c: int, t: int) -> str:
    ids = stats.codes.tokens_NT[c]
    return f"{float(acts_NT[c, t]):6.2f}  ...{tok.decode(ids[max(0, t - 8):t])!r} [{tok.decode(ids[t:t + 1])!r}]"


print(f"latent {best}: top examples, one per context")
print("\n".join(snippet(c, t) for c, t in top))
for i, examples in enumerate(intervals):
    print(f"interval {i + 1} of {len(intervals)} (lowest activations first)")
    print("\n".join(snippet(c, t) for c, t in examples))

# %% [markdown]
# <details><summary>Hint</summary>
#
# The top: one `max` over the positions gives each context's strongest value and where it is; sort the contexts by
# that value and skip the ones where it is 0. The intervals: take the flat indices of the positions that fire
# (`nonzero` on the flattened tensor), order them by their activations (`argsort`) and cut the order with
# `torch.tensor_split`; a flat index `i` is context `i // T`, position `i % T`. Shuffle each group with `torch.randperm`
# (and a seeded `torch.Generator`), and keep a `set` of the contexts already shown.
# </details>
#
# <details><summary>Solution</summary>
#
# ```python
# N, T = acts_NT.shape
# best_v, best_t = acts_NT.max(dim=1)                      # each context's strongest position
# top = [(int(c), int(best_t[c])) for c in best_v.argsort(descending=True)[:m] if best_v[c] > 0]
# flat = acts_NT.flatten()
# fired = (flat > 0).nonzero().squeeze(1)
# ranked = fired[flat[fired].argsort()]                    # ascending activation
# g = torch.Generator().manual_seed(seed)
# intervals = []
# for group in torch.tensor_split(ranked, n_intervals):
#     picked, seen = [], set()
#     for i in group[torch.randperm(len(group), generator=g)].tolist():
#         if i // T not in seen:
#             seen.add(i // T)
#             picked.append((i // T, i % T))
#         if len(picked) == per_interval:
#             break
#     intervals.append(picked)
# return top, intervals
# ```
# </details>
#
# ### Exercise 5.2 — find a latent for a concept, then test it on new text (hard, optional, 25 min)
# An explanation is a prediction: "this latent fires on digits". Find the latent that best deserves a name on one
# text, then test the name on another, scored as N2G scores explanations (notebook 03):
# - **precision**: of the tokens where the concept holds (what the explanation predicts), the fraction where the
#   latent fires;
# - **recall**: of the tokens where the latent fires, the fraction where the concept holds.
#
# Write `find_concept_latent(build, test, n_latents)`. Each text is a triple `(idx_TK, acts_TK, concept_T)`: the SAE's
# sparse codes at the text's valid tokens (the K latents TopK kept at each token, and their activations) and a bool
# mask of the tokens where the concept holds. A latent *fires* on a token when one of its slots there has an
# activation above zero; the codes also hold zeros (slots the ReLU zeroed, and padding). Score **every** latent on
# the build text by the F1 of where it fires against the concept mask (the harmonic mean of precision and recall),
# choose the best, and return it with that F1 and with its precision and recall on the test text: a tuple
# `(int, float, float, float)`. If several latents tie for the best build F1, take the lowest index (as
# `torch.argmax` does). Any ratio whose denominator is 0 (a latent that never fires on the test text, a test text
# where the concept never holds, an F1 with no firing and no concept token) counts as 0.0, not NaN and not an error.
# Build your counts from the slots: a dense `[tokens, latents]` matrix would have 130 million entries at full
# size.
#
# The build text is the statistics' Wikipedia text; the test text is held-out news articles (another corpus, and
# documents the SAE never trained on: a stricter test than held-out Wikipedia).

# %%
from saelab.teach.exercises import check_find_concept_latent


def find_concept_latent(build, test, n_latents: int) -> tuple[int, float, float, float]:
    """(the latent with the best F1 on build, that F1, its precision on test, its recall on test);
    build and test: (idx_TK, acts_TK, concept_T)."""
    # YOUR CODE HERE (about 10 lines), then delete the next line
    todo("5.2")


find_latent = check_find_concept_latent(find_concept_latent)

# %% [markdown]
# <details><summary>Hint</summary>
#
# On the build text you need, per latent, two counts: the tokens where it fires, and those of them where the concept
# holds; with the concept's size they give its F1, 2·hits / (fires + concept tokens). Select the slots that fire,
# then `torch.bincount` their latent indices with `minlength=n_latents`; the concept mask broadcasts over the slots as
# `concept_T[:, None]`. On the test text only the chosen latent matters: a bool per token saying whether any of its
# slots fires there, compared with the test concept mask.
# </details>
#
# <details><summary>Solution</summary>
#
# ```python
# idx, acts, concept = build
# on = acts > 0                                            # slots that fire
# fires_N = torch.bincount(idx[on], minlength=n_latents).float()
# hits_N = torch.bincount(idx[on & concept[:, None]], minlength=n_latents).float()
# f1_N = 2 * hits_N / (fires_N + int(concept.sum())).clamp_min(1)
# latent = int(f1_N.argmax())                              # chosen on the build text only
# t_idx, t_acts, t_concept = test
# fires = ((t_idx == latent) & (t_acts > 0)).any(-1)       # per test token
# both = float((fires & t_concept).sum())
# precision, recall = both / max(1, int(t_concept.sum())), both / max(1, int(fires.sum()))
# return latent, float(f1_N[latent]), precision, recall
# ```
# </details>
#
# The concept and the two texts: change `concept` to look for something else.

# %%
import numpy as np

from saelab import ContextConfig, build_contexts, encode_contexts, load_corpus

tok = lm.tokenizer


def concept(token: str) -> bool:
    """The concept to look for; change it (e.g. a capitalised word start, a month name)."""
    return token.strip().isdigit()


def concept_mask(tokens_NT) -> torch.Tensor:
    is_c = np.array([concept(tok.decode([i])) for i in range(len(tok))])
    return torch.from_numpy(is_c[np.asarray(tokens_NT)])


def text_codes(codes) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(idx_TK, acts_TK, concept_T) at the valid positions of `codes`: what find_concept_latent reads."""
    v = codes.valid_NT
    return codes.idx_NTK[v].long(), codes.acts_NTK[v].float(), concept_mask(codes.tokens_NT)[v]


news = torch.from_numpy(build_contexts(load_corpus("news"), lm.tokenizer, ContextConfig(), "heldout",
                                       NEW_TEXT_CONTEXTS).tokens_NT).long()
news_codes = encode_contexts(lm, sae, news)
build, test = text_codes(stats.codes), text_codes(news_codes)
chosen, f1_in, p_new, r_new = find_latent(build, test, sae.cfg.n_latents)
f1_new = 2 * p_new * r_new / (p_new + r_new) if p_new + r_new else 0.0
print(f"Wikipedia: {int(build[2].sum())} concept tokens of {len(build[2])}; best latent {chosen}, F1 {f1_in:.2f} on "
      "the text it was chosen on")
print(f"news: {int(test[2].sum())} concept tokens of {len(test[2])}; latent {chosen}: precision {p_new:.2f}, "
      f"recall {r_new:.2f}, F1 {f1_new:.2f}")
explorer.show(chosen)

# %% [markdown]
# **Reading it.** If precision and recall hold on the news text, "latent `chosen` = the concept" is a prediction
# that generalises. If precision drops, the latent stays silent on part of the concept (in news the concept appears in
# forms it did not learn); if recall drops, it also fires elsewhere, and the concept names only its most common case
# (check its quantile samples above). The latent was chosen, out of every latent, on the same text that gave its F1,
# so the Wikipedia score is optimistic: the news numbers are the honest ones. In our run, for digits (1,415 of 31,946
# Wikipedia tokens), latent 2301 won with F1 0.65; on 8,052 tokens of held-out news (297 digits) its precision was
# 0.66, recall 0.75 and F1 0.70: the name held on text of another kind, here even a little better than where it was
# chosen.
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
#    <details><summary>Answer</summary>Choosing the best of all the SAE's latents on one text overfits to it: with
#    thousands of candidates, some fit that text's quirks by chance. A different corpus tests whether the description
#    generalises beyond the text and style it was found on.</details>
# 4. What does a latent with density 30% usually turn out to be?
#    <details><summary>Answer</summary>Rarely one concept: dense latents often track position, formatting or broad
#    context, and are hard to name or to test.</details>
