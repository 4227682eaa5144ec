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
# **Exercises**: 7.1 (medium, 15 min), 7.2 (easy, 10 min), 7.3 (**hard**, 25 min). Each stub stops the notebook with
# "exercise 7.N: not written yet" until you fill it in; `SAELAB_SOLUTIONS=1` runs the reference solutions.
#
# **Learner time**: about 39 minutes (24 reading at ~130 words a minute, 15 for the essential exercises; the optional ones add 35), beside the compute time below.
#
# **Time** (measured on a 2-core CPU, 2026-12-02; `scripts/run_series.py` from an empty cache): about 40 s in fast mode (`SAELAB_FAST=1`) and 15 s at full size once notebook 02's TopK SAE exists.
# GPU: not measured yet (no GPU was lent while these were measured); `DEVICE = "auto"` uses one when present.
# **Data**: the course's TopK SAE (notebook 02: the main job's recipe on the English mixture for 4 epochs); the figures
# quoted below are from our full-size run of this notebook (2026-12-02).
#
# **Paper**: Gao et al. 2024, section 4.5 (ablation sparsity: the downstream effects of single latents) and 4.1
# (splicing the SAE in); further reading: Templeton et al. 2024 ("Scaling Monosemanticity",
# feature steering); Syed et al. 2023 (attribution patching); Marks et al. 2024 (SAE feature circuits, the error
# term).

# %% tags=["parameters"]
# Parameters
import os

FAST = os.environ.get("SAELAB_FAST", "") not in ("", "0", "false")
SAE_SOURCE = None            # None: notebook 02's TopK SAE (the zoo's at the course's budget); or anything saelab.load_sae reads (a saelab, SAE Lens or
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
from saelab.teach.exercises import todo
from saelab import course_sae, load_lm, resolve_device
from saelab.interp.steering import ablate, generate, spliced, steer

device = resolve_device(DEVICE)
sae = load_sae(SAE_SOURCE) if SAE_SOURCE else course_sae("topk", device=device)[0]
lm = load_lm(MODEL or sae.cfg.model or "smollm2-135m", device=device)
sae = sae.to(lm.device)
print(f"SAE: {sae.cfg.n_latents} latents, k={sae.cfg.k}, {sae.cfg.site} of block {sae.cfg.layer} of {lm.name} "
      f"(from {sae.cfg.source or 'saelab'}); running on {lm.device}")


# %% [markdown]
# ## 1 · Find a latent for a concept
#
# The contrast of notebook 05: encode text about the concept and text that is not, and score each latent by how much
# more it fires on the first (its mean activation on the concept's tokens minus its mean on the others; means, as
# there are more other tokens). `encode_text` runs the LM to the SAE's site and returns the dense codes
# [tokens, n] (the first token, the attention sink, is dropped: the SAE never trained on it).

# %%
def codes(texts):
    return torch.cat([encode_text(lm, sae, t)[1][1:] for t in texts])


pos, neg = codes(CONCEPT_TEXTS), codes(OTHER_TEXTS)
scores = pos.mean(0) - neg.mean(0)
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
# `generate()`, with the SAE's error term kept: with no edits the LM runs exactly as without the SAE, and an edit
# changes the residual stream only by what it changes in the SAE's output. An edit sets one latent's activation
# `a -> a'`: `steer(j, alpha)` adds `alpha` to it (`clamp`, `scale` and `ablate` set, multiply or remove it).
# Strengths below are multiples of the latent's largest activation on the texts above, its natural unit.
#
# ### Exercise 7.1 — a steering hook (medium, essential, 15 min)
#
# Build `steer` yourself as a plain PyTorch hook. Write
# `add_steering_hook(model, sae, latent, alpha)`: register a forward hook on the block whose output the SAE reads
# (block `sae.cfg.layer`, counted from 0: `saelab.lm.sites.find_blocks(model)` returns the model's list of blocks, as
# in notebook 01; hook the whole block, once, and nothing else) that steers `latent` by `alpha` at every position but
# the first (position 0, the attention sink, which the SAE never trained on and `spliced` leaves clean) of every
# sequence of the batch, and return the hook's handle (removing it must end the steering). The error term is
# kept, so the hook adds to the block's output exactly the change that raising the latent's activation by `alpha`
# makes to the SAE's output. Steering adds `alpha` whether or not the SAE selects the latent at a position, and
# `alpha` may be negative (the activation is lowered, below 0 if it goes there: nothing is clamped) or 0 (register
# the hook anyway; it changes nothing). Steer every position >= 1, including the rare tokens whose norm is an
# outlier: `spliced` can leave those clean, but the check compares with `steer` with that rule switched off. Mind
# which space the decoder writes in: this SAE normalises each token before encoding
# it (`sae.cfg.normalize` is `"per_token_unit_norm"`, the paper's normalisation: saelab places it in its section 2.1,
# whose sentence we could read only as others quote it), so work out what a change there is in the residual stream,
# token by token. The check builds small SAEs of its own and runs your function in four cases (other
# latents, a negative `alpha` and `alpha = 0`, the first, middle and last blocks, a batch of two sequences); it
# compares your hook's effect with `steer` on the LM, checks that `handle.remove()` ends the steering, and names the
# usual mistakes.
#
# Your hook is meant for forward passes over whole sequences: in a generation step with a KV cache the block sees
# only the new token, and knowing whether it is position 0 needs the absolute position, which `spliced` tracks.

