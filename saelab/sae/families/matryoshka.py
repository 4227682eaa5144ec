"""Matryoshka SAEs (Bussmann et al. 2025, arXiv 2503.17547; Nabeshima 2024): nested prefixes of the dictionary each
reconstruct the input on their own, so the first latents learn general features that later ones refine instead of
absorbing them.

    widths m_1 < m_2 < ... < m_P = n        (cumulative prefix sizes, `matryoshka_widths`)
    x_hat_m = sum_{i < m} f_i(x) W_dec[i] + b_pre          (each prefix with the decoder bias)
    L       = sum_m nmse(x, x_hat_m)  [+ alpha AuxK]

The codes f(x) are those of the SAE's `activation` (BatchTopK's over the whole dictionary, as in the paper, or
TopK's), chosen once; each prefix decodes the selected entries whose latent index is below its width, so the sparse
kernels serve every prefix with one pattern. The full width's term is the model's `nmse`; the inner prefixes' sum is
logged as `matryoshka`. Everything else (parameters, inference, the threshold) is the activation's family's.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from saelab.sae.families.base import SparseFamily


@dataclass
class MatryoshkaOptions:
    matryoshka_widths: list[int] | str | None = None
    """Matryoshka SAE (Bussmann et al. 2025): cumulative prefix sizes, each prefix reconstructing the input on its own,
    strictly increasing, n_latents appended when missing; written '256,1024' or 'doubling:P' (P nested prefixes whose
    groups double, the paper's layout with P = 5). With activation 'batchtopk' this is the paper's Matryoshka
    BatchTopK SAE. None or '': off."""


def check_widths(widths, n_latents: int) -> list[int]:
    """The prefix widths as a strictly increasing list ending at n_latents (appended when missing)."""
    out = [int(w) for w in widths]
    if not out or any(w <= 0 for w in out):
        raise ValueError(f"matryoshka_widths must be positive prefix sizes, got {widths!r}")
    if any(b <= a for a, b in zip(out, out[1:])):
        raise ValueError(f"matryoshka_widths must be strictly increasing (cumulative prefix sizes), got {out}")
    if out[-1] > n_latents:
        raise ValueError(f"matryoshka_widths ends at {out[-1]}, more than n_latents={n_latents}")
    return out if out[-1] == n_latents else [*out, n_latents]


def parse_widths(text: str, n_latents: int) -> list[int] | None:
    """'' -> None; '256,1024' -> [256, 1024, n]; 'doubling:P' -> P nested prefixes whose groups double in size,
    m_i = n (2^i - 1) / 2^P (the paper's section 4.3 layout: {2048, 6144, 14336, 30720, 65536} at n = 65536, P = 5)."""
    text = text.strip()
    if not text:
        return None
    if text.startswith("doubling:"):
        levels = int(text.split(":", 1)[1])
        if levels < 2 or n_latents >> levels < 1:
            raise ValueError(f"matryoshka_widths {text!r}: needs 2 <= P and n_latents >= 2^P (n_latents={n_latents})")
        return check_widths([n_latents * (2**i - 1) >> levels for i in range(1, levels)], n_latents)
    try:
        return check_widths([int(w) for w in text.split(",") if w.strip()], n_latents)
    except ValueError as e:
        raise ValueError(f"matryoshka_widths {text!r}: {e}; write comma-separated sizes such as '256,1024,4096' "
                         "or 'doubling:5'") from None


def inner_prefix_losses(idx_BK, acts_BK, W_dec_ND, widths, target_BD, baseline, decode, pattern=None):
    """The normalized MSE of each inner prefix (every width but the last), as a list of scalars with graphs.
    `target_BD` is the centred input (x_n - b_pre) and `decode(idx, acts, W_dec, pattern)` decodes without b_pre,
    so decoded - target = x_hat_m - x_n."""
    rows = len(target_BD)
    losses = []
    for width in widths[:-1]:
        decoded = decode(idx_BK, acts_BK * (idx_BK < width).to(acts_BK.dtype), W_dec_ND, pattern)
        losses.append(torch.nn.functional.mse_loss(decoded, target_BD, reduction="sum") / rows / baseline)
    return losses


class Matryoshka(SparseFamily):
    name, display, options = "matryoshka", "Matryoshka BatchTopK", MatryoshkaOptions
    recipe = {"activation": "batchtopk", "matryoshka_widths": "doubling:5"}
    synthetic_recipe = {"matryoshka_widths": "doubling:4"}
    saelens_reads, saelens_training = {"matryoshka_batchtopk": "batchtopk"}, "matryoshka_batchtopk"

    def claims(self, cfg) -> bool:
        return bool(cfg.matryoshka_widths)

    def check(self, cfg, selection) -> None:
        if isinstance(cfg.matryoshka_widths, str):  # the command line's spelling
            cfg.matryoshka_widths = parse_widths(cfg.matryoshka_widths, cfg.n_latents)
        if cfg.matryoshka_widths is None:
            return
        if not selection.nests:
            raise ValueError(f"Matryoshka prefixes train TopK or BatchTopK SAEs; this one is {cfg.activation!r}")
        cfg.matryoshka_widths = check_widths(cfg.matryoshka_widths, cfg.n_latents)
        if cfg.multi_topk:
            raise ValueError("Matryoshka prefixes and Multi-TopK cannot be combined; choose one")

    def add_parameters(self, sae, dtype, device) -> None:
        self.registry[sae.cfg.activation].add_parameters(sae, dtype, device)

    def codes(self, sae, step, ctx):
        return self.registry[sae.cfg.activation].codes(sae, step, ctx)

    def extra_losses(self, sae, step, idx, acts, baseline, losses, total):
        # + the inner prefixes' own reconstruction errors
        losses["matryoshka"] = sum(inner_prefix_losses(idx, acts, sae.W_dec, sae.cfg.matryoshka_widths,
                                                       step.centred_g, baseline, step.decode, step.pattern))
        return total + losses["matryoshka"]

    def inference(self, sae):
        return self.registry[sae.cfg.activation].inference(sae)

    def after_step(self, sae) -> None:
        self.registry[sae.cfg.activation].after_step(sae)

    def finalize(self, sae, batches, ranks=None) -> None:
        self.registry[sae.cfg.activation].finalize(sae, batches, ranks)

    def export_architecture(self, cfg) -> str:
        return self.registry[cfg.activation].export_architecture(cfg)

    def training_architecture(self, cfg) -> str:  # SAE Lens has no Matryoshka TopK class
        inner = self.registry[cfg.activation]
        return self.saelens_training if inner.name == "batchtopk" else inner.training_architecture(cfg)

    def saelens_details(self, cfg) -> dict:
        widths = [int(w) for w in cfg.matryoshka_widths]
        return {**self.registry[cfg.activation].saelens_details(cfg), "matryoshka_widths": widths}

    def examples(self):
        return {"matryoshka": {"activation": "batchtopk", "matryoshka_widths": [16, 48, 112]},
                "matryoshka_topk": {"activation": "topk", "matryoshka_widths": [16, 48, 112]}}


FAMILY = Matryoshka()
