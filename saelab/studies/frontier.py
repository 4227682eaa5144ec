"""SAE families compared at matched sparsity (Gao et al. 2024, sections 2.3 and 4.1, and the architectures after it).

The paper compares families along their frontiers, not at one setting each. `saelab frontier` trains every family
of `FrontierConfig.families` (by default every studied family of `saelab.sae.families`) at each target L0 with the
main job's recipe and the family's own `recipe`, on the same tokens for the same steps: the TopK-like families at
k = the target (BatchTopK: on average), the penalised ones (ReLU + L1, JumpReLU) at the coefficient searched for it.

The penalised families reach a target L0 only through a coefficient (`Family.penalty`): `matched_points` guesses
each from a power law L0 ~ coef^-slope, trains, refits the law on every trial so far and retrains the targets that
missed by more than `tol`, for at most `rounds` rounds; every trial is kept, and the trial closest to each target
(in log L0) is that target's point. Each point is scored on held-out activations (normalized MSE, L0 and its
per-token spread, latents dead in training and never fired on held-out tokens), spliced into the LM (delta CE,
KL), probed (the mean 1-D probe loss of `saelab.evals.probes`) and scored for first-letter absorption (SAEBench's,
`saelab.evals.absorption`: the mean over the letters past its probe gate, with how many passed and whether the 20
it needs did). Finished points are reused (resumable). `saelab frontier --synthetic` also runs every family on
synthetic data with known features (`saelab.studies.synthetic_bench`).

`calibrate_l1` finds one L1 coefficient for one target L0 (the zoo's ReLU baseline is matched this way).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field, replace
from pathlib import Path

import torch

from saelab.acts.cache import ActivationCache
from saelab.evals.absorption import AbsorptionConfig
from saelab.evals.reconstruction import reconstruction_metrics
from saelab.sae.families import FAMILIES, family_of, studied
from saelab.training.identity import differences
from saelab.training.trainer import TrainConfig, Trainer

PENALTIES_KEYS = {fam.penalty.coef for fam in FAMILIES.values() if fam.penalty}


@dataclass
class FrontierConfig:
    """The grid: each family at each target L0, all for the same number of steps."""

    families: str = ",".join(studied())
    """Comma-separated families (the names of `saelab.sae.families`; default: every studied family)."""
    target_l0s: str = "8,16,32,64"
    """Comma-separated target L0s (k for the TopK families; searched for by coefficient for relu and jumprelu)."""
    steps_frac: float = 0.125
    """Fraction of the main job's steps each SAE trains for (1.0: the full run)."""
    tol: float = 0.15
    """A penalised family's trial counts as at its target when its held-out L0 is within this (relative)."""
    rounds: int = 2
    """Rounds of refitting the penalised families' coefficients after the first guesses (0: guesses only)."""
    delta_ce_contexts: int = 256
    """Held-out contexts (64 tokens) spliced into the LM for delta CE (0: skip delta CE)."""
    probes: bool = True
    """Also score the mean 1-D probe loss (saelab.evals.probes; needs the embedded corpus)."""
    absorption: bool = True
    """Also score SAEBench's first-letter absorption (saelab.evals.absorption; about 4 minutes of SmolLM2 at its
    default 4,000 words, shared by every point)."""
    absorption_settings: AbsorptionConfig = field(default_factory=AbsorptionConfig)
    """Its settings (`--absorption_settings.spelling.max_words`, ...)."""


def short_config(base: TrainConfig, steps_frac: float, **changes) -> TrainConfig:
    """The main job's recipe at `steps_frac` of its epochs (same batch, lr, schedule shape), no checkpoints."""
    return replace(base, epochs=base.epochs * steps_frac, checkpoint_every=0, keep_checkpoints=0, eval_every=10**9,
                   **changes)


def point_name(tcfg: TrainConfig) -> str:
    return family_of(tcfg.sae).point_name(tcfg.sae)


def train_point(tcfg: TrainConfig, train_cache: ActivationCache, folder: Path, progress: bool = False,
                eval_cache: ActivationCache | None = None, device: str = "cpu"):
    """Train one point into `folder` (or reuse it when it holds an SAE trained with exactly `tcfg`); with
    `eval_cache`, its held-out curve is logged every `tcfg.eval_every` steps (folder/log.jsonl)."""
    from saelab.sae.model import SAE

    if not (folder / "sae" / "cfg.json").exists():
        Trainer(replace(tcfg, progress=progress), train_cache, folder, eval_cache=eval_cache, device=device).train()
    saved = json.loads((folder / "sae" / "cfg.json").read_text()).get("train_config", {})
    diff = differences(saved, tcfg, free=("progress", "compile"))  # 0.3's points: migrated (`saelab.training.identity`)
    if diff:
        raise ValueError(f"{folder} holds an SAE trained with other settings ({diff}); delete it or use another "
                         "--out")
    return SAE.load(folder / "sae", device=device)