# %%
from saelab.teach.exercises import check_steering_hook


def add_steering_hook(model, sae, latent, alpha):
    # YOUR CODE HERE (about 10 lines: a hook function and its registration), then delete the next line
    todo("7.1")


# The check returns the function it graded (yours; the reference under SAELAB_SOLUTIONS=1).
steering_hook = check_steering_hook(add_steering_hook, lm)


# %% [markdown]
# <details><summary>Hint</summary>
#
# The SAE encodes `x_n = (x - mean(x)) / s` (mean over d_model; `sae.preprocess(x)` returns `x_n` and the `Undo`
# whose `.shift` and `.scale` map back). What is `s` for this normalisation, and is it the same at every position?
# The decoder is linear: which term of the SAE's output changes when one activation rises by `alpha`, and does
# `b_pre`? A change of `x_n` is which change of `x` (does the shift, which places a point, move a difference)?
# A Hugging Face block may return a tuple: change its first element and return a tuple of the same form.
# </details>
#
# <details><summary>Solution</summary>
#
# ```python
# from saelab.lm.sites import find_blocks
#
# direction = sae.W_dec[latent].detach()
#
# def hook(module, inputs, output):
#     x = output[0] if isinstance(output, tuple) else output
#     s = (x - x.mean(-1, keepdim=True)).norm(dim=-1, keepdim=True)  # [B, T, 1]: each token's centred norm
#     delta = alpha * s * direction                                   # alpha decoder rows, mapped back per token
#     delta[:, 0] = 0                                                 # position 0 stays clean
#     x = x + delta
#     return (x, *output[1:]) if isinstance(output, tuple) else x
#
# return find_blocks(model)[sae.cfg.layer].register_forward_hook(hook)
# ```
# `b_pre` is in the SAE's output with and without the edit, so it cancels; for an SAE on raw activations `s = 1`,
# and for any normalisation `sae.preprocess(x)[1].scale` is `s`. `spliced` does the same for every edit, and also
# leaves clean the rare tokens whose norm is an outlier (as the harvest did).
# </details>

# %% [markdown]
# Your hook measures the steered prediction at each strength below (a forward pass over the prompt), next to
# `spliced` with `steer` (the same unless a prompt token is a norm outlier); the continuations come from
# `generate`, which splices the SAE in at every step.

