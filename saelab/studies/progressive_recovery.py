"""Progressive recovery and test-time activations (Gao et al. 2024, section 5).

A TopK SAE trained at k can be run at test time with another activation:
- TopK(k'): keep the k' largest pre-activations, for k' from k/4 to 8k;
- JumpReLU(theta): keep every pre-activation above theta; thresholds chosen so the L0 spans the
  same range as the TopK sweep (from quantiles of the pre-activations).
Progressive recovery (section 5.3) asks whether MSE keeps falling as more latents are let in:
a plain TopK SAE overfits to exactly k (MSE rises again past k), a Multi-TopK SAE (L(k) + L(4k)/8)
keeps improving. `sweep` returns a tidy table (one row per point) for one or several SAEs.

Activation shrinkage (section 5.1): with the support (which latents fire) fixed, refine the
activations by projected gradient descent on ||x - W_dec^T z - b_pre||^2 subject to z >= 0.
An L1 penalty pulls activations toward zero, so the ReLU+L1 SAE's activations grow a lot when
refined; a TopK SAE's hardly at all (`refine_activations`, `shrinkage_table`).
"""

from __future__ import annotations

import numpy as np
import torch

from saelab.evals.reconstruction import reconstruction_metrics
from saelab.sae.losses import normalized_mse
from saelab.sae.model import SAE


def default_ks(k: int, n_latents: int) -> list[int]:
    """k' from k/4 to 8k on a log2 grid with half steps (the paper's Figure 10 range)."""
    grid = sorted({max(1, round(k * 2 ** (e / 2))) for e in range(-4, 7)})
    return [k_test for k_test in grid if k_test <= n_latents]


@torch.no_grad()
def jumprelu_thresholds(sae: SAE, x_BD: torch.Tensor, l0_targets: list[float], sample: int = 4096) -> list[float]:
    """Thresholds theta giving about each target L0: the (1 - L0/n) quantile of the pre-activations."""
    x = x_BD[:sample].float().to(sae.W_enc.device)
    x_n, _ = sae.preprocess(x)
    pre = sae.pre_acts(x_n).flatten()
    n = sae.cfg.n_latents
    qs = torch.tensor([1 - min(t, n) / n for t in l0_targets], dtype=torch.float64)
    # quantile on a subsample (torch.quantile is limited to 2^24 elements)
    if pre.numel() > 2**24:
        pre = pre[torch.randperm(pre.numel(), generator=torch.Generator().manual_seed(0))[: 2**24]]
    return [float(v) for v in torch.quantile(pre.double().cpu(), qs)]


CALIBRATION_TOKENS = 4096


