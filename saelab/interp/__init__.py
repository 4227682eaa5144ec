"""Stage 7, interpretability tools: look at latents and use them causally.

    latent_stats  per-latent statistics over a corpus, stored next to the SAE
    dashboard     pure functions that render a latent (top activations, histograms, logit effects), escaped HTML
    explorer      `LatentExplorer`, the ipywidgets dashboard over them
    export        `saelab dashboard`: static latent pages that open offline, and a Neuronpedia-format JSON export
    steering      edits through the splice: steer, clamp, ablate; `spliced` and `generate`
    attribution   which latents a metric depends on: attribution estimates against real ablations

May import: every earlier stage (`lm` to `studies`; it uses `lm`, `acts`, `sae`, `evals`) and the top-level helpers.
"""
