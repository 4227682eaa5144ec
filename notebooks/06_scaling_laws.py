# ---
# jupyter:
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 06 · Scaling laws
#
# The paper's title is *Scaling and evaluating sparse autoencoders*; its section 3 is about how an SAE's
# reconstruction improves as it grows. In plain words:
#
# - **L(N)**: at a fixed sparsity k, the normalized MSE falls as a power law in the number of latents n, down to an
#   *irreducible* floor: $L(N) = a\,N^{-b} + c$. Doubling n buys a fixed fraction of the reducible part.
# - **L(N, k)**: one law for both knobs, $L = e^{\alpha + \beta_k \log k + \beta_n \log n + \gamma \log k \log n}
#   + e^{\zeta + \eta \log k}$: more active latents help, and they help larger SAEs differently (the interaction
#   γ); the floor depends on k.
# - **L(C)**: with a compute budget C, the best loss any n reaches by C (the lower envelope of all training curves)
#   is again a power law; the n on the envelope is the compute-optimal size for that budget.
# - **Dead latents** grow with n unless something revives them: the paper's AuxK loss and initialising the encoder
#   as the decoder's transpose keep them near zero.
#
# You will run a grid of TopK SAEs over n and k on the main job's activations, fit each law with its uncertainty,
# **predict** the loss of an n you have not trained yet and then train it, and see which findings hold at this scale.
#
# **Prerequisites**: notebook 02 (training, normalized MSE); power laws and least squares on a log scale.
#
# **What you will learn**: to fit L(N) with an irreducible term yourself (exercise 6.1), to test a law by predicting
# an n it has not seen (6.2), the paper's joint L(N, k) and compute law L(C), and why a short training budget changes
# the numbers.
#
# **Paper**: Gao et al. (2024), section 3 (3.1 L(N, k) at convergence, 3.2 L(C) and compute-optimal n, 3.3 the
# irreducible loss; Figures 1-4); section 2.4 for dead latents.
#
# **Time** (measured on a 2-core CPU, 2026-11-29; `scripts/run_series.py`): under a minute in fast mode (`SAELAB_FAST=1`) and 36 minutes at full size the first time (the notebook's
# grid: n = 256 to 4096 × k = 16, 32, 4 epochs each; 130-300 s a point); finished points are reused after.
# GPU: not measured yet (no GPU was lent while these were measured); `DEVICE = "auto"` uses one when present.
# `saelab scale` runs the larger default grid (adds n = 8192 and k = 64: 20 and 32 minutes measured on two machines of this kind, README) from the command line, and
# `saelab scale --ablation` the dead-latent comparison.
#
# **Data**: since saelab 0.3 the main job and the zoo train on the English mixture (Wikipedia summaries, news,
# House of Commons speeches; README, "Training data and other registers"). The figures quoted in this notebook
# were measured on 0.2's Wikipedia-only SAEs; a full-size run trains the zoo on the mixture, so expect its
# numbers to differ somewhat (the main job's test normalized MSE is 0.167 on the mixture, 0.169 on Wikipedia
# text, against 0.156 for the Wikipedia-only SAE).

# %% tags=["parameters"]
# Parameters
import os
from dataclasses import replace

from saelab.studies.scaling_grid import scale_defaults

FAST = os.environ.get("SAELAB_FAST", "") not in ("", "0", "false")
# ScaleConfig: ns, ks, epochs, learning-rate rule (see saelab/studies/scaling_grid.py). Five n per k, so the fit without the largest
# has four points for three parameters. Full size here: 10 points (the Time above);
# `scale_defaults(False)` is the CLI's 15-point grid that section 5 discusses.
GRID = replace(scale_defaults(True), ns="64,128,256,512,1024") if FAST else \
    replace(scale_defaults(False), ns="256,512,1024,2048,4096", ks="16,32")
DEVICE = "auto"               # "auto": CUDA when present, else CPU

# %%
from dataclasses import replace

from saelab.assets import home
from saelab import resolve_device
from saelab.presets import default_caches, train_defaults
from saelab.studies.scaling_grid import grid_values, learning_rate, run_grid

device = resolve_device(DEVICE)
train_cache, held_cache = default_caches()
base = replace(train_defaults(), progress=False)
OUT = home() / "scale-notebook"
ns, ks = grid_values(GRID.ns), grid_values(GRID.ks)
print(f"{train_cache.n_tokens} training tokens, d = {train_cache.d_model}; n in {ns}, k in {ks}, "
      f"{GRID.epochs:g} epochs")
print("learning rate per n:", {n: round(learning_rate(GRID, n), 5) for n in ns})

# %% [markdown]
# ## 1 · The grid, except its largest n
#
# Every point is the main job's recipe (same tokens and batch) at its own (n, k), except the schedule: after a short
# warmup the learning rate stays **constant** to the end, as the released code's training loop keeps it, so every held-out evaluation
# along a run is a point of a run at full learning rate, and the L(C) envelope below compares like with like (the main
# job's linear decay would make the last points of each run look better than its middle ones; `schedule="decay"` gives
# that grid, section 5 compares the two). The learning rate stays at
# the main job's measured best up to n = 4096 and falls as $1/\sqrt{n}$ above it. Each point logs its held-out
# normalized MSE as it trains (the L(C) curves) and adds a row to `points.csv`; run the cell twice and the second run
# trains nothing. We leave the largest n out for now: you will predict it first.

