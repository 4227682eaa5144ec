"""The ReLU + L1 baseline (Gao et al. 2024 compare TopK with it at matched sparsity): every positive pre-activation,
and an L1 penalty on the codes.

    z = ReLU(W_enc (x_n - b_pre) + b_enc),   L = nmse + l1_coef * E_tokens ||z||_1

Decoder rows are unit norm, so ||z||_1 is the paper's L1 penalty. Trained densely (the codes are not sparse enough
early on for the sparse kernels to pay), with the coefficient ramped up over `l1_warmup_frac` of the steps.
"""

from __future__ import annotations

from dataclasses import dataclass

from saelab.sae.families.base import Family, ForwardOut, Penalty
from saelab.sae.losses import normalized_mse


@dataclass
class ReLUOptions:
    l1_coef: float = 0.0
    """L1 coefficient of the ReLU baseline (ramped up over l1_warmup_frac)."""


class ReLU(Family):
    name, display, options, selection = "relu", "ReLU + L1", ReLUOptions, "relu"
    has_k = False
    recipe = {"activation": "relu", "l1_warmup_frac": 0.25, "k_aux": 0, "lr": 2e-3}
    """The zoo's ReLU + L1 recipe (`saelab.zoo.ZOO['relu']`) without its coefficient: lr 2e-3 (3e-3 and above
    collapsed in earlier runs), L1 warmed up over the first quarter of steps, no AuxK."""
    penalty = Penalty("l1_coef", 0.183, 2.4, 0.25)
    """The zoo's calibration (`saelab.zoo`): 0.183 at L0 32, slope 2.4; on the synthetic data 0.11 gave L0 25."""
    saelens_reads, saelens_training = {"standard": "relu"}, "standard"

    def train_forward(self, sae, x_n, undo, ctx):
        z = sae.pre_acts(x_n).relu()
        recon_n = z @ sae.W_dec + sae.b_pre
        l1 = z.sum(-1).mean()  # decoder rows are unit norm, so this is the paper's L1 penalty
        losses = {"mse": (recon_n - x_n).pow(2).sum(-1).mean().detach() / sae.cfg.d_in,
                  "nmse": normalized_mse(recon_n, x_n, ctx.reduce()), "l1": l1}
        losses["total"] = losses["nmse"] + sae.cfg.l1_coef * ctx.ramp * l1
        active = z.detach() > 0
        fired = active.any(0)
        if ctx.dead_mask_fn is not None:
            ctx.dead_mask_fn(fired)
        return ForwardOut(undo(recon_n), losses, None, None, fired, active.sum(-1).float().mean())

    def inference(self, sae):
        return "relu", None

    def export_architecture(self, cfg) -> str:
        return "standard"

    def examples(self):
        return {"relu": {"activation": "relu", "l1_coef": 0.01}}


FAMILY = ReLU()
