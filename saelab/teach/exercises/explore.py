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
    best_v = acts.max(dim=1).values
    for c, t in top:
        if float(acts[c, t]) != float(best_v[c]):
            raise AssertionError(f"top example ({c}, {t}) is not context {c}'s strongest position (activation "
                                 f"{float(acts[c, t]):.3g}; its strongest is {float(best_v[c]):.3g}): "
                                 "show each context "
                                 "at its strongest position")
    if top and top == sorted(top, key=lambda p: float(acts[p])) and len(top) > 1:
        raise AssertionError("strongest FIRST: sort the top examples by activation in descending order")
    assert top == want[:m], f"top {m}: expected {want[:m]}, got {top}"


def _firing_case(N: int, T: int, firing: list[tuple[int, int]], seed: int) -> torch.Tensor:
    """An [N, T] latent's activations, firing (> 0) exactly at `firing`, with distinct values (no ties)."""
    g = torch.Generator().manual_seed(seed)
    a = torch.zeros(N, T)
    values = (torch.randperm(1000, generator=g)[: len(firing)].float() + 1) / 100
    for (c, t), v in zip(firing, values):
        a[c, t] = v
    return a


def _dashboard_cases():
    """(what, acts_NT, m, n_intervals, per_interval) beyond the main case. Equal values sit inside one group. In all but
    the last case the firings divide evenly into the intervals (every way of cutting a ranking into equal groups
    agrees); the last one does not, and is checked only by what every way of cutting shares."""
    main = _dashboard_case()
    g = torch.Generator().manual_seed(3)
    spots = [(c, t) for c in range(11) for t in range(5)]  # context 11 never fires
    many = _firing_case(12, 5, [spots[i] for i in torch.randperm(len(spots), generator=g)[:24].tolist()], 3)
    top2 = many.flatten().topk(2).indices
    many.view(-1)[top2] = 20.0  # the two strongest positions tie (the order between them is free)
    one_context = _firing_case(1, 9, [(0, t) for t in (0, 2, 3, 5, 7, 8)], 4)
    one_token = _firing_case(10, 1, [(c, 0) for c in (0, 2, 3, 5, 6, 9)], 5)
    return [("m = 1, n_intervals = 1, per_interval = 1", main, 1, 1, 1),
            ("m = 4, n_intervals = 5, per_interval = 10 (more than the contexts in an interval)", main, 4, 5, 10),
            ("m = 15 (more than the contexts that fire) on 12 contexts of 5 tokens, the two strongest positions tied, "
             "n_intervals = 4, per_interval = 2",
             many, 15, 4, 2),
            ("one context of 9 tokens, m = 3, n_intervals = 2, per_interval = 2", one_context, 3, 2, 2),
            ("10 contexts of one token, m = 4, n_intervals = 3, per_interval = 3", one_token, 4, 3, 3),
            ("6 firings in n_intervals = 4 (the groups cannot be equal: sizes 2, 2, 1, 1 or similar), per_interval = 2",
             one_token, 2, 4, 2)]


