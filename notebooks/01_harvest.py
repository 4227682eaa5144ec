# ---
# jupyter:
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 01 · Harvesting activations
#
# **Prerequisites**: notebook 00 (what an SAE is); what a transformer block is (attention + MLP, a residual
# connection around each); PyTorch forward hooks help but are taught here.
#
# **What you will learn**
# - what the *residual stream* is and where the paper trains its SAEs (about 3/4 of the way through the network);
# - how to capture it yourself with a forward hook (exercise 1.1), and how saelab harvests it from any Hugging Face causal LM, stopping the forward pass right after the hooked block;
# - why position 0 (and a few rare tokens) have huge activation norms, and what we do about them;
# - what an activation cache looks like on disk (sharded safetensors + a verified manifest), and why a killed harvest can resume.
#
# **Learner time**: about 21 minutes (11 reading at ~130 words a minute, 10 for the essential exercises), beside the compute time below.
#
# **Time** (measured on a 2-core CPU, 2026-12-02; `scripts/run_series.py` from an empty cache): under a minute in fast mode (`SAELAB_FAST=1`, as in CI) and 5.3 minutes at full size, 5 of them the harvest of the series' 414k tokens (about 1,400 tokens/s here; machines of this kind have measured 600-1,200, so allow up to 12 minutes); seconds when the cache exists.
# GPU: not measured yet (no GPU was lent while these were measured); `DEVICE = "auto"` uses one when present.
# Everything runs offline on the embedded default: SmolLM2-135M-Instruct and an English mixture (`english-mix`):
# Wikipedia vital-article summaries (CC BY-SA 4.0), news articles (2017) and House of Commons speeches (a ParlSpeech V2
# sample), about 45/45/10% of its characters, all shipped in pinned PyPI wheels (`saelab assets licenses` credits each).
# The figures quoted below are from our full-size run on the mixture (2026-12-02), unless they say otherwise.
#
# **Paper**: Gao et al. (2024), section 2.1 (setup: the residual stream, 64-token contexts, the layer).

# %% tags=["parameters"]
# Parameters
import os

FAST = os.environ.get("SAELAB_FAST", "") not in ("", "0", "false")
MODEL = "smollm2-135m"   # or "gpt2" / any Hugging Face id when you are online
CORPUS = "english-mix"   # embedded: english-mix (its parts wiki-en, news, parliament-en), tweets-en, python-docs, wiki-multi, synthetic
LAYER = None             # None: 3/4 of the depth (block 22 of 30 for SmolLM2)
MAX_TOKENS = 8_000 if FAST else 400_000   # the main job's cache: notebooks 02-07 train and evaluate on it
EVAL_TOKENS = 4_000 if FAST else 16_000   # held-out (validation) tokens, documents never trained on
SURVEY_CONTEXTS = 32 if FAST else 128
DEVICE = "auto"          # "auto": CUDA when present, else CPU

# %% [markdown]
# ## 1. The residual stream
#
# A transformer adds each block's attention and MLP output into one running vector per token: the **residual stream**, of width `d_model` (576 for SmolLM2-135M).
# Every later block reads from it, so it carries whatever the model has computed so far. An SAE rewrites each of these vectors as a sparse sum of learned directions (latents).
#
# Gao et al. (2024, section 2.1) train on the residual stream **near the end** of the network: layer 8 of GPT-2 small's 12 (3/4 of the depth) and 5/6 of the depth for GPT-4. Late layers hold abstract features but are not yet specialised to predicting the next token the way the last block is. saelab defaults to 3/4 of the depth (block 22 of SmolLM2's 30, counted from 0).

# %%
from saelab import load_lm, resolve_device

lm = load_lm(MODEL, device=resolve_device(DEVICE))
layer = lm.default_layer if LAYER is None else LAYER
print(f"{MODEL}: {lm.n_layers} blocks, d_model={lm.d_model}; hooking the residual stream after block {layer}")

# %% [markdown]
# ### Exercise 1.1 — hook a block yourself (medium, essential, 10 min)
#
# A PyTorch *forward hook* is a function `hook(module, inputs, output)` that runs after `module.forward`;
# `module.register_forward_hook(hook)` returns a handle whose `.remove()` takes it off again. Write
# `residual_after_block`: register a hook on block `layer` that stores its output, run the model, remove the
# hook (also when the forward pass fails: `try/finally`) and return the stored tensor `[batch, tokens, d_model]`.
#
# The check compares your tensor with saelab's own capture and names the usual mistakes (the block's input
# instead of its output, an off-by-one layer, a hook left registered).

# %%
import torch

from saelab.teach.exercises import check_residual_after_block, todo
from saelab.lm.sites import find_blocks


