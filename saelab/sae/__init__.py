"""Stage 3, the sparse autoencoder: the model and everything it needs to encode, decode and compute its loss.

    config       `SAEConfig` (what an SAE is asked to be; saved as cfg.json)
    model        `SAE`: TopK (AuxK, Multi-TopK), BatchTopK, Matryoshka, JumpReLU, the ReLU + L1 baseline, save/load
    activation_fns  which latents a token keeps: TopK, BatchTopK, JumpReLU, ReLU (test-time choices too)
    batchtopk    BatchTopK training: the batch's selection and the inference threshold it learns
    matryoshka   Matryoshka training: nested prefix widths and each prefix's own reconstruction loss
    jumprelu     JumpReLU training: straight-through threshold gradients, the L0 penalty, its forward pass
    input_norm   the space the SAE encodes from (the paper's per-token unit norm, layernorm, ...) and its undo
    kernels      sparse encode/decode and their backward passes (CPU and CUDA)
    losses       the paper's normalized MSE of one batch (the training loss)
    folder       saelab's SAE folder as files (cfg.json + sae.safetensors), no model code
    formats/     other libraries' SAE files (SAE Lens, sparsify, OpenAI, Gemma Scope, Llama Scope, dictionary_learning,
                 the Hub, SAE Lens release names) and `load_sae`; `push` to the Hub

May import: the earlier stages (`lm`, `acts`; none is needed today) and the top-level helpers. `formats/` builds
on the model, so the model never imports `formats/` (the layout test would see the circle).
"""
