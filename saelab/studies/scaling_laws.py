"""Fitting the paper's scaling laws (Gao et al. 2024, section 3) to a grid, with uncertainties.

    L(N)    = a * N^(-b) + c                              for each k (c: the irreducible loss)
    L(N, k) = exp(alpha + beta_k log k + beta_n log N + gamma log k log N) + exp(zeta + eta log k)
                                                          (the paper's joint form, section 3.1)
    L(C)    = a * C^(-b) + c                              for each k, on the lower envelope of the
                                                          held-out curves of every n against compute
                                                          (the paper's Figure 1: L = 0.09 + 0.056
                                                          C^-0.084, C a fraction of GPT-4's pretraining)

Uncertainties are one standard error from `scipy.optimize.curve_fit`'s covariance (a local, linearised
estimate: with five points a fit has few degrees of freedom, so read them as rough). `holdout_prediction`
is the honest test of a law: fit without the largest n, predict it, compare with what was measured.
"""

from __future__ import annotations

import math

import numpy as np


def _fit(f, x, y, p0, bounds=(-np.inf, np.inf)):
    """Least squares; standard errors from the covariance (nan when the points leave no degrees of freedom)."""
    import warnings

    from scipy.optimize import OptimizeWarning, curve_fit

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", OptimizeWarning)
        params, cov = curve_fit(f, x, y, p0=p0, bounds=bounds, maxfev=20000)
    err = np.sqrt(np.clip(np.diag(cov), 0, None)) if np.all(np.isfinite(cov)) else np.full(len(params), np.nan)
    return params, err


def power_law(n, a, b, c):
    return a * np.power(n, -b) + c


def fit_power_law(n, loss, irreducible: bool = True) -> dict:
    """L(N) = a N^-b + c (c >= 0, below the smallest loss) by least squares on log L; returns the parameters,
    their standard errors ('a_err', ...) and the fitted curve's R^2 in log space."""
    n, loss = np.asarray(n, float), np.asarray(loss, float)
    if len(n) < (3 if irreducible else 2):
        raise ValueError(f"a power law{' with an irreducible term' if irreducible else ''} needs at least "
                         f"{3 if irreducible else 2} points, got {len(n)}")
    slope, icpt = np.polyfit(np.log(n), np.log(loss), 1)
    if irreducible:
        def f(x, a, b, c):
            return np.log(power_law(np.exp(x), a, b, c))
        lo = [1e-12, 1e-6, 0.0]
        hi = [np.inf, 5.0, float(loss.min()) * (1 - 1e-6)]
        p0 = [math.exp(icpt), max(-slope, 1e-3), float(loss.min()) * 0.1]
        (a, b, c), (ae, be, ce) = _fit(f, np.log(n), np.log(loss), p0, (lo, hi))
    else:
        def f(x, a, b):
            return np.log(a) - b * x
        (a, b), (ae, be) = _fit(f, np.log(n), np.log(loss), [math.exp(icpt), max(-slope, 1e-3)],
                                ([1e-12, -5.0], [np.inf, 5.0]))
        c, ce = 0.0, 0.0
    pred = np.log(power_law(n, a, b, c))
    ss = float(((np.log(loss) - pred) ** 2).sum())
    tot = float(((np.log(loss) - np.log(loss).mean()) ** 2).sum())
    return {"a": a, "b": b, "c": c, "a_err": ae, "b_err": be, "c_err": ce, "r2_log": 1 - ss / tot if tot else 1.0,
            "points": len(n), "dof": len(n) - (3 if irreducible else 2)}


def joint_law(nk, alpha, beta_k, beta_n, gamma, zeta, eta):
    n, k = nk
    lk, ln = np.log(k), np.log(n)
    return np.exp(alpha + beta_k * lk + beta_n * ln + gamma * lk * ln) + np.exp(zeta + eta * lk)


JOINT_NAMES = ("alpha", "beta_k", "beta_n", "gamma", "zeta", "eta")


def fit_joint_law(n, k, loss) -> dict:
    """The paper's L(N, k) by least squares on log L; parameters, standard errors, residuals (log L)."""
    n, k, loss = (np.asarray(v, float) for v in (n, k, loss))
    if len(n) < 7:
        raise ValueError(f"the joint law has 6 parameters; fit it on at least 7 points, got {len(n)}")
    # start: the reducible term from a plane in (log k, log n), the irreducible one a fifth of the floor
    floor = float(loss.min()) * 0.2
    A = np.stack([np.ones_like(n), np.log(k), np.log(n), np.log(k) * np.log(n)], 1)
    coef = np.linalg.lstsq(A, np.log(np.clip(loss - floor, 1e-9, None)), rcond=None)[0]
    p0 = [*coef, math.log(floor), 0.0]

    def f(x, *p):
        return np.log(joint_law(x, *p))

    params, err = _fit(f, np.stack([n, k]), np.log(loss), p0)
    resid = np.log(loss) - f(np.stack([n, k]), *params)
    out = dict(zip(JOINT_NAMES, params))
    out.update({f"{name}_err": e for name, e in zip(JOINT_NAMES, err)})
    out["residuals_log"] = resid.tolist()
    out["rms_residual_log"] = float(np.sqrt((resid ** 2).mean()))
    return out


