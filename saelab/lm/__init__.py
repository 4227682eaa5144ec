"""Stage 1, the language model: load a causal LM (the embedded SmolLM2-135M, any Hugging Face hub id, a tiny
random model for tests) and hook a site in it.

    models  `load_lm` -> `LM` (model, tokenizer, d_model, blocks); devices
    sites   hook sites (resid_post, mlp_out, attn_out) and a forward pass that stops right after one
    hub     fail fast, with the fix, on a name that is neither built in nor reachable

May import: only the top-level helpers (`saelab.assets`, `files`, `config`, `distributed`, `pages`).
"""
