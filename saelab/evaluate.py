"""Downstream loss (Gao et al. 2024, section 4.1) and the shared machinery of the evaluation suite.

The SAE is spliced into the LM: at the hooked site, the activation of every evaluated position is
replaced by its reconstruction, and the rest of the forward pass runs on it. On held-out text:

    delta loss        = CE(spliced) - CE(clean)                    (next-token cross-entropy, nats)
    KL                = mean over positions of KL(p_clean || p_spliced)
    loss recovered    = (CE(ablated) - CE(spliced)) / (CE(ablated) - CE(clean))
                        with the site zero-ablated or mean-ablated (the usual baselines)

Positions the SAE never saw in training (position < exclude_first, the attention sink, and norm
outliers such as document separators, both as in the harvest) are left clean and counted.

The other metrics live in `probes` (probe loss), `n2g` (N2G explanations) and `ablation`
(sparsity of ablation effects); `encode_contexts` gives them the SAE's codes on token contexts.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .harvest import outlier_mask, run_to_site, site_module
from .models import LM
from .sae import SAE

# replacement(x_BTD, mask_BT) -> new activations [B, T, D] (used where mask is True)
Replacement = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


@dataclass
class SpliceSite:
    """Where the SAE sits in the LM and which positions it handles."""

    site: str = "resid_post"
    layer: int = 22
    exclude_first: int = 1
    """Positions < this stay clean (not trained on)."""
    outlier_factor: float | None = 10.0
    """Tokens above this multiple of the median norm stay clean (as in the harvest; None: none)."""

    @classmethod
    def of(cls, sae: SAE, lm: LM, **overrides) -> SpliceSite:
        """The site recorded in the SAE's config (falling back to the LM's default layer)."""
        c = sae.cfg
        kw = {"site": c.site or "resid_post", "layer": c.layer if c.layer is not None else lm.default_layer}
        return cls(**{**kw, **overrides})


def eligible_mask(acts_BTD: torch.Tensor, where: SpliceSite) -> torch.Tensor:
    """[B, T] True where the SAE handles the position (the harvest's token policy)."""
    B, T, D = acts_BTD.shape
    mask = torch.zeros(B, T, dtype=torch.bool, device=acts_BTD.device)
    if where.exclude_first >= T:
        return mask
    tail = acts_BTD[:, where.exclude_first:].reshape(-1, D).float()
    keep = outlier_mask(tail, where.outlier_factor).to(acts_BTD.device)
    mask[:, where.exclude_first:] = keep.reshape(B, T - where.exclude_first)
    return mask


def patched_logits(lm: LM, input_ids: torch.Tensor, where: SpliceSite,
                     replace: Replacement | None, capture: dict | None = None) -> torch.Tensor:
    """Logits [B, T, V] with the site's output rewritten by `replace` on the eligible positions."""

    def hook(_mod, _inp, out):
        hidden = out[0] if isinstance(out, tuple) else out
        mask = eligible_mask(hidden, where)
        if capture is not None:
            capture["acts"], capture["mask"] = hidden.detach(), mask
        if replace is None:
            return None
        new = replace(hidden, mask).to(hidden.dtype)
        hidden = torch.where(mask[..., None], new, hidden)
        return (hidden, *out[1:]) if isinstance(out, tuple) else hidden

    handle = site_module(lm.model, where.site, where.layer).register_forward_hook(hook)
    try:
        return lm.model(input_ids=input_ids.to(lm.device), use_cache=False).logits.float()
    finally:
        handle.remove()


def sae_replacement(sae: SAE, **encode_kwargs) -> Replacement:
    """Replace activations by the SAE's reconstruction (test-time activation via `encode_kwargs`)."""

    def replace(x_BTD, mask_BT):
        B, T, D = x_BTD.shape
        recon = torch.zeros_like(x_BTD, dtype=sae.W_dec.dtype)
        flat = x_BTD[mask_BT].to(sae.W_dec.dtype)
        if len(flat):
            recon[mask_BT] = sae.reconstruct(flat, **encode_kwargs)
        return recon

    return replace


def zero_replacement() -> Replacement:
    return lambda x, m: torch.zeros_like(x)


def mean_replacement(mean_D: torch.Tensor) -> Replacement:
    return lambda x, m: mean_D.to(x)[None, None].expand_as(x)


@torch.no_grad()
def site_mean(lm: LM, tokens_NT: torch.Tensor, where: SpliceSite, batch_size: int = 32) -> torch.Tensor:
    """Mean activation over the eligible positions of `tokens_NT` (the mean-ablation baseline)."""
    total, count = None, 0
    for s in range(0, len(tokens_NT), batch_size):
        acts = run_to_site(lm, tokens_NT[s:s + batch_size], where.site, where.layer).float()
        mask = eligible_mask(acts, where)
        part = acts[mask].sum(0)
        total = part if total is None else total + part
        count += int(mask.sum())
    return total / max(count, 1)


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


@dataclass
class Codes:
    """An SAE's sparse codes on token contexts: acts/idx [N, T, K] (padded with act 0), valid [N, T]."""

    tokens_NT: torch.Tensor
    acts_NTK: torch.Tensor
    idx_NTK: torch.Tensor
    valid_NT: torch.Tensor
    n_latents: int

    def sample_alive(self, n: int, seed: int = 0) -> list[int]:
        """A random sample (sorted) of `n` latents that fire somewhere in these codes."""
        ptr, _, _ = self.latent_acts()
        alive = torch.nonzero(ptr[1:] > ptr[:-1]).squeeze(1)
        g = torch.Generator().manual_seed(seed)
        return alive[torch.randperm(len(alive), generator=g)[:n]].sort().values.tolist()

    def latent_acts(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """CSR view by latent: (ptr [n+1], flat position [nnz], value [nnz]) over valid positions."""
        N, T, K = self.acts_NTK.shape
        a = self.acts_NTK.reshape(-1, K)
        i = self.idx_NTK.reshape(-1, K)
        pos = torch.arange(N * T)[:, None].expand(-1, K)
        keep = (a > 0) & self.valid_NT.reshape(-1, 1)
        lat, p, v = i[keep], pos[keep], a[keep]
        order = torch.argsort(lat * (N * T) + p)
        lat, p, v = lat[order], p[order], v[order]
        ptr = torch.zeros(self.n_latents + 1, dtype=torch.long)
        ptr[1:] = torch.bincount(lat, minlength=self.n_latents).cumsum(0)
        return ptr, p, v.float()


@torch.no_grad()
def encode_contexts(lm: LM, sae: SAE, tokens_NT: torch.Tensor, where: SpliceSite | None = None,
                    batch_size: int = 32, progress: bool = True, return_acts: bool = False, **encode_kwargs):
    """Run the LM to the site on every context and encode with the SAE. Returns `Codes`
    (and the raw activations [N, T, D] when `return_acts`)."""
    from tqdm.auto import tqdm

    where = where or SpliceSite.of(sae, lm)
    tokens_NT = torch.as_tensor(tokens_NT).long()
    acts_l, idx_l, valid_l, raw = [], [], [], []
    for s in tqdm(range(0, len(tokens_NT), batch_size), desc="encode", disable=not progress, leave=False):
        x = run_to_site(lm, tokens_NT[s:s + batch_size], where.site, where.layer).float().cpu()
        B, T, D = x.shape
        enc = sae.encode(x.reshape(-1, D), **encode_kwargs)
        acts_l.append(enc.top_acts_BK.reshape(B, T, -1))
        idx_l.append(enc.top_idx_BK.reshape(B, T, -1))
        valid_l.append(eligible_mask(x, where))
        if return_acts:
            raw.append(x)
    K = max(a.shape[-1] for a in acts_l)
    acts = torch.cat([F.pad(a, (0, K - a.shape[-1])) for a in acts_l])
    idx = torch.cat([F.pad(i, (0, K - i.shape[-1])) for i in idx_l])
    codes = Codes(tokens_NT, acts, idx, torch.cat(valid_l), sae.cfg.n_latents)
    return (codes, torch.cat(raw)) if return_acts else codes
