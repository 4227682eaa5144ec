# ---
# jupyter:
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 07 · Using an SAE causally: steering, ablation and attribution
#
# Notebooks 03 and 05 *read* an SAE: metrics and dashboards. This one *acts* with it. A latent is a direction in
# the residual stream; if it means what its examples suggest, then adding it should push the model toward that
# meaning, removing it should take the meaning away, and gradients should point to it when the model uses it.
#
# **Prerequisites**: notebooks 02 (what a latent is) and 05 (reading a latent).
#
# **What you will learn**
# 1. find a latent for a concept by contrasting texts, and test the finding on new text;
# 2. splice an SAE into the LM for any forward pass or `generate()` (`saelab.interp.steering.spliced`), with its error term
#    kept so that only your edits change the output; steer, clamp and ablate latents;
# 3. attribute a prediction to latents with one backward pass (activation x gradient, as in attribution patching)
#    and check the estimate against real ablations;
# 4. load SAEs from other libraries (SAE Lens, sparsify, OpenAI, the Hub) into the same tools.
#
# **Exercises**: 7.1 (easy, 5 min), 7.2 (easy, 5 min), 7.3 (medium, 10 min). Each stub stops the notebook with
# "exercise 7.N: not written yet" until you fill it in; `SAELAB_SOLUTIONS=1` runs the reference solutions.
#
# **Time** (measured on a 2-core CPU, 2026-11-29; `scripts/run_series.py`): about 40 s in fast mode (`SAELAB_FAST=1`) and 1.2 minutes at full size once the zoo's TopK SAE exists.
# GPU: not measured yet (no GPU was lent while these were measured); `DEVICE = "auto"` uses one when present.
# **Data**: the figures quoted here were measured on saelab 0.2's Wikipedia-only zoo; since 0.3 the zoo trains
# on the English mixture (README, "Training data and other registers"), so a full-size run's numbers will differ.
#
# **Paper**: Gao et al. 2024, section 4.5 (ablation sparsity: the downstream effects of single latents) and 4.1
# (splicing the SAE in); further reading: Templeton et al. 2024 ("Scaling Monosemanticity",
# feature steering); Syed et al. 2023 (attribution patching); Marks et al. 2024 (SAE feature circuits, the error
# term).

# %% tags=["parameters"]
# Parameters
import os

FAST = os.environ.get("SAELAB_FAST", "") not in ("", "0", "false")
SAE_SOURCE = None            # None: the zoo's TopK SAE; or anything saelab.load_sae reads (a saelab, SAE Lens or
                             # sparsify folder, an OpenAI .pt, "hf://owner/repo/subfolder")
MODEL = None                 # None: the model the SAE records (else smollm2-135m); e.g. "gpt2" for a GPT-2 SAE
DEVICE = "auto"              # "auto": CUDA when present, else CPU
CONCEPT_TEXTS = [            # text about the concept ...
    "Paris is the capital and largest city of France.",
    "The French Revolution began in 1789 and transformed France.",
    "Lyon and Marseille are large French cities in the south of France.",
    "She studied French literature at a university in Paris.",
    "The Loire Valley in France is known for its castles and wine.",
    "Napoleon Bonaparte was a French military leader and emperor of France.",
]
OTHER_TEXTS = [              # ... and text that is not about it
    "The mitochondria is the powerhouse of the cell.",
    "Tokyo is the capital of Japan and its largest city.",
    "The football match ended in a draw after extra time.",
    "Photosynthesis converts light energy into chemical energy.",
    "The stock market fell sharply on Monday morning.",
    "He played the guitar and sang songs about the sea.",
    "Berlin is the capital of Germany.",
    "Water boils at one hundred degrees Celsius at sea level.",
]
STEER_PROMPT = "My favourite place to visit is"
STRENGTHS = [0, 2, 4, 8]     # steering: multiples of the latent's largest activation on the texts above
NEW_TOKENS = 10 if FAST else 24

# %%
import torch

from saelab import load_sae
from saelab.interp.dashboard import encode_text, logit_effects
from saelab.teach.exercises import graded, solutions, todo
from saelab import load_lm, resolve_device, zoo_sae
from saelab.interp.steering import ablate, generate, spliced, steer

