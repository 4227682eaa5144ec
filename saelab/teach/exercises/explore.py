"""Notebook 05 (exploring latents): a dashboard's examples (top and per activation quantile), and a latent found for
a concept on one text and tested on another."""

from __future__ import annotations

import torch

from saelab.teach.exercises.base import exercise, passed


def dashboard_examples(acts_NT: torch.Tensor, m: int, n_intervals: int, per_interval: int,
                       seed: int = 0) -> tuple[list[tuple[int, int]], list[list[tuple[int, int]]]]:
    """A latent's dashboard examples as (context, position) pairs, at most one per context in each list.

    top: the m strongest positions in distinct contexts (each context's strongest), strongest first.
    intervals: n_intervals lists, lowest activations first: the positions where the latent fires (> 0), ranked by
    activation and split into n_intervals equal-count groups (quantiles by rank); from each group up to
    per_interval positions in distinct contexts, sampled at random."""
    N, T = acts_NT.shape
    best_v, best_t = acts_NT.max(dim=1)  # each context's strongest position
    top = [(int(c), int(best_t[c])) for c in best_v.argsort(descending=True)[:m] if best_v[c] > 0]
    flat = acts_NT.flatten()
    fired = (flat > 0).nonzero().squeeze(1)
    ranked = fired[flat[fired].argsort()]  # ascending activation
    g = torch.Generator().manual_seed(seed)
    intervals = []
    for group in torch.tensor_split(ranked, n_intervals):
        picked, seen = [], set()
        for i in group[torch.randperm(len(group), generator=g)].tolist():
            if i // T not in seen:
                seen.add(i // T)
                picked.append((i // T, i % T))
            if len(picked) == per_interval:
                break
        intervals.append(picked)
    return top, intervals


def find_concept_latent(build, test, n_latents: int) -> tuple[int, float, float, float]:
    """Choose the latent for a concept on one text, test it on another. `build` and `test` are (idx_TK, acts_TK,
    concept_T): the sparse codes of their valid tokens and a bool concept mask. A latent fires on a token where one of
    its slots has activation > 0. Returns (latent with the highest F1 of fires vs concept on build, that F1,
    precision on test, recall on test); precision: of the concept's tokens, the fraction where the latent fires;
    recall: of the tokens where it fires, the fraction on the concept."""
    idx, acts, concept = build
    on = acts > 0
    fires_N = torch.bincount(idx[on], minlength=n_latents).float()
    hits_N = torch.bincount(idx[on & concept[:, None]], minlength=n_latents).float()
    f1_N = 2 * hits_N / (fires_N + int(concept.sum())).clamp_min(1)
    latent = int(f1_N.argmax())
    t_idx, t_acts, t_concept = test
    fires = ((t_idx == latent) & (t_acts > 0)).any(-1)
    both = float((fires & t_concept).sum())
    return latent, float(f1_N[latent]), both / max(1, int(t_concept.sum())), both / max(1, int(fires.sum()))


# ---- 5.1 ----------------------------------------------------------------------------------------------------
def _dashboard_case() -> torch.Tensor:
    """10 contexts of 8 tokens, 30 firing positions, skewed as real latents are (most activations small, a few
    large), context 9 silent. Ranked and split in 3: group 0 (ranks 0-9, 0.10-0.19) lies in contexts 4 and 5 only;
    group 1 (0.30-0.39) in contexts 5-8; group 2: four of 0.50-0.53 and the six large ones, three of them a burst in
    context 0."""
    a = torch.zeros(10, 8)
    low = [(4, t) for t in range(8)] + [(5, 0), (5, 1)]
    mid = [(5, 2), (5, 3), (6, 0), (6, 1), (6, 2), (7, 0), (7, 1), (8, 0), (8, 1), (8, 2)]
    for r, (c, t) in enumerate(low):
        a[c, t] = 0.10 + 0.01 * r
    for r, (c, t) in enumerate(mid):
        a[c, t] = 0.30 + 0.01 * r
    for r, (c, t) in enumerate([(6, 5), (7, 5), (8, 5), (1, 1)]):
        a[c, t] = 0.50 + 0.01 * r
    for (c, t), v in zip([(0, 2), (0, 3), (0, 4), (1, 5), (2, 0), (3, 7)], [9.0, 8.5, 8.0, 7.0, 6.0, 5.0]):
        a[c, t] = v
    return a


def _pairs(xs) -> list[tuple[int, int]]:
    return [tuple(int(v) for v in p) for p in xs]


def _divided_by_n(pairs, acts, remap: bool = True) -> bool:
    """True when the pairs look like a flat index split by N (the number of contexts) instead of T: outside the
    grid, or (with `remap`) on silent positions that, mapped back through N, all fire."""
    N, T = acts.shape
    if any(not (0 <= c < N and 0 <= t < T) for c, t in pairs):
        return True
    if not remap:
        return False
    remapped = [divmod(c * N + t, T) for c, t in pairs]
    return bool(pairs) and any(float(acts[p]) == 0 for p in pairs) and \
        all(0 <= c < N and float(acts[c, t]) > 0 for c, t in remapped)


def _check_top(top, acts, m) -> None:
    want = [(0, 2), (1, 5), (2, 0), (3, 7)]
    if top == [(p, c) for c, p in want[:m]]:
        raise AssertionError("you swapped (context, position): the flat index i of an [N, T] tensor is context "
                             "i // T, position i % T, in that order")
    if _divided_by_n(top, acts):
        raise AssertionError(f"{top}: the flat index i of an [N, T] tensor is context i // T, position i % T (divide "
                             "by T, the context length, not by N)")
    if any(float(acts[c, t]) == 0 for c, t in top):
        raise AssertionError("a top example where the latent does not fire (activation 0): keep only positions with "
                             "activation > 0 (fewer than m when fewer contexts fire)")
    if len(top) != len(set(c for c, _ in top)):
        raise AssertionError(f"top examples {top} repeat a context: context 0 has a burst of three strong tokens, and "
                             "a dashboard shows each context once (its strongest position), then the next context")
    if top and top == sorted(top, key=lambda p: float(acts[p])) and len(top) > 1:
        raise AssertionError("strongest FIRST: sort the top examples by activation in descending order")
    assert top == want[:m], f"top {m}: expected {want[:m]}, got {top}"


@exercise("5.1", dashboard_examples)
def check_dashboard_examples(fn) -> None:
    """`fn(acts_NT, m, n_intervals, per_interval) -> (top, intervals)`, pairs (context, position)."""
    acts = _dashboard_case()
    out = fn(acts.clone(), 4, 3, 3)
    assert isinstance(out, tuple | list) and len(out) == 2, "return two things: (top, intervals)"
    top, intervals = _pairs(out[0]), [_pairs(iv) for iv in out[1]]
    _check_top(top, acts, 4)
    top_all = _pairs(fn(acts.clone(), 12, 3, 3)[0])  # more than the 9 contexts that fire
    if len(top_all) > 9:
        raise AssertionError(f"with m = 12 you returned {len(top_all)} top examples, but only 9 contexts fire: skip "
                             "contexts where the latent never fires (activation 0)")
    assert len(top_all) == 9, f"with m = 12, 9 contexts fire, so 9 top examples; got {len(top_all)}"
    assert len(intervals) == 3, f"n_intervals = 3: return 3 lists of examples, got {len(intervals)}"
    flat = acts.flatten()
    fired = (flat > 0).nonzero().squeeze(1)
    ranked = fired[flat[fired].argsort()].tolist()
    groups = [set(g.tolist()) for g in torch.tensor_split(torch.tensor(ranked), 3)]
    T = acts.shape[1]
    for i, iv in enumerate(intervals):
        if _divided_by_n(iv, acts, remap=False):
            raise AssertionError(f"interval {i}: {iv}: the flat index i of an [N, T] tensor is context i // T, "
                                 "position i % T (divide by T, not N)")
        if any(float(acts[c, t]) == 0 for c, t in iv):
            raise AssertionError(f"interval {i} holds positions where the latent does not fire (activation 0): rank "
                                 "only the positions with activation > 0; zeros are not part of its distribution")
    top_v = float(acts.max())
    value_bin = lambda c, t: min(int(float(acts[c, t]) / (top_v / 3)), 2)  # noqa: E731
    in_group = lambda c, t, i: c * T + t in groups[i]  # noqa: E731
    if all(value_bin(c, t) == i for i, iv in enumerate(intervals) for c, t in iv) and \
            not all(in_group(c, t, i) for i, iv in enumerate(intervals) for c, t in iv):
        raise AssertionError("your intervals are equal activation RANGES (0-3, 3-6, 6-9 here): most of this latent's "
                             "30 firings are small, so the lowest range holds nearly all of them and the upper ones a "
                             "handful of outliers. Split by RANK instead (quantiles: the same number of firings in "
                             "each interval)")
    for i, iv in enumerate(intervals):
        where = [next((j for j, g in enumerate(groups) if c * T + t in g), None) for c, t in iv]
        if any(j != i for j in where):
            if [j for j in where if j is not None] and all(j == 2 - i for j in where):
                raise AssertionError("the intervals come highest first: return them from the lowest activations "
                                     "to the highest")
            raise AssertionError(f"interval {i} should hold firings of ranks {10 * i}-{10 * i + 9} of 30 (ascending "
                                 f"activation); {iv} includes positions from groups {where}")
        if len(iv) != len(set(c for c, _ in iv)):
            raise AssertionError(f"interval {i} repeats a context ({iv}): take at most one example per context in "
                                 "each interval (a burst of firings in one context would fill it)")
        contexts = {p // T for p in groups[i]}
        if len(iv) != min(3, len(contexts)):
            raise AssertionError(f"interval {i} spans {len(contexts)} contexts, so it should show "
                                 f"{min(3, len(contexts))} examples (per_interval = 3, one per context); got {len(iv)}")
    passed("dashboard_examples")


# ---- 5.2 ----------------------------------------------------------------------------------------------------
def _sparse_text(T: int, every: int, latents: dict[int, list[tuple[list[int], float]]], K: int = 6):
    """(idx_TK, acts_TK, concept_T) of T tokens, the concept on every `every`-th token; `latents` maps a latent to
    (tokens, activation) groups. Unused slots are padding (latent 0, activation 0)."""
    slots = [[] for _ in range(T)]
    for lat, groups in latents.items():
        for toks, v in groups:
            for t in toks:
                slots[t].append((lat, v))
    idx = torch.zeros(T, K, dtype=torch.long)
    acts = torch.zeros(T, K)
    for t, s in enumerate(slots):
        assert len(s) <= K
        for j, (lat, v) in enumerate(s):
            idx[t, j], acts[t, j] = lat, v
    return idx, acts, torch.arange(T) % every == 0


def _concept_case():
    """Build text: 200 tokens, the concept on 40. Latent 2 is the answer (fires on 34 concept tokens and 2 others,
    F1 0.895); 1 is dense (fires everywhere); 3 has the largest activations on the concept but fires on half the
    rest; 4 fires on 3 concept tokens only; 5 is second best here (F1 0.75) but best on the test text; 6 sits in the
    slots of every concept token with activation 0 (never fires). Test text: 150 tokens, the concept on 50; latent 2
    fires on 45 of them and 15 others (precision 0.9, recall 0.75) and has 20 slots at activation 0."""
    C, O = list(range(0, 200, 5)), [t for t in range(200) if t % 5]
    build = _sparse_text(200, 5, {1: [(C, 8.0), (O, 5.0)], 2: [(C[:34] + O[:2], 1.0)], 3: [(C, 10.0), (O[::2], 1.0)],
                                  4: [(C[:3], 2.0)], 5: [(C[:30] + O[2:12], 0.5)], 6: [(C, 0.0)]})
    C, O = list(range(0, 150, 3)), [t for t in range(150) if t % 3]
    test = _sparse_text(150, 3, {1: [(C + O, 5.0)], 2: [(C[:45] + O[:15], 1.0), (O[15:35], 0.0)], 3: [(C[:20], 9.0)],
                                 5: [(C + O[:2], 0.7)]})
    return build, test


_LATENT_MISTAKES = {
    6: "you chose latent 6, which never fires: its slots hold activation 0 (a sparse code keeps TopK slots the ReLU "
       "zeroed, and padding). A latent fires where its activation is > 0, not >= 0",
    1: "you chose latent 1, a dense latent that fires on every token: it fires on all the concept's tokens and has "
       "large activations, but its firing does not single out the concept. Score each latent by the F1 of where it "
       "fires against the concept mask, which needs both precision and recall",
    3: "you chose latent 3, which has the largest activations on the concept but also fires on half the other "
       "tokens: picking by activation strength (a mean, or a mean difference as in notebook 07) rewards that. Score "
       "by the F1 of where it fires against the concept mask",
    4: "you chose latent 4, which fires on only 3 of the 40 concept tokens: all its firing is on the concept, but it "
       "misses most of it. Score by F1, which needs both precision and recall",
    5: "you chose latent 5, the best on the TEST text (on the build text it has F1 0.75, latent 2 has 0.895): choose "
       "on the build text and only then measure on the test text, or the test is not held out",
}


@exercise("5.2", find_concept_latent)
def check_find_concept_latent(fn) -> None:
    """`fn(build, test, n_latents) -> (latent, build F1, test precision, test recall)`."""
    build, test = _concept_case()
    out = fn(tuple(t.clone() for t in build), tuple(t.clone() for t in test), 8)
    assert isinstance(out, tuple | list) and len(out) == 4, \
        "return four things: (latent, its F1 on the build text, precision on the test text, recall on the test text)"
    latent, f1, p, r = int(out[0]), float(out[1]), float(out[2]), float(out[3])
    if latent in _LATENT_MISTAKES:
        raise AssertionError(_LATENT_MISTAKES[latent])
    assert latent == 2, "expected latent 2 (build F1 0.895: it fires on 34 of the 40 concept tokens and on 2 " \
        f"others); you chose {latent}: take the latent with the HIGHEST F1 on the build text"
    if abs(f1 - 34 / 40) < 1e-4 or abs(f1 - 34 / 36) < 1e-4:
        raise AssertionError(f"the build score {f1:.3f} is latent 2's precision or recall alone: return its F1, "
                             "2 * precision * recall / (precision + recall)")
    assert abs(f1 - 68 / 76) < 1e-4, f"latent 2's F1 on the build text is 0.895 (34 hits, 36 firings, 40 concept " \
        f"tokens); you returned {f1:.4f}"
    if abs(p - 34 / 40) < 1e-4 and abs(r - 34 / 36) < 1e-4:
        raise AssertionError("those are latent 2's precision and recall on the BUILD text it was chosen on (an "
                             "optimistic score): measure them on the test text")
    if abs(p - 0.75) < 1e-4 and abs(r - 0.9) < 1e-4:
        raise AssertionError("precision and recall are swapped: precision = tokens where the latent fires AND the "
                             "concept holds / the CONCEPT's tokens (what the explanation predicts); recall = the "
                             "same / the tokens where the latent FIRES")
    if abs(p - 0.9) < 1e-4 and abs(r - 45 / 80) < 1e-4:
        raise AssertionError("on the test text latent 2 has 20 slots with activation 0: counting them as firing "
                             "lowers its recall; a latent fires where its activation is > 0")
    assert abs(p - 0.9) < 1e-4 and abs(r - 0.75) < 1e-4, \
        f"on the test text latent 2 fires on 45 of the 50 concept tokens and on 15 others: expected precision 0.9, " \
        f"recall 0.75; got ({p:.3f}, {r:.3f})"
    passed("find_concept_latent")
