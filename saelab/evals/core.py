"""SAEBench's core metrics, under SAEBench's names (`saelab eval --metrics core`).

Read from SAEBench 0.6.0's source (`sae_bench/evals/core/main.py`, `get_sparsity_and_variance_metrics`,
`calculate_misc_metrics`, `get_downstream_reconstruction_metrics`); saelab's own code, checked on hand-worked cases
(tests/test_core_metrics.py). Everything is measured in the activations' raw space (SAEBench feeds the raw
activation to the SAE and reads its decoded output), over tokens x with reconstruction x̂:

    explained_variance                  1 - E||x - x̂||² / E||x - E[x]||²  (the conventional fraction of variance
                                        explained, pooled over tokens: 1 - the paper's normalized MSE in raw space)
    explained_variance_legacy           E_t[1 - ||x_t - x̂_t||² / ||x_t - x̄||²]: the per-token ratio averaged, the
                                        figure of SAEBench's paper and leaderboard (its issue #76)
    explained_variance_saebench_0_6_0   what sae-bench 0.6.0's `explained_variance` code computes:
                                        1 - E||x - x̂||² / (E||x||² - (E||x||² / d)²), a squared mean of squares in
                                        place of the squared mean (a known bug: SAEBench PR #61, SAE Lens #659);
                                        kept only so a number from that release can be compared
    cossim                              E_t[cos(x_t, x̂_t)]
    l2_ratio                            E_t[||x̂_t|| / ||x_t||] (a norm below 1e-4 divides by 1, as SAEBench)
    relative_reconstruction_bias        E||x̂||² / E[x · x̂] (Equation 10 of arXiv 2404.16014): 1 when unbiased,
                                        below 1 when the SAE shrinks its output
    l0, l1                              E_t[number of non-zero latents], E_t[sum of latent activations]
    feature_density                     per latent: the share of tokens on which it is non-zero, with frac_alive,
                                        freq_over_1_percent, freq_over_10_percent, normalized_freq_over_1_percent
                                        and normalized_freq_over_10_percent (the density mass above 1% and 10%),
                                        and a histogram of log10 density (SAEBench plots it)

and, from the every-position splice (`saelab.evals.downstream`, SAEBench's default positions), its downstream
names: ce_loss_score (= loss recovered against zero-ablation), kl_div_score (1 - KL with the SAE / KL with the
site zero-ablated), ce_loss_with_sae, ce_loss_without_sae, ce_loss_with_ablation, kl_div_with_sae,
kl_div_with_ablation.

Where saelab differs from SAEBench, and why: SAEBench pools x̄ (legacy) and relative_reconstruction_bias per batch
of prompts and averages over batches; here they are pooled over all evaluated tokens at once (no batch size
changes a number). SAEBench's `mse` (a token's squared error divided by the batch's token count) depends on the
batch size and is left out. l1 sums the latents as the SAE encodes them; a per-token-normalised SAE (saelab's
default) encodes in its normalised space, so its l1 is not comparable with an SAE that encodes raw activations.
"""

from __future__ import annotations

import math

import torch

DENSITY_BINS = torch.arange(-8.0, 0.25, 0.25)
"""Edges of the log10 feature-density histogram (a density of 1e-8 to 1); dead latents are counted apart."""