def _fit(trials: list[dict], coef: str, slope: float) -> tuple[float, float]:
    """(intercept, slope) of log L0 = a - slope * log coef, least squares over the trials (the guessed slope while
    they hold fewer than two coefficients, or a fit that is not falling)."""
    xs = [math.log(t[coef]) for t in trials]
    ys = [math.log(max(t["l0"], 1e-3)) for t in trials]
    if len(set(xs)) >= 2:
        mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
        fitted = -sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / sum((x - mx) ** 2 for x in xs)
        if fitted > 0.05:
            slope = fitted
        return my + slope * mx, slope
    return ys[0] + slope * xs[0], slope


def matched_points(base: TrainConfig, family: str, targets: list[float], try_coef, tol: float = 0.15,
                   rounds: int = 2, start: float | None = None) -> tuple[dict[float, dict], list[dict]]:
    """A penalised family's coefficient for each target L0: guess from a power law, `try_coef(coef) -> {coef, l0,
    ...}` each, refit on every trial and retry the misses for `rounds` rounds. Returns ({target: the closest
    trial}, all trials)."""
    penalty = FAMILIES[family].penalty
    coef, slope = penalty.coef, penalty.slope
    guess = start or penalty.guess
    trials: list[dict] = []
    tried: dict[float, dict] = {}

    def run(c: float) -> None:
        c = float(f"{c:.3g}")  # rounded, so reruns and neighbouring targets reuse a trial
        if c not in tried:
            tried[c] = try_coef(c)
            trials.append(tried[c])

    def closest(t: float) -> dict:
        return min(trials, key=lambda r: abs(math.log(max(r["l0"], 1e-3) / t)))

    for t in targets:
        run(guess * (32 / t) ** (1 / slope))
    for _ in range(rounds):
        misses = [t for t in targets if abs(closest(t)["l0"] / t - 1) > tol]
        if not misses:
            break
        a, s = _fit(trials, coef, slope)
        for t in misses:
            run(math.exp((a - math.log(t)) / s))
    return {t: closest(t) for t in targets}, trials


def calibrate_l1(base: TrainConfig, relu: dict, target_l0: float, train_cache: ActivationCache,
                 eval_cache: ActivationCache, out: str | Path, start: float = 0.5, steps_frac: float = 0.25,
                 tol: float = 0.1, max_trials: int = 7, log=print, device: str = "cpu") -> dict:
    """Search the L1 coefficient whose ReLU SAE (the main job's recipe with `relu`'s settings, for `steps_frac` of
    its steps) has a held-out L0 within `tol` (relative) of `target_l0`: bracket the target by doubling or
    halving, then interpolate log L0 against log coefficient. Each trial is a frontier point in `out`. Short runs
    end at a higher L0 than a full run (L1 keeps pruning); they train on `device`. Returns {'l1_coef', 'l0',
    'trials', 'converged'}."""
    trials: list[dict] = []

    def trial(c: float) -> dict:
        tcfg = short_config(base, steps_frac, **{**relu, "l1_coef": float(f"{c:.3g}")})
        sae = train_point(tcfg, train_cache, Path(out) / point_name(tcfg), device=device)
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


def score_point(name: str, tcfg: TrainConfig, sae, eval_cache: ActivationCache, dead_tokens: int | None) -> dict:
    """One row of the table: the held-out reconstruction, L0 spread, dead (in training, after `dead_tokens` tokens
    without firing) and never-fired (on the held-out tokens) latents."""
    r = reconstruction_metrics(sae, eval_cache)
    fam = family_of(tcfg.sae)
    coef = fam.coef(tcfg.sae)
    return {"point": name, "family": fam.name, "k": None if coef is not None else tcfg.k, "coef": coef,
            "steps": int(sae.tokens_seen) // tcfg.batch_size, "nmse": r["nmse"], "l0": r["l0"],
            "l0_p10": r["l0_p10"], "l0_median": r["l0_median"], "l0_p90": r["l0_p90"],
            "never_fired_frac": r["dead_eval_frac"],
            "dead_train_frac": float(sae.dead_mask(dead_tokens).float().mean()) if dead_tokens else None}