sae = load_sae(SAE_SOURCE) if SAE_SOURCE else zoo_sae("topk")[0]
lm = load_lm(MODEL or sae.cfg.model or "smollm2-135m", device=resolve_device(DEVICE))
sae = sae.to(lm.device)
print(f"SAE: {sae.cfg.n_latents} latents, k={sae.cfg.k}, {sae.cfg.site} of block {sae.cfg.layer} of {lm.name} "
      f"(from {sae.cfg.source or 'saelab'}); running on {lm.device}")


# %% [markdown]
# ## 1 · Find a latent for a concept
#
# A simple, honest method: encode text about the concept and text that is not, and score each latent by how much more
# it fires on the first. `encode_text` runs the LM to the SAE's site and returns the dense codes [tokens, n]
# (the first token, the attention sink, is dropped: the SAE never trained on it).
#
# **Exercise 7.1** (easy, 5 min). Write `concept_scores(acts_pos_TN, acts_neg_TN)`: one score per latent, the mean
# activation over the concept's tokens minus the mean activation over the other tokens.

# %%
def concept_scores(acts_pos_TN, acts_neg_TN):
    # YOUR CODE HERE: one number per latent, shape [n]
    todo("7.1")


from saelab.teach.exercises import check_concept_scores

check_concept_scores(graded(concept_scores, solutions.concept_scores))


# %% [markdown]
# <details><summary>Solution</summary>
#
# ```python
# return acts_pos_TN.mean(0) - acts_neg_TN.mean(0)
# ```
# </details>

# %%
def codes(texts):
    return torch.cat([encode_text(lm, sae, t)[1][1:] for t in texts])


pos, neg = codes(CONCEPT_TEXTS), codes(OTHER_TEXTS)
scores = graded(concept_scores, solutions.concept_scores)(pos, neg)
CANDIDATES = scores.topk(5).indices.tolist()
for j in CANDIDATES:
    print(f"latent {j:5d}: score {float(scores[j]):.3f}, fires on {float((pos[:, j] > 0).float().mean()):.0%} of "
          f"concept tokens, {float((neg[:, j] > 0).float().mean()):.0%} of others")

# %% [markdown]
# A score is a hypothesis, not a finding: the texts were chosen by us, and with six encyclopedic sentences a latent
# for "history" or "capital city" can win. Test each candidate on text it has not seen, including near misses
# (another capital, history that is not French), and keep the one that separates them best.

# %%
NEW_CONCEPT = ["The Eiffel Tower stands in Paris, on the banks of the Seine.",
               "Many tourists visit the museums of Paris and the beaches of southern France."]
NEAR_MISSES = ["Madrid is the capital of Spain.", "The history of the Roman Empire spans many centuries.",
               "The recipe needs two eggs and a cup of flour."]


def max_acts(texts):  # [texts, candidates]: each candidate's largest activation on each text
    return torch.stack([encode_text(lm, sae, t)[1][1:, CANDIDATES].max(0).values for t in texts])


on, off = max_acts(NEW_CONCEPT), max_acts(NEAR_MISSES)
held_out = on.mean(0) - off.max(0).values   # fires on the new concept text, above every near miss
for j, c, a, b in zip(CANDIDATES, held_out.tolist(), on.mean(0).tolist(), off.max(0).values.tolist()):
    print(f"latent {j:5d}: new concept text {a:.3f}, strongest near miss {b:.3f} -> held-out contrast {c:+.3f}")
LATENT = CANDIDATES[int(held_out.argmax())]
MAX_ACT = float(torch.cat([pos, neg])[:, LATENT].max())
effects = logit_effects(lm, sae, LATENT)
print(f"\nchosen: latent {LATENT} (largest activation {MAX_ACT:.3g}); its decoder row promotes",
      [t for t, _ in effects["positive"][:8]])


