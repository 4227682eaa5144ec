"""Held-out reconstruction metrics on activations: the paper's normalized MSE, L0 and dead latents (sections 2.1, 4).

`NormalizedMSE` accumulates the training loss's ratio (`saelab.sae.losses.normalized_mse`) over any number of
batches, in the SAE's input space (after its normalisation), as in the paper. The metrics of splicing the
SAE into the LM live in `saelab.evals.downstream`.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch

from saelab.acts.cache import Activations


class NormalizedMSE:
    """`saelab.sae.losses.normalized_mse` over many batches: SSE / (sum ||x||^2 - ||sum x||^2 / n), in fp64."""

    def __init__(self):
        self.sse, self.sum_x, self.sum_sq, self.n = 0.0, 0.0, 0.0, 0

    def add(self, recon_BD: torch.Tensor, x_BD: torch.Tensor) -> None:
        x = x_BD.detach().double()
        self.sse += float((recon_BD.detach().double() - x).pow(2).sum())
        self.sum_x = self.sum_x + x.sum(0).cpu()
        self.sum_sq += float(x.pow(2).sum())
        self.n += len(x)

    def value(self) -> float:
        base = self.sum_sq - float(torch.as_tensor(self.sum_x).pow(2).sum()) / max(self.n, 1)
        return self.sse / base if base > 0 else float("nan")


def _batches(data, batch_size: int, max_tokens: int | None) -> Iterable[torch.Tensor]:
    """[tokens, d] batches of an ActivationCache, a tensor, or an iterable of batches (cut at max_tokens)."""
    if isinstance(data, Activations):
        source = (acts[s:s + batch_size] for i in range(len(data.shard_sizes))
                  for acts in [data.read_shard(i)["acts"]] for s in range(0, len(acts), batch_size))
    elif isinstance(data, torch.Tensor):
        source = (data[s:s + batch_size] for s in range(0, len(data), batch_size))
    else:
        source = iter(data)
    n = 0
    for x in source:
        if max_tokens is not None:
            x = x[: max_tokens - n]
        if len(x):
            yield x
        n += len(x)
        if max_tokens is not None and n >= max_tokens:
            return


@torch.no_grad()
def reconstruction_metrics(sae, data, batch_size: int = 8192, max_tokens: int | None = None,
                           **encode_kwargs) -> dict:
    """Normalized MSE, L0 (mean, and per token: p10, median, p90) and the never-fired fraction of `sae` on `data`
    (an ActivationCache, a [tokens, d] tensor, or an iterable of such batches); `encode_kwargs` pick a test-time
    activation.

    nmse: the paper's, in the SAE's input space (after its normalisation, where it is trained and where
    the paper measures reconstruction error). nmse_activation_space: the same ratio on the raw
    activations (equal to nmse for 'none' and 'dataset_unit_norm'). mse: per element, raw space.
    An SAE that reconstructs another site than it reads (a transcoder, on rows of both sites: `SAE.split`) is
    scored on its target: the normalized MSE of its prediction of that site.
    """
    spaces = {"norm": NormalizedMSE(), "raw": NormalizedMSE()}
    l0_sum, n, per_token, width = 0.0, 0, [], sae.cfg.d_in
    fired = torch.zeros(sae.cfg.n_latents, dtype=torch.bool)
    dev = sae.W_enc.device
    for rows in _batches(data, batch_size, max_tokens):
        x, target = sae.split(rows.to(dev, torch.float32))
        enc = sae.encode(x, **encode_kwargs)
        t_n, undo = sae.target_space(x, target)
        recon_n = sae.decode_normalized(enc.top_acts_BK, enc.top_idx_BK, x_like=x)
        spaces["norm"].add(recon_n, t_n)
        spaces["raw"].add(undo(recon_n), target)
        width = target.shape[-1]
        active = enc.top_acts_BK > 0
        l0_sum += float(active.sum())
        per_token.append(active.sum(-1).cpu())
        fired[enc.top_idx_BK[active].cpu()] = True
        n += len(x)
    if n == 0:
        raise ValueError("no activations to evaluate on")
    counts = torch.cat(per_token).sort().values
    at = {q: int(counts[min(n - 1, int(q * n))]) for q in (0.1, 0.5, 0.9)}  # per-token L0 quantiles (lower)
    return {"nmse": spaces["norm"].value(), "nmse_activation_space": spaces["raw"].value(),
            "mse": spaces["raw"].sse / (n * width), "l0": l0_sum / n,
            "l0_p10": at[0.1], "l0_median": at[0.5], "l0_p90": at[0.9],
            "dead_eval_frac": float((~fired).float().mean()), "tokens": n}


@torch.no_grad()
def prefix_nmse(sae, x_BD: torch.Tensor, widths: list[int]) -> list[float]:
    """Held-out normalized MSE of each prefix of `sae`'s dictionary on its own: the codes `sae.encode` gives, decoded
    with only the latents below each width (and b_pre). A Matryoshka SAE is trained for this; any SAE can be read so."""
    x, target = sae.split(x_BD.to(sae.W_enc.device, torch.float32))
    enc = sae.encode(x)
    x_n, _ = sae.target_space(x, target)
    out = []
    for width in widths:
        acc = NormalizedMSE()
        keep = (enc.top_idx_BK < width).to(enc.top_acts_BK.dtype)
        acc.add(sae.decode_normalized(enc.top_acts_BK * keep, enc.top_idx_BK, x_like=x), x_n)
        out.append(acc.value())
    return out