def run_frontier(cfg: FrontierConfig, base: TrainConfig, train_cache: ActivationCache, eval_cache: ActivationCache,
                 out: str | Path, lm=None, tokens_NT: torch.Tensor | None = None, progress: bool = True, log=print,
                 device: str = "cpu", seeds: int = 1):
    """Train (or reuse) every family's points in `out/<name>`, score them; returns a pandas DataFrame with one row
    per family, target and seed (the chosen points) and writes frontier.csv, and every trial to trials.csv
    (atomically). Every point trains (and its SAE is scored) on `device`.

    seeds: train every point once per seed (`base.seed`, `base.seed + 1`, ...; each seed draws the SAE's
    initialisation and the order of the training batches, while the held-out tokens, delta CE contexts, probe tasks
    and spelling prompts stay the same). The first seed's points live in `out/<name>` (as without seeds), the others
    in `out/seed-<s>/<name>`. The penalised families search their coefficient on the first seed only; later seeds
    retrain at the coefficient chosen for each target, so their L0 varies a little around it. With more than one
    seed, frontier_summary.csv holds each point's mean and 95% t-interval over seeds and frontier_comparisons.csv
    every family against TopK (paired by seed)."""
    import pandas as pd

    from saelab.evals.intervals import seed_list
    from saelab.files import atomic_write

    out = Path(out)
    targets = [float(t) for t in cfg.target_l0s.split(",") if t.strip()]
    families = [f.strip() for f in cfg.families.split(",") if f.strip()]
    unknown = sorted(set(families) - set(studied()))
    if unknown or not families or not targets:
        raise ValueError(f"frontier: families must be among {', '.join(studied())} (got {cfg.families!r}) and "
                         f"target_l0s a list of numbers (got {cfg.target_l0s!r})")
    seed_values = seed_list(seeds, base.seed)
    rows, saes, trial_rows = [], {}, []
    coefs: dict[tuple[str, float], float] = {}  # (family, target) -> the first seed's chosen coefficient

    for seed in seed_values:
        first = seed == seed_values[0]
        prefix = "" if first else f"seed-{seed}/"
        sbase = replace(base, seed=seed)

        def train_and_score(tcfg: TrainConfig, prefix=prefix, seed=seed) -> dict:
            name = point_name(tcfg)
            key = prefix + name
            sae = train_point(tcfg, train_cache, out / key, progress, device=device)
            dead_tokens = json.loads((out / key / "sae" / "cfg.json").read_text()).get("dead_tokens")
            row = {**score_point(name, tcfg, sae, eval_cache, dead_tokens), "seed": seed, "key": key}
            saes[key] = sae
            trial_rows.append(row)
            log(f"frontier: {key} -> held-out L0 {row['l0']:.1f}, normalized MSE {row['nmse']:.4f}")
            return row

        for fam in families:
            recipe, penalty = FAMILIES[fam].recipe, FAMILIES[fam].penalty
            if penalty and first:
                coef = penalty.coef
                chosen, _ = matched_points(sbase, fam, targets, lambda c, recipe=recipe, coef=coef, sbase=sbase: {
                    coef: c, **train_and_score(short_config(sbase, cfg.steps_frac, **{**recipe, coef: c}))},
                    cfg.tol, cfg.rounds)
                coefs.update({(fam, t): row[coef] for t, row in chosen.items()})
            elif penalty:  # later seeds: the first seed's coefficient for each target
                coef = penalty.coef
                done: dict[float, dict] = {}
                for t in targets:
                    c = coefs[(fam, t)]
                    if c not in done:
                        done[c] = train_and_score(short_config(sbase, cfg.steps_frac, **{**recipe, coef: c}))
                chosen = {t: done[coefs[(fam, t)]] for t in targets}
            else:
                chosen = {t: train_and_score(short_config(sbase, cfg.steps_frac, **recipe, k=int(t))) for t in targets}
            for t, row in chosen.items():
                rows.append({"target_l0": t, **{k: v for k, v in row.items() if k not in PENALTIES_KEYS},
                             "matched": abs(row["l0"] / t - 1) <= cfg.tol})
    df = pd.DataFrame(rows)
    used = {n: saes[n] for n in dict.fromkeys(df.key)}
    if lm is not None and tokens_NT is not None and len(tokens_NT):
        from saelab.evals.downstream import downstream_losses
        from saelab.evals.splice import SpliceSite, sae_replacement

        where = SpliceSite.of(next(iter(used.values())), lm)
        res = downstream_losses(lm, tokens_NT, {n: sae_replacement(s) for n, s in used.items()}, where,
                                progress=progress)
        df["delta_ce"] = [res[n]["delta_loss"] for n in df.key]
        df["kl"] = [res[n]["kl"] for n in df.key]
    if lm is not None and cfg.probes:
        from saelab.evals.probes import probe_losses

        mean: dict[str, float] = {}
        for seed in seed_values:  # one seed's SAEs at a time: the token features of 20 SAEs take gigabytes
            part = {k: s for k, s in used.items() if int(df.seed[df.key == k].iloc[0]) == seed}
            mean.update(probe_losses(lm, part, progress=progress)["mean"])
        df["probe_loss"] = [mean[n] for n in df.key]
        for basis in BASELINES:  # the same probes on directions that are not an SAE's (the controls)
            if basis in mean:
                df[f"probe_loss_{basis}"] = mean[basis]
    if lm is not None and cfg.absorption:
        from saelab.evals.absorption import first_letter_absorption

        rep = first_letter_absorption(lm, used, cfg.absorption_settings, progress=progress)["saes"]
        for col, key in (("absorption", "absorption_over_passing"), ("full_absorption", "full_absorption_over_passing"),
                         ("absorption_letters", "letters_passing"), ("absorption_readable", "readable")):
            df[col] = [rep[n][key] for n in df.key]
    out.mkdir(parents=True, exist_ok=True)
    atomic_write(out / "frontier.csv", lambda p: df.to_csv(p, index=False))
    atomic_write(out / "trials.csv", lambda p: pd.DataFrame(trial_rows).to_csv(p, index=False))
    if len(seed_values) > 1:
        summary, comparisons = frontier_summary(df), family_comparisons(df)
        atomic_write(out / "frontier_summary.csv", lambda p: summary.to_csv(p, index=False))
        atomic_write(out / "frontier_comparisons.csv", lambda p: comparisons.to_csv(p, index=False))
    return df