def holdout_prediction(n, loss) -> dict:
    """Fit L(N) without the largest n, predict its loss; the relative error is the test of the law."""
    n, loss = np.asarray(n, float), np.asarray(loss, float)
    order = np.argsort(n)
    n, loss = n[order], loss[order]
    fit = fit_power_law(n[:-1], loss[:-1], irreducible=len(n) - 1 >= 4)
    pred = float(power_law(n[-1], fit["a"], fit["b"], fit["c"]))
    return {"held_out_n": int(n[-1]), "predicted": pred, "measured": float(loss[-1]),
            "relative_error": (pred - loss[-1]) / loss[-1], "fit_without_it": fit}


def compute_envelope(curves, skip_frac: float = 0.1):
    """The lower envelope of held-out loss against compute: the evaluations no other evaluation beats with
    less or equal compute (a Pareto front over the measured points; no resampling, so no point counts
    twice). Each run's first `skip_frac` of its compute (the learning-rate warmup and the first steps) is
    left out. `curves`: DataFrame with n, k, flops, nmse; returns flops, nmse, n, k in order of compute."""
    import pandas as pd

    final = curves.groupby(["n", "k"]).flops.transform("max")
    kept = curves[curves.flops >= skip_frac * final].sort_values(["flops", "nmse"])
    rows, best = [], float("inf")
    for r in kept.itertuples():
        if r.nmse < best:
            best = float(r.nmse)
            rows.append({"flops": float(r.flops), "nmse": best, "n": int(r.n), "k": int(r.k)})
    return pd.DataFrame(rows, columns=["flops", "nmse", "n", "k"])


def compute_optimal_n(envelope) -> list[dict]:
    """The n on the envelope for each range of compute: [{'n', 'k', 'from_flops', 'to_flops'}] in order."""
    spans: list[dict] = []
    for r in envelope.itertuples():
        if spans and (spans[-1]["n"], spans[-1]["k"]) == (r.n, r.k):
            spans[-1]["to_flops"] = r.flops
        else:
            spans.append({"n": int(r.n), "k": int(r.k), "from_flops": r.flops, "to_flops": r.flops})
    return spans


def fit_compute_law(envelope) -> dict:
    """L(C) = a C^-b + c, fitted on the envelope from `compute_envelope` (the exponent does not depend on
    the unit of C, so it compares with the paper's 0.084; a does). Without the floor when there are
    fewer than 4 envelope points."""
    return fit_power_law(envelope.flops.to_numpy(), envelope.nmse.to_numpy(), irreducible=len(envelope) >= 4)


def fit_grid(points, curves) -> dict:
    """Every fit of a grid: L(N) per k (with the held-out-n prediction), the joint L(N, k), L(C). A fit that
    does not converge is listed under 'errors' (with its reason) instead of stopping the others."""
    ok = points[points.status == "ok"]
    out: dict = {"per_k": {}, "holdout": {}, "errors": {}}

    def attempt(name, fn, *args):
        try:
            return fn(*args)
        except (RuntimeError, ValueError) as e:  # scipy: "Optimal parameters not found", too few points
            out["errors"][name] = f"{type(e).__name__}: {e}"
            return None

    for k, part in ok.groupby("k"):
        part = part.sort_values("n")
        if len(part) >= 3 and (f := attempt(f"L(N) k={k}", fit_power_law, part.n, part.nmse)):
            out["per_k"][int(k)] = f
        if len(part) >= 4 and (h := attempt(f"holdout k={k}", holdout_prediction, part.n, part.nmse)):
            out["holdout"][int(k)] = h
    if len(ok) >= 7 and ok.k.nunique() >= 2 and (j := attempt("L(N, k)", fit_joint_law, ok.n, ok.k, ok.nmse)):
        out["joint"] = j
    out["compute"] = {}
    for k, part in (curves.groupby("k") if len(curves) else []):
        env = compute_envelope(part)
        if c := attempt(f"L(C) k={k}", fit_compute_law, env):
            out["compute"][int(k)] = {**c, "envelope": env.to_dict("records"), "optimal_n": compute_optimal_n(env)}
    return out


