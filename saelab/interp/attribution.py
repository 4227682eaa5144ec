"""Attribute a scalar of the LM's output to SAE latents (attribution patching, activation x gradient).

With the SAE spliced in and its error term kept (so the forward pass is the clean one), the activations
a of the latents each position selects are made leaves of the graph; for a metric m of the logits,

    effect of ablating latent j at position t  ~=  -a_tj * dm/da_tj      (first-order Taylor estimate)

summed over positions for a latent's total. It is exact only when m is linear in the site's activations
(e.g. the last block's output with the final norm removed, as the tests build it); in a real LM (norms,
attention, softmax after the site) it is a first-order estimate: compare it with real ablations
(`ablation_effects`) on the latents it ranks highest, as notebook 07 does.
One forward and one backward pass give the estimate for every active latent at once.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from saelab.evals.splice import SpliceSite, site_hooked
from saelab.lm.models import LM
from saelab.sae.model import SAE


@dataclass
class Attribution:
    """Estimated ablation effects of the active latents on a metric, for one batch of token contexts."""

    metric: float
    """The metric's value on the clean forward pass."""
    positions_R: torch.Tensor
    """(batch row, position) of each row the SAE handled, [R, 2]."""
    idx_RK: torch.Tensor
    acts_RK: torch.Tensor
    grad_RK: torch.Tensor
    """d metric / d activation of each selected latent."""
    n_latents: int

    @property
    def effect_RK(self) -> torch.Tensor:
        """Estimated change of the metric when each (position, latent) is ablated: -a * dm/da."""
        return -self.acts_RK * self.grad_RK

    @property
    def per_latent_N(self) -> torch.Tensor:
        """Estimated change of the metric when a latent is ablated at every position (sum over positions)."""
        out = torch.zeros(self.n_latents, dtype=self.effect_RK.dtype)
        return out.index_add_(0, self.idx_RK.reshape(-1).cpu(), self.effect_RK.reshape(-1).cpu())

    def top(self, n: int = 10) -> list[tuple[int, float]]:
        """The `n` latents whose ablation is estimated to change the metric most (either sign)."""
        per = self.per_latent_N
        order = per.abs().argsort(descending=True)[:n]
        return [(int(i), float(per[i])) for i in order if per[i] != 0]


def attribute(lm: LM, sae: SAE, input_ids: torch.Tensor, metric: Callable[[torch.Tensor], torch.Tensor],
              where: SpliceSite | None = None) -> Attribution:
    """`Attribution` of `metric(logits [B, T, V]) -> scalar` to the SAE's latents on `input_ids` [B, T]."""
    where = where or SpliceSite.of(sae, lm)
    ids = torch.as_tensor(input_ids).long()
    ids = ids[None] if ids.ndim == 1 else ids
    saved: dict = {}

    def replace(x_BTD, mask_BT, positions_BT):
        rows = x_BTD[mask_BT].detach().to(sae.W_dec.dtype)
        enc = sae.encode(rows)  # which latents are selected: fixed, as ablating one does not reselect
        acts = enc.top_acts_BK.clone().requires_grad_(True)
        recon = sae.decode(acts, enc.top_idx_BK, rows, grad=True)
        saved.update(acts=acts, idx=enc.top_idx_BK, where=mask_BT.nonzero())
        out = torch.zeros_like(x_BTD, dtype=sae.W_dec.dtype)
        out[mask_BT] = recon + (rows - recon).detach()  # the clean value; gradients reach `acts` only
        return out

    trainable = [p.requires_grad for p in sae.parameters()]
    sae.requires_grad_(False)  # gradients reach the activations only, never the SAE's weights
    try:
        with torch.enable_grad(), site_hooked(lm, where, replace):
            value = metric(lm.model(input_ids=ids.to(lm.device), use_cache=False).logits.float())
            if value.numel() != 1:
                raise ValueError(f"the metric must return a scalar, got shape {tuple(value.shape)}")
            if "acts" not in saved:
                raise ValueError("the SAE handled no position of these contexts (too short for exclude_first?)")
            value.backward()
    finally:
        for p, flag in zip(sae.parameters(), trainable):
            p.requires_grad_(flag)
    acts = saved["acts"]
    grad = acts.grad if acts.grad is not None else torch.zeros_like(acts)
    return Attribution(float(value.detach()), saved["where"].cpu(), saved["idx"].cpu(), acts.detach().cpu(),
                       grad.detach().cpu(), sae.cfg.n_latents)


def ablation_effects(lm: LM, sae: SAE, input_ids: torch.Tensor, metric: Callable[[torch.Tensor], torch.Tensor],
                     latents: list[int], where: SpliceSite | None = None) -> dict[int, float]:
    """The real change of the metric when each latent is ablated at every position (error term kept)."""
    from saelab.interp.steering import ablate, spliced

    ids = torch.as_tensor(input_ids).long()
    ids = (ids[None] if ids.ndim == 1 else ids).to(lm.device)
    with torch.no_grad():
        with spliced(lm, sae, where=where):
            clean = float(metric(lm.model(input_ids=ids, use_cache=False).logits.float()))
        out = {}
        for j in latents:
            with spliced(lm, sae, [ablate(j)], where=where):
                out[int(j)] = float(metric(lm.model(input_ids=ids, use_cache=False).logits.float())) - clean
    return out