@torch.no_grad()
def core_from_acts(x_BD: torch.Tensor, recon_BD: torch.Tensor, codes_BN: torch.Tensor) -> dict:
    """Every core metric from activations, their reconstructions and the dense codes (all for the same tokens)."""
    x, xh = x_BD.double(), recon_BD.double()
    if len(x) == 0:
        raise ValueError("no tokens to score")
    d = x.shape[1]
    resid = (x - xh).pow(2).sum(-1)  # [B]
    centred = (x - x.mean(0)).pow(2).sum(-1)
    sq = x.pow(2).sum(-1)
    out = {"explained_variance": float(1 - resid.mean() / centred.mean()),
           "explained_variance_legacy": float((1 - resid / centred.clamp_min(1e-30)).mean()),
           "explained_variance_saebench_0_6_0": float(1 - resid.mean() / (sq.mean() - (sq.mean() / d) ** 2))}
    nx, nxh = x.norm(dim=-1), xh.norm(dim=-1)
    out["cossim"] = float(((x * xh).sum(-1) / (nx * nxh).clamp_min(1e-30)).mean())
    out["l2_ratio"] = float((nxh / torch.where(nx.abs() < 1e-4, torch.ones_like(nx), nx)).mean())
    out["relative_reconstruction_bias"] = float(nxh.pow(2).mean() / (x * xh).sum(-1).mean())
    codes = codes_BN.double()
    out["l0"] = float((codes != 0).sum(-1).double().mean())
    out["l1"] = float(codes.sum(-1).mean())
    out.update(density_metrics((codes > 0).double().mean(0)))
    out["tokens"] = len(x)
    return out


def density_metrics(density_N: torch.Tensor) -> dict:
    """SAEBench's `calculate_misc_metrics` density figures, and the log10 density histogram."""
    dens = density_N.double()
    total = float(dens.sum())
    alive = dens > 0
    counts = torch.histogram(dens[alive].log10().float().clamp(min=float(DENSITY_BINS[0]), max=-1e-6),
                             bins=DENSITY_BINS).hist if bool(alive.any()) else torch.zeros(len(DENSITY_BINS) - 1)
    return {"frac_alive": float(alive.double().mean()),
            "freq_over_1_percent": float((dens > 0.01).double().mean()),
            "freq_over_10_percent": float((dens > 0.1).double().mean()),
            "normalized_freq_over_1_percent": float(dens[dens > 0.01].sum()) / total if total > 0 else 0.0,
            "normalized_freq_over_10_percent": float(dens[dens > 0.1].sum()) / total if total > 0 else 0.0,
            "feature_density_histogram": {"log10_edges": DENSITY_BINS.tolist(), "counts": counts.int().tolist(),
                                          "dead": int((~alive).sum())}}


def downstream_names(d: dict) -> dict:
    """SAEBench's downstream names from a `saelab.evals.downstream.downstream_loss` result (every position)."""
    kl_abl = d["kl_zero"]
    return {"ce_loss_score": d["loss_recovered"], "kl_div_score": (kl_abl - d["kl"]) / kl_abl if kl_abl else math.nan,
            "ce_loss_with_sae": d["ce_spliced"], "ce_loss_without_sae": d["ce_clean"],
            "ce_loss_with_ablation": d["ce_zero"], "kl_div_with_sae": d["kl"], "kl_div_with_ablation": kl_abl}


@torch.no_grad()
def core_metrics(lm, sae, tokens_NT: torch.Tensor, where, batch_size: int = 16) -> dict:
    """Core metrics of `sae` on the activations of `tokens_NT` at the positions `where` (a `SpliceSite`: every
    position for SAEBench's default, or the trained ones) splices."""
    from saelab.evals.splice import eligible_mask
    from saelab.lm.sites import run_to_site
    from saelab.sae.kernels import dense_codes

    xs, recons, codes = [], [], []
    for s in range(0, len(tokens_NT), batch_size):
        acts = run_to_site(lm, tokens_NT[s:s + batch_size].to(lm.device), where.site, where.layer).float()
        x = acts[eligible_mask(acts, where)].to(sae.W_dec.device)
        enc = sae.encode(x)
        xs.append(x.cpu())
        recons.append(sae.decode(enc.top_acts_BK, enc.top_idx_BK, x).float().cpu())
        codes.append(dense_codes(enc.top_acts_BK.float().cpu(), enc.top_idx_BK.cpu(), sae.cfg.n_latents))
    return core_from_acts(torch.cat(xs), torch.cat(recons), torch.cat(codes))
