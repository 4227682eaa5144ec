"""TopK (Gao et al. 2024, sections 2.3 and 5.3): each token keeps its k largest pre-activations, through a ReLU (the
released code's relu(topk(.)); the paper's eq. 2 writes TopK(W_enc (x_n - b_pre))), with AuxK and Multi-TopK.

    z     = TopK_k(W_enc (x_n - b_pre) + b_enc)
    L     = nmse(x_hat_k) [+ multi_topk_coef * nmse(x_hat_{factor k})] + aux_coef * AuxK

Multi-TopK: the first k of the sorted top factor*k are the top k; one encode serves both terms, and L(4k)'s
reconstruction is L(k)'s plus the other 3k's (`kernels.split_decode`).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from saelab.sae.families.base import SparseFamily, SparseStep
from saelab.sae.kernels import dense_decode, split_decode
from saelab.sae.losses import normalized_mse


@dataclass
class TopKOptions:
    multi_topk: bool = False
    """Train with Multi-TopK: L(k) + multi_topk_coef * L(multi_topk_factor * k) (paper section 5.3)."""
    multi_topk_factor: int = 4
    """Multi-TopK's larger k, as a multiple of k (paper: 4)."""
    multi_topk_coef: float = 1 / 8
    """Multi-TopK's weight of the larger k's loss (paper: 1/8)."""


class TopK(SparseFamily):
    name, display, options, selection, nests = "topk", "TopK", TopKOptions, "topk", True
    saelens_reads, saelens_training = {"topk": "topk"}, "topk"

    def check(self, cfg, selection) -> None:
        if cfg.multi_topk and cfg.activation != self.name:
            raise ValueError(f"Multi-TopK trains TopK SAEs only; this SAE's activation is {cfg.activation!r}")
        if cfg.multi_topk and cfg.k * cfg.multi_topk_factor > cfg.n_latents:
            raise ValueError(f"Multi-TopK needs k*{cfg.multi_topk_factor} <= n_latents={cfg.n_latents}")

    def codes(self, sae, step: SparseStep, ctx):
        cfg = sae.cfg
        k = cfg.k * cfg.multi_topk_factor if cfg.multi_topk else cfg.k
        with torch.no_grad():
            vals, idx, pre_BN = sae.select(step.centred, k, sorted_=cfg.multi_topk)
        return step.encode(idx, vals), idx, pre_BN

    def train_forward(self, sae, x_n, undo, ctx):
        cfg = sae.cfg
        if not cfg.multi_topk:
            return super().train_forward(sae, x_n, undo, ctx)
        step = SparseStep(sae, x_n)
        acts, idx, pre_BN = self.codes(sae, step, ctx)
        k = cfg.k
        if step.sparse:
            first, rest = split_decode(idx, acts, sae.W_dec, k, step.pattern)
        else:
            first, rest = dense_decode(idx[:, :k], acts[:, :k], sae.W_dec), dense_decode(idx[:, k:], acts[:, k:],
                                                                                        sae.W_dec)
        losses, total, baseline = step.reconstruction(first, ctx)
        losses["multi_topk"] = normalized_mse(first + rest, step.centred_g, baseline=baseline)
        total = total + cfg.multi_topk_coef * losses["multi_topk"]
        return step.finish(first, acts[:, :k], idx[:, :k], losses, total, pre_BN, ctx, undo)

    def inference(self, sae):
        return "topk", None

    def examples(self):
        return {"topk": {}, "multi_topk": {"multi_topk": True}}


FAMILY = TopK()