def residual_after_block(model, input_ids_BT: torch.Tensor, layer: int) -> torch.Tensor:
    """The residual stream after block `layer`, [B, T, d_model], captured with a forward hook."""
    # YOUR CODE HERE (about 10 lines), then delete the next line
    todo("1.1")


# The check returns the function it graded (yours; the reference under SAELAB_SOLUTIONS=1).
hook_residual = check_residual_after_block(residual_after_block, lm, layer)

# %% [markdown]
# <details><summary>Hint</summary>
#
# `saelab.lm.sites.find_blocks(model)` returns the list of blocks; a Hugging Face decoder block may
# return a tuple whose first element is the hidden states; wrap the forward pass in `torch.no_grad()`.
# </details>
#
# <details><summary>Solution</summary>
#
# ```python
# captured = {}
#
# def hook(module, inputs, output):
#     captured["acts"] = output[0] if isinstance(output, tuple) else output
#
# handle = find_blocks(model)[layer].register_forward_hook(hook)
# try:
#     with torch.no_grad():
#         model(input_ids=input_ids_BT)
# finally:
#     handle.remove()
# return captured["acts"]
# ```
# Using `output_hidden_states=True` instead works too if you index it right: `hidden_states[0]` is the
# embeddings, so the output of block L is `hidden_states[L + 1]` (and the last entry has the final norm applied
# in some models). A hook also lets saelab stop the forward pass right after the block (section 2).
# </details>
#
# ## 2. Harvest
#
# `harvest` tokenises the corpus into 64-token contexts (the paper's length; documents are separated by `<|endoftext|>` and packed), runs the model **only up to the hooked block** (a hook raises an exception right after it: no later blocks, no LM head) and writes shards to disk.
# Run the cell twice: the second time it finds the shards and returns at once.
#
# This is the series' one harvest: with the default parameters it is exactly the main job's cache (400k training
# tokens and 16k validation tokens from held-out documents), and notebooks 02-07 open it instead of harvesting
# again. It is the longest cell of this notebook (the progress bar counts tokens).

# %%
from dataclasses import replace

from saelab import HarvestConfig, harvest

cfg = HarvestConfig(model=MODEL, corpus=CORPUS, layer=layer, max_tokens=MAX_TOKENS)
cache = harvest(cfg, lm=lm)
held = harvest(replace(cfg, split="validation", max_tokens=EVAL_TOKENS), lm=lm)
m = cache.manifest
print(f"{cache.n_tokens} tokens x {cache.d_model} dims in {len(cache.shard_sizes)} shards at {cache.folder}")
print(f"validation: {held.n_tokens} tokens from documents the training split never sees")
print(f"dropped outliers: {m['n_dropped_outliers']}; excluded positions per context: {m['exclude_first']}")

# %% [markdown]
# Your hook from exercise 1.1 should give the same numbers as the cache. The shard stores, for each kept
# token, which context (`ctx`) and position (`pos`) it came from; rerun the first context through your
# function and compare.

# %%
from saelab.acts.harvest import harvest_contexts

_, contexts = harvest_contexts(cfg, lm)
first_ctx = torch.as_tensor(contexts.tokens_NT[:1]).long().to(lm.device)
mine_TD = hook_residual(lm.model, first_ctx, layer)[0]
rows = cache.read_shard(0, ("acts", "ctx", "pos"))
in_first = rows["ctx"] == 0
theirs_TD = rows["acts"][in_first].float()
gap = (mine_TD[rows["pos"][in_first].long()].float().cpu() - theirs_TD).abs().max() / theirs_TD.abs().max()
print(f"context 0: {int(in_first.sum())} harvested positions; largest difference {float(gap):.1e} of the largest "
      f"activation (the cache stores {m['store_dtype']})")

# %% [markdown]
# ## 3. Activation norms: the attention sink and rare outliers
#
# Before deciding which tokens to train on, look at the norms of the raw activations, position by position.

# %%
import plotly.graph_objects as go
from saelab.acts.outliers import norm_survey

survey = norm_survey(lm, n_contexts=SURVEY_CONTEXTS, corpus=CORPUS, layer=layer)
norms = survey["norms_NT"]
median = norms[:, 1:].median()
print(f"median norm, position 0: {norms[:, 0].median():.0f}; positions 1-63: {median:.0f} "
      f"({norms[:, 0].median() / median:.0f}x)")
fig = go.Figure()
fig.add_histogram(x=norms[:, 1:].flatten().log10().numpy(), name="positions 1-63", nbinsx=80)
fig.add_histogram(x=norms[:, 0].log10().numpy(), name="position 0", nbinsx=20)
fig.update_layout(barmode="overlay", xaxis_title="log10 activation norm", yaxis_title="tokens", height=350,
                  title=f"Residual-stream norms after block {layer}")
fig.update_traces(opacity=0.7)
fig.show()

