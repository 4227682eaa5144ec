"""`SAEConfig`: what an SAE is asked to be (architecture, losses, provenance), saved as its cfg.json."""

from __future__ import annotations

import math
from dataclasses import dataclass

from saelab.sae.activation_fns import SAE_ACTIVATIONS
from saelab.sae.input_norm import canonical_normalization
from saelab.sae.matryoshka import check_widths


def default_k_aux(d_in: int) -> int:
    """saelab's default k_aux: a power of two near d_in / 2 (512 at d_in = 768, 256 at SmolLM2's 576).

    Attribution, checked: the released code's train.py `Config` sets auxk = 256 with d_model = 768 (a third of
    d, not a half). saelab 0.1 credited "about d/2" to the paper; this project could not reach the paper's text
    to confirm that sentence, so the rule is stated here as saelab's own choice."""
    return 2 ** round(math.log2(max(d_in / 2, 1)))


@dataclass
class SAEConfig:
    """Architecture, losses and provenance of an SAE, as asked; saved as cfg.json next to its weights.
    What changes while training (the data's input scale, tokens seen) lives in the SAE's buffers."""

    d_in: int
    """Width of the activations (the LM's d_model for the residual stream)."""
    n_latents: int
    """Number of latents n."""
    k: int = 32
    """Active latents per token for TopK."""
    activation: str = "topk"
    """Training activation: 'topk', 'batchtopk' (the batch's top B*k, Bussmann et al. 2024; at inference one
    threshold, a `threshold` buffer set in training), 'jumprelu' (a learned per-latent `threshold` parameter and
    an L0 penalty, Rajamanoharan et al. 2024: `saelab.sae.jumprelu`) or 'relu' (the ReLU+L1 baseline)."""
    matryoshka_widths: list[int] | None = None
    """Matryoshka SAE (Bussmann et al. 2025, `saelab.sae.matryoshka`): cumulative prefix sizes, each prefix
    reconstructing the input on its own; strictly increasing, n_latents appended when missing. None: off."""
    l0_coef: float = 0.0
    """JumpReLU's L0 coefficient lambda (the loss is nmse + lambda E||f||_0)."""
    jumprelu_bandwidth: float = 0.001
    """JumpReLU's straight-through bandwidth epsilon (in the SAE's input space)."""
    jumprelu_init_threshold: float = 0.001
    """JumpReLU's initial threshold theta, every latent."""
    k_aux: int | None = None
    """Dead latents used by the AuxK loss; None = a power of two near d_in/2 (0 for JumpReLU); 0 disables AuxK."""
    aux_coef: float = 1 / 32
    """AuxK coefficient alpha (paper: 1/32)."""
    multi_topk: bool = False
    """Train with Multi-TopK: L(k) + multi_topk_coef * L(multi_topk_factor * k)."""
    multi_topk_factor: int = 4
    multi_topk_coef: float = 1 / 8
    l1_coef: float = 0.0
    """L1 coefficient for the ReLU baseline (ignored by TopK)."""
    normalize: str = "none"
    """Input normalisation (see saelab.sae.input_norm): 'per_token_unit_norm' (paper 2.1), 'layernorm'
    (the released code's LN), 'dataset_unit_norm' (one scale for the whole dataset) or 'none'."""
    kernel: str = "sparse"
    """'sparse' (k-row backward) or 'dense' (plain autograd reference)."""
    dtype: str = "float32"
    model: str | None = None
    """Provenance: the LM, hook site and layer the SAE was trained on."""
    site: str | None = None
    layer: int | None = None
    hook: str | None = None
    """Provenance of an SAE made elsewhere: the hook name as its library wrote it (e.g. SAE Lens's
    'blocks.8.hook_resid_post', sparsify's 'layers.8'); `site` and `layer` are saelab's reading of it."""
    source: str | None = None
    """Where the weights came from when not trained by saelab: 'sae_lens', 'sparsify', 'openai', with the
    path or Hub id (see saelab.sae.formats.load_sae)."""

    def __post_init__(self):
        if self.d_in < 1 or self.n_latents < 1:
            raise ValueError(f"d_in and n_latents must be >= 1, got {self.d_in}, {self.n_latents}")
        if not 1 <= self.k <= self.n_latents:
            raise ValueError(f"k must be between 1 and n_latents={self.n_latents}, got k={self.k}")
        if self.activation not in SAE_ACTIVATIONS:
            raise ValueError(f"activation must be one of {SAE_ACTIVATIONS}, got {self.activation!r}")
        self.normalize = canonical_normalization(self.normalize)
        if self.kernel not in ("sparse", "dense"):
            raise ValueError(f"kernel must be 'sparse' or 'dense', got {self.kernel!r}")
        if self.k_aux is None:  # JumpReLU's paper has no AuxK
            self.k_aux = 0 if self.activation == "jumprelu" else default_k_aux(self.d_in)
        if self.matryoshka_widths is not None:
            if self.activation not in ("topk", "batchtopk"):
                raise ValueError(f"Matryoshka prefixes train TopK or BatchTopK SAEs; this one is {self.activation!r}")
            self.matryoshka_widths = check_widths(self.matryoshka_widths, self.n_latents)
            if self.multi_topk:
                raise ValueError("Matryoshka prefixes and Multi-TopK cannot be combined; choose one")
        if self.activation == "jumprelu" and not (self.jumprelu_bandwidth > 0 and self.jumprelu_init_threshold >= 0):
            raise ValueError("jumprelu_bandwidth must be > 0 and jumprelu_init_threshold >= 0, got "
                             f"{self.jumprelu_bandwidth}, {self.jumprelu_init_threshold}")
        if self.multi_topk and self.activation != "topk":
            raise ValueError(f"Multi-TopK trains TopK SAEs only; this SAE's activation is {self.activation!r}")
        if self.multi_topk and self.k * self.multi_topk_factor > self.n_latents:
            raise ValueError(f"Multi-TopK needs k*{self.multi_topk_factor} <= n_latents={self.n_latents}")

    @property
    def k_train(self) -> int:
        """Latents selected in the training forward pass (k, or factor*k with Multi-TopK)."""
        return self.k * self.multi_topk_factor if self.multi_topk else self.k
