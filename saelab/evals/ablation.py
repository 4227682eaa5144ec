"""Sparsity of ablation effects (Gao et al. 2024, section 4.5): does a latent change few things downstream?

As the paper defines it: with the SAE spliced in, pick one token index where the latent fires and
ablate that latent there (its activation set to zero at that index only). Take the change of the
LM's **logits** at that index and the following positions, T = `window` positions in all (the
paper's T = 16), subtract each position's median logit difference (a constant shift of a
position's logits changes no probability), and concatenate them into T * V numbers e. Then

    sparsity = (||e||_1 / ||e||_2)^2 / (T * V)    in (0, 1]

the effective fraction of (position, token) entries the ablation moves: 1/(T V) when one logit
moves, 2/pi ~ 0.64 for a dense Gaussian change. Lower is sparser. A random direction of the same
norm added at the same index gives the reference that an unstructured perturbation reaches.

Which ablations are measured:
- `position_ablation_sparsity` (the suite's default): token positions sampled uniformly among those with a full
  window, and every latent active at each ablated alone there, so latents count by how often they fire.
- `ablation_sparsity` (per latent): for each given latent, a random (seeded) position where it fires that leaves
  `window` positions to the end of the context; contexts with such a position are preferred, in random order.
  When the latent fires only later in every context, the window is cut at the context's end and the sparsity is
  normalised by the shorter T' * V (the row's `window` says how long it was).
"""

from __future__ import annotations

import numpy as np
import torch

from saelab.evals.splice import Codes, SpliceSite, patched_logits
from saelab.lm.models import LM
from saelab.sae.model import SAE

WINDOW = 16  # the paper's T


def median_centred(logit_diff_TV: torch.Tensor) -> torch.Tensor:
    """Logit differences with each position's median subtracted (fp64): a constant shift of a position's
    logits changes no probability, so it is not an effect."""
    e = logit_diff_TV.double()
    return e - e.median(dim=-1, keepdim=True).values


def effect_sparsity(logit_diff_TV: torch.Tensor) -> float:
    """Section 4.5's (L1/L2)^2 / (T*V) of logit differences [T, V], after subtracting each position's
    median; nan when the effect is exactly zero."""
    return _sparsity(median_centred(logit_diff_TV))


def _sparsity(centred_TV: torch.Tensor) -> float:
    e = centred_TV.flatten()
    l2 = float(e.norm())
    if l2 == 0:
        return float("nan")
    return float((e.abs().sum() / l2) ** 2 / e.numel())


def ablation_index(positions: list[int], ctx_len: int, window: int, rng: np.random.Generator) -> tuple[int, bool]:
    """(index to ablate, whether a full window fits): a random firing position with `window` positions
    left, else the earliest firing position (the longest shorter window)."""
    fits = [p for p in positions if p + window <= ctx_len]
    return (int(rng.choice(fits)), True) if fits else (min(positions), False)


def _latent_replacement(sae: SAE, latent, index_BT: torch.Tensor, mode: str, seed: int):
    """SAE reconstruction everywhere, with the latent removed (mode 'ablate'), a random kick of the same
    norm ('random') or nothing changed ('none') at the single index marked in each row of `index_BT`.
    `latent`: one latent for every row, or a [B] tensor of one latent per row."""

    def replace(x_BTD, mask_BT, _positions_BT=None):
        B, T, D = x_BTD.shape
        flat = x_BTD.reshape(-1, D).to(sae.W_dec.dtype)
        enc = sae.encode(flat)
        recon = sae.decode(enc.top_acts_BK, enc.top_idx_BK, flat).reshape(B, T, D)
        hit = index_BT.to(mask_BT.device) & mask_BT
        if mode == "none" or not bool(hit.any()):
            return recon
        lat_rows = torch.as_tensor(latent).to(enc.top_idx_BK.device).reshape(-1, 1).expand(B, T).reshape(-1, 1)
        removed = sae.decode(enc.top_acts_BK.masked_fill(enc.top_idx_BK == lat_rows, 0.0), enc.top_idx_BK,
                             flat).reshape(B, T, D)
        delta = removed - recon
        if mode == "random":
            g = torch.Generator(device="cpu").manual_seed(seed)
            r = torch.randn(B, 1, D, generator=g).to(delta)
            delta = r / r.norm(dim=-1, keepdim=True) * delta.norm(dim=-1, keepdim=True)
        return recon + delta * hit[..., None]

    return replace