BASELINES = ("residual", "residual_normalised", "random_directions", "pca")
"""The probe controls `saelab.evals.probes` scores beside the SAEs (see its docstring)."""
SUMMARY_METRICS = ("l0", "nmse", "delta_ce", "kl", "probe_loss", "absorption", "full_absorption", "dead_train_frac",
                   "never_fired_frac")


def frontier_summary(df):
    """Per family and target: n_seeds and each metric's mean with its 95% t-interval over seeds (`saelab.evals.
    intervals.summarize`)."""
    from saelab.evals.intervals import summarize

    return summarize(df, ["family", "target_l0"], SUMMARY_METRICS)


def family_comparisons(df, reference: str = "topk", metrics=("nmse", "delta_ce")):
    """Every family against `reference` at each target, paired by seed: the mean difference (family minus
    reference), its 95% t-interval, the relative difference, and the verdict on 'the family is lower' (`saelab.evals.
    intervals.verdict`). The penalised families' points sit near, not at, the target: read their `l0` beside."""
    import pandas as pd

    from saelab.evals.intervals import compare, verdict

    rows = []
    ref = df[df.family == reference]
    for (fam, target), part in df[df.family != reference].groupby(["family", "target_l0"], sort=False):
        base = ref[ref.target_l0 == target].set_index("seed")
        part = part.set_index("seed")
        seeds = [s for s in part.index if s in base.index]
        if not seeds:
            continue
        for m in metrics:
            if m not in part or part[m].isna().all():
                continue
            d = compare([part.loc[s, m] for s in seeds], [base.loc[s, m] for s in seeds])
            rows.append({"family": fam, "reference": reference, "target_l0": target, "metric": m,
                         "n_seeds": d["n"], "l0_mean": float(part.loc[seeds, "l0"].mean()),
                         "diff_mean": d["mean"], "diff_lo": d["lo"], "diff_hi": d["hi"], "relative": d["relative"],
                         "verdict_lower": verdict(d, "<")})
    return pd.DataFrame(rows)


