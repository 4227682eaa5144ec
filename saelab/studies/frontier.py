"""TopK against ReLU + L1 along their frontiers (Gao et al. 2024, sections 2.3 and 4.1).

The paper compares SAE families at matched sparsity, not at one setting each: a small grid of TopK
SAEs (several k) and ReLU + L1 SAEs (several L1 coefficients), all trained with the main job's recipe
on the same tokens for the same number of steps, each scored on held-out activations (normalized MSE,
L0) and spliced into the LM (delta CE). Two figures follow: L0 against normalized MSE (the
sparsity-reconstruction frontier) and delta CE against normalized MSE (the paper's finding: at equal
normalized MSE, TopK costs the LM less). `saelab frontier` runs it; finished points are reused.

`calibrate_l1` finds the L1 coefficient that puts a ReLU SAE at a target L0 (the zoo's ReLU baseline is
matched to TopK's k = 32 this way).
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import torch

from saelab.acts.cache import ActivationCache
from saelab.evals.reconstruction import reconstruction_metrics
from saelab.sae.input_norm import RENAMED
from saelab.training.checkpoints import ADDED_IN_0_3
from saelab.training.trainer import TrainConfig, Trainer


@dataclass
class FrontierConfig:
    """The grid: TopK at each k and ReLU + L1 at each coefficient, all for the same number of steps."""

    ks: str = "4,8,16,32,64"
    """Comma-separated k of the TopK SAEs."""
    l1_coefs: str = "0.05,0.15,0.183,0.3"
    """Comma-separated L1 coefficients of the ReLU SAEs (on the main job's data at 1/4 of its steps: L0 180,
    50, 31 and 10; the middle three are the trials of `calibrate_l1` for k = 32)."""
    steps_frac: float = 0.25
    """Fraction of the main job's steps each SAE trains for (1.0: the full run; the grid costs that times
    the number of points, ReLU steps ~2x TopK's)."""
    delta_ce_contexts: int = 64
    """Held-out contexts (64 tokens) spliced into the LM for delta CE (0: skip delta CE)."""


def short_config(base: TrainConfig, steps_frac: float, **changes) -> TrainConfig:
    """The main job's recipe at `steps_frac` of its epochs (same batch, lr, schedule shape), no checkpoints."""
    return replace(base, epochs=base.epochs * steps_frac, checkpoint_every=0, keep_checkpoints=0, eval_every=10**9,
                   **changes)


def point_name(tcfg: TrainConfig) -> str:
    return f"topk-k{tcfg.k}" if tcfg.activation == "topk" else f"relu-l1-{tcfg.l1_coef:g}"


def frontier_points(cfg: FrontierConfig, base: TrainConfig, relu: dict) -> dict[str, TrainConfig]:
    """{point name: its TrainConfig}: the main job's recipe at `steps_frac` of its epochs."""
    configs = [short_config(base, cfg.steps_frac, k=int(k)) for k in cfg.ks.split(",") if k]
    configs += [short_config(base, cfg.steps_frac, **{**relu, "l1_coef": float(c)})
                for c in cfg.l1_coefs.split(",") if c]
    return {point_name(c): c for c in configs}


def train_point(tcfg: TrainConfig, train_cache: ActivationCache, folder: Path, progress: bool = False,
                eval_cache: ActivationCache | None = None, device: str = "cpu"):
    """Train one point into `folder` (or reuse it when it holds an SAE trained with exactly `tcfg`); with
    `eval_cache`, its held-out curve is logged every `tcfg.eval_every` steps (folder/log.jsonl)."""
    from saelab.sae.model import SAE

    if not (folder / "sae" / "cfg.json").exists():
        Trainer(replace(tcfg, progress=progress), train_cache, folder, eval_cache=eval_cache, device=device).train()
    saved = json.loads((folder / "sae" / "cfg.json").read_text()).get("train_config", {})
    saved["normalize"] = RENAMED.get(saved.get("normalize"), saved.get("normalize"))
    saved = {**ADDED_IN_0_3, **saved}  # options added in saelab 0.3: older runs had them off
    if {**saved, "progress": None} != {**asdict(tcfg), "progress": None}:
        raise ValueError(f"{folder} holds an SAE trained with other settings; delete it or use another --out")
    return SAE.load(folder / "sae", device=device)


