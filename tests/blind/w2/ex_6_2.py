"""Exercise 6.2: compute_envelope, the lower envelope of nmse against flops over every run's evaluations."""
import numpy as np
import pandas as pd


def _tidy(rows):
    return rows[["flops", "nmse", "n"]].reset_index(drop=True)


# ---- my honest attempt: order every evaluation by compute, keep each that beats all cheaper ones --------
def compute_envelope_mine(curves):
    df = curves.sort_values(["flops", "nmse"], kind="mergesort")
    best_before = df.nmse.cummin().shift(1, fill_value=np.inf)
    return _tidy(df[df.nmse < best_before])


# ---- wrong 1: an envelope per run: each evaluation only has to beat its own run's earlier ones -------------
def compute_envelope_per_run(curves):
    df = curves.sort_values(["flops", "nmse"], kind="mergesort")
    best_before = df.groupby("n").nmse.transform(lambda s: s.cummin().shift(1, fill_value=np.inf))
    return _tidy(df[df.nmse < best_before])


# ---- wrong 2: forgot to sort: the running minimum follows the DataFrame's order (run by run) ------------
def compute_envelope_unsorted(curves):
    best_before = curves.nmse.cummin().shift(1, fill_value=np.inf)
    return _tidy(curves[curves.nmse < best_before].sort_values("flops", kind="mergesort"))


# ---- wrong 3: only each run's best (final) evaluation: a run stopped early is never a candidate ------------
def compute_envelope_final_points(curves):
    ends = curves.loc[curves.groupby("n").nmse.idxmin()].sort_values("flops", kind="mergesort")
    best_before = ends.nmse.cummin().shift(1, fill_value=np.inf)
    return _tidy(ends[ends.nmse < best_before])


# ---- wrong 4: every evaluation, its nmse replaced by the running minimum (the step curve, with wrong n) ----
def compute_envelope_step_curve(curves):
    df = curves.sort_values("flops", kind="mergesort").copy()
    df["nmse"] = df.nmse.cummin()
    return _tidy(df)


# ---- wrong 5: ordered by evaluation step (tokens seen), as if every n cost the same per token -------------
def compute_envelope_by_tokens(curves):
    df = curves.assign(_tokens=curves.flops / curves.n).sort_values(["_tokens", "nmse"], kind="mergesort")
    best_before = df.nmse.cummin().shift(1, fill_value=np.inf)
    return _tidy(df[df.nmse < best_before])


CANDIDATES = [
    ("per_run", compute_envelope_per_run, "each evaluation only has to beat its own run, not every run", False),
    ("unsorted", compute_envelope_unsorted, "running minimum in the DataFrame's order, without sorting by flops first", False),
    ("final_points", compute_envelope_final_points, "only each run's best/final evaluation: early-stopped runs never count", False),
    ("step_curve", compute_envelope_step_curve, "returns every row with nmse replaced by the running minimum (wrong rows and n)", False),
    ("by_tokens", compute_envelope_by_tokens, "orders by tokens seen (flops / n) instead of compute", False),
    ("mine", compute_envelope_mine, "my honest attempt at a correct solution", True),
]
