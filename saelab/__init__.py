"""saelab: TopK sparse autoencoders on language-model activations (Gao et al. 2024).

Pipeline, one module each: assets -> models / data -> harvest -> sae (+ kernels) -> train -> report.
"""

__version__ = "0.1.0"