# %% [markdown]
# ## 2 · Steer generation
#
# `spliced(lm, sae, edits)` puts the SAE at its site for every forward pass inside the block, including each step of
# `generate()`. With the error term kept (the default), the LM runs exactly as without the SAE unless an edit
# changes something: `x -> x + (a' - a) * s * W_dec[j]` for each edited latent `j`, where `s` maps the SAE's input
# space back to the residual stream (this SAE normalises each token to unit norm, so `s` is the token's centred
# norm; for an SAE on raw activations `s = 1`). `steer(j, alpha)` adds `alpha` to the latent's activation
# (`clamp`, `scale` and `ablate` set, multiply or remove it); strengths below are multiples of the latent's
# largest activation, its natural unit.
#
# **Exercise 7.2** (easy, 5 min). For an SAE on raw activations (`s = 1`), steering is one line: write
# `steer_rows(x_RD, W_dec_ND, latent, alpha)`.

# %%
def steer_rows(x_RD, W_dec_ND, latent, alpha):
    # YOUR CODE HERE: the steered activations, shape [R, D]
    todo("7.2")


from saelab.teach.exercises import check_steer_rows

check_steer_rows(graded(steer_rows, solutions.steer_rows))


# %% [markdown]
# <details><summary>Solution</summary>
#
# ```python
# return x_RD + alpha * W_dec_ND[latent]
# ```
# </details>

# %%
concept_ids = sorted({lm.tokenizer.encode(w, add_special_tokens=False)[0] for w in (" France", " Paris", " French")})
ids = lm.tokenizer(STEER_PROMPT, return_tensors="pt")["input_ids"].to(lm.device)
rows = []
for strength in STRENGTHS:
    edits = [steer(LATENT, strength * MAX_ACT)] if strength else []
    with torch.no_grad(), spliced(lm, sae, edits):
        logp = torch.log_softmax(lm.model(input_ids=ids).logits[0, -1].float(), -1)
    text = generate(lm, sae, STEER_PROMPT, edits, max_new_tokens=NEW_TOKENS)
    rows.append((strength, float(logp[concept_ids].exp().sum()), text))
    print(f"x{strength:<3} P(concept word next) = {rows[-1][1]:.4f} | {STEER_PROMPT}{text!r}")

import plotly.graph_objects as go

fig = go.Figure(go.Scatter(x=[r[0] for r in rows], y=[r[1] for r in rows], mode="lines+markers"))
fig.update_layout(title=f"steering latent {LATENT}: P(a concept word next) against the strength",
                  xaxis_title="strength (x the latent's largest activation)", yaxis_title="P(concept word next)",
                  height=320, width=650)
fig.show()


# %% [markdown]
# What to look for: does the probability of the concept's words rise with the strength, and at which strength does
# the text stop being fluent? At small strengths the push is lost among the residual stream's other directions; at
# large ones it overwhelms them and the model repeats tokens or degrades. The explorer (notebook 05) has the same
# experiment as a panel.
#
# What we measured at full size (the zoo's 4096-latent TopK SAE, 2026-11-28): the held-out check rejected the top
# scorer (a latent of encyclopedic/historical text that fired more on the Roman Empire than on Paris) and kept one
# that fired on both new Paris sentences and on no near miss. Its direct logit effects were uninformative (word
# pieces): seven blocks follow the site, so what it writes is read by later layers, not by the unembedding directly.
# Steered at x2 the continuation turned to "the Louvre ... the Musée d'Art" and P(concept word) rose from 0.013 to
# 0.020; at x4 and x8 fluency collapsed and the probability fell. In fast mode (a 1024-latent SAE trained briefly)
# expect weaker, noisier candidates: that is part of the lesson about scale.
#
# ## 3 · Ablate it
#
# Ablating sets the latent to zero wherever it fires (error term kept): the model's prediction of the concept's words
# in text about the concept should get worse if the model *uses* the latent, not just carries it. Measure it on text
# that did not choose the latent, so that the selection cannot flatter the result.

# %%
def next_token_logprobs(texts, edits=()):
    out = []
    for t in texts:
        ids = lm.tokenizer(t, return_tensors="pt")["input_ids"].to(lm.device)
        with torch.no_grad(), spliced(lm, sae, edits):
            logp = torch.log_softmax(lm.model(input_ids=ids).logits[0, :-1].float(), -1)
        out.append(logp.gather(-1, ids[0, 1:, None])[:, 0])
    return torch.cat(out)


