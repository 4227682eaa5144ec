"""Exercise 5.1: dashboard_examples (top examples, one per context; quantile intervals, lowest first)."""
import torch


def _top_right(acts_NT, m):
    best_N, pos_N = acts_NT.max(dim=1)
    order = torch.argsort(best_N, descending=True)
    return [(int(c), int(pos_N[c])) for c in order.tolist() if float(best_N[c]) > 0][:m]


def _sample_group(group, T, per_interval, gen, seen=None):
    seen = set() if seen is None else seen
    out = []
    for i in group[torch.randperm(len(group), generator=gen)].tolist():
        c, t = divmod(int(i), T)
        if c in seen:
            continue
        seen.add(c)
        out.append((c, t))
        if len(out) == per_interval:
            break
    return out


def _firing_order(acts_NT, descending=False):
    flat = acts_NT.flatten()
    fire = torch.nonzero(flat > 0).flatten()
    return fire[torch.argsort(flat[fire], descending=descending)]


# ---- my honest attempt ---------------------------------------------------------------------------
def dashboard_examples_mine(acts_NT, m, n_intervals, per_interval, seed=0):
    T = acts_NT.shape[1]
    top = _top_right(acts_NT, m)
    order = _firing_order(acts_NT)
    gen = torch.Generator().manual_seed(seed)
    intervals = [_sample_group(g, T, per_interval, gen) for g in torch.tensor_split(order, n_intervals)]
    return top, intervals


# ---- wrong 1: top over all positions, so one context can fill the top with its run of tokens -------------
def dashboard_examples_top_flat(acts_NT, m, n_intervals, per_interval, seed=0):
    N, T = acts_NT.shape
    flat = acts_NT.flatten()
    vals, ids = flat.topk(min(m, flat.numel()))
    top = [(int(i) // T, int(i) % T) for v, i in zip(vals.tolist(), ids.tolist()) if v > 0]
    _, intervals = dashboard_examples_mine(acts_NT, m, n_intervals, per_interval, seed)
    return top, intervals


# ---- wrong 2: intervals ordered highest activations first -----------------------------------------
def dashboard_examples_intervals_high_first(acts_NT, m, n_intervals, per_interval, seed=0):
    T = acts_NT.shape[1]
    top = _top_right(acts_NT, m)
    order = _firing_order(acts_NT, descending=True)
    gen = torch.Generator().manual_seed(seed)
    intervals = [_sample_group(g, T, per_interval, gen) for g in torch.tensor_split(order, n_intervals)]
    return top, intervals


# ---- wrong 3: ranks every position, zeros included, so the low intervals are full of non-firing positions --
def dashboard_examples_zeros_ranked(acts_NT, m, n_intervals, per_interval, seed=0):
    T = acts_NT.shape[1]
    top = _top_right(acts_NT, m)
    order = torch.argsort(acts_NT.flatten())
    gen = torch.Generator().manual_seed(seed)
    intervals = [_sample_group(g, T, per_interval, gen) for g in torch.tensor_split(order, n_intervals)]
    return top, intervals


# ---- wrong 4: torch.chunk instead of tensor_split: can return fewer than n_intervals groups ----------------
def dashboard_examples_chunk(acts_NT, m, n_intervals, per_interval, seed=0):
    T = acts_NT.shape[1]
    top = _top_right(acts_NT, m)
    order = _firing_order(acts_NT)
    gen = torch.Generator().manual_seed(seed)
    intervals = [_sample_group(g, T, per_interval, gen) for g in torch.chunk(order, n_intervals)]
    return top, intervals


# ---- wrong 5: not random: the first per_interval distinct contexts of each group (its lowest values) -------
def dashboard_examples_not_random(acts_NT, m, n_intervals, per_interval, seed=0):
    T = acts_NT.shape[1]
    top = _top_right(acts_NT, m)
    order = _firing_order(acts_NT)
    intervals = []
    for g in torch.tensor_split(order, n_intervals):
        seen, out = set(), []
        for i in g.tolist():
            c, t = divmod(int(i), T)
            if c not in seen:
                seen.add(c)
                out.append((c, t))
            if len(out) == per_interval:
                break
        intervals.append(out)
    return top, intervals


# ---- wrong 6: top keeps contexts where the latent never fires (max 0) when fewer than m contexts fire -------
def dashboard_examples_top_zeros(acts_NT, m, n_intervals, per_interval, seed=0):
    best_N, pos_N = acts_NT.max(dim=1)
    order = torch.argsort(best_N, descending=True)[:m]
    top = [(int(c), int(pos_N[c])) for c in order.tolist()]
    _, intervals = dashboard_examples_mine(acts_NT, m, n_intervals, per_interval, seed)
    return top, intervals


# ---- wrong 7: one "seen" set shared by all intervals: a context shown low is refused in every higher group -----
def dashboard_examples_shared_seen(acts_NT, m, n_intervals, per_interval, seed=0):
    T = acts_NT.shape[1]
    top = _top_right(acts_NT, m)
    order = _firing_order(acts_NT)
    gen = torch.Generator().manual_seed(seed)
    seen = set()
    intervals = [_sample_group(g, T, per_interval, gen, seen) for g in torch.tensor_split(order, n_intervals)]
    return top, intervals


CANDIDATES = [
    ("top_flat", dashboard_examples_top_flat, "top examples over all positions: one context can appear several times", False),
    ("intervals_high_first", dashboard_examples_intervals_high_first, "quantile intervals ordered highest activations first", False),
    ("zeros_ranked", dashboard_examples_zeros_ranked, "ranks every position including the zeros, so low intervals show non-firing positions", False),
    ("chunk_groups", dashboard_examples_chunk, "torch.chunk instead of tensor_split: fewer than n_intervals groups when the count does not divide", False),
    ("not_random", dashboard_examples_not_random, "takes each group's first (lowest) positions instead of a random sample", False),
    ("top_zeros", dashboard_examples_top_zeros, "top examples include contexts where the latent never fires (max 0)", False),
    ("shared_seen", dashboard_examples_shared_seen, "one set of shown contexts across all intervals, so later intervals lose examples", False),
    ("mine", dashboard_examples_mine, "my honest attempt at a correct solution", True),
]
