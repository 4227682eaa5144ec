"""Activation norms: the outlier rule the harvest applies, and the survey behind its defaults."""

from __future__ import annotations

import torch

from saelab.acts.corpus import ContextConfig, build_contexts, load_corpus
from saelab.lm.models import LM
from saelab.lm.sites import run_to_site


def outlier_mask(acts_TD: torch.Tensor, factor: float | None, median: torch.Tensor | float | None = None
                 ) -> torch.Tensor:
    """True for tokens to keep: norm <= factor * median norm of the batch (all kept when factor is None).
    `median`: a reference median instead of the batch's (one generated token has no median of its own)."""
    if factor is None:
        return torch.ones(len(acts_TD), dtype=torch.bool)
    norms = acts_TD.norm(dim=-1)
    return norms <= factor * (norms.median() if median is None else median)


def norm_stats(acts_TD: torch.Tensor) -> dict:
    """Activation-norm statistics: quantiles and how many tokens sit 10x / 100x above the median."""
    norms = acts_TD.float().norm(dim=-1)
    med = float(norms.median())
    q = torch.quantile(norms[: 1_000_000], torch.tensor([0.01, 0.5, 0.99, 0.999]))
    return {"median": med, "q01": float(q[0]), "q99": float(q[2]), "q999": float(q[3]), "max": float(norms.max()),
            "frac_over_10x_median": float((norms > 10 * med).float().mean()),
            "frac_over_100x_median": float((norms > 100 * med).float().mean()), "n": int(norms.numel())}


@torch.no_grad()
def norm_survey(lm: LM, n_contexts: int = 64, corpus: str = "wiki-en", site: str = "resid_post",
                layer: int | None = None, context: ContextConfig | None = None) -> dict:
    """Activation norms per (context, position) on a few contexts, before any token is excluded.

    Returns {'norms_NT', 'tokens_NT', 'layer'}: the evidence behind `exclude_first` and
    `outlier_factor` (notebook 01 plots it).
    """
    layer = lm.default_layer if layer is None else layer
    ctx = build_contexts(load_corpus(corpus), lm.tokenizer, context or ContextConfig(), max_contexts=n_contexts)
    toks = torch.from_numpy(ctx.tokens_NT).long()
    norms = torch.cat([run_to_site(lm, toks[s:s + 32], site, layer).norm(dim=-1).cpu()
                       for s in range(0, len(toks), 32)])
    return {"norms_NT": norms, "tokens_NT": toks, "layer": layer}
