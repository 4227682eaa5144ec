"""Stage 2, activations: text in, activations out.

    texts     the embedded corpora's documents (credited) and the English mixture the main job trains on
    corpus    text corpora (embedded and hub), the train / validation / test split, fixed-length contexts
    outliers  the token-norm outlier rule the harvest applies, and the norm survey behind its defaults
    harvest   run the LM to a site over contexts, write the activation cache (resumable, sharded)
    cache     the activation cache on disk: sharded safetensors, verified, read in a seeded order
    stream    activations straight from the LM with a shuffle buffer (no disk)
    synthetic activations made from known features (superposition, a hierarchy, Zipf-like frequencies)
    synthetic_saelens  the same toy made by SAE Lens's generator (SynthSAEBench's); its scores: `evals`

May import: `lm` and the top-level helpers.
"""
