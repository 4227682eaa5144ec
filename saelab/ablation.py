"""Sparsity of ablation effects (Gao et al. 2024, section 4.5): does a latent change few things downstream?

With the SAE spliced in, one latent is ablated (its activation set to zero) at the positions where
it fires in a context, and the effect on the LM's output is the change of the next-token
log-probabilities at those and all later positions: a [T', V] array e. Log-probabilities, not raw
logits, so that a constant shift of a position's logits (which changes nothing) is not counted.
Its sparsity is

    (||e||_1 / ||e||_2)^2 / (T' * V)    in (0, 1]

the effective fraction of (position, token) entries the ablation moves: 1/(T'V) when one logit
moves, 1 when all move equally. Lower is sparser. A random direction of the same norm added at
the same positions gives the reference an unstructured perturbation reaches.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .evaluate import Codes, SpliceSite, patched_logits, sae_replacement
from .models import LM
from .sae import SAE


def effect_sparsity(effect_TV: torch.Tensor) -> float:
    """(L1/L2)^2 / numel of an effect array; nan when the effect is exactly zero."""
    e = effect_TV.double().flatten()
    l2 = float(e.norm())
    if l2 == 0:
        return float("nan")
    return float((e.abs().sum() / l2) ** 2 / e.numel())


def _latent_replacement(sae: SAE, latent: int, positions_BT: torch.Tensor, mode: str, seed: int):
    """SAE reconstruction with `latent` removed (mode 'ablate') or a random same-norm kick ('random')
    at `positions_BT`."""

    def replace(x_BTD, mask_BT):
        B, T, D = x_BTD.shape
        flat = x_BTD.reshape(-1, D).to(sae.W_dec.dtype)
        enc = sae.encode(flat)
        recon = sae.decode(enc.top_acts_BK, enc.top_idx_BK, flat).reshape(B, T, D)
        hit = positions_BT & mask_BT
        if not bool(hit.any()):
            return recon
        removed = sae.decode(enc.top_acts_BK.masked_fill(enc.top_idx_BK == latent, 0.0), enc.top_idx_BK,
                             flat).reshape(B, T, D)
        delta = removed - recon
        if mode == "random":
            g = torch.Generator(device="cpu").manual_seed(seed)
            r = torch.randn(D, generator=g).to(delta)
            delta = r / r.norm() * delta.norm(dim=-1, keepdim=True)
        return recon + delta * hit[..., None]

    return replace


@torch.no_grad()
def ablation_sparsity(lm: LM, sae: SAE, codes: Codes, latents: list[int], contexts_per_latent: int = 4,
                      where: SpliceSite | None = None, baseline: bool = True, progress: bool = True) -> list[dict]:
    """Ablation sparsity of each latent over up to `contexts_per_latent` contexts where it fires.

    Each row: latent, sparsity (mean over contexts), random_sparsity (same-norm random direction at
    the same positions, when `baseline`), n_contexts, mean |delta log p| per affected entry.
    """
    from tqdm.auto import tqdm

    where = where or SpliceSite.of(sae, lm)
    ptr, pos, _ = codes.latent_acts()
    T = codes.tokens_NT.shape[1]
    rows = []
    for lat in tqdm(latents, desc="ablation sparsity", disable=not progress, leave=False):
        p = pos[ptr[lat]:ptr[lat + 1]]
        if len(p) == 0:
            rows.append({"latent": lat, "sparsity": float("nan"), "random_sparsity": float("nan"), "n_contexts": 0})
            continue
        ctx = torch.unique(p // T)[:contexts_per_latent]
        ids = codes.tokens_NT[ctx].long()
        positions = torch.zeros(len(ctx), T, dtype=torch.bool)
        for j, c in enumerate(ctx.tolist()):
            positions[j, p[(p // T) == c] % T] = True
        base = F.log_softmax(patched_logits(lm, ids, where, sae_replacement(sae)), -1)  # spliced, nothing ablated
        modes = ["ablate"] + (["random"] if baseline else [])
        out = {"latent": lat, "n_contexts": len(ctx)}
        for mode in modes:
            rep = _latent_replacement(sae, lat, positions, mode, lat)
            lp = F.log_softmax(patched_logits(lm, ids, where, rep), -1)
            vals, mags = [], []
            for j in range(len(ctx)):
                first = int(positions[j].nonzero()[0])
                e = (lp[j, first:] - base[j, first:]).cpu()
                s = effect_sparsity(e)
                if s == s:
                    vals.append(s)
                    mags.append(float(e.abs().mean()))
            key = "sparsity" if mode == "ablate" else "random_sparsity"
            out[key] = float(sum(vals) / len(vals)) if vals else float("nan")
            if mode == "ablate":
                out["mean_abs_effect"] = float(sum(mags) / len(mags)) if mags else float("nan")
        rows.append(out)
    return rows
