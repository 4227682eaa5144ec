"""An exponential moving average of an SAE's parameters, bias-corrected as in the released training loop.

openai/sparse_autoencoder `train.py` (`EmaModel`): the average starts at zero, moves towards the parameters by
``1 - decay`` each step, and is divided by ``1 - decay ** steps`` when used, so its first steps are not pulled
towards zero (0.999 is `training_loop_`'s default; the file's `Config` leaves the EMA off). Two differences
from that loop, both saelab's choice:
- the released loop updates the average just before the optimiser step (it averages the weights each step
  started from); saelab averages the weights each step ends with, after the decoder is renormalised, so the
  last step is in the average;
- the average of unit-norm decoder rows is slightly shorter than unit norm; `fold_decoder_norms_` makes the
  rows unit norm again and scales each latent's encoder row and bias by the same factor, which leaves every
  reconstruction unchanged for a fixed set of active latents (the README records how much it moves).
"""

from __future__ import annotations

from contextlib import contextmanager

import torch


class WeightEMA:
    """Bias-corrected EMA of a module's parameters (`update` after each optimiser step)."""

    def __init__(self, module: torch.nn.Module, decay: float):
        if not 0.0 < decay < 1.0:
            raise ValueError(f"ema_decay must be in (0, 1), got {decay}; 0.999 averages over ~1,000 steps")
        self.module, self.decay, self.steps = module, decay, 0
        self.names = [n for n, _ in module.named_parameters()]
        self.shadow = [torch.zeros_like(p, requires_grad=False) for p in module.parameters()]

    @torch.no_grad()
    def update(self) -> None:
        torch._foreach_lerp_(self.shadow, [p.detach() for p in self.module.parameters()], 1.0 - self.decay)
        self.steps += 1

    def averaged(self) -> list[torch.Tensor]:
        """The bias-corrected averages, one per parameter."""
        if self.steps == 0:
            raise RuntimeError("the EMA has no steps yet: call update() after an optimiser step")
        return torch._foreach_div(self.shadow, 1.0 - self.decay ** self.steps)

    @contextmanager
    def swapped_in(self):
        """Run the module with the averaged parameters inside the block; its own come back afterwards."""
        live = [p.detach().clone() for p in self.module.parameters()]
        with torch.no_grad():
            for p, a in zip(self.module.parameters(), self.averaged()):
                p.copy_(a)
        try:
            yield self.module
        finally:
            with torch.no_grad():
                for p, v in zip(self.module.parameters(), live):
                    p.copy_(v)

    def state_tensors(self) -> dict[str, torch.Tensor]:
        return {f"ema.{n}": t.contiguous().cpu() for n, t in zip(self.names, self.shadow)}

    def load_state_tensors(self, tensors: dict[str, torch.Tensor], steps: int) -> None:
        missing = [n for n in self.names if f"ema.{n}" not in tensors]
        if missing:
            raise ValueError(f"the checkpoint's EMA lacks {missing}; resume with the ema_decay it was written with")
        with torch.no_grad():
            for n, t in zip(self.names, self.shadow):
                t.copy_(tensors[f"ema.{n}"])
        self.steps = steps


@torch.no_grad()
def fold_decoder_norms_(sae) -> torch.Tensor:
    """Scale decoder rows to unit norm, multiplying each latent's encoder row and bias by the row's old norm
    (so z_i d_i is unchanged for any active set); returns the old norms."""
    norms = sae.W_dec.norm(dim=1)
    sae.W_dec.div_(norms[:, None])
    sae.W_enc.mul_(norms[:, None])
    sae.b_enc.mul_(norms)
    if hasattr(sae, "threshold"):  # JumpReLU: the threshold is on the pre-activation's scale
        sae.threshold.mul_(norms)
    return norms