# %%
smaller = replace(GRID, ns=",".join(str(n) for n in ns[:-1]))
points, folder = run_grid(smaller, base, train_cache, held_cache, OUT, progress=False, device=device)
points.drop(columns=["error"])

# %% [markdown]
# ## 2 · Exercise 6.1: fit a power law yourself (15 min, medium)
#
# Write `fit_power_law(n, loss)` returning `(a, b, c)` of $L = a\,n^{-b} + c$. Fit in log space (the losses span a
# range; a plain least squares would only see the smallest n), keep $c \ge 0$ and below the smallest loss.
# `scipy.optimize.curve_fit` with `bounds` does it; the check explains the usual mistakes.

# %%
import numpy as np
from scipy.optimize import curve_fit

from saelab.teach.exercises import check_fit_power_law, graded, solutions, todo


def fit_power_law(n, loss):
    """(a, b, c) of L(n) = a n^-b + c."""
    # YOUR CODE HERE (about 6 lines), then delete the next line
    todo("6.1")


check_fit_power_law(graded(fit_power_law, solutions.fit_power_law))

# %% [markdown]
# <details><summary>Solution</summary>
#
# ```python
# n, loss = np.asarray(n, float), np.asarray(loss, float)
# model = lambda n, log_a, b, c: np.log(np.exp(log_a) * n ** -b + c)
# c_max = 0.999 * loss.min()
# (log_a, b, c), _ = curve_fit(model, n, np.log(loss), p0=(0.0, 0.5, 0.5 * c_max),
#                              bounds=([-20, 0, 0], [20, 5, c_max]))
# return float(np.exp(log_a)), float(b), float(c)
# ```
# </details>

# %% [markdown]
# ## 3 · Exercise 6.2: predict the next n, then train it (5 min, easy)
#
# Fit L(N) for one k on the smaller grid and predict the loss at the largest n. Write the number down: then the next
# cell trains that n and compares. A law that predicts an n it has not seen is a law; one that only fits is a curve.

# %%
from saelab.teach.exercises import check_prediction