def dead_latent_figure(dead):
    """Fraction of latents never firing on held-out tokens against n, one line per ablation variant."""
    import plotly.graph_objects as go

    fig = go.Figure()
    for variant, part in dead.groupby("variant", sort=False):
        part = part.sort_values("n")
        fig.add_scatter(x=part.n, y=part.dead_eval_frac, mode="lines+markers", name=variant)
    fig.update_layout(title="Latents that never fire on held-out tokens, with and without AuxK and tied init",
                      height=400)
    fig.update_xaxes(type="log", title="n")
    fig.update_yaxes(title="fraction never fired")
    return fig


def scaling_figures(points, curves, fits: dict):
    """Plotly figures: L(N) per k with fits, the joint fit's residuals, L(C) with its envelope."""
    import plotly.graph_objects as go

    ok = points[points.status == "ok"]
    figs = []
    fig = go.Figure()
    for k, part in ok.groupby("k"):
        part = part.sort_values("n")
        f = fits["per_k"].get(int(k))
        label = f"k={k}" + (f": b = {f['b']:.3f} ± {f['b_err']:.3f}, c = {f['c']:.3f}" if f else "")
        fig.add_scatter(x=part.n, y=part.nmse, mode="markers", name=label)
        if f:
            grid = np.geomspace(part.n.min(), part.n.max() * 2, 50)
            fig.add_scatter(x=grid, y=power_law(grid, f["a"], f["b"], f["c"]), mode="lines", showlegend=False,
                            line={"dash": "dot"})
    fig.update_layout(title="L(N): held-out normalized MSE against n, fitted a·N^-b + c per k", height=450)
    fig.update_xaxes(type="log", title="n (latents)")
    fig.update_yaxes(type="log", title="normalized MSE")
    figs.append(fig)
    if "joint" in fits:
        fig = go.Figure()
        fig.add_scatter(x=ok.n, y=fits["joint"]["residuals_log"], mode="markers",
                        marker={"color": np.log2(ok.k), "colorscale": "Viridis", "showscale": True,
                                "colorbar": {"title": "log2 k"}}, text=[f"k={k}" for k in ok.k])
        fig.update_layout(title=f"Joint L(N, k) fit: residuals in log L (rms {fits['joint']['rms_residual_log']:.3f})",
                          height=380)
        fig.update_xaxes(type="log", title="n")
        fig.update_yaxes(title="log L measured - log L fitted")
        figs.append(fig)
    if len(curves):
        fig = go.Figure()
        for (n, k), part in curves.groupby(["n", "k"]):
            fig.add_scatter(x=part.flops, y=part.nmse, mode="lines", name=f"n={n} k={k}", opacity=0.4)
        for k, env in fits.get("compute", {}).items():
            xs = np.array([r["flops"] for r in env["envelope"]])
            fig.add_scatter(x=xs, y=[r["nmse"] for r in env["envelope"]], mode="markers", name=f"envelope k={k}",
                            marker={"color": "black", "size": 4})
            fig.add_scatter(x=xs, y=power_law(xs, env["a"], env["b"], env["c"]), mode="lines",
                            name=f"k={k}: L(C) = a·C^-({env['b']:.3f} ± {env['b_err']:.3f}) + {env['c']:.3f}",
                            line={"color": "black"})
        fig.update_layout(title="L(C): held-out normalized MSE during training against estimated FLOPs, envelope "
                                "over n for each k", height=450)
        fig.update_xaxes(type="log", title="training FLOPs (6 x 2dn x tokens)")
        fig.update_yaxes(type="log", title="normalized MSE")
        figs.append(fig)
    return figs


def seeds_figure(summary):
    """Held-out normalized MSE against n, one line per k: the mean over seeds with its 95% t-interval."""
    import plotly.graph_objects as go

    fig = go.Figure()
    for k, part in summary.groupby("k"):
        part = part.sort_values("n")
        fig.add_scatter(x=part.n, y=part.nmse_mean, mode="lines+markers", name=f"k = {k}",
                        error_y=dict(type="data", symmetric=False, array=(part.nmse_hi - part.nmse_mean).tolist(),
                                     arrayminus=(part.nmse_mean - part.nmse_lo).tolist()))
    fig.update_layout(title="Held-out normalized MSE over seeds (mean, 95% t-interval)", xaxis_type="log",
                      yaxis_type="log", xaxis_title="latents n", yaxis_title="held-out normalized MSE", height=420)
    return fig
