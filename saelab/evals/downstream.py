"""Downstream loss (Gao et al. 2024, section 4.1): what splicing the SAE costs the language model.

The SAE is spliced into the LM (`saelab.evals.splice`) and the rest of the forward pass runs on its
reconstruction. On held-out text:

    delta loss        = CE(spliced) - CE(clean)                    (next-token cross-entropy, nats)
    KL                = mean over positions of KL(p_clean || p_spliced)
    loss recovered    = (CE(ablated) - CE(spliced)) / (CE(ablated) - CE(clean))
                        with the site zero-ablated or mean-ablated (the usual baselines)

Two conventions for which positions are spliced (`downstream_conventions` gives both, each named for what it is):
- trained positions (saelab's default): only the positions the SAE's training harvest kept (not position 0, the
  attention sink, nor the norm outliers such as document separators); the others stay clean, and CE and KL are read
  from the first spliceable position on.
- every position (SAEBench's core default, `exclude_special_tokens_from_reconstruction=False`, and SAE Lens's
  evaluation): the SAE replaces the activation at every position, and CE and KL count every prediction. Zero- and
  mean-ablation then also ablate every position. Where saelab differs from SAEBench 0.6.0 here: its KL also counts
  the last position's distribution (which predicts no target in the context), and its contexts start with a BOS
  token; saelab's contexts are the harvest's (no BOS), and KL is averaged over the positions that predict a token.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from saelab.evals.splice import (
    Replacement,
    SpliceSite,
    mean_replacement,
    patched_logits,
    sae_replacement,
    site_mean,
    zero_replacement,
)
from saelab.lm.models import LM
from saelab.sae.model import SAE


@torch.no_grad()
def downstream_losses(lm: LM, tokens_NT: torch.Tensor, replacements: dict[str, Replacement], where: SpliceSite,
                      batch_size: int = 16, progress: bool = True) -> dict:
    """CE and KL(clean || replaced) for each named replacement, sharing one clean pass per batch.

    Loss is measured on the next-token predictions made at positions >= exclude_first (the
    positions whose residual stream a splice can change). Returns {'ce_clean', 'n_predictions',
    'n_spliced', 'n_left_clean', name: {'ce', 'kl', 'delta_loss'}}.
    """
    from tqdm.auto import tqdm

    tokens_NT = torch.as_tensor(tokens_NT).long()
    N, T = tokens_NT.shape
    if T < 2:
        raise ValueError("contexts need at least 2 tokens to measure next-token loss")
    sums = {name: {"ce": 0.0, "kl": 0.0} for name in replacements}
    ce_clean, n_pred, n_spliced, n_clean = 0.0, 0, 0, 0
    first = min(where.exclude_first, T - 1)
    for s in tqdm(range(0, N, batch_size), desc="downstream loss", disable=not progress, leave=False):
        ids = tokens_NT[s:s + batch_size].to(lm.device)
        cap: dict = {}
        logits = patched_logits(lm, ids, where, None, capture=cap)
        targets = ids[:, first + 1:].reshape(-1)
        logp_clean = F.log_softmax(logits[:, first:-1], -1).flatten(0, 1)
        ce_clean += float(F.nll_loss(logp_clean, targets, reduction="sum"))
        n_pred += len(targets)
        n_spliced += int(cap["mask"].sum())
        n_clean += cap["mask"].numel() - int(cap["mask"].sum())
        for name, rep in replacements.items():
            lp = F.log_softmax(patched_logits(lm, ids, where, rep)[:, first:-1], -1).flatten(0, 1)
            sums[name]["ce"] += float(F.nll_loss(lp, targets, reduction="sum"))
            sums[name]["kl"] += float(F.kl_div(lp, logp_clean, log_target=True, reduction="sum"))
    out = {"ce_clean": ce_clean / n_pred, "n_predictions": n_pred, "n_spliced": n_spliced, "n_left_clean": n_clean}
    for name, sm in sums.items():
        ce = sm["ce"] / n_pred
        out[name] = {"ce": ce, "kl": sm["kl"] / n_pred, "delta_loss": ce - out["ce_clean"]}
    return out


def loss_recovered(ce_spliced: float, ce_clean: float, ce_ablated: float) -> float:
    """(CE_ablated - CE_spliced) / (CE_ablated - CE_clean): 1 = as good as clean, 0 = as bad as ablating."""
    gap = ce_ablated - ce_clean
    return float("nan") if abs(gap) < 1e-12 else (ce_ablated - ce_spliced) / gap


@torch.no_grad()
def downstream_loss(lm: LM, sae: SAE, tokens_NT: torch.Tensor, where: SpliceSite | None = None,
                    mean_D: torch.Tensor | None = None, batch_size: int = 16, progress: bool = True,
                    **encode_kwargs) -> dict:
    """The paper's downstream loss of `sae` on `tokens_NT` (section 4.1), with both ablation baselines.

    `mean_D`: the mean activation for mean-ablation; measure it on other text than `tokens_NT` (the suite
    uses training-split contexts). Default: measured on `tokens_NT` itself, which lets the baseline
    see the scored tokens (a slightly stronger mean-ablation baseline).
    Returns ce_clean / ce_spliced / ce_zero / ce_mean, delta_loss, kl, kl_zero, kl_mean,
    loss_recovered (vs zero-ablation), loss_recovered_mean, and position counts.
    """
    where = where or SpliceSite.of(sae, lm)
    tokens_NT = torch.as_tensor(tokens_NT).long()
    if mean_D is None:
        mean_D = site_mean(lm, tokens_NT, where)
    r = downstream_losses(lm, tokens_NT, {"spliced": sae_replacement(sae, **encode_kwargs), "zero": zero_replacement(),
                                          "mean": mean_replacement(mean_D)}, where, batch_size, progress)
    return {
        "ce_clean": r["ce_clean"], "ce_spliced": r["spliced"]["ce"], "ce_zero": r["zero"]["ce"],
        "ce_mean": r["mean"]["ce"], "delta_loss": r["spliced"]["delta_loss"], "kl": r["spliced"]["kl"],
        "kl_zero": r["zero"]["kl"], "kl_mean": r["mean"]["kl"],
        "loss_recovered": loss_recovered(r["spliced"]["ce"], r["ce_clean"], r["zero"]["ce"]),
        "loss_recovered_mean": loss_recovered(r["spliced"]["ce"], r["ce_clean"], r["mean"]["ce"]),
        "n_predictions": r["n_predictions"], "n_positions_spliced": r["n_spliced"],
        "n_positions_left_clean": r["n_left_clean"],
    }


CONVENTIONS = {"trained_positions": "trained", "every_position": "all"}
"""The two splice conventions, by the name each result is stored under -> `SpliceSite.of`'s `positions`."""


@torch.no_grad()
def downstream_conventions(lm: LM, sae: SAE, tokens_NT: torch.Tensor, mean_tokens_NT: torch.Tensor | None = None,
                           batch_size: int = 16, progress: bool = True) -> dict:
    """`downstream_loss` under both splice conventions: {'trained_positions': ..., 'every_position': ...}.
    `mean_tokens_NT`: other contexts (e.g. training-split ones) whose mean activation at the site, over the
    convention's positions, is the mean-ablation baseline (default: `tokens_NT` itself)."""
    out = {}
    for name, positions in CONVENTIONS.items():
        where = SpliceSite.of(sae, lm, positions=positions)
        mean_D = site_mean(lm, mean_tokens_NT if mean_tokens_NT is not None else tokens_NT, where)
        out[name] = downstream_loss(lm, sae, tokens_NT, where, mean_D=mean_D, batch_size=batch_size,
                                    progress=progress)
    return out
