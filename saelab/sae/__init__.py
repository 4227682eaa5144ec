"""Stage 3, the sparse autoencoder: the model and everything it needs to encode, decode and compute its loss.

    config       `SAEConfig` (what an SAE is asked to be; saved as cfg.json): core fields + each family's options
    model        `SAE`: what every family shares (parameters, normalisation, decoding, dead latents, save/load)
    families/    one file per SAE family (TopK, BatchTopK, Matryoshka, JumpReLU, ReLU + L1), registered by name
    auxk         AuxK: the dead latents' reconstruction of the residual (every family with k_aux > 0)
    activation_fns  test-time activations: which latents a token keeps (TopK(k'), JumpReLU(theta), ...)
    input_norm   the space the SAE encodes from (the paper's per-token unit norm, layernorm, ...) and its undo
    kernels      sparse encode/decode and their backward passes (CPU and CUDA)
    losses       the paper's normalized MSE of one batch (the training loss)
    folder       saelab's SAE folder as files (cfg.json + sae.safetensors), no model code
    formats/     other libraries' SAE files (SAE Lens, sparsify, OpenAI, Gemma Scope, Llama Scope, dictionary_learning,
                 the Hub, SAE Lens release names) and `load_sae`; `push` to the Hub

May import: the earlier stages (`lm`, `acts`; none is needed today) and the top-level helpers. `formats/` builds
on the model, so the model never imports `formats/` (the layout test would see the circle).
"""
