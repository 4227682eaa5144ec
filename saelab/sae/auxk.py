"""AuxK (Gao et al. 2024, appendix A.2): the dead latents model what the live ones left, so they get gradients.

    e     = x_n - x_hat_n                      (the residual, detached; a transcoder's: its target - its output)
    e_hat = W_dec^T TopK_{k_aux}(pre-activations of the dead latents)     (no b_pre: the residual has none;
                                                                           sparsify #132 added it twice)
    aux   = nmse(e_hat, e)

The dead latents' pre-activations come from the training step's buffer (or, when it was computed in chunks, from one
product over the dead rows of W_enc only). With few dead latents per k_aux (M <= AUX_DENSE_RATIO * k_aux) the decode
runs densely over them (`kernels.subset_decode`); otherwise on the k_aux selected rows per token (sparse), like the
main TopK path. Every family with `k_aux` > 0 uses it.
"""

from __future__ import annotations

import torch

from saelab.sae import kernels
from saelab.sae.kernels import subset_decode, transposed_pattern
from saelab.sae.losses import normalized_mse

AUX_DENSE_RATIO = 16
"""AuxK decodes densely over the M dead latents when M <= this x k_aux."""


@torch.no_grad()
def dead_top(sae, centred, pre_BN, dead_idx, k_aux, fits):
    """(the dead latents' [rows, M] pre-activations when made in one piece, else None; their top k_aux)."""
    if pre_BN is not None:
        sub = pre_BN.index_select(1, dead_idx)
        return sub, sub.topk(k_aux, dim=-1, sorted=False)
    if fits:
        sub = torch.addmm(sae.b_enc[dead_idx], centred, sae.W_enc[dead_idx].t())
        return sub, sub.topk(k_aux, dim=-1, sorted=False)
    # too many dead latents for one [rows, M] buffer: their top-k in row chunks
    M, rows = dead_idx.numel(), len(centred)
    chunk = max(1, kernels.WORKSPACE_BYTES // (M * sae.W_enc.element_size()))
    W_dead, b_dead = sae.W_enc[dead_idx].t(), sae.b_enc[dead_idx]
    parts = [torch.addmm(b_dead, centred[s:s + chunk], W_dead).topk(k_aux, dim=-1, sorted=False)
             for s in range(0, rows, chunk)]
    return None, torch.return_types.topk((torch.cat([p.values for p in parts]), torch.cat([p.indices for p in parts])))


def aux_loss(sae, x_n, resid, pre_BN, dead_mask_N, decode, reduce=None, centred=None) -> torch.Tensor:
    """AuxK's loss: the top-k_aux dead latents' reconstruction of the residual `resid` (target - reconstruction,
    detached), normalized MSE. `x_n`: the encoder's input; `pre_BN`: the step's dense pre-activations (or None);
    `decode`: the step's kernel (sparse or dense)."""
    dead_idx = dead_mask_N.nonzero().squeeze(1)
    k_aux = min(sae.cfg.k_aux, dead_idx.numel())
    bias = sae.family.encoder_bias(sae)
    centred = centred if centred is not None else (x_n - bias).detach()
    rows, M = len(x_n), dead_idx.numel()
    fits = rows * M * sae.W_enc.element_size() <= kernels.WORKSPACE_BYTES
    sub, top = dead_top(sae, centred, pre_BN, dead_idx, k_aux, fits)
    if sae.cfg.kernel == "sparse" and fits and M <= AUX_DENSE_RATIO * k_aux:
        with torch.no_grad():
            z_BM = sub.zero_().scatter_(1, top.indices, top.values.relu())  # sub is not needed any more
        resid_hat = subset_decode(centred, sae.W_enc, sae.b_enc, bias, sae.W_dec, dead_idx, z_BM)
        return normalized_mse(resid_hat, resid, reduce).nan_to_num(0.0)
    aux_idx = dead_idx[top.indices]
    pattern = transposed_pattern(aux_idx, sae.cfg.n_latents) if sae.cfg.kernel == "sparse" else None
    aux_acts = sae.encode_selected(x_n, aux_idx, top.values, pattern, centred).relu()
    resid_hat = decode(aux_idx, aux_acts, sae.W_dec, pattern)
    return normalized_mse(resid_hat, resid, reduce).nan_to_num(0.0)