def at_l0(trials, family: str, target: float, metric: str = "nmse") -> float:
    """`metric` of `family` at held-out L0 `target`, interpolated linearly in log L0 and log metric between the
    family's two trials that bracket it (`trials`: trials.csv as a DataFrame), or extrapolated along the end segment
    when the target is within `AT_L0_REACH` of the nearest trial; NaN farther out. Compares families whose points
    land near, not at, a target L0."""
    part = trials[trials.family == family].dropna(subset=[metric]).sort_values("l0").drop_duplicates("l0")
    xs, ys = [math.log(v) for v in part.l0], [math.log(max(v, 1e-12)) for v in part[metric]]
    t = math.log(target)
    if not xs or min(abs(x - t) for x in xs) > math.log(1 + AT_L0_REACH) and not xs[0] <= t <= xs[-1]:
        return float("nan")
    if len(xs) == 1:
        return math.exp(ys[0])
    i = min(max(next((j for j in range(1, len(xs)) if t <= xs[j]), len(xs) - 1), 1), len(xs) - 1)
    x0, x1, y0, y1 = xs[i - 1], xs[i], ys[i - 1], ys[i]
    return math.exp(y0 + (t - x0) / (x1 - x0) * (y1 - y0))


AT_L0_REACH = 0.15
"""How far (relative) `at_l0` extrapolates beyond a family's nearest trial (the search's default `tol`)."""

METRICS = (("nmse", "held-out normalized MSE", "log"), ("delta_ce", "delta CE (nats)", "linear"),
           ("dead_train_frac", "dead in training (fraction)", "linear"),
           ("never_fired_frac", "never fired on held-out tokens (fraction)", "linear"),
           ("probe_loss", "mean 1-D probe loss", "linear"),
           ("absorption", "first-letter absorption fraction (letters past the gate)", "linear"),
           ("l0_spread", "per-token L0, p90 / p10", "linear"))
NAMES = {name: fam.display for name, fam in FAMILIES.items()}
"""Each family's name in the plots."""


def frontier_figures(df):
    """Delta CE against normalized MSE, then one plotly figure per metric against the held-out L0, one line per family
    (missing metrics are skipped). With several seeds (a `seed` column), each point is the mean over seeds with its
    95% t-interval as error bars."""
    import plotly.graph_objects as go

    df = df.assign(l0_spread=df.l0_p90 / df.l0_p10.clip(lower=1)) if "l0_p90" in df else df
    several = "seed" in df and df.seed.nunique() > 1
    if several:
        from saelab.evals.intervals import summarize

        df = summarize(df, ["family", "target_l0"], [*SUMMARY_METRICS, "l0_spread"])

    def col(part, m):
        return part[f"{m}_mean"] if several else part[m]

    def bars(part, m):
        if not several:
            return None
        return dict(type="data", symmetric=False, array=(part[f"{m}_hi"] - part[f"{m}_mean"]).tolist(),
                    arrayminus=(part[f"{m}_mean"] - part[f"{m}_lo"]).tolist())

    def has(m):
        name = f"{m}_mean" if several else m
        return name in df and df[name].notna().any()

    note = " (mean over seeds, 95% t-interval)" if several else ""
    figs = []
    if has("delta_ce"):  # the paper's section 4.1 view: the LM's cost at equal error
        fig = go.Figure()
        for fam, part in df.groupby("family", sort=False):
            part = part.sort_values("nmse_mean" if several else "nmse")
            fig.add_scatter(x=col(part, "nmse"), y=col(part, "delta_ce"), mode="lines+markers",
                            name=NAMES.get(fam, fam), error_x=bars(part, "nmse"), error_y=bars(part, "delta_ce"))
        fig.update_layout(title="Downstream cost at equal reconstruction (paper section 4.1)" + note, height=420,
                          xaxis_title="held-out normalized MSE", yaxis_title="delta CE (nats)", xaxis_type="log")
        figs.append(fig)
    for y, ytitle, scale in METRICS:
        if not has(y):
            continue
        fig = go.Figure()
        for fam, part in df.groupby("family", sort=False):
            part = part.sort_values("l0_mean" if several else "l0")
            fig.add_scatter(x=col(part, "l0"), y=col(part, y), mode="lines+markers", name=NAMES.get(fam, fam),
                            error_y=bars(part, y))
        fig.update_layout(title=f"{ytitle} against L0, every family for the same steps" + note,
                          xaxis_title="held-out L0", yaxis_title=ytitle, xaxis_type="log", yaxis_type=scale, height=420)
        figs.append(fig)
    return figs