# %%
concept_ids = sorted({lm.tokenizer.encode(w, add_special_tokens=False)[0] for w in (" France", " Paris", " French")})
ids = lm.tokenizer(STEER_PROMPT, return_tensors="pt")["input_ids"].to(lm.device)
rows = []
for strength in STRENGTHS:
    handle = steering_hook(lm.model, sae, LATENT, strength * MAX_ACT)
    try:
        with torch.no_grad():
            logp = torch.log_softmax(lm.model(input_ids=ids, use_cache=False).logits[0, -1].float(), -1)
    finally:
        handle.remove()
    edits = [steer(LATENT, strength * MAX_ACT)] if strength else []
    with torch.no_grad(), spliced(lm, sae, edits):
        logp_spliced = torch.log_softmax(lm.model(input_ids=ids).logits[0, -1].float(), -1)
    text = generate(lm, sae, STEER_PROMPT, edits, max_new_tokens=NEW_TOKENS)
    rows.append((strength, float(logp[concept_ids].exp().sum()), text))
    print(f"x{strength:<3} P(concept word next) = {rows[-1][1]:.4f} (spliced steer: "
          f"{float(logp_spliced[concept_ids].exp().sum()):.4f}) | {STEER_PROMPT}{text!r}")

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
# What we measured at full size (the course's 4096-latent TopK SAE, 2026-12-02): the held-out check rejected the top
# scorer (latent 3632: it fired more on the strongest near miss than on the new concept text, contrast -0.085) and
# kept latent 3091 (contrast +0.102), which had fired on 25% of the concept's tokens and on none of the others. Its
# direct logit effects were uninformative (word pieces such as 'melon', 'ancouver'): seven blocks follow the site, so
# what it writes is read by later layers, not by the unembedding directly. Steered at x2 the continuation turned to
# "the Louvre, of course" and P(concept word) rose from 0.013 to 0.022; at x4 and x8 fluency collapsed and the
# probability fell (0.003, then 0.000). In fast mode (a 1024-latent SAE trained briefly)
# expect weaker, noisier candidates: that is part of the lesson about scale.
#
# ## 3 · Ablate it
#
# Ablating sets the latent to zero wherever it fires (error term kept): the model's prediction of the concept's words
# in text about the concept should get worse if the model *uses* the latent, not just carries it. Measure it on text
# that did not choose the latent, so that the selection cannot flatter the result.
#
# ### Exercise 7.2 — ablating a set of latents through the SAE's own decoder (easy, optional, 10 min)
#
# Exercise 7.1 worked out by hand what an edit changes in the residual stream, for this SAE's normalisation. SAEs from
# other libraries normalise differently (not at all, with a layer norm, with one dataset-wide scale:
# `sae.cfg.normalize`), and a circuit is tested by ablating several latents at once. Take the route that holds for
# any SAE: let the SAE map codes back for you.
#
# Write `ablate_rows(sae, x_RD, latents)`: activation rows `[R, D]` of the SAE's site with every latent in the list
# `latents` ablated (set to 0 wherever the SAE selects it; an empty list ablates nothing) and the error term kept:
# each row loses exactly what those latents contribute to the SAE's output there, and nothing else. Return a new
# `[R, D]` tensor (leave `x_RD` unchanged) and treat every row you are given alike, however large or small its norm:
# which positions stay clean (position 0, norm outliers) is the caller's choice, and the cell below passes only the
# rows `spliced` handles. Use only what the
# SAE gives you, without computing a scale yourself: `sae.encode(x_RD)` returns the selected latents' activations and
# indices (`top_acts_BK`, `top_idx_BK`, `[R, k]`), and `sae.decode(acts, idx, x_RD)` maps codes back to the rows'
# space whatever the normalisation. Work out why `b_pre` and the normalisation's shift need no care of yours here.
# The check runs your function on SAEs with four normalisations, on sets of zero to three latents, a latent that
# never fires and a single row, and compares with `ablate`; the cell after it splices your function into the LM
# with saelab's hook (the positions `spliced` handles), for the chosen latent and for part 1's candidates together.

# %%
from saelab.teach.exercises import check_ablate_rows


def ablate_rows(sae, x_RD, latents):
    # YOUR CODE HERE (about 4 lines), then delete the next line
    todo("7.2")


ablate_fn = check_ablate_rows(ablate_rows)


# %% [markdown]
# <details><summary>Hint</summary>
#
# Write a row as its reconstruction plus its error term, `x = x_hat + (x - x_hat)`. Keep the error term and swap
# `x_hat` for the reconstruction from edited codes: what is left of the change, and where do `b_pre` and the shift
# go? To edit the codes, find the entries of `top_idx_BK` that belong to the list (`torch.isin`) and zero their
# activations; do not select again after the edit (ablation keeps the other selected latents as they were).
# </details>
#
# <details><summary>Solution</summary>
#
# ```python
# enc = sae.encode(x_RD)
# idx = enc.top_idx_BK
# drop = torch.isin(idx, torch.as_tensor(latents, dtype=idx.dtype, device=idx.device))  # the ablated entries
# kept = enc.top_acts_BK.masked_fill(drop, 0.0)
# return x_RD + sae.decode(kept, idx, x_RD) - sae.decode(enc.top_acts_BK, idx, x_RD)  # x_hat' + (x - x_hat)
# ```
# `b_pre` and the shift are in both decodes and cancel; `decode` applies the scale. For one latent of a per-token
# unit-norm SAE this is 7.1's formula with the activation's change, `-a`, in place of `alpha`: `x - a * s * W_dec[j]`.
# </details>

