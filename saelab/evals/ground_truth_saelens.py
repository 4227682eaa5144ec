"""SAE Lens's own scores of an SAE on synthetic samples whose features are known (`sae_lens.synthetic`'s calculators,
the SynthSAEBench toolkit), beside saelab's (`saelab.evals.ground_truth`). The data: `saelab.acts.synthetic` or SAE
Lens's generator (`saelab.acts.synthetic_saelens`). Needs the `peers` extra; imported lazily.

SAE Lens's scores (`saelens_scores`, the fields of its `SyntheticDataEvalResult`, computed on given samples with its
own calculators) against saelab's (`saelab.evals.ground_truth`, `reconstruction_metrics`):

    saelens_mcc                 = mcc (both Hungarian on 1 - |cos|; equal up to float32 rounding, ~1e-7)
    saelens_dead_latents        = dead x n_latents (a count; != 0 and > 0 agree on non-negative codes)
    saelens_l0, saelens_true_l0 = l0, and the data's own mean L0
    saelens_explained_variance  = 1 - nmse (the same ratio, in the SAE's input space when normalize is 'none')
    saelens_uniqueness          distinct best-matching true features (|cos|, every latent) / n_latents: no saelab twin
                                (`duplicates` is signed, thresholded at 0.9 and counts live latents only)
    saelens_precision, _recall, _f1, _accuracy   each latent as a detector of its best-matching feature, averaged over
                                latents (0 for a latent that never fires): no saelab twin
    saelens_shrinkage           mean ||x_hat|| / ||x||: no saelab twin
"""

from __future__ import annotations

import torch

from saelab.acts.synthetic_saelens import _saelens
from saelab.sae.model import encode_dense


@torch.no_grad()
def saelens_scores(sae, x_BD: torch.Tensor, features_FD: torch.Tensor, coeffs_BF: torch.Tensor) -> dict:
    """SAE Lens's synthetic-data scores of `sae` (saelab's `SAE`, or anything with `encode` -> top_acts_BK /
    top_idx_BK, `decode(top_acts_BK, top_idx_BK, x_like)`, `W_dec` [n, d] and `cfg.n_latents`) on samples whose
    true features and coefficients are known, as `sae_lens.synthetic.eval_sae_on_synthetic_data` computes them
    (which samples fresh and needs an SAE Lens SAE): {'saelens_mcc': ..., ...}, see the module docstring."""
    synthetic = _saelens()
    from sae_lens.evals import ExplainedVarianceCalculator

    x_BD = x_BD.float()
    enc = sae.encode(x_BD)
    z_BN = encode_dense(sae, x_BD)
    recon_BD = sae.decode(enc.top_acts_BK, enc.top_idx_BK, x_BD).float().cpu()
    x_BD, c_BF = x_BD.cpu(), coeffs_BF.float().cpu()
    W_ND, F_FD = sae.W_dec.detach().float().cpu(), features_FD.float().cpu()
    calcs = {"true_l0": synthetic.L0Calculator(), "sae_l0": synthetic.L0Calculator(),
             "dead_latents": synthetic.DeadLatentsCalculator(W_ND.shape[0]),
             "shrinkage": synthetic.ShrinkageCalculator(), "explained_variance": ExplainedVarianceCalculator(),
             "classification": synthetic.ClassificationMetricsCalculator(W_ND, F_FD)}
    calcs["true_l0"].add_batch(c_BF)
    calcs["sae_l0"].add_batch(z_BN)
    calcs["dead_latents"].add_batch(z_BN)
    calcs["shrinkage"].add_batch(recon_BD, x_BD)
    calcs["explained_variance"].add_batch(recon_BD, x_BD)
    calcs["classification"].add_batch(z_BN, c_BF)
    result = synthetic.SyntheticDataEvalResult(
        **{name: calc.compute() for name, calc in calcs.items()},
        mcc=synthetic.mean_correlation_coefficient(W_ND, F_FD), uniqueness=synthetic.feature_uniqueness(W_ND, F_FD))
    flat = result.to_dict()
    classification = flat.pop("classification")
    flat["l0"] = flat.pop("sae_l0")
    return {f"saelens_{k}": v for k, v in {**flat, **classification}.items()}