# %%
# The largest norms outside position 0, with their token in context
flat = norms[:, 1:].flatten()
order = flat.argsort(descending=True)[:8]
tok = lm.tokenizer
for i in order.tolist():
    c, p = divmod(i, norms.shape[1] - 1)
    p += 1
    left = tok.decode(survey["tokens_NT"][c, max(0, p - 6):p])
    print(f"{flat[i] / median:6.1f}x median  pos {p:2d}  ...{left!r} -> {tok.decode(survey['tokens_NT'][c, p:p + 1])!r}")

# %% [markdown]
# **What we do, and why.** Position 0 of every context has a norm about 70x the median (72x in our run): it is the *attention sink*, the token every head can attend to when it has nothing better to do, and its activation has nothing to do with its text. Training on it would spend latents and most of the MSE budget on one meaningless direction, so saelab excludes position 0 (`exclude_first=1`).
#
# Outside position 0, the largest norms belong to the `<|endoftext|>` separators between packed documents: about 50x the median, another sink (the model treats a separator as a fresh start). In our survey of SmolLM2 layer 22 every other token stayed within about 1.3x of the median. Because the loss is a *squared* error, a token at 50x the median weighs as much as 2,500 ordinary ones, so saelab drops tokens above 10x the batch median (`outlier_factor=10`): on `wiki-en` that removed the separators, about 1% of the tokens, and nothing else (saelab 0.2's survey); on the mixture our run dropped 2,240 of 400k tokens (0.6%), the top eight of them all separators. The manifest records how many were dropped (`n_dropped_outliers`). Set `outlier_factor=None` to keep everything, or study the sinks: they are real model behaviour, just not what a 4k-latent SAE should spend its budget on.

# %% [markdown]
# ## 4. What is on disk
#
# Shards are safetensors files (no pickle, memory-mapped reads, written to a temp name and renamed, so a killed harvest never leaves half a shard). The manifest records what the cache was built from, and opening a cache checks it: a cache for another model, layer or corpus is refused, and a broken shard is named.

# %%
import json

for f in cache.shard_files()[:3]:
    print(f.name, f"{f.stat().st_size / 2**20:.1f} MiB")
print(json.dumps({k: m[k] for k in ("model", "model_hash", "site", "layer", "corpus", "corpus_hash", "store_dtype",
                                     "n_tokens", "n_contexts")}, indent=1))
shard = cache.read_shard(0, ("acts", "tokens", "pos", "doc"))
print({k: (tuple(v.shape), str(v.dtype)) for k, v in shard.items()})
print("first tokens:", repr(tok.decode(shard["tokens"][:20])))

# %% [markdown]
# ## Recap
# - The residual stream is the running sum every block reads and writes; the paper trains SAEs on it near the
#   end of the network (3/4 of the depth for GPT-2 small), and saelab does the same by default.
# - A forward hook on a block captures its output; saelab's harvest stops the forward pass there and writes
#   sharded safetensors with a manifest that is checked when the cache is opened.
# - Position 0 (the attention sink) and document separators have norms of 50-70x the median; saelab drops
#   them (`exclude_first=1`, `outlier_factor=10`) so that the squared loss is not spent on them.
#
# ## Check your understanding
# 1. Why does a harvest not need the LM head or the blocks after the hooked one, and what does skipping them save?
#    <details><summary>Answer</summary>The SAE only sees the residual stream after block L, which no later
#    block can change; stopping there saves the remaining blocks and the vocabulary-sized head (for SmolLM2,
#    the 7 blocks after block 22 (of 0-29) and a 49k x 576 product per token).</details>
# 2. `output_hidden_states=True` returns 31 tensors for SmolLM2's 30 blocks. Which one is the output of block 22?
#    <details><summary>Answer</summary>`hidden_states[23]`: index 0 is the embeddings, so index L + 1 is the
#    output of block L.</details>
# 3. A token with 50x the median norm weighs how much in a squared-error loss, compared with a median token?
#    <details><summary>Answer</summary>About 2,500x (the error scales with the norm, and is squared), which
#    is why the outlier rule drops such tokens.</details>
# 4. You kill a harvest halfway and rerun the same cell. What happens, and why is no shard half-written?
#    <details><summary>Answer</summary>It resumes from the first missing shard: each shard is written to a
#    temporary name and renamed when complete, and the manifest records what the cache was built from.</details>
#
# ## Try it yourself
# - Harvest the MLP output instead: `HarvestConfig(site="mlp_out", ...)`. How do its norms compare?
# - Harvest an earlier layer (`LAYER = 8`) and redo the norm survey: does the attention sink exist there too?
# - Interrupt a large harvest (stop the kernel) and run the cell again: it resumes from the shards already written.
#
# Next: **02 · Training a TopK SAE** uses this cache.