@torch.no_grad()
def sweep(saes: dict[str, SAE], x_BD: torch.Tensor, ks: list[int] | None = None, jumprelu: bool = True,
          lm=None, tokens_NT: torch.Tensor | None = None, where=None, progress: bool = True,
          calibration_BD: torch.Tensor | None = None):
    """L0 and normalized MSE on held-out activations `x_BD` for TopK(k') and JumpReLU points.

    JumpReLU thresholds are chosen on `calibration_BD`, tokens disjoint from the scored ones; without
    it, the first min(4096, 1/4) rows of `x_BD` calibrate and every point is scored on the rest.
    With `lm` and `tokens_NT`, each point also gets its delta loss (splicing the SAE with that
    activation; one clean pass shared by all points). Returns a pandas DataFrame with columns
    sae, activation, param (k' or theta), l0, nmse, n_scored[, delta_loss, kl].
    """
    import pandas as pd

    from saelab.evals.splice import sae_replacement

    if calibration_BD is None and jumprelu:
        n_cal = min(CALIBRATION_TOKENS, len(x_BD) // 4)
        if n_cal < 1:
            raise ValueError(f"{len(x_BD)} activations are too few to set JumpReLU thresholds on a quarter of them; "
                             "pass calibration_BD or more held-out tokens")
        calibration_BD, x_BD = x_BD[:n_cal], x_BD[n_cal:]
    rows, reps = [], {}
    for name, sae in saes.items():
        test_ks = ks or default_ks(sae.cfg.k, sae.cfg.n_latents)
        points = [("topk", {"activation": "topk", "k": k}, k) for k in test_ks]
        if jumprelu:
            for th in jumprelu_thresholds(sae, calibration_BD, test_ks):
                points.append(("jumprelu", {"activation": "jumprelu", "threshold": th}, th))
        for act, kw, param in points:
            r = reconstruction_metrics(sae, x_BD, **kw)
            rows.append({"sae": name, "activation": act, "param": param, "l0": r["l0"], "nmse": r["nmse"],
                         "trained_k": sae.cfg.k, "n_scored": len(x_BD)})
            if lm is not None:
                reps[f"{len(rows) - 1}"] = sae_replacement(sae, **kw)
    df = pd.DataFrame(rows)
    if lm is not None and tokens_NT is not None:
        from saelab.evals.downstream import downstream_losses
        from saelab.evals.splice import SpliceSite

        where = where or SpliceSite.of(next(iter(saes.values())), lm)
        res = downstream_losses(lm, tokens_NT, reps, where, progress=progress)
        df["delta_loss"] = [res[str(i)]["delta_loss"] for i in range(len(df))]
        df["kl"] = [res[str(i)]["kl"] for i in range(len(df))]
    return df


def is_monotone_decreasing(values, tol: float = 0.0) -> bool:
    """True when each value is at most the previous one plus `tol`."""
    v = np.asarray(values, dtype=float)
    return bool(np.all(np.diff(v) <= tol))


# ---- activation shrinkage ------------------------------------------------------------------------
def _largest_eigenvalue(G_BKK: torch.Tensor, iters: int = 30) -> torch.Tensor:
    """Largest eigenvalue of each PSD matrix by power iteration (much cheaper than eigvalsh at large K),
    with 5% headroom so that 1/L stays a safe step."""
    v = torch.ones(G_BKK.shape[:2], dtype=G_BKK.dtype, device=G_BKK.device)
    lam = torch.ones(G_BKK.shape[0], dtype=G_BKK.dtype, device=G_BKK.device)
    for _ in range(iters):
        w = (G_BKK @ v[..., None]).squeeze(-1)
        lam = w.norm(dim=-1)
        v = w / lam.clamp_min(1e-12)[:, None]
    return (lam * 1.05).clamp_min(1e-6)


@torch.no_grad()
def refine_activations(sae: SAE, x_BD: torch.Tensor, iters: int = 200, batch_size: int = 1024, **encode_kwargs):
    """Refine the SAE's activations on their own support by projected gradient descent (z >= 0).

    Works in the SAE's normalised space, with the step 1/L (L = largest eigenvalue of the
    support's Gram matrix, per token) and Nesterov momentum (FISTA). Returns (acts_before,
    acts_after, idx), all [B, K] (padded with zeros)."""
    befores, afters, idxs = [], [], []
    for s in range(0, len(x_BD), batch_size):
        x = x_BD[s:s + batch_size].float().to(sae.W_enc.device)
        enc = sae.encode(x, **encode_kwargs)
        z0, idx = enc.top_acts_BK.float(), enc.top_idx_BK
        mask = (z0 > 0).float()
        x_n, _ = sae.preprocess(x)
        target = x_n - sae.b_pre
        D_BKD = sae.W_dec[idx] * mask[..., None]
        G = D_BKD @ D_BKD.transpose(1, 2)
        c = (D_BKD @ target[..., None]).squeeze(-1)
        L = _largest_eigenvalue(G)[:, None]
        z, y, t = z0.clone(), z0.clone(), 1.0
        for _ in range(iters):
            grad = (G @ y[..., None]).squeeze(-1) - c
            z_next = ((y - grad / L).clamp_min(0)) * mask
            t_next = (1 + (1 + 4 * t * t) ** 0.5) / 2
            y = z_next + (t - 1) / t_next * (z_next - z)
            z, t = z_next, t_next
        befores.append(z0.cpu()), afters.append(z.cpu()), idxs.append(idx.cpu())
    K = max(b.shape[1] for b in befores)
    pad = lambda ts: torch.cat([torch.nn.functional.pad(t, (0, K - t.shape[1])) for t in ts])  # noqa: E731
    return pad(befores), pad(afters), pad(idxs)


@torch.no_grad()
def shrinkage(sae: SAE, x_BD: torch.Tensor, iters: int = 200, **encode_kwargs) -> dict:
    """How much activations grow and MSE improves when refined on a fixed support (section 5.1).

    act_growth: sum of refined activations / sum of the SAE's (1 = no shrinkage);
    median_growth: the median per-activation ratio; nmse_before / nmse_after on `x_BD`.
    """
    before, after, idx = refine_activations(sae, x_BD, iters=iters, **encode_kwargs)
    dev = sae.W_dec.device
    x_n = sae.preprocess(x_BD.float().to(dev))[0]  # the space the refinement and the paper's nmse use
    idx = idx.to(dev)
    nb = float(normalized_mse(sae.decode_normalized(before.to(dev), idx).double(), x_n.double()))
    na = float(normalized_mse(sae.decode_normalized(after.to(dev), idx).double(), x_n.double()))
    on = before > 0
    ratio = (after[on] / before[on]).double()
    return {"l0": float(on.sum(-1).float().mean()), "nmse_before": nb, "nmse_after": na,
            "nmse_improvement": (nb - na) / nb if nb > 0 else 0.0,
            "act_growth": float(after.sum() / before.sum().clamp_min(1e-12)),
            "median_growth": float(ratio.median()) if len(ratio) else float("nan")}


def shrinkage_table(saes: dict[str, SAE], x_BD: torch.Tensor, iters: int = 200):
    """`shrinkage` for several SAEs as a pandas DataFrame (one row each)."""
    import pandas as pd

    return pd.DataFrame([{"sae": name, **shrinkage(sae, x_BD, iters=iters)} for name, sae in saes.items()])


def sweep_figure(df, title: str = "Progressive recovery: test-time activations (paper Figure 10)"):
    """L0 vs normalized MSE, one line per (SAE, activation); the trained k marked."""
    import plotly.graph_objects as go

    fig = go.Figure()
    for (name, act), part in df.groupby(["sae", "activation"], sort=False):
        part = part.sort_values("l0")
        label = f"{name} · {'TopK(k′)' if act == 'topk' else 'JumpReLU'}"
        fig.add_scatter(x=part.l0, y=part.nmse, mode="lines+markers", name=label,
                        line_dash="solid" if act == "topk" else "dot")
    for k in sorted(set(df.trained_k)):
        fig.add_vline(x=k, line_dash="dash", line_color="grey", annotation_text=f"trained k={k}")
    fig.update_layout(title=title, xaxis_title="L0 (active latents per token)", yaxis_title="normalized MSE",
                      xaxis_type="log", yaxis_type="log", height=420)
    return fig