def _choose_contexts(flat_pos: torch.Tensor, T: int, window: int, n: int, seed: int) -> list[tuple[int, int, bool]]:
    """Up to `n` (context, index, full window) choices in a seeded random order, contexts with a full window first."""
    rng = np.random.default_rng(seed)
    by_ctx: dict[int, list[int]] = {}
    for p in flat_pos.tolist():
        by_ctx.setdefault(p // T, []).append(p % T)
    picks = [(c, *ablation_index(ps, T, window, rng)) for c, ps in sorted(by_ctx.items())]
    order = rng.permutation(len(picks))
    picks = [picks[i] for i in order]
    picks.sort(key=lambda r: not r[2])  # stable: full windows first
    return picks[:n]


@torch.no_grad()
def ablation_sparsity(lm: LM, sae: SAE, codes: Codes, latents: list[int], contexts_per_latent: int = 4,
                      where: SpliceSite | None = None, baseline: bool = True, progress: bool = True,
                      window: int = WINDOW) -> list[dict]:
    """Ablation sparsity of each latent, averaged over up to `contexts_per_latent` contexts where it fires.

    Each row: latent, sparsity (mean over contexts), random_sparsity (same-norm random direction at the
    same index, when `baseline`), n_contexts, window (mean positions measured; `window` unless cut by
    the context's end), mean_abs_effect (mean |logit difference| after the median shift).
    """
    from tqdm.auto import tqdm

    if window < 1:
        raise ValueError(f"window must be >= 1, got {window}")
    where = where or SpliceSite.of(sae, lm)
    ptr, pos, _ = codes.latent_acts()
    T = codes.tokens_NT.shape[1]
    rows = []
    for lat in tqdm(latents, desc="ablation sparsity", disable=not progress, leave=False):
        picks = _choose_contexts(pos[ptr[lat]:ptr[lat + 1]], T, window, contexts_per_latent, seed=lat)
        if not picks:
            rows.append({"latent": lat, "sparsity": float("nan"), "random_sparsity": float("nan"), "n_contexts": 0,
                         "window": 0})
            continue
        ids = codes.tokens_NT[[c for c, _, _ in picks]].long()
        index = torch.zeros(len(picks), T, dtype=torch.bool)
        for j, (_, t, _) in enumerate(picks):
            index[j, t] = True
        # spliced, nothing ablated: the same code path as the edits, so only the edit differs bit for bit
        base = patched_logits(lm, ids, where, _latent_replacement(sae, lat, index, "none", seed=lat))
        out = {"latent": lat, "n_contexts": len(picks),
               "window": sum(min(window, T - t) for _, t, _ in picks) / len(picks)}
        for mode in ["ablate"] + (["random"] if baseline else []):
            logits = patched_logits(lm, ids, where, _latent_replacement(sae, lat, index, mode, seed=lat))
            vals, mags = [], []
            for j, (_, t, _) in enumerate(picks):
                e = median_centred((logits[j, t:t + window] - base[j, t:t + window]).cpu())
                s = _sparsity(e)
                if s == s:
                    vals.append(s)
                    mags.append(float(e.abs().mean()))
            key = "sparsity" if mode == "ablate" else "random_sparsity"
            out[key] = float(sum(vals) / len(vals)) if vals else float("nan")
            if mode == "ablate":
                out["mean_abs_effect"] = float(sum(mags) / len(mags)) if mags else float("nan")
        rows.append(out)
    return rows


def sample_positions(codes: Codes, n_positions: int, window: int = WINDOW, seed: int = 0
                     ) -> list[tuple[int, int, list[int]]]:
    """Up to `n_positions` (context, index, latents active there) drawn uniformly among the spliced positions
    that leave a full `window` and where some latent fires: ablating every latent active at a sampled token
    weights each latent by how often it fires, as sampling token positions does."""
    N, T, _ = codes.acts_NTK.shape
    active = (codes.acts_NTK > 0).any(-1) & codes.valid_NT
    active[:, max(T - window + 1, 0):] = False
    flat = torch.nonzero(active.reshape(-1)).squeeze(1)
    g = torch.Generator().manual_seed(seed)
    chosen = flat[torch.randperm(len(flat), generator=g)[:n_positions]].sort().values
    out = []
    for f in chosen.tolist():
        c, t = divmod(f, T)
        lats = codes.idx_NTK[c, t][codes.acts_NTK[c, t] > 0].tolist()
        out.append((c, t, sorted(set(lats))))
    return out


@torch.no_grad()
def position_ablation_sparsity(lm: LM, sae: SAE, codes: Codes, n_positions: int = 16, where: SpliceSite | None = None,
                               baseline: bool = True, progress: bool = True, window: int = WINDOW, seed: int = 0
                               ) -> list[dict]:
    """Ablation sparsity sampled by token position (the aggregate that weights latents by firing frequency):
    at each of `n_positions` sampled tokens, every active latent is ablated alone at that index; one row per
    (position, latent) with its sparsity and, when `baseline`, a same-norm random direction's at the same index
    (`random_*`). Also per row: `own_share`, the fraction of the effect's squared norm at the ablated index itself,
    and `sparsity_later`, the sparsity of the positions after it alone."""
    from tqdm.auto import tqdm

    if window < 1:
        raise ValueError(f"window must be >= 1, got {window}")
    where = where or SpliceSite.of(sae, lm)
    T = codes.tokens_NT.shape[1]
    rows = []
    for c, t, lats in tqdm(sample_positions(codes, n_positions, window, seed), desc="ablation sparsity",
                           disable=not progress, leave=False):
        ids = codes.tokens_NT[c:c + 1].long().expand(len(lats), T)
        index = torch.zeros(len(lats), T, dtype=torch.bool)
        index[:, t] = True
        lat = torch.tensor(lats)
        # spliced, nothing ablated, in the same batch shape: only the edit differs bit for bit
        base = patched_logits(lm, ids, where, _latent_replacement(sae, lat, index, "none", seed=c))
        out = [{"context": c, "index": t, "latent": int(x), "window": window} for x in lats]
        for mode in ["ablate"] + (["random"] if baseline else []):
            logits = patched_logits(lm, ids, where, _latent_replacement(sae, lat, index, mode, seed=c * T + t))
            pre = "" if mode == "ablate" else "random_"
            for j, row in enumerate(out):
                e = median_centred((logits[j, t:t + window] - base[j, t:t + window]).cpu())
                row[pre + "sparsity"] = _sparsity(e)
                # where the effect lives: the ablated index's own logits, and the positions after it
                total = float(e.pow(2).sum())
                row[pre + "own_share"] = float(e[0].pow(2).sum()) / total if total else float("nan")
                row[pre + "sparsity_later"] = _sparsity(e[1:]) if len(e) > 1 else float("nan")
                if mode == "ablate":
                    row["mean_abs_effect"] = float(e.abs().mean())
        rows += out
    return rows
