"""saelab: TopK sparse autoencoders on language-model activations (Gao et al. 2024).

Pipeline, one module each: assets -> models / data -> harvest -> sae (+ kernels) -> train -> report.
`saelab.load_sae(source)` reads saelab, SAE Lens, sparsify, OpenAI and Hub SAEs (`saelab.formats`).
"""

__version__ = "0.1.0"


def __getattr__(name):  # lazy, so that `import saelab` (and the CLI's start) does not import torch
    if name == "load_sae":
        from .formats import load_sae

        return load_sae
    raise AttributeError(f"module 'saelab' has no attribute {name!r}")