# %%
from saelab.evals.splice import SpliceSite, apply_to_rows, site_hooked



def next_token_logprobs(texts, edits=(), rows_fn=None):
    """log p of each next token, with the SAE spliced in and `edits` applied, or with `rows_fn(rows)` replacing the
    rows the SAE handles (saelab's hook: the positions `spliced` handles)."""
    out = []
    for t in texts:
        ids = lm.tokenizer(t, return_tensors="pt")["input_ids"].to(lm.device)
        if rows_fn is None:
            ctx = spliced(lm, sae, edits)
        else:
            ctx = site_hooked(lm, SpliceSite.of(sae, lm),
                              lambda x, m, _p: apply_to_rows(rows_fn, x, m, sae.W_dec.dtype))
        with torch.no_grad(), ctx:
            logp = torch.log_softmax(lm.model(input_ids=ids).logits[0, :-1].float(), -1)
        out.append(logp.gather(-1, ids[0, 1:, None])[:, 0])
    return torch.cat(out)


ABLATION_TEXTS = NEW_CONCEPT + ["The Seine flows through Paris before it reaches the sea in Normandy.",
                                "French wine from Bordeaux is sold all over France and the world."]
clean = next_token_logprobs(ABLATION_TEXTS)
ablated = next_token_logprobs(ABLATION_TEXTS, rows_fn=lambda r: ablate_fn(sae, r, [LATENT]))
reference = next_token_logprobs(ABLATION_TEXTS, [ablate(LATENT)])
together = next_token_logprobs(ABLATION_TEXTS, rows_fn=lambda r: ablate_fn(sae, r, CANDIDATES))
targets = torch.cat([lm.tokenizer(t, return_tensors="pt")["input_ids"][0, 1:] for t in ABLATION_TEXTS])
is_concept = torch.isin(targets, torch.tensor(concept_ids))
print(f"your ablation and saelab's ablate() differ by at most {float((ablated - reference).abs().max()):.1e} in log p")
print(f"mean change of log p(next token) when latent {LATENT} is ablated: "
      f"{float((ablated - clean)[is_concept].mean()):+.4f} on concept words ({int(is_concept.sum())}), "
      f"{float((ablated - clean)[~is_concept].mean()):+.4f} on the other tokens")
print(f"part 1's {len(CANDIDATES)} candidates {CANDIDATES} ablated together: "
      f"{float((together - clean)[is_concept].mean()):+.4f} on concept words, "
      f"{float((together - clean)[~is_concept].mean()):+.4f} on the other tokens")


# %% [markdown]
# ## 4 · Attribute a prediction to latents
#
# Which latents does the model use to predict `" Paris"` after "The Eiffel Tower is in the city of"? Ablating each
# of thousands of latents one by one costs a forward pass each. Attribution patching (Syed et al. 2023) estimates all
# of them at once: splice the SAE in with its error term kept, so that the forward pass is the clean one, but route
# the computation through the latents' activations, so that one backward pass gives the metric's gradient with
# respect to every one of them; a first-order Taylor expansion in the activation then estimates what removing each
# latent would do.
#
# ### Exercise 7.3 — attribution patching (hard, optional, 25 min)
#
# Write `attribution_estimates(model, sae, input_ids_BT, metric)`: for every
# latent, the first-order estimate of the change of `metric(logits)` (a scalar) when the latent is ablated at every
# position >= 1 of every sequence of the batch, shape `[n_latents]`, from one forward and one backward pass. In a
# forward hook on block `sae.cfg.layer` (as in 7.1): encode the positions >= 1, make the selected activations the
# leaves the gradient will reach, and give the block's output the clean value but a gradient that flows into those
# activations through the decoder (mapped back to the residual stream). Remove the hook when done. A latent can be
# selected at many positions: its estimate is the sum over them (a latent selected nowhere gets 0). Return a tensor
# of shape `[n_latents]`. Splice every position >= 1 of every sequence, including the rare tokens whose norm is an
# outlier (the check compares with `attribute` with the outlier rule switched off, position 0 alone left clean). The
# check runs your function at three blocks, on one sequence and on a batch of two,
# with three metrics (one position's log-probability, a logit difference summed over the batch, the mean over every
# position), compares your estimates with `saelab.interp.attribution.attribute` and names the usual mistakes; the
# cells below compare them with real ablations.

