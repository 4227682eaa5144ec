"""`SAEConfig`: what an SAE is asked to be (architecture, losses, provenance), saved as its cfg.json.

Its fields are the core ones below, then each registered family's options (`saelab.sae.families`: TopK's
Multi-TopK, Matryoshka's widths, JumpReLU's L0 coefficient and bandwidth, ...), then the provenance. A family's
options are its own dataclass in its own file; they join this one, so a saved config stays one flat record.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from saelab.sae.families import FAMILIES, activations, family_of, option_classes
from saelab.sae.input_norm import canonical_normalization


def default_k_aux(d_in: int) -> int:
    """saelab's default k_aux: a power of two near d_in / 2 (512 at d_in = 768, 256 at SmolLM2's 576).

    Attribution, checked: the released code's train.py `Config` sets auxk = 256 with d_model = 768 (a third of
    d, not a half). saelab 0.1 credited "about d/2" to the paper; this project could not reach the paper's text
    to confirm that sentence, so the rule is stated here as saelab's own choice."""
    return 2 ** round(math.log2(max(d_in / 2, 1)))


@dataclass
class CoreConfig:
    """What every SAE has (the first fields of `SAEConfig`)."""

    d_in: int | None = field(default=None, metadata={"flag": False})
    """Width of the activations (the LM's d_model for the residual stream); None: set from the data by the
    Trainer."""
    n_latents: int = 4096
    """Number of latents n."""
    k: int = 32
    """Active latents per token (TopK; BatchTopK: on average over the batch; others: the test-time TopK default)."""
    activation: str = field(default="topk", metadata={"choices": activations})
    """The SAE family (`saelab.sae.families`): its training selection and loss, and how it encodes at inference."""
    k_aux: int | None = None
    """Dead latents used by the AuxK loss; None = a power of two near d_in/2 (0 for JumpReLU); 0 disables AuxK."""
    aux_coef: float = 1 / 32
    """AuxK coefficient alpha (paper: 1/32)."""
    normalize: str = field(default="none", metadata={"choices": lambda: ("none", "dataset_unit_norm", "layernorm",
                                                                          "per_token_unit_norm")})
    """Input normalisation (saelab.sae.input_norm): 'per_token_unit_norm' (paper 2.1), 'layernorm' (the released
    code's LN), 'dataset_unit_norm' (one scale for the whole dataset) or 'none'. Losses and normalized MSE are
    measured after it."""
    kernel: str = field(default="sparse", metadata={"choices": lambda: ("sparse", "dense")})
    """'sparse' (k-row backward) or 'dense' (plain autograd reference)."""
    dtype: str = "float32"
    """The parameters' dtype."""


@dataclass
class SAEConfig(*reversed(option_classes()), CoreConfig):
    """Architecture, losses and provenance of an SAE, as asked; saved as cfg.json next to its weights.
    What changes while training (the data's input scale, tokens seen) lives in the SAE's buffers."""

    model: str | None = field(default=None, metadata={"flag": False})
    """Provenance: the LM, hook site and layer the SAE was trained on (set from the data, as d_in)."""
    site: str | None = field(default=None, metadata={"flag": False})
    layer: int | None = field(default=None, metadata={"flag": False})
    hook: str | None = field(default=None, metadata={"flag": False})
    """Provenance of an SAE made elsewhere: the hook name as its library wrote it (e.g. SAE Lens's
    'blocks.8.hook_resid_post', sparsify's 'layers.8'); `site` and `layer` are saelab's reading of it."""
    source: str | None = field(default=None, metadata={"flag": False})
    """Where the weights came from when not trained by saelab: 'sae_lens', 'sparsify', 'openai', with the
    path or Hub id (see saelab.sae.formats.load_sae)."""

    def __post_init__(self):
        if (self.d_in is not None and self.d_in < 1) or self.n_latents < 1:
            raise ValueError(f"d_in and n_latents must be >= 1, got {self.d_in}, {self.n_latents}")
        if not 1 <= self.k <= self.n_latents:
            raise ValueError(f"k must be between 1 and n_latents={self.n_latents}, got k={self.k}")
        if self.activation not in activations():
            raise ValueError(f"activation must be one of {activations()}, got {self.activation!r}")
        self.normalize = canonical_normalization(self.normalize)
        if self.kernel not in ("sparse", "dense"):
            raise ValueError(f"kernel must be 'sparse' or 'dense', got {self.kernel!r}")
        selection = FAMILIES[self.activation]
        for fam in FAMILIES.values():
            fam.check(self, selection)
        if self.k_aux is None and self.d_in is not None:
            self.k_aux = selection.default_k_aux(self.d_in, default_k_aux(self.d_in))

    @property
    def family(self) -> str:
        """The name of the SAE's family (`saelab.sae.families`)."""
        return family_of(self).name