def _same_dashboard(out, acts, m: int, n_intervals: int, per_interval: int, what: str) -> None:
    """The properties every right answer has, whatever the random sample and the order of equal values: the top's
    values are the m strongest contexts' maxima, strongest first; each interval holds firings of its rank group, in
    distinct contexts, as many as per_interval and the group allow."""
    assert isinstance(out, tuple | list) and len(out) == 2, f"{what}: return two things: (top, intervals)"
    top, intervals = _pairs(out[0]), [_pairs(iv) for iv in out[1]]
    N, T = acts.shape
    for c, t in top + [p for iv in intervals for p in iv]:
        assert 0 <= c < N and 0 <= t < T, f"{what}: ({c}, {t}) is outside the [{N}, {T}] grid of (context, position)"
    best_v = acts.max(dim=1).values
    want = sorted(best_v[best_v > 0].tolist(), reverse=True)[:m]
    assert len(top) == len(want), \
        f"{what}: {int((best_v > 0).sum())} contexts fire, so {len(want)} top examples; you returned {len(top)}"
    assert len({c for c, _ in top}) == len(top), f"{what}: your top examples {top} repeat a context"
    for c, t in top:
        assert float(acts[c, t]) == float(best_v[c]), \
            f"{what}: top example ({c}, {t}) is not context {c}'s strongest position (activation " \
            f"{float(acts[c, t]):.3g}, its strongest {float(best_v[c]):.3g})"
    got_v = [float(acts[p]) for p in top]
    assert got_v == want, f"{what}: your top examples have activations {[round(v, 3) for v in got_v]}; the " \
        f"strongest contexts, strongest first, have {[round(v, 3) for v in want]}"
    assert len(intervals) == n_intervals, \
        f"{what}: return n_intervals = {n_intervals} lists of examples, got {len(intervals)}"
    flat = acts.flatten()
    fired = (flat > 0).nonzero().squeeze(1)
    if len(fired) % n_intervals:  # uneven groups: where the extra firings go is a convention; the rest is not
        for i, iv in enumerate(intervals):
            assert all(float(acts[p]) > 0 for p in iv), f"{what}: interval {i} holds positions that do not fire"
            assert len({c for c, _ in iv}) == len(iv) <= per_interval, \
                f"{what}: interval {i} ({iv}) repeats a context or holds more than per_interval = {per_interval}"
            assert iv, f"{what}: interval {i} is empty, though {len(fired)} firings fill {n_intervals} groups"
        for i in range(n_intervals - 1):
            assert max(float(acts[p]) for p in intervals[i]) < min(float(acts[p]) for p in intervals[i + 1]), \
                f"{what}: interval {i} holds a stronger firing than interval {i + 1}: cut the ranking into groups"
        return
    groups = [set(g.tolist()) for g in torch.tensor_split(fired[flat[fired].argsort()], n_intervals)]
    for i, (iv, group) in enumerate(zip(intervals, groups)):
        outside = [(c, t) for c, t in iv if c * T + t not in group]
        assert not outside, f"{what}: interval {i} (of {n_intervals}, lowest first) holds {outside}, which are not " \
            f"among its {len(group)} firings (ranks {i * len(group)} to {(i + 1) * len(group) - 1} by activation)"
        assert len({c for c, _ in iv}) == len(iv), f"{what}: interval {i} repeats a context: {iv}"
        contexts = len({p // T for p in group})
        assert len(iv) == min(per_interval, contexts), \
            f"{what}: interval {i}'s firings span {contexts} contexts, so it shows min(per_interval, {contexts}) = " \
            f"{min(per_interval, contexts)} examples; you returned {len(iv)}"


def _seed_case() -> torch.Tensor:
    """36 of 40 contexts fire 3 times: 54 firings in about 30 contexts per half, to sample 4 from."""
    return _firing_case(40, 6, [(c, t) for c in range(36) for t in (0, 2, 5)], 6)


def _check_seed(fn) -> None:
    """The samples are drawn from `seed`: the same seed gives the same examples, other seeds other examples."""
    acts = _seed_case()
    try:
        runs = [[_pairs(iv) for iv in fn(acts.clone(), 3, 2, 4, seed=s)[1]] for s in (0, 0, 1, 2, 3)]
    except TypeError as e:
        if "seed" not in str(e):
            raise
        raise AssertionError("your function takes no `seed`: keep the stub's signature, dashboard_examples(acts_NT, m, "
                             "n_intervals, per_interval, seed=0), and draw the samples from it") from e
    for r in runs:
        _same_dashboard((fn(acts.clone(), 3, 2, 4, seed=0)[0], r), acts, 3, 2, 4,
                        "40 contexts of 6 tokens, m = 3, n_intervals = 2, per_interval = 4")
    if runs[0] != runs[1]:
        raise AssertionError("two calls with seed = 0 returned different interval samples: draw them from a "
                             "torch.Generator seeded with `seed` (torch.Generator().manual_seed(seed)), not from the "
                             "global random state, so a dashboard shows the same examples each time")
    if all(r == runs[0] for r in runs[2:]):
        raise AssertionError("seeds 0, 1, 2 and 3 gave the same interval samples: each interval's examples are "
                             "chosen at random (seeded by `seed`) among its firings, not the first ones of the "
                             "group; the first ones are its weakest, and always the same")


@exercise("5.1", dashboard_examples)
def check_dashboard_examples(fn) -> None:
    """`fn(acts_NT, m, n_intervals, per_interval, seed) -> (top, intervals)`, pairs (context, position).

    Varies m (1, 4, 12, more than the contexts that fire), n_intervals (1 to 5), per_interval (1 to 10, more than an
    interval's contexts), the shapes (one context; contexts of one token; 10 to 40 contexts), ties between the
    strongest values (any order between them is right) and the seed (the same seed, the same samples; other seeds,
    other samples). Checks every top example and every interval's sample by the properties any right sample has."""
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
    for what, case, m, n_int, per in _dashboard_cases():
        _same_dashboard(fn(case.clone(), m, n_int, per), case, m, n_int, per, f"with {what}")
    _check_seed(fn)
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


def _concept_cases():
    """(what, build, test, n_latents, (latent, F1, precision, recall)) beyond the main case.

    One slot per token (K = 1), the answer latent 0 (the same index as the padding, whose activation is 0):
    build 120 tokens, the concept on 30; latent 0 fires on 24 of them and 3 others (F1 48/57), latent 3 on the 6 other
    concept tokens only (F1 1/3), latent 5 on 40 others. Test 80 tokens, the concept on 40; latent 0 fires on 30 of them
    and
    6 others (precision 0.75, recall 30/36). Then 50 latents, the answer the last one (49), K = 3: build 100 tokens,
    the concept on 20; latent 49 fires on 18 of them and 1 other (F1 36/39), latent 10 everywhere, latent 20 on 5
    concept tokens; test 60 tokens, the concept on 15, latent 49 on 12 of them and 4 others."""
    C, O = list(range(0, 120, 4)), [t for t in range(120) if t % 4]
    b1 = _sparse_text(120, 4, {0: [(C[:24] + O[:3], 0.8)], 3: [(C[24:], 1.5)], 5: [(O[3:43], 2.0)]},
                      K=1)
    C, O = list(range(0, 80, 2)), [t for t in range(80) if t % 2]
    t1 = _sparse_text(80, 2, {0: [(C[:30] + O[:6], 0.5)], 5: [(O[6:30], 1.0)]}, K=1)
    C, O = list(range(0, 100, 5)), [t for t in range(100) if t % 5]
    b2 = _sparse_text(100, 5, {10: [(C + O, 3.0)], 49: [(C[:18] + O[:1], 1.0)], 20: [(C[:5], 4.0)]}, K=3)
    C, O = list(range(0, 60, 4)), [t for t in range(60) if t % 4]
    t2 = _sparse_text(60, 4, {10: [(C + O, 3.0)], 49: [(C[:12] + O[:4], 1.0)]}, K=3)
    return [("one slot per token (K = 1), the best latent 0 (the padding's index)", b1, t1, 6,
             (0, 48 / 57, 0.75, 30 / 36)),
            ("50 latents, the best the last one (49), K = 3", b2, t2, 50, (49, 36 / 39, 0.8, 0.75))]


def _same_concept(out, want, what: str) -> None:
    """Every returned value, by name, against the expected (latent, build F1, test precision, test recall)."""
    assert isinstance(out, tuple | list) and len(out) == 4, \
        f"{what}: return four things: (latent, build F1, test precision, test recall)"
    latent = int(out[0])
    if latent != want[0] and want[0] == 0:
        raise AssertionError(f"{what}: you chose latent {latent}; latent 0 fits the concept best. Latent 0 is a latent "
                             "like any other: padding slots also hold index 0 but with activation 0, so tell firing "
                             "by acts > 0, not by idx > 0")
    assert latent == want[0], f"{what}: the best latent on the build text is {want[0]}; you chose {latent}"
    for name, got, w in zip(("its F1 on the build text", "its precision on the test text",
                             "its recall on the test text"), out[1:], want[1:]):
        assert abs(float(got) - w) < 1e-4, f"{what}: {name} is {w:.4f}; you returned {float(got):.4f}"


@exercise("5.2", find_concept_latent)
def check_find_concept_latent(fn) -> None:
    """`fn(build, test, n_latents) -> (latent, build F1, test precision, test recall)`.

    Varies the texts (lengths, how often the concept holds, K = 1 to 6 slots a token), n_latents (6 to 50) and which
    latent is best (0, the padding's index; 2; the last one, 49); compares all four returned values."""
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
    for what, b, t, n, want in _concept_cases():
        out = fn(tuple(x.clone() for x in b), tuple(x.clone() for x in t), n)
        _same_concept(out, want, f"with {what}")
    passed("find_concept_latent")