ABLATION_TEXTS = NEW_CONCEPT + ["The Seine flows through Paris before it reaches the sea in Normandy.",
                                "French wine from Bordeaux is sold all over France and the world."]
clean = next_token_logprobs(ABLATION_TEXTS)
ablated = next_token_logprobs(ABLATION_TEXTS, [ablate(LATENT)])
targets = torch.cat([lm.tokenizer(t, return_tensors="pt")["input_ids"][0, 1:] for t in ABLATION_TEXTS])
is_concept = torch.isin(targets, torch.tensor(concept_ids))
print(f"mean change of log p(next token) when latent {LATENT} is ablated: "
      f"{float((ablated - clean)[is_concept].mean()):+.4f} on concept words ({int(is_concept.sum())}), "
      f"{float((ablated - clean)[~is_concept].mean()):+.4f} on the other tokens")


# %% [markdown]
# ## 4 · Attribute a prediction to latents
#
# Which latents does the model use to predict `" Paris"` after "The Eiffel Tower is in the city of"? Ablating each
# of thousands of latents one by one costs a forward pass each. Attribution patching estimates all of them from one
# backward pass: with the SAE spliced in, the metric `m` changes by about `-a * dm/da` when a latent with activation
# `a` is removed (a first-order Taylor expansion). `saelab.interp.attribution.attribute` returns the activations `a`, the
# gradients `dm/da` and the selected latents' indices at every position.
#
# **Exercise 7.3** (medium, 10 min). Write `ablation_attribution(acts_RK, grad_RK, idx_RK, n_latents)`: for each
# latent, the estimated change of the metric when it is ablated at every position. A latent can be selected at many
# positions.

# %%
def ablation_attribution(acts_RK, grad_RK, idx_RK, n_latents):
    # YOUR CODE HERE: one estimate per latent, shape [n_latents]
    todo("7.3")


from saelab.teach.exercises import check_ablation_attribution

check_ablation_attribution(graded(ablation_attribution, solutions.ablation_attribution))


# %% [markdown]
# <details><summary>Solution</summary>
#
# ```python
# out = torch.zeros(n_latents, dtype=acts_RK.dtype)
# return out.index_add_(0, idx_RK.reshape(-1), (-acts_RK * grad_RK).reshape(-1))
# ```
# </details>

# %%
from saelab.interp.attribution import ablation_effects, attribute

prompt_ids = lm.tokenizer("The Eiffel Tower is in the city of", return_tensors="pt")["input_ids"]
paris = lm.tokenizer.encode(" Paris", add_special_tokens=False)[0]


def metric(logits):  # log-probability of " Paris" as the next token
    return torch.log_softmax(logits[0, -1], -1)[paris]


att = attribute(lm, sae, prompt_ids, metric)
estimate = graded(ablation_attribution, solutions.ablation_attribution)(att.acts_RK, att.grad_RK, att.idx_RK,
                                                                        att.n_latents)
assert torch.allclose(estimate, att.per_latent_N, atol=1e-5)
ranked = estimate.abs().argsort(descending=True)[:8].tolist()
real = ablation_effects(lm, sae, prompt_ids, metric, ranked)
print(f"log p(' Paris') = {att.metric:.3f}")
print(" latent   estimate   real ablation")
for j in ranked:
    print(f"{j:7d}   {float(estimate[j]):+.4f}    {real[j]:+.4f}")
agree = sum((float(estimate[j]) > 0) == (real[j] > 0) for j in ranked)
print(f"sign agrees for {agree} of {len(ranked)}; "
      f"correlation {float(torch.corrcoef(torch.tensor([[float(estimate[j]) for j in ranked], [real[j] for j in ranked]]))[0, 1]):.2f}")
fig = go.Figure(go.Scatter(x=[float(estimate[j]) for j in ranked], y=[real[j] for j in ranked], mode="markers+text",
                           text=[str(j) for j in ranked], textposition="top center"))
