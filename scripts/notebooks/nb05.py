"""Generates notebooks/05_explore_latents.ipynb (run: python scripts/notebooks/nb05.py)."""
from pathlib import Path

import nbformat as nbf

nb = nbf.v4.new_notebook()
md = lambda s: nbf.v4.new_markdown_cell(s.strip())  # noqa: E731
code = lambda s, **kw: nbf.v4.new_code_cell(s.strip(), **kw)  # noqa: E731
cells = [
md("""
# 05 · Exploring latents

After training comes looking. This notebook opens a dashboard over the TopK SAE's latents (in the spirit of
Neuronpedia's feature pages and sae_vis), helps you find latents worth reading, and teaches how to judge whether one is
*interpretable* rather than a story you told yourself.

**What you will learn**
1. what the explorer shows: activation density over all latents, a latent's activation histogram, its direct effect
   on the output logits, its top examples and samples from every activation range, its N2G explanation;
2. how to find candidate latents (search by token, by a text's strongest latents, or by N2G score);
3. a checklist for judging a latent, and how to share one as a static HTML page.

**Time**: about 2 minutes in fast mode (`SAELAB_FAST=1`), about 5 minutes at full size the first time (the
statistics are computed once and stored next to the SAE), seconds after.
"""),
code("""
# Parameters
import os

FAST = os.environ.get("SAELAB_FAST", "") not in ("", "0", "false")
SAE_FOLDER = None                          # None: the zoo's TopK SAE; or e.g. "runs/default/sae"
STATS_CONTEXTS = 48 if FAST else 512       # held-out contexts of 64 tokens for the statistics
N2G_LATENTS = 64 if FAST else 512          # latents given an N2G explanation
START_LATENT = None                        # None: start at the densest latent
""", metadata={"tags": ["parameters"]}),
code("""
from pathlib import Path

import torch

from saelab.latent_stats import StatsConfig, latent_stats_for
from saelab.models import load_lm
from saelab.presets import zoo_sae
from saelab.sae import SAE

if SAE_FOLDER:
    sae, sae_dir = SAE.load(SAE_FOLDER), Path(SAE_FOLDER)
else:
    sae, run_dir = zoo_sae("topk")
    sae_dir = run_dir / "sae"
lm = load_lm(sae.cfg.model)
stats = latent_stats_for(lm, sae, sae_dir, StatsConfig(n_contexts=STATS_CONTEXTS))
print(f"{stats.n_latents} latents; statistics over {stats.config['n_valid_tokens']} held-out tokens; "
      f"dead (never fired there): {int((stats.density_N == 0).sum())}")
"""),
md("""
## N2G explanations for a sample of latents

Notebook 03 explains N2G: the shortest n-grams that make a latent fire, checked on held-out text. Here they label the
dashboard. They are built on training text and scored on the statistics' held-out text.
"""),
code("""
from saelab.data import ContextConfig, build_contexts, load_corpus
from saelab.splice import encode_contexts
from saelab.n2g import n2g_evaluation

build_tokens = torch.from_numpy(build_contexts(load_corpus("wiki-en"), lm.tokenizer, ContextConfig(), "train",
                                               96 if FAST else 512).tokens_NT).long()
n2g = n2g_evaluation(encode_contexts(lm, sae, build_tokens), stats.codes, n_latents=N2G_LATENTS, tokenizer=lm.tokenizer)
explanations = {r["latent"]: f"{r['explanation']}  (held-out F1 {r['f1']:.2f})" for r in n2g["rows"] if r["n_ngrams"]}
print(f"{len(explanations)} of {len(n2g['rows'])} sampled latents have an n-gram explanation")
"""),
md("""
## The explorer

Type an index or use ◀ ▶; search latents by a token (`' Paris'`) or type a sentence in *by text* to jump to its
strongest latent. The *Try your own text* box runs the model and the SAE live and highlights the chosen latent.
Hover a token to see its activation.
"""),
code("""
from saelab.explorer import LatentExplorer

explorer = LatentExplorer(lm, sae, stats, explanations=explanations, start=START_LATENT)
explorer
"""),
md("""
## Finding interpretable latents

Good candidates fire rarely (density well under 10%) and have a precise N2G explanation on held-out text. The table
ranks the explained latents; pick one and show it in the explorer above.
"""),
code("""
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
"""),
md("""
## How to judge a latent

Ask these questions of the dashboard, in this order; a latent earns the word *interpretable* only if it passes them.

1. **Top examples agree.** Do the top activations share one thing you can name (a token, a phrase, a topic, a syntactic
   role)? If they are a mix, stop: it is polysemantic or you are seeing noise.
2. **The name holds at low activations.** Open *quantile intervals*: the lowest intervals are where explanations fail.
   If only the top decile fits your name, your name describes the tail, not the latent.
3. **It predicts, not just describes.** Write text that should and should not activate it in *Try your own text*. A
   good explanation lets you predict both; the N2G F1 is the automated version of this test (low recall = the latent
   does more than its n-grams).
4. **Density is plausible.** A latent firing on more than ~10% of tokens (dense, right of the red line) is rarely a
   single concept; one firing almost never is hard to evaluate from a sample this size.
5. **Its output makes sense.** The logit effects show what the decoder direction pushes the model toward directly. A
   "year" latent that promotes digits is coherent; unrelated tokens suggest the latent's role is indirect.

Beware of confirmation: look at the quantile samples *before* reading the N2G explanation.

## Sharing one latent

Widgets need a live kernel. `export_latent_html` writes one latent's dashboard as a self-contained HTML file
(plotly inlined) that opens anywhere.
"""),
code("""
import tempfile

from saelab.dashboard import export_latent_html

page = export_latent_html(lm, sae, stats, explorer.current, Path(tempfile.mkdtemp()) / f"latent_{explorer.current}.html",
                          explanation=explanations.get(explorer.current))
print(f"wrote {page} ({page.stat().st_size // 1024} KiB)")
"""),
]
nb["cells"] = cells
nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
nb.metadata["language_info"] = {"name": "python"}
nbf.write(nb, str(Path(__file__).resolve().parents[2] / "notebooks" / "05_explore_latents.ipynb"))