# %%
from saelab.teach.exercises import check_attribution_estimates


def attribution_estimates(model, sae, input_ids_BT, metric):
    # YOUR CODE HERE (about 20 lines), then delete the next line
    todo("7.3")


estimate_fn = check_attribution_estimates(attribution_estimates, lm)


# %% [markdown]
# <details><summary>Hint</summary>
#
# - A clone of the selected activations with `requires_grad_(True)` is a leaf; `sae.decode(..., grad=True)` decodes
#   from it into the residual stream (the normalisation undone per token) and keeps the graph.
# - The error term (the rows minus their reconstruction) added back as a constant (`.detach()`) restores the clean
#   value without blocking the gradient to the activations.
# - Removing a latent moves its activation from `a` to 0: to first order the metric moves by its gradient times that
#   change. Add up each latent's estimates over the positions that select it (`index_add_` over the indices).
# - Wrap the forward and backward pass in `torch.enable_grad()`, in case the caller runs without gradients.
# </details>
#
# <details><summary>Solution</summary>
#
# ```python
# from saelab.lm.sites import find_blocks
#
# saved = {}
#
# def hook(module, inputs, output):
#     hidden = output[0] if isinstance(output, tuple) else output
#     x = hidden[:, 1:].detach()                                   # positions >= 1
#     rows = x.reshape(-1, x.shape[-1])
#     enc = sae.encode(rows)
#     acts = enc.top_acts_BK.clone().requires_grad_(True)          # the leaves
#     recon = sae.decode(acts, enc.top_idx_BK, rows, grad=True)    # through the decoder, mapped back per token
#     new = recon + (rows - recon).detach()                        # the clean value: the error term as a constant
#     saved.update(acts=acts, idx=enc.top_idx_BK)
#     out = torch.cat([hidden[:, :1], new.reshape(x.shape).to(hidden.dtype)], 1)
#     return (out, *output[1:]) if isinstance(output, tuple) else out
#
# handle = find_blocks(model)[sae.cfg.layer].register_forward_hook(hook)
# try:
#     with torch.enable_grad():
#         metric(model(input_ids=input_ids_BT, use_cache=False).logits.float()).backward()
# finally:
#     handle.remove()
# acts, idx = saved["acts"], saved["idx"]
# effect = -(acts * acts.grad).detach()                            # ablating changes a by -a
# out = torch.zeros(sae.cfg.n_latents, device=effect.device)
# return out.index_add_(0, idx.reshape(-1).to(effect.device), effect.reshape(-1))
# ```
# </details>

# %%
from saelab.interp.attribution import ablation_effects, attribute

prompt_ids = lm.tokenizer("The Eiffel Tower is in the city of", return_tensors="pt")["input_ids"].to(lm.device)
paris = lm.tokenizer.encode(" Paris", add_special_tokens=False)[0]


def metric(logits):  # log-probability of " Paris" as the next token
    return torch.log_softmax(logits[0, -1], -1)[paris]


estimate = estimate_fn(lm.model, sae, prompt_ids, metric)
estimate = torch.as_tensor(estimate).detach().float().cpu()
att = attribute(lm, sae, prompt_ids, metric)  # saelab's (it also leaves norm-outlier tokens clean, as spliced does)
print(f"log p(' Paris') = {att.metric:.3f}; your estimates and saelab's attribute() differ by at most "
      f"{float((estimate - att.per_latent_N).abs().max()):.1e}")
ranked = estimate.abs().argsort(descending=True)[:8].tolist()
real = ablation_effects(lm, sae, prompt_ids, metric, ranked)
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
# At full size we measured (2026-12-02): the latent ranked first was the one part 1 chose; its estimate was -0.48 and
# its real ablation -1.48 (a third of the size: removing it moves the stream far enough that the linear picture
# fails); the signs of all eight agreed and the correlation was 0.91. Ablating it in part 3, on four sentences (the two new concept sentences
# of part 1's held-out check and two more), lowered log p of the concept's words by 1.21 nats (5 such words) against 0.04 on the other
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
#   the edits the only change. Steering adds decoder rows, mapped back to the residual stream by each token's
#   scale; ablation removes a latent's own contribution where it fires.
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