lim = max(max(abs(float(estimate[j])), abs(real[j])) for j in ranked) * 1.1
fig.add_scatter(x=[-lim, lim], y=[-lim, lim], mode="lines", line_dash="dot", name="estimate = real")
fig.update_layout(title="activation x gradient estimate against the real ablation, per latent", showlegend=False,
                  xaxis_title="estimated change of the metric", yaxis_title="real change when ablated",
                  height=360, width=560)
fig.show()

# %% [markdown]
# What to look for: the estimate is exact when the metric is linear in the site's activations (the test suite checks
# this on a model whose final norm is removed) and approximate otherwise. Here the later blocks, the final norm and the
# softmax follow the site, so expect the estimate to rank the large effects well and to miss on size, most for
# latents whose removal changes attention patterns downstream. Use it to choose which latents to ablate for real,
# not in place of ablating.
#
# At full size we measured: the latent ranked first was the one part 1 chose; its estimate was -0.51 and its real
# ablation -1.55 (a third of the size: removing it moves the stream far enough that the linear picture fails);
# the signs of all eight agreed and the correlation was 0.94. Ablating it in part 3, on four sentences that did
# not choose it, lowered log p of the concept's words by 1.11 nats (5 such words) against 0.04 on the other
# tokens: the model uses it, not only carries it.
#
# ## 5 · Any SAE, same tools
#
# Everything above takes any SAE `saelab.load_sae` reads: saelab folders, SAE Lens folders (standard, TopK, JumpReLU,
# with or without activation normalisation), EleutherAI sparsify folders and checkpoints (`hookpoint="layers.8"`),
# the paper's OpenAI `.pt` files, and `hf://owner/repo/subfolder` on the Hub. The loaded SAE records where it came
# from and which site of the model it reads. A round trip through SAE Lens's layout reproduces this SAE (up to layer
# norm's eps: saelab's per-token unit norm is exported as SAE Lens's `layer_norm` with the scale folded in):

# %%
import tempfile

from saelab import to_saelens

folder = to_saelens(sae, tempfile.mkdtemp())
again = load_sae(folder).to(lm.device)
x = torch.randn(4, sae.cfg.d_in, device=lm.device) * 3
print(f"loaded from {again.cfg.source.split(':')[0]}, hook {again.cfg.hook!r} -> {again.cfg.site} of block "
      f"{again.cfg.layer}; largest reconstruction difference {float((again.reconstruct(x) - sae.reconstruct(x)).abs().max()):.2e}")

# %% [markdown]
# ## Recap
#
# - A concept latent is found by contrast and confirmed on new text; its logit effects say what it writes directly.
# - `spliced(lm, sae, edits)` runs any forward pass or generation with the SAE in place; keeping the error term makes
#   the edits the only change. Steering adds decoder rows; ablation removes a latent where it fires.
# - Activation x gradient estimates every latent's ablation effect from one backward pass; check it against real
#   ablations before trusting its sizes.
#
# ## Check your understanding
#
# 1. Why keep the error term when steering, instead of replacing the activations by the reconstruction?
#    <details><summary>Answer</summary>The reconstruction alone already changes the model's loss (notebook 03's
#    downstream loss); with the error term, the unedited run is exactly the clean model, so every difference you see
#    comes from your edit.</details>
# 2. A latent scores high in part 1 but ablating it changes nothing in part 3. Name two explanations.
#    <details><summary>Answer</summary>The model may not use that direction for the prediction (the latent is read
#    out by nothing downstream), or other latents and the error term carry the same information redundantly; also
#    the scoring texts may have picked a correlate of the concept rather than the concept.</details>
# 3. When is activation x gradient exactly the ablation effect?
#    <details><summary>Answer</summary>When the metric is linear in the site's activations (with the set of selected
#    latents fixed): then the first-order Taylor expansion has no remainder.</details>
# 4. Why does steering use multiples of the latent's largest activation rather than a fixed number?
#    <details><summary>Answer</summary>Latents differ in scale, and so do normalisations; the largest activation seen
#    on real text is the latent's natural unit, so x2 means "twice as strong as it ever was here".</details>