K = ks[len(ks) // 2]
part = points[(points.k == K) & (points.status == "ok")].sort_values("n")
fit = graded(fit_power_law, solutions.fit_power_law)(part.n.to_numpy(), part.nmse.to_numpy())
N_NEW = ns[-1]


def predict(fit, n_new):
    """The loss the fitted law L(n) = a n^-b + c predicts at n_new."""
    # YOUR CODE HERE (1 line), then delete the next line
    todo("6.2")


predicted = graded(predict, lambda f, n: f[0] * n ** -f[1] + f[2])(fit, N_NEW)
check_prediction(predicted, fit, N_NEW)
print(f"k={K}: L(N) = {fit[0]:.3g} N^-{fit[1]:.3f} + {fit[2]:.3f}; predicted at n={N_NEW}: {predicted:.4f}")

# %% [markdown]
# <details><summary>Solution</summary>
#
# ```python
# a, b, c = fit
# return a * n_new ** -b + c
# ```
# </details>

# %%
points, folder = run_grid(GRID, base, train_cache, held_cache, OUT, progress=False, device=device)   # trains only the new n
measured = float(points[(points.k == K) & (points.n == N_NEW)].nmse.iloc[0])
error = (predicted - measured) / measured
print(f"n={N_NEW}, k={K}: predicted {predicted:.4f}, measured {measured:.4f} ({error:+.1%})")
points.drop(columns=["error"])

# %% [markdown]
# ## 4 · All the fits, with their uncertainties
#
# `fit_grid` fits L(N) for every k (one standard error from the fit's covariance: rough with a handful of points),
# repeats the held-out-n prediction for every k, fits the paper's joint L(N, k) and the compute law on the envelope.

# %%
from saelab.studies.scaling_grid import loss_curves
from saelab.studies.scaling_laws import fit_grid, scaling_figures

curves = loss_curves(folder, train_cache.d_model)
fits = fit_grid(points, curves)
for name, err in fits["errors"].items():
    print(f"the {name} fit did not converge: {err}")
for k, f in fits["per_k"].items():
    print(f"k={k}: b = {f['b']:.3f} ± {f['b_err']:.3f}, c = {f['c']:.4f} ± {f['c_err']:.4f}")
for k, h in fits["holdout"].items():
    print(f"k={k}: n={h['held_out_n']} predicted {h['predicted']:.4f}, measured {h['measured']:.4f} "
          f"({h['relative_error']:+.1%})")
if "joint" in fits:
    j = fits["joint"]
    names = ("alpha", "beta_k", "beta_n", "gamma", "zeta", "eta")
    print("joint:", {name: f"{j[name]:.3f} ± {j[name + '_err']:.3f}" for name in names})
for k, c in fits["compute"].items():
    print(f"k={k}: L(C) = {c['a']:.3g} C^-({c['b']:.3f} ± {c['b_err']:.3f}) + {c['c']:.3f}  (paper: exponent 0.084); "
          "compute-optimal n:", [(s["n"], f"from {s['from_flops']:.2g} FLOPs") for s in c["optimal_n"]])

# %%
for fig in scaling_figures(points, curves, fits):
    fig.show()

# %% [markdown]
# ## 5 · What reproduces at this scale, and what does not
#
# On the CLI's larger grid (`saelab scale`: n 512-8192 × k 16, 32, 64; 4 epochs = 1.58M tokens each, constant learning
# rate after the warmup; 20 minutes on a 2-core CPU, the README has the table) this is what we measured. This
# notebook's full-size grid stops at n = 4096 and k = 32, so its own figures differ; compare the shapes:
#
# - **Reproduced.** L(N) is a power law with a floor at every k (k = 32: b = 0.70 ± 0.02, c = 0.157 ± 0.001), and a
#   larger k lowers the whole curve.
# - **Compute-optimal n, partly.** On the L(C) envelope (the Pareto front of all evaluations), n = 1024 overtakes
#   512 and 2048 overtakes 1024 while the smaller run is still training. Those two hand-overs are real compute-optimal
#   trade-offs, as in the paper. The later ones come after the smaller run ended: every n sees the same tokens, so
#   they only say that a larger n ends lower.
# - **The schedule matters for L(C).** With a constant learning rate (the released code's loop, and this notebook's grid)
#   the L(C) exponent is 0.40 at k = 16 and 32 and 0.43 at k = 64. With the main job's decay over the last half
#   (`schedule="decay"`, saelab 0.1's grid) it was 0.35, 0.35 and 0.38: the decayed end of each run sits below its
#   middle on the same envelope, which lowers the floor and flattens the fit.
# - **The prediction test.** A fit without n = 8192 predicts it within 2% (+1.8% at k = 16, −1.3% at k = 64). With
#   the decay it predicted 1-6% too low.
# - **Not reproduced: the numbers, and why.** The paper trains every n to convergence on billions of tokens. Here
#   every n sees the same 1.58M tokens, only 193 tokens a latent at n = 8192: the curve flattens into a steep exponent
#   with a high floor. On the decay grid the held-out prediction also fell short, which we read as under-training;
#   with the constant schedule it comes within 2%, so that reading no longer has this support.
#   - The decay grid's reading was confounded: n = 8192 also has the only lower learning rate of the grid. On the decay grid,
#     trained at the others' 3e-3 (k = 32), it reached 0.1608 instead of 0.1648, and the prediction missed by −1.0%
#     instead of −3.4%: two thirds of that miss was the learning rate.
#   - Many latents of n = 8192 at k = 16 never fire on the held-out tokens (21% on the decay grid). But those tokens give a latent only
#     ~31 expected firings, so that count includes rare latents; the training tracker calls 1.4% dead.
#   - The L(C) exponent is ~0.40 here against the paper's 0.084 on GPT-4: a different model, data and budget.
#     SmolLM2-135M's residual stream (d = 576) is also far smaller than GPT-4's.
# - **Dead latents**: `saelab scale --ablation --schedule decay` (as the README table was measured) trains many latents on few tokens with and without AuxK and the
#   transpose initialisation (README table). At n = 4096, each fix halves the dead fraction and both together do
#   best.

# %% [markdown]
# ## Recap
#
# - `saelab.studies.scaling_grid.run_grid` trains a resumable grid with the main job's `Trainer`; `saelab.studies.scaling_laws` fits L(N),
#   the paper's joint L(N, k) and L(C), with standard errors, and tests a law by predicting an n it was not fitted on.
# - Scaling laws measured on a short budget describe *that* budget: tokens per latent matter as much as n.
# - Next: the same command on a GPU (`saelab scale --device cuda --ns 4096,...,131072`) reaches the regime the paper
#   studies.
#
# ## Check your understanding
# 1. Why fit $a n^{-b} + c$ rather than a straight line through log L against log n?
#    <details><summary>Answer</summary>The loss has a floor: a straight line assumes it falls to zero, so near the
#    floor it bends the exponent down and predicts the next n far too low.</details>
# 2. Why is predicting an n that was left out of the fit a better test than a good fit?
#    <details><summary>Answer</summary>Three parameters fit almost any smooth decreasing curve of four points; only a
#    prediction outside the fitted points can fail, so only it tests the law.</details>
# 3. Every n here sees the same 1.58M tokens. Why does that make the large n look worse than the paper's law says?
#    <details><summary>Answer</summary>Tokens per latent fall as n grows (193 at n = 8192), so the large SAEs are
#    further from convergence; the paper trains each n to convergence.</details>
# 4. What does a point on the L(C) envelope tell you that the final losses do not?
#    <details><summary>Answer</summary>Which n reaches the lowest loss for a given compute budget (including runs
#    stopped early): the compute-optimal size for that budget.</details>