def calibrate_l1(base: TrainConfig, relu: dict, target_l0: float, train_cache: ActivationCache,
                 eval_cache: ActivationCache, out: str | Path, start: float = 0.5, steps_frac: float = 0.25,
                 tol: float = 0.1, max_trials: int = 7, log=print) -> dict:
    """Search the L1 coefficient whose ReLU SAE (the main job's recipe with `relu`'s settings, for
    `steps_frac` of its steps) has a held-out L0 within `tol` (relative) of `target_l0`.

    L0 falls roughly as a power of the coefficient: bracket the target by doubling or halving, then
    interpolate log L0 against log coefficient between the bracket's ends. Coefficients are rounded to
    3 significant digits, and each trial is saved in `out` as a frontier point, so `run_frontier`
    reuses it. Short runs end at a higher L0 than a full run (L1 keeps pruning): the full run's L0 is
    what `saelab.presets.ZOO` records. Returns {'l1_coef', 'l0', 'trials', 'converged'}.
    """
    trials: list[dict] = []

    def trial(c: float) -> dict:
        tcfg = short_config(base, steps_frac, **{**relu, "l1_coef": float(f"{c:.3g}")})
        sae = train_point(tcfg, train_cache, Path(out) / point_name(tcfg))
        r = reconstruction_metrics(sae, eval_cache)
        trials.append({"l1_coef": tcfg.l1_coef, "l0": r["l0"], "nmse": r["nmse"]})
        log(f"calibrate L1: coefficient {tcfg.l1_coef:g} -> held-out L0 {r['l0']:.1f} (target {target_l0:g}), "
            f"normalized MSE {r['nmse']:.4f}")
        return trials[-1]

    def close(r):
        return abs(r["l0"] / target_l0 - 1) <= tol

    r = trial(start)
    lo = hi = None  # lo: a coefficient giving too many active latents, hi: too few
    while not close(r) and len(trials) < max_trials:
        if r["l0"] > target_l0:
            lo = r
        else:
            hi = r
        if lo is None or hi is None:
            c = r["l1_coef"] * (2.0 if hi is None else 0.5)
        else:
            x0, x1 = math.log(lo["l1_coef"]), math.log(hi["l1_coef"])
            y0, y1 = math.log(max(lo["l0"], 1e-3)), math.log(max(hi["l0"], 1e-3))
            t = (math.log(target_l0) - y0) / (y1 - y0) if y1 != y0 else 0.5
            c = math.exp(x0 + min(max(t, 0.1), 0.9) * (x1 - x0))
        r = trial(c)
    best = min(trials, key=lambda t: abs(math.log(max(t["l0"], 1e-3) / target_l0)))
    return {"l1_coef": best["l1_coef"], "l0": best["l0"], "trials": trials, "converged": close(best)}


def run_frontier(cfg: FrontierConfig, base: TrainConfig, relu: dict, train_cache: ActivationCache,
                 eval_cache: ActivationCache, out: str | Path, lm=None, tokens_NT: torch.Tensor | None = None,
                 progress: bool = True):
    """Train (or reuse) every point in `out/<name>`, score it; returns a pandas DataFrame and writes
    frontier.csv (atomically) in `out`."""
    import pandas as pd

    from saelab.evals.downstream import downstream_losses
    from saelab.evals.splice import SpliceSite, sae_replacement
    from saelab.files import atomic_write

    out = Path(out)
    rows, saes = [], {}
    for name, tcfg in frontier_points(cfg, base, relu).items():
        sae = train_point(tcfg, train_cache, out / name, progress)
        r = reconstruction_metrics(sae, eval_cache)
        saes[name] = sae
        rows.append({"point": name, "family": tcfg.activation, "k": tcfg.k if tcfg.activation == "topk" else None,
                     "l1_coef": tcfg.l1_coef if tcfg.activation == "relu" else None,
                     "steps": int(sae.tokens_seen) // tcfg.batch_size, "nmse": r["nmse"], "l0": r["l0"],
                     "dead_eval_frac": r["dead_eval_frac"]})
    df = pd.DataFrame(rows)
    if lm is not None and tokens_NT is not None and len(tokens_NT):
        where = SpliceSite.of(next(iter(saes.values())), lm)
        res = downstream_losses(lm, tokens_NT, {n: sae_replacement(s) for n, s in saes.items()}, where,
                                progress=progress)
        df["delta_ce"] = [res[n]["delta_loss"] for n in df.point]
        df["kl"] = [res[n]["kl"] for n in df.point]
    out.mkdir(parents=True, exist_ok=True)
    atomic_write(out / "frontier.csv", lambda p: df.to_csv(p, index=False))
    return df


def frontier_figures(df):
    """(L0 vs normalized MSE, delta CE vs normalized MSE) for both families, as plotly figures."""
    import plotly.graph_objects as go

    names = {"topk": "TopK (k varies)", "relu": "ReLU + L1 (L1 varies)"}
    figs = []
    for y, title, ytitle in (("l0", "Sparsity-reconstruction frontier", "L0 (active latents per token)"),
                             ("delta_ce", "Downstream cost at equal reconstruction (paper section 4.1)",
                              "delta CE (nats)")):
        if y not in df:
            continue
        fig = go.Figure()
        for fam, part in df.groupby("family", sort=False):
            part = part.sort_values("nmse")
            label = part.k if fam == "topk" else part.l1_coef
            fig.add_scatter(x=part.nmse, y=part[y], mode="lines+markers+text", name=names.get(fam, fam),
                            text=[f"k={int(v)}" if fam == "topk" else f"L1={v:g}" for v in label],
                            textposition="top center")
        fig.update_layout(title=title, xaxis_title="held-out normalized MSE", yaxis_title=ytitle,
                          xaxis_type="log", yaxis_type="log" if y == "l0" else "linear", height=420)
        figs.append(fig)
    return figs
