"""Every exercise check accepts the reference solution and rejects plausible wrong implementations, each
with a message naming the mistake; stubs stop a learner with a clear message; every notebook's exercises
go through `todo` and `graded`, so a learner who writes nothing stops at the first one."""

import math
import re
from pathlib import Path

import numpy as np
import pytest
import torch

from saelab.lm.sites import find_blocks
from saelab.teach import exercises as E

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"


@pytest.fixture(autouse=True)
def _learner_mode(monkeypatch):
    """Checks grade what they are given here: CI sets SAELAB_SOLUTIONS=1, under which they grade the references."""
    monkeypatch.delenv("SAELAB_SOLUTIONS", raising=False)


def test_stub_stops_with_a_clear_message_and_solutions_switch(monkeypatch):
    with pytest.raises(E.NotWrittenYet, match=r"exercise 7\.1: not written yet"):
        E.todo("7.1")
    mine, ref = (lambda: "mine"), (lambda: "ref")
    monkeypatch.delenv("SAELAB_SOLUTIONS", raising=False)
    assert E.graded(mine, ref)() == "mine"
    monkeypatch.setenv("SAELAB_SOLUTIONS", "1")
    assert E.graded(mine, ref)() == "ref"


def _rejects(check, wrong, message):
    with pytest.raises(AssertionError, match=message):
        check(wrong)


# ---- 00 toy data -------------------------------------------------------------------------------------------
def _dot_recovery(W, F):
    return (F @ W.T).max(1).values


def _abs_recovery(W, F):
    Wn = W / W.norm(dim=1, keepdim=True)
    return (F @ Wn.T).abs().max(1).values


def _per_latent_recovery(W, F):
    Wn = W / W.norm(dim=1, keepdim=True)
    return (F @ Wn.T).max(0).values


@pytest.mark.parametrize("wrong,message", [(_dot_recovery, "not cosines"), (_abs_recovery, "OPPOSITE way"),
                                           (_per_latent_recovery, "one per TRUE feature")])
def test_feature_recovery_check(wrong, message):
    E.check_feature_recovery(E.solutions.feature_recovery)
    _rejects(E.check_feature_recovery, wrong, message)


def _roles(normalise=True, signed=True, dead=True, dead_claims=False, duplicates=True, best_first=True,
           threshold=None, dead_if_any_zero=False):
    """latent_roles with one mistake switched on."""
    def fn(W, F, acts, thr=0.9):
        t = thr if threshold is None else threshold
        cos = (W / W.norm(dim=1, keepdim=True) if normalise else W) @ F.T
        best, feat = (cos if signed else cos.abs()).max(1)
        alive = (acts != 0).all(0) if dead_if_any_zero else (acts > 0).any(0)
        if not dead:
            alive = torch.ones_like(alive)
        roles = ["other" if a else "dead" for a in alive.tolist()]
        order = best.argsort(descending=True, stable=True).tolist() if best_first else range(len(best))
        taken = set()
        for j in order:
            if (alive[j] or dead_claims) and best[j] >= t:
                role = "duplicate" if duplicates and int(feat[j]) in taken else "feature"
                taken.add(int(feat[j]))
                if alive[j]:
                    roles[j] = role
        return roles
    return fn


@pytest.mark.parametrize("wrong,message", [
    (_roles(normalise=False), "normalise the decoder rows"), (_roles(signed=False), "OPPOSITE way"),
    (_roles(dead=False), "'dead' whatever its direction"), (_roles(dead_claims=True), "cannot claim a feature"),
    (_roles(duplicates=False), "is a 'duplicate'"), (_roles(best_first=False), "the lower index"),
    (_roles(threshold=0.9), "use the threshold argument"), (_roles(dead_if_any_zero=True), "EVERY row"),
    (lambda W, F, a, t=0.9: ["feature"] * F.shape[0], "one per LATENT"),
])
def test_latent_roles_check(wrong, message):
    E.check_latent_roles(E.solutions.latent_roles)
    _rejects(E.check_latent_roles, wrong, message)


def test_latent_roles_counts_every_latent_on_toy_data():
    """On a toy SAE's shape (more latents than features), the roles partition the latents and each true feature has
    at most one 'feature' latent."""
    from saelab.teach.toy import ToyConfig, make_toy

    data = make_toy(ToyConfig(d=16, n_features=32, n_samples=512))
    g = torch.Generator().manual_seed(0)
    W = torch.cat([data.features_FD + 0.1 * torch.randn(32, 16, generator=g), torch.randn(32, 16, generator=g)])
    acts = torch.rand(512, 64, generator=g) * (torch.rand(512, 64, generator=g) < 0.05)
    acts[:, :4] = 0.0
    roles = E.solutions.latent_roles(W, data.features_FD, acts)
    assert len(roles) == 64 and roles[:4] == ["dead"] * 4 and set(roles) <= {"feature", "duplicate", "dead", "other"}
    assert roles.count("feature") <= 32


# ---- 01 harvest ----------------------------------------------------------------------------------------------
def _block_input(model, ids, layer):
    with torch.no_grad():
        return model(input_ids=ids, output_hidden_states=True).hidden_states[layer]


def _next_block(model, ids, layer):
    return E.solutions.residual_after_block(model, ids, layer + 1)


def _hook_left_behind(model, ids, layer):
    got = {}
    find_blocks(model)[layer].register_forward_hook(lambda m, i, o: got.setdefault("a", o[0] if isinstance(o, tuple)
                                                                                    else o))
    with torch.no_grad():
        model(input_ids=ids)
    return got["a"]


def _mlp_output(model, ids, layer):
    got = {}
    h = find_blocks(model)[layer].mlp.register_forward_hook(lambda m, i, o: got.setdefault("a", o))
    try:
        with torch.no_grad():
            model(input_ids=ids)
    finally:
        h.remove()
    return got["a"]


@pytest.mark.parametrize("wrong,message", [(_block_input, "INPUT of block"), (_next_block, "off by one"),
                                           (_hook_left_behind, "handle.remove"), (_mlp_output, "MLP")])
def test_residual_after_block_check(tiny_lm, wrong, message):
    E.check_residual_after_block(E.solutions.residual_after_block, tiny_lm, 2)
    with pytest.raises(AssertionError, match=message):
        E.check_residual_after_block(wrong, tiny_lm, 2)
    for block in find_blocks(tiny_lm.model):  # leave the shared model as it was for other tests
        for key, hook in list(block._forward_hooks.items()):
            if not hook.__module__.startswith("transformers"):
                del block._forward_hooks[key]


# ---- 02 training ---------------------------------------------------------------------------------------------
def _topk_no_relu(pre, k):
    top = pre.topk(k, dim=-1)
    return torch.zeros_like(pre).scatter(-1, top.indices, top.values)


def _topk_columns(pre, k):
    top = pre.topk(k, dim=0)
    return torch.zeros_like(pre).scatter(0, top.indices, top.values.relu())


@pytest.mark.parametrize("wrong,message", [
    (_topk_no_relu, "ReLU"), (_topk_columns, "COLUMN"),
    (lambda p, k: E.solutions.topk_activation(p, k - 1), "not k - 1"),
    (lambda p, k: E.solutions.topk_activation(p, k + 1), "not k \\+ 1"),
])
def test_topk_activation_check(wrong, message):
    E.check_topk_activation(E.solutions.topk_activation)
    _rejects(E.check_topk_activation, wrong, message)


@pytest.mark.parametrize("wrong,message", [
    (lambda r, x: (r - x).pow(2).sum(-1).mean() / x.pow(2).sum(-1).mean(), "issue #8"),
    (lambda r, x: (r - x).pow(2).sum(-1).mean() / (x - x.mean()).pow(2).sum(-1).mean(), "mean VECTOR"),
    (lambda r, x: (r - x).pow(2).sum(-1).mean(), "plain MSE"),
    (lambda r, x: ((r - x).pow(2).sum(-1) / (x - x.mean(0)).pow(2).sum(-1)).mean(), "per-token ratios"),
])
def test_normalized_mse_check(wrong, message):
    E.check_normalized_mse(E.solutions.normalized_mse)
    _rejects(E.check_normalized_mse, wrong, message)


def _auxk(mask=True, detach=True, bias=None, normalize=True, use_k=True, relu=True):
    def fn(x, recon, pre, dead, W, k_aux):
        resid = x - recon
        if detach:
            resid = resid.detach()
        p = pre.masked_fill(~dead, float("-inf")) if mask else pre
        k = k_aux if use_k else int(dead.sum())
        top = p.topk(k, dim=-1)
        z = torch.zeros_like(p).scatter(-1, top.indices, top.values.relu() if relu else top.values)
        z = torch.nan_to_num(z, neginf=0.0)
        dec = z @ W + (bias if bias is not None else 0)
        if not normalize:
            return (dec - resid).pow(2).sum(-1).mean()
        return E.solutions.normalized_mse(dec, resid)
    return fn


def _auxk_with_bias(x, recon, pre, dead, W, k_aux):
    b_pre = x.mean(0) * 0 + 50.0  # the case's decoder bias
    return _auxk(bias=b_pre)(x, recon, pre, dead, W, k_aux)


@pytest.mark.parametrize("wrong,message", [(_auxk(mask=False), "only DEAD latents"),
                                           (_auxk(detach=False), "detach the residual"),
                                           (_auxk_with_bias, "decoder bias"),
                                           (_auxk(normalize=False), "plain MSE"),
                                           (_auxk(use_k=False), "top k_aux"),
                                           (_auxk(relu=False), "apply the ReLU")])
def test_auxk_loss_check(wrong, message):
    E.check_auxk_loss(E.solutions.auxk_loss)
    _rejects(E.check_auxk_loss, wrong, message)


# ---- 03 evaluation -------------------------------------------------------------------------------------------
def _splice_variant(**flags):
    from saelab.teach.exercises import evaluation as EV

    if flags.get("clean"):
        return lambda m, ids, layer, rec, error_scale=0.0: EV._clean_loss(m, ids)
    if flags.get("leave_hook"):
        def leaky(m, ids, layer, rec, error_scale=0.0):
            find_blocks(m)[layer].register_forward_hook(lambda *a: None)
            return EV._splice(m, ids, layer, rec, error_scale)
        return leaky
    return lambda m, ids, layer, rec, error_scale=0.0: EV._splice(m, ids, layer, rec, error_scale, **flags)


@pytest.mark.parametrize("wrong,message", [
    (_splice_variant(clean=True), "did not change"),
    (_splice_variant(splice_from=0), "position 0 too"),
    (_splice_variant(score_from=0), "scored the prediction made at position 0"),
    (_splice_variant(log_base=2), "bits"),
    (_splice_variant(error_sign=-1.0), "recon - x"),
    (lambda m, ids, layer, rec, error_scale=0.0: _splice_variant()(m, ids, layer, rec, 0.0), "error_scale is ignored"),
    (_splice_variant(leave_hook=True), "still registered"),
    (lambda m, ids, layer, rec, error_scale=0.0: _splice_variant()(m, ids, layer, rec, float(error_scale >= 1.0)),
     "linear in error_scale"),
])
def test_spliced_loss_check(smollm, wrong, message):
    from types import SimpleNamespace

    from saelab.teach.exercises import evaluation as EV

    ids = torch.randint(0, 1000, (4, 24), generator=torch.Generator().manual_seed(0))
    fixed = SimpleNamespace(reconstruct=lambda x: -2.0 * x.flip(-1))  # a bad, deterministic "reconstruction"
    E.check_spliced_loss(E.solutions.spliced_loss, smollm, fixed, ids, 8)
    assert EV._splice(smollm.model, ids, 8, fixed.reconstruct, 0.0) != pytest.approx(EV._clean_loss(smollm.model, ids),
                                                                                       rel=1e-2)
    try:
        _rejects(lambda fn: E.check_spliced_loss(fn, smollm, fixed, ids, 8), wrong, message)
    finally:  # a leaked hook must not spoil the other tests' model
        for blk in find_blocks(smollm.model):
            blk._forward_hooks.clear()


def test_spliced_loss_matches_saelab_splice(smollm):
    """The exercise's reference agrees with the splice every metric uses, where no outlier is left clean."""
    from saelab.evals.downstream import downstream_losses
    from saelab.evals.splice import SpliceSite

    ids = torch.randint(0, 1000, (4, 24), generator=torch.Generator().manual_seed(1))
    rec = lambda x: -2.0 * x.flip(-1)  # noqa: E731
    where = SpliceSite(layer=8, outlier_factor=None)
    r = downstream_losses(smollm, ids, {"s": lambda x, m, _p=None: torch.where(m[..., None], rec(x), x)}, where,
                          progress=False)
    assert E.solutions.spliced_loss(smollm.model, ids, 8, rec) == pytest.approx(r["s"]["ce"], rel=1e-5)
    assert r["s"]["ce"] != pytest.approx(r["ce_clean"], rel=1e-2)


def _probe(bias=True, log=torch.log, accuracy=False, steps=300):
    def fn(x, y):
        z = (x - x.mean()) / x.std()
        a = torch.zeros((), requires_grad=True)
        b = torch.zeros((), requires_grad=True)
        opt = torch.optim.LBFGS([a, b] if bias else [a], max_iter=steps, line_search_fn="strong_wolfe")

        def closure():
            opt.zero_grad()
            loss = torch.nn.functional.binary_cross_entropy_with_logits(a * z + b, y)
            loss.backward()
            return loss
        opt.step(closure)
        with torch.no_grad():
            p = torch.sigmoid(a * z + b)
            if accuracy:
                return float(((p > 0.5).float() == y).float().mean())
            return float(-(y * log(p) + (1 - y) * log(1 - p)).mean())
    return fn


def _probe_unfitted(x, y):
    prior = float(y.mean())
    return -(prior * math.log(prior) + (1 - prior) * math.log(1 - prior)) + 0 * float(x.sum())


def test_a_learner_style_probe_passes():
    E.check_probe_loss_1d(_probe())


@pytest.mark.parametrize("wrong,message", [(_probe(bias=False), "no bias"), (_probe(log=torch.log2), "bits"),
                                           (_probe(accuracy=True), "accuracy"), (_probe_unfitted, "fitted")])
def test_probe_loss_1d_check(wrong, message):
    E.check_probe_loss_1d(E.solutions.probe_loss_1d)
    _rejects(E.check_probe_loss_1d, wrong, message)


def _sparsity(centre, square=True, denom="TV"):
    def fn(d):
        e = d.double()
        if centre == "median":
            e = e - e.median(-1, keepdim=True).values
        elif centre == "mean":
            e = e - e.mean(-1, keepdim=True)
        e = e.flatten()
        r = e.abs().sum() / e.norm()
        r = r ** 2 if square else r
        return float(r / (e.numel() if denom == "TV" else (d.shape[1] if denom == "V" else 1)))
    return fn


@pytest.mark.parametrize("wrong,message", [(_sparsity(None), "median"), (_sparsity("mean"), "MEAN"),
                                           (_sparsity("median", square=False), "square the ratio"),
                                           (_sparsity("median", denom=None), "number of entries"),
                                           (_sparsity("median", denom="V"), "not V alone")])
def test_effect_sparsity_check(wrong, message):
    E.check_effect_sparsity(E.solutions.effect_sparsity)
    _rejects(E.check_effect_sparsity, wrong, message)


# ---- 04 progressive recovery ---------------------------------------------------------------------------------
def _curve(relu=True, bias=True, baseline="mean vector", per_token=False, turn="lowest"):
    """recovery_curve with one mistake switched on."""
    def fn(pre, x, W, b, ks):
        curve = []
        for k in ks:
            z = E.solutions.topk_activation(pre, k) if relu else _topk_no_relu(pre, k)
            err = (z @ W + (b if bias else 0) - x).pow(2).sum(-1)
            base = {"mean vector": (x - x.mean(0)).pow(2).sum(-1), "none": torch.ones(len(x)),
                    "norm": x.pow(2).sum(-1), "scalar mean": (x - x.mean()).pow(2).sum(-1)}[baseline]
            curve.append(float((err / base).mean()) if per_token else float(err.mean() / base.mean()))
        i = int(np.argmin(curve))
        rises = [j + 1 for j in range(len(ks) - 1) if curve[j + 1] > curve[j]]
        return curve, {"lowest": ks[i], "index": i, "after": ks[min(i + 1, len(ks) - 1)],
                       "highest": ks[int(np.argmax(curve))], "value": curve[i],
                       "first rise or first": ks[rises[0] - 1] if rises else ks[0]}[turn]
    return fn


@pytest.mark.parametrize("wrong,message", [
    (_curve(relu=False), "THEN applies the ReLU"), (_curve(bias=False), "decoder bias"),
    (_curve(baseline="none"), "plain MSE"), (_curve(baseline="norm"), r"\|\|x\|\|\^2"),
    (_curve(baseline="scalar mean"), "mean VECTOR"), (_curve(per_token=True), "per-token ratios"),
    (_curve(turn="index"), "POSITION"), (_curve(turn="after"), "AFTER the curve turned"),
    (_curve(turn="highest"), "HIGHEST"), (_curve(turn="value"), "not a normalized MSE"),
    (_curve(turn="first rise or first"), "keeps falling"),
])
def test_recovery_curve_check(wrong, message):
    E.check_recovery_curve(E.solutions.recovery_curve)
    _rejects(E.check_recovery_curve, wrong, message)


def test_recovery_curve_matches_saelab_topk_decode():
    """The reference curve is saelab's own TopK(k') decode, scored with saelab's normalized MSE."""
    from saelab import SAE, SAEConfig
    from saelab.sae.losses import normalized_mse

    torch.manual_seed(0)
    sae = SAE(SAEConfig(d_in=16, n_latents=64, k=4, normalize="per_token_unit_norm"))
    x = torch.randn(128, 16)
    with torch.no_grad():
        x_n, _ = sae.preprocess(x)
        curve, turn = E.solutions.recovery_curve(sae.pre_acts(x_n), x_n, sae.W_dec, sae.b_pre, [2, 4, 8])
        for k, v in zip([2, 4, 8], curve):
            lib = float(normalized_mse(sae.decode_normalized(*sae.encode(x, k=k)[:2]), x_n))
            assert abs(v - lib) < 1e-4 * max(1.0, lib)
    assert turn == [2, 4, 8][int(np.argmin(curve))]


@pytest.mark.parametrize("wrong,message", [
    (lambda p, t: float(torch.quantile(p.flatten(), t / p.shape[1])), "not the L0 / n one"),
    (lambda p, t: float(p.flatten().topk(int(t)).values[-1]), "PER ROW"),
    (lambda p, t: float(p.topk(int(t), dim=-1).values[:, -1].mean()), "AVERAGE over rows"),
])
def test_threshold_for_l0_check(wrong, message):
    E.check_threshold_for_l0(E.solutions.threshold_for_l0)
    _rejects(E.check_threshold_for_l0, wrong, message)


# ---- 05 exploring latents ------------------------------------------------------------------------------------
def _dash(top="distinct", intervals="rank", dedup=True, order="lowest first", pairs="c,t"):
    """dashboard_examples with one mistake switched on; intervals take the first examples of each group."""
    def fn(a, m, n_intervals, per_interval, seed=0):
        N, T = a.shape
        split = (lambda i: (i // N, i % N)) if pairs == "by N" else (lambda i: (i // T, i % T))
        flat = a.flatten()
        if top == "any":
            tops = [split(int(i)) for i in flat.topk(m).indices]
        elif pairs == "by N":  # the strongest positions, one per (mis-computed) context
            tops, seen = [], set()
            for i in flat.argsort(descending=True).tolist():
                if flat[i] > 0 and split(i)[0] not in seen and len(tops) < m:
                    seen.add(split(i)[0])
                    tops.append(split(i))
        else:
            v, t = a.max(1)
            tops = [(int(c), int(t[c])) for c in v.argsort(descending=True)[:m] if top == "silent" or v[c] > 0]
        if top == "ascending":
            tops = tops[::-1]
        pool = torch.arange(N * T) if intervals == "with zeros" else (flat > 0).nonzero().squeeze(1)
        ranked = pool[flat[pool].argsort()]
        if intervals == "value":
            edges = torch.linspace(0, float(flat.max()), n_intervals + 1)
            groups = [ranked[(flat[ranked] >= lo) & (flat[ranked] < hi if j < n_intervals - 1 else True)]
                      for j, (lo, hi) in enumerate(zip(edges[:-1], edges[1:]))]
        else:
            groups = torch.tensor_split(ranked, n_intervals)
        out = []
        for g in groups:
            picked, seen = [], set()
            for i in g.tolist():
                if (not dedup or i // T not in seen) and len(picked) < per_interval:
                    seen.add(i // T)
                    picked.append(split(i))
            out.append(picked)
        if order == "highest first":
            out = out[::-1]
        if pairs == "t,c":
            tops, out = [(t, c) for c, t in tops], [[(t, c) for c, t in iv] for iv in out]
        return tops, out
    return fn


@pytest.mark.parametrize("wrong,message", [
    (_dash(top="any"), "repeat a context"), (_dash(top="ascending"), "strongest FIRST"),
    (_dash(top="silent"), "only 9 contexts fire"), (_dash(pairs="t,c"), "swapped"),
    (_dash(pairs="by N"), "divide by T"),
    (_dash(intervals="value"), "Split by RANK"), (_dash(intervals="with zeros"), "zeros are not part"),
    (_dash(dedup=False), "at most one example per context"), (_dash(order="highest first"), "lowest activations"),
])
def test_dashboard_examples_check(wrong, message):
    E.check_dashboard_examples(E.solutions.dashboard_examples)
    _rejects(E.check_dashboard_examples, wrong, message)


def _concept(pick="f1", geq=False, test_geq=False, choose_on="build", score_on="test", swap=False, score="f1"):
    """find_concept_latent with one mistake switched on."""
    def scores(idx, acts, concept, n, how, ge):
        on = acts >= 0 if ge else acts > 0
        fires = torch.bincount(idx[on], minlength=n).float()
        hits = torch.bincount(idx[on & concept[:, None]], minlength=n).float()
        total = torch.zeros(n).index_add_(0, idx.flatten(), acts.flatten())
        on_c = torch.zeros(n).index_add_(0, idx[concept].flatten(), acts[concept].flatten())
        nc, T = int(concept.sum()), len(concept)
        return {"f1": 2 * hits / (fires + nc), "precision": hits / nc, "recall": hits / fires.clamp_min(1),
                "mean on concept": on_c / nc, "mean difference": on_c / nc - (total - on_c) / (T - nc),
                "mean when active": total / fires.clamp_min(1)}[how]

    def pr(text, latent, ge):
        idx, acts, concept = text
        fires = ((idx == latent) & ((acts >= 0) if ge else (acts > 0))).any(-1)
        both = float((fires & concept).sum())
        return both / max(1, int(concept.sum())), both / max(1, int(fires.sum()))

    def fn(build, test, n):
        texts = {"build": build, "test": test}
        latent = int(scores(*texts[choose_on], n, pick, geq).argmax())
        f1 = float(scores(*build, n, score, geq)[latent])
        p, r = pr(texts[score_on], latent, geq or test_geq)
        return (latent, f1, r, p) if swap else (latent, f1, p, r)
    return fn


@pytest.mark.parametrize("wrong,message", [
    (_concept(pick="mean on concept"), "activation strength"), (_concept(pick="mean difference"), "notebook 07"),
    (_concept(pick="mean when active"), "dense latent"), (_concept(pick="precision"), "dense latent"),
    (_concept(pick="recall"), "misses most of it"), (_concept(geq=True), "not >= 0"),
    (_concept(choose_on="test"), "the TEST text"), (_concept(score_on="build"), "BUILD text it was chosen on"),
    (_concept(swap=True), "swapped"), (_concept(test_geq=True), "20 slots with activation 0"),
    (_concept(score="precision"), "precision or recall alone"),
])
def test_find_concept_latent_check(wrong, message):
    E.check_find_concept_latent(E.solutions.find_concept_latent)
    _rejects(E.check_find_concept_latent, wrong, message)


# ---- 06 scaling laws -----------------------------------------------------------------------------------------
def _straight_line(n, loss):
    slope, icpt = np.polyfit(np.log(n), np.log(loss), 1)
    return math.exp(icpt), -slope, 0.0


def _negated(n, loss):
    a, b, c = E.solutions.fit_power_law(n, loss)
    return a, -b, c


def _linear_space(n, loss):
    from scipy.optimize import curve_fit

    p, _ = curve_fit(lambda x, a, b, c: a * x ** -b + c, n, loss, p0=[1.0, 0.3, 0.01],
                     bounds=([0, 0, 0], [np.inf, 5, float(np.min(loss))]), maxfev=20000)
    return tuple(p)


@pytest.mark.parametrize("wrong,message", [(_straight_line, "no irreducible term"), (_negated, "b > 0"),
                                           (_linear_space, "fit log L")])
def test_fit_power_law_check(wrong, message):
    E.check_fit_power_law(E.solutions.fit_power_law)
    _rejects(E.check_fit_power_law, wrong, message)


def _envelope_by_tokens(c):
    return c.sort_values("tokens").assign(best=lambda d: d.nmse.cummin()).query("nmse == best")[
        ["flops", "nmse", "n"]].sort_values("flops")


@pytest.mark.parametrize("wrong,message", [
    (_envelope_by_tokens, "ordered the evaluations by tokens"),
    (lambda c: c.loc[c.groupby("n").tokens.idxmax()][["flops", "nmse", "n"]].sort_values("flops"), "final evaluation"),
    (lambda c: c.sort_values("flops")[["flops", "nmse", "n"]], "running minimum"),
    (lambda c: c.sort_values("flops")[["flops", "nmse"]], "no 'n'"),
    (lambda c: c.iloc[:0][["flops", "nmse", "n"]], "empty"),
])
def test_compute_envelope_check(wrong, message):
    from saelab.studies.scaling_laws import compute_envelope
    from saelab.teach.exercises import scaling

    E.check_compute_envelope(E.solutions.compute_envelope)
    _rejects(E.check_compute_envelope, wrong, message)
    curves = scaling._toy_curves()  # the check's curves put every n on the envelope, in order of n
    env = compute_envelope(curves, skip_frac=0.0)
    assert list(dict.fromkeys(env.n)) == [256, 1024, 4096]


# ---- 07 steering and attribution -----------------------------------------------------------------------------
def _steer_variant(**flags):
    from saelab.teach.exercises import steering as ST

    return lambda model, sae, latent, alpha: ST._steering_hook(model, sae, latent, alpha, **flags)


def _steer_no_handle(model, sae, latent, alpha):
    _steer_variant()(model, sae, latent, alpha)  # registers the right hook but returns nothing


def _steer_hook_returns_nothing(model, sae, latent, alpha):
    def hook(module, inputs, output):
        x = output[0] if isinstance(output, tuple) else output
        x = x + alpha * sae.W_dec[latent]  # a new tensor, never returned: the block's output is unchanged

    return find_blocks(model)[sae.cfg.layer].register_forward_hook(hook)


def _steer_last_position_only(model, sae, latent, alpha):
    from saelab.teach.exercises import steering as ST

    def hook(module, inputs, output):
        x = output[0] if isinstance(output, tuple) else output
        delta = ST._steer_delta(sae, x, latent, alpha)
        delta[:, :-1] = 0
        return (x + delta, *output[1:]) if isinstance(output, tuple) else x + delta

    return find_blocks(model)[sae.cfg.layer].register_forward_hook(hook)


def _clear_hooks(lm):
    for module in lm.model.modules():  # leave the shared model as it was for other tests
        for hooks in (module._forward_hooks, module._forward_pre_hooks):
            for key, hook in list(hooks.items()):
                if not (getattr(hook, "__module__", None) or "").startswith("transformers"):
                    del hooks[key]


@pytest.mark.parametrize("wrong,message", [
    (_steer_variant(first=0), "changed position 0"),
    (_steer_variant(sign=-1.0), "wrong sign"),
    (_steer_variant(scale="none"), "as it is: the decoder row lives in the SAE's input space"),
    (_steer_variant(scale="raw"), "CENTRED token"),
    (_steer_variant(shift=True), "the token's mean too"),
    (_steer_variant(b_pre=True), "you added b_pre: it is in the SAE's output"),
    (_steer_variant(scale="none", b_pre=True), "added b_pre and left out the scale"),
    (_steer_variant(row="enc"), "ENCODER's row"),
    (_steer_variant(blocks="all"), "hooks on 4 modules.*steering every layer"),
    (_steer_variant(blocks="next"), r"you hooked block 3: the SAE reads the output of block sae.cfg.layer = 2"),
    (_steer_variant(blocks="pre"), "PRE-hook"),
    (_steer_no_handle, "return the handle"),
    (_steer_hook_returns_nothing, "did not change the block's output"),
    (_steer_last_position_only, "some positions >= 1 were not steered"),
])
def test_steering_hook_check(tiny_lm, wrong, message):
    from saelab.teach.exercises.harvest import _hooks_left

    before = _hooks_left(tiny_lm.model)
    try:
        E.check_steering_hook(E.solutions.add_steering_hook, tiny_lm)
        _rejects(lambda fn: E.check_steering_hook(fn, tiny_lm), wrong, message)
        assert _hooks_left(tiny_lm.model) == before, "the check must remove every hook the learner's function added"
    finally:
        _clear_hooks(tiny_lm)


def _ablate_variant(**flags):
    from saelab.teach.exercises import steering as ST

    return lambda sae, x, latent: ST._ablate_rows(sae, x, latent, **flags)


@pytest.mark.parametrize("wrong,message", [
    (_ablate_variant(keep_error=False), "drops the error term"),
    (_ablate_variant(sign=1.0), "wrong sign"),
    (_ablate_variant(acts="pre"), "pre-activation"),
    (_ablate_variant(acts="max"), "the same amount at every row"),
    (_ablate_variant(scale="none"), "map the change back with each row's scale"),
    (_ablate_variant(scale="raw"), "CENTRED row"),
    (_ablate_variant(shift=True), "the row's mean too"),
    (_ablate_variant(b_pre=True), "subtracted b_pre"),
    (_ablate_variant(row="enc"), "ENCODER's row"),
    (lambda sae, x, latent: x.clone(), "unchanged"),
    (lambda sae, x, latent: _ablate_variant()(sae, x, latent) + 0.01 * (x.norm(dim=-1, keepdim=True) > 1e9),
     None),
])
def test_ablate_rows_check(wrong, message):
    E.check_ablate_rows(E.solutions.ablate_rows)
    if message is None:  # a right answer in other words passes too
        E.check_ablate_rows(wrong)
    else:
        _rejects(E.check_ablate_rows, wrong, message)


def _attribution_variant(variant):
    from saelab.teach.exercises import steering as ST

    return lambda model, sae, ids, metric: ST._attribution_variant(model, sae, ids, metric, variant)


def _attribution_leaves_hook(model, sae, ids, metric):
    find_blocks(model)[sae.cfg.layer].register_forward_hook(lambda *a: None)
    return E.solutions.attribution_estimates(model, sae, ids, metric)


@pytest.mark.parametrize("wrong,message", [
    (_attribution_variant("sign"), "wrong sign"),
    (_attribution_variant("no_error"), "reconstruction alone: keep the error term"),
    (_attribution_variant("position0"), "position 0 too"),
    (_attribution_variant("sums"), "positions where the latent is not active"),
    (_attribution_variant("pre"), "pre-activations"),
    (_attribution_variant("grad"), "gradient alone"),
    (_attribution_variant("no_scale"), "misses the scale s"),
    (lambda model, sae, ids, metric: torch.zeros(sae.cfg.n_latents), "no gradient reached the activations"),
    (lambda model, sae, ids, metric: torch.zeros(sae.cfg.n_latents + 1), "one estimate per latent"),
    (_attribution_leaves_hook, "still registered"),
])
def test_attribution_estimates_check(tiny_lm, wrong, message):
    try:
        E.check_attribution_estimates(E.solutions.attribution_estimates, tiny_lm)
        _rejects(lambda fn: E.check_attribution_estimates(fn, tiny_lm), wrong, message)
    finally:
        _clear_hooks(tiny_lm)


def test_attribution_reference_is_saelab_attribute_and_the_first_order_ablation(tiny_lm):
    """The reference agrees with saelab.interp.attribution.attribute (dense and sparse leaves give the same
    gradient), and with a linear metric of the site (the residual stream read by a fixed vector at the next block's
    input) it is the real ablation effect."""
    from saelab.interp.steering import ablate, spliced
    from saelab.teach.exercises import steering as ST

    layer = 2
    sae = ST.check_sae(tiny_lm.d_model, layer=layer, seed=7)
    ids = tiny_lm.tokenizer(ST.TEXT, return_tensors="pt").input_ids
    read = torch.randn(tiny_lm.d_model, generator=torch.Generator().manual_seed(0))
    captured = {}
    handle = find_blocks(tiny_lm.model)[layer + 1].register_forward_pre_hook(
        lambda m, args: captured.__setitem__("x", args[0]))

    def metric(_logits):  # linear in the site's activations: the sum over positions of x . read
        return (captured["x"][0] @ read).sum()

    try:
        est = E.solutions.attribution_estimates(tiny_lm.model, sae, ids, metric)
        from saelab.evals.splice import SpliceSite

        where = SpliceSite(layer=layer, exclude_first=1, outlier_factor=None)
        with torch.no_grad():
            with spliced(tiny_lm, sae, where=where):
                base = float(metric(tiny_lm.model(input_ids=ids).logits))
            j = int(est.abs().argmax())
            with spliced(tiny_lm, sae, [ablate(j)], where=where):
                real = float(metric(tiny_lm.model(input_ids=ids).logits)) - base
    finally:
        handle.remove()
    assert abs(float(est[j])) > 1e-3 and float(est[j]) == pytest.approx(real, rel=1e-3, abs=1e-5)


def _notebook_solution(path, number):
    """The function a learner gets by pasting exercise `number`'s folded Solution into its stub."""
    text = path.read_text()
    stub = re.search(r"^def (\w+)\((.*?)\):\n(?:    #.*\n)*    todo\(\"" + re.escape(number) + r"\"\)", text, re.M)
    assert stub, f"no stub for exercise {number}"
    after = text[stub.end():]
    hint, solution = after.find("<summary>Hint</summary>"), after.find("<summary>Solution</summary>")
    assert 0 <= hint < solution, f"exercise {number}: a folded Hint must come before the folded Solution"
    code = re.search(r"```python\n(.*?)```", after[solution:], re.S).group(1)
    body = "\n".join("    " + line[2:] if line.startswith("# ") else "" for line in code.splitlines())
    namespace = {"torch": torch, "__name__": "notebook_07"}
    exec(f"def {stub.group(1)}({stub.group(2)}):\n{body}\n", namespace)
    return namespace[stub.group(1)]


@pytest.mark.parametrize("number,check,needs_lm", [("7.1", "check_steering_hook", True),
                                                    ("7.2", "check_ablate_rows", False),
                                                    ("7.3", "check_attribution_estimates", True)])
def test_notebook_07_solutions_pass_their_checks(tiny_lm, number, check, needs_lm):
    fn = _notebook_solution(NOTEBOOKS / "07_steering_and_attribution.py", number)
    try:
        getattr(E, check)(fn, *([tiny_lm] if needs_lm else []))
    finally:
        _clear_hooks(tiny_lm)


# ---- 02 build your own ---------------------------------------------------------------------------------------
def _sae_variant(encoder="transpose", normalize=True, centre=True, sub_pre=True, add_pre=True, clamp=True):
    B = E.build

    class Variant(B.MyTopKSAE):
        def __init__(self, d, n, k, seed=0):
            super().__init__(d, n, k, seed)
            if encoder == "random":
                g = torch.Generator().manual_seed(seed + 99)
                with torch.no_grad():
                    self.W_enc.copy_(torch.nn.functional.normalize(torch.randn(n, d, generator=g), dim=1))

        def forward(self, x, k=None):
            x_n = x
            if normalize:
                x_n = x - x.mean(-1, keepdim=True) if centre else x
                norm = x_n.norm(dim=-1, keepdim=True)
                x_n = x_n / (norm.clamp_min(1e-8) if clamp else norm)
            pre = ((x_n - self.b_pre) if sub_pre else x_n) @ self.W_enc.T + self.b_enc
            z = E.solutions.topk_activation(pre, k or self.k)
            return z @ self.W_dec + (self.b_pre if add_pre else 0), x_n, pre, z
    return Variant


@pytest.mark.parametrize("wrong,message", [(_sae_variant(encoder="random"), "transpose"),
                                           (_sae_variant(normalize=False), "normalise each token"),
                                           (_sae_variant(centre=False), "not centred"),
                                           (_sae_variant(sub_pre=False), "subtract b_pre"),
                                           (_sae_variant(add_pre=False), "add b_pre back"),
                                           (_sae_variant(clamp=False), "clamp the norm")])
def test_my_sae_check(wrong, message):
    E.check_my_sae(E.solutions.MyTopKSAE)
    _rejects(E.check_my_sae, wrong, message)


def _grad_removed(W):
    W.grad.zero_()


def _grad_dim0(W):
    W.grad -= (W.grad * W.data).sum(0, keepdim=True) * W.data


def _renorm_columns(W):
    W.data /= W.data.norm(dim=0, keepdim=True)


@pytest.mark.parametrize("project,renorm,message", [
    (_grad_removed, E.solutions.renormalize_decoder_, "whole gradient is gone"),
    (_grad_dim0, E.solutions.renormalize_decoder_, "summed over rows"),
    (lambda W: None, E.solutions.renormalize_decoder_, "gradient is unchanged"),
    (E.solutions.constrain_decoder_grad_, _renorm_columns, "ROW by its norm"),
])
def test_decoder_constraint_check(project, renorm, message):
    E.check_decoder_constraint(E.solutions.constrain_decoder_grad_, E.solutions.renormalize_decoder_)
    with pytest.raises(AssertionError, match=message):
        E.check_decoder_constraint(project, renorm)


def _loop_without(step_name):
    B = E.build

    def fn(*args, **kwargs):
        saved = getattr(B, step_name)
        setattr(B, step_name, lambda W: None)
        try:
            return B.train_my_sae(*args, **kwargs)
        finally:
            setattr(B, step_name, saved)
    return fn


def _loop_ignoring_multi_topk(*args, multi_topk=False, **kwargs):
    return E.build.train_my_sae(*args, **kwargs)


def _loop_with_torch_adam_defaults(*args, **kwargs):
    original = torch.optim.Adam  # the check's watcher, while the check runs

    def adam(params, lr, betas=None, eps=None):
        return original(params, lr=lr)  # torch's default betas (0.9, 0.999) and eps 1e-8
    torch.optim.Adam = adam
    try:
        return E.build.train_my_sae(*args, **kwargs)
    finally:
        torch.optim.Adam = original


@pytest.fixture(scope="module")
def toy_x():
    from saelab.teach.toy import ToyConfig, make_toy

    return make_toy(ToyConfig(n_samples=16384)).x_BD


def test_training_check_passes_the_reference_close_to_trainer(toy_x, capsys):
    import ast

    E.check_training(E.solutions.train_my_sae, E.solutions.MyTopKSAE, toy_x, steps=150, multi_topk_steps=150)
    report = ast.literal_eval(capsys.readouterr().out.strip().splitlines()[-1])
    assert abs(report["yours"] - report["Trainer"]) < 0.1 * report["Trainer"]
    assert report["yours at 4k (Multi-TopK)"] < 1.15 * report["Trainer at 4k (Multi-TopK)"]


@pytest.mark.parametrize("loop,cls,message", [
    (E.solutions.train_my_sae, _sae_variant(encoder="random"), "transpose"),
    (_loop_without("renormalize_decoder_"), E.solutions.MyTopKSAE, "renormalize_decoder_ after every"),
    (_loop_without("constrain_decoder_grad_"), E.solutions.MyTopKSAE, "still points along its rows"),
    (_loop_with_torch_adam_defaults, E.solutions.MyTopKSAE, "eps 6.25e-10"),
    (_loop_ignoring_multi_topk, E.solutions.MyTopKSAE, "L\\(4k\\) / 8"),
])
def test_training_check_rejects_wrong_assemblies_by_name(toy_x, loop, cls, message):
    with pytest.raises(AssertionError, match=message):
        E.check_training(loop, cls, toy_x, steps=150, multi_topk_steps=150)


# ---- every notebook -------------------------------------------------------------------------------------------
@pytest.mark.parametrize("path", sorted(NOTEBOOKS.glob("[0-9][0-9]_*.py")), ids=lambda p: p.stem)
def test_every_notebook_has_stubbed_checked_exercises(path):
    """Each notebook has exercises whose stubs call todo("NN.M") with its own number, and each check is handed the
    learner's own function, so without SAELAB_SOLUTIONS a learner who writes nothing stops at the first one."""
    import jupytext

    text = path.read_text()
    number = int(path.name[:2])
    todos = re.findall(r'todo\("(\d+)\.(\d+)"\)', text)
    assert todos, f"{path.name} has no exercise stub calling todo(...)"
    assert all(int(nb) == number for nb, _ in todos), f"{path.name}: exercise numbers {todos} must start with {number}"
    checks = re.findall(r"\bcheck_\w+\((.*)$", text, flags=re.M)
    assert checks, f"{path.name} never calls a check"
    code = [c.source for c in jupytext.read(path).cells if c.cell_type == "code"]
    for source in code:
        assert not re.search(r"\bsolutions\b|\bgraded\(", source), (
            f"{path.name}: a code cell names the reference solutions (a free pass within the learner's reach); pass "
            f"the learner's function to its check, which substitutes the reference under SAELAB_SOLUTIONS=1:\n{source}")


def test_checks_substitute_the_reference_only_under_the_solutions_switch(monkeypatch, capsys):
    """A check given a stub that was never written grades the reference under SAELAB_SOLUTIONS=1 and returns it;
    without the switch it grades (and stops at) the learner's stub."""
    def stub(*args, **kwargs):
        E.todo("2.1")

    with pytest.raises(E.NotWrittenYet):
        E.check_topk_activation(stub)
    monkeypatch.setenv("SAELAB_SOLUTIONS", "1")
    assert E.check_topk_activation(stub) is E.solutions.topk_activation
    assert E.check_batchtopk(stub, stub) == (E.solutions.batchtopk, E.solutions.inference_threshold)
    monkeypatch.delenv("SAELAB_SOLUTIONS")
    assert E.check_topk_activation(E.solutions.topk_activation) is E.solutions.topk_activation
    with pytest.raises(TypeError, match="takes your 2 function"):
        E.check_batchtopk(E.solutions.batchtopk)


def test_every_exercise_heading_parses_and_every_check_is_numbered():
    """One heading format everywhere, parsed by saelab.teach.syllabus; the exercise ids are those of the stubs and
    of the checks' own numbers, each once."""
    from saelab.teach.syllabus import notebook_sources, syllabus

    found = syllabus(NOTEBOOKS)
    ids = [ex.id for ex in found]
    assert len(ids) == len(set(ids)), f"an exercise id appears twice: {ids}"
    stubs = {m for p in notebook_sources(NOTEBOOKS) for m in re.findall(r'todo\("(\d+\.\d+)"\)', p.read_text())}
    assert set(ids) == stubs, f"headings {sorted(set(ids) ^ stubs)} have no stub, or stubs no heading"
    numbered = {getattr(getattr(E, name), "exercise", None) for name in E.__all__ if name.startswith("check_")}
    assert stubs <= numbered, f"exercises without a numbered check: {sorted(stubs - numbered)}"
    assert {ex.importance for ex in found} == {"essential", "optional"}
    assert all(1 <= ex.minutes <= 60 for ex in found)


def test_a_wrong_heading_format_is_refused(tmp_path):
    from saelab.teach.syllabus import exercises

    bad = tmp_path / "09_x.py"
    bad.write_text("# %% [markdown]\n# **Exercise 9.1** (medium, 15 min). Write it.\n")
    assert exercises(bad) == []  # bold text is no heading ...
    bad.write_text("# %% [markdown]\n# ## 2 · Exercise 9.1: write it (15 min, medium)\n")
    with pytest.raises(ValueError, match="not in the course format"):
        exercises(bad)


@pytest.mark.parametrize("path", sorted(NOTEBOOKS.glob("[0-9][0-9]_*.py")), ids=lambda p: p.stem)
def test_every_notebook_states_its_learner_time(path):
    """The stated learner time is the reading estimate plus the essential exercises' minutes (within 5 minutes)."""
    from saelab.teach.syllabus import exercises, learner_minutes, reading_minutes

    stated = learner_minutes(path)
    assert stated is not None, f"{path.name}: the first cell must state '**Learner time**: about N minutes'"
    want = reading_minutes(path) + sum(ex.minutes for ex in exercises(path) if ex.importance == "essential")
    assert abs(stated - want) <= 5, f"{path.name} states {stated} learner minutes; reading + essential = {want}"


def test_a_learner_who_writes_nothing_stops_at_the_first_exercise(monkeypatch):
    """Run notebook 00 as a learner would, without SAELAB_SOLUTIONS: it stops at exercise 0.1, saying so."""
    import nbformat
    from nbclient import NotebookClient
    from nbclient.exceptions import CellExecutionError

    monkeypatch.delenv("SAELAB_SOLUTIONS", raising=False)
    monkeypatch.setenv("SAELAB_FAST", "1")
    nb = nbformat.read(NOTEBOOKS / "00_toy_features.ipynb", as_version=4)
    client = NotebookClient(nb, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(NOTEBOOKS)}})
    with pytest.raises(CellExecutionError, match=r"exercise 0\.1: not written yet"):
        client.execute()
    ran = [c for c in nb.cells if c.cell_type == "code" and c.get("execution_count")]
    assert "todo(\"0.1\")" in ran[-1].source, "the notebook should stop in exercise 0.1's cell, not before"


def test_series_runner_as_a_learner(tmp_path):
    """scripts/run_series.py runs notebooks in order, writes executed copies, HTML and times; as a learner each
    notebook stops at its first exercise, which the runner reports as expected."""
    import json
    import subprocess
    import sys

    root = NOTEBOOKS.parent
    cmd = [sys.executable, str(root / "scripts" / "run_series.py"), "--fast", "--learner", "--only", "00",
           "--out", str(tmp_path)]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "exercise 0.1: not written yet" in done.stdout
    times = json.loads((tmp_path / "times.json").read_text())
    assert [r["notebook"] for r in times["notebooks"]] == ["00_toy_features.ipynb"]
    assert times["notebooks"][0]["seconds"] > 0 and "fast mode" in times["notebooks"][0]["stated"]
    assert (tmp_path / "00_toy_features.html").stat().st_size > 10_000


# ---- 08 after the paper ----------------------------------------------------------------------------------------
def _bt(per_row=False, total_k=False, negatives=False, scaled=False):
    """batchtopk with one mistake switched on."""
    def fn(pre, k):
        if per_row:
            return torch.where(pre >= pre.topk(k, dim=-1).values[:, -1:], pre, 0.0).clamp_min(0)
        cut = pre.flatten().topk(k if total_k else k * len(pre)).values[-1]
        keep = (pre >= cut) if negatives else (pre >= cut) & (pre > 0)
        return torch.where(keep, pre * (2.0 if scaled else 1.0), 0.0)
    return fn


def _threshold(kind):
    def fn(codes):
        if kind == "mean":
            return float(torch.stack([c[c > 0].mean() for c in codes]).mean())
        if kind == "global min":
            return float(min(c[c > 0].min() for c in codes))
        if kind == "with zeros":
            return float(torch.stack([c.min() for c in codes]).mean())
        return float(max(c[c > 0].min() for c in codes))
    return fn


@pytest.mark.parametrize("select, threshold, message", [
    (_bt(per_row=True), E.solutions.inference_threshold, "that is TopK"),
    (_bt(total_k=True), E.solutions.inference_threshold, "you kept k values in all"),
    (_bt(scaled=True), E.solutions.inference_threshold, "no rescaling"),
    (E.solutions.batchtopk, _threshold("mean"), "averaged the kept activations"),
    (E.solutions.batchtopk, _threshold("global min"), "smallest over all batches"),
    (E.solutions.batchtopk, _threshold("with zeros"), "POSITIVE"),
    (E.solutions.batchtopk, _threshold("max"), "largest minimum"),
])
def test_batchtopk_check(select, threshold, message):
    E.check_batchtopk(E.solutions.batchtopk, E.solutions.inference_threshold)
    with pytest.raises(AssertionError, match=message):
        E.check_batchtopk(select, threshold)


def test_batchtopk_check_rejects_negative_kept_values():
    # with few positive values in a batch, keeping the top B*k lets negatives in
    with pytest.raises(AssertionError, match="negative|positive"):
        E.check_batchtopk(lambda pre, k: _bt(negatives=True)(pre - 2.5, k), E.solutions.inference_threshold)


def _mat(bias=True, mean=False, groups=False, skip_last=False, normalise=True, detach=False):
    def fn(z, W, b, x, widths):
        base = (x - x.mean(0)).pow(2).sum(-1).mean() if normalise else 1.0
        lows = [0, *widths[:-1]] if groups else [0] * len(widths)
        terms = [(z[:, lo:m] @ W[lo:m] + (b if bias else 0) - x).pow(2).sum(-1).mean() / base
                 for lo, m in zip(lows, widths)]
        terms = terms[:-1] if skip_last else terms
        out = sum(terms) / (len(terms) if mean else 1)
        return torch.tensor(float(out.detach())) if detach else out
    return fn


@pytest.mark.parametrize("wrong, message", [
    (_mat(bias=False), "decoder bias"),
    (_mat(mean=True), "averaged"),
    (_mat(groups=True), "PREFIX"),
    (_mat(skip_last=True), "last width"),
    (_mat(normalise=False), "mean predictor"),
    (_mat(detach=True), "graph"),
])
def test_matryoshka_loss_check(wrong, message):
    E.check_matryoshka_loss(E.solutions.matryoshka_loss)
    _rejects(E.check_matryoshka_loss, wrong, message)


def _jr(factor=True, sign=-1, one_sided=False, half=0.5, mean=False):
    def fn(pre, theta, eps, g):
        u = (pre - theta) / eps
        window = ((u >= 0) if one_sided else (u > -half)) & (u < half)
        per = sign * (theta if factor else 1.0) / eps * window.float() * g
        return per.mean(0) if mean else per.sum(0)
    return fn


@pytest.mark.parametrize("wrong, message", [
    (_jr(factor=False), "Heaviside"),
    (_jr(sign=1), "sign"),
    (_jr(one_sided=True), "two sides"),
    (_jr(half=1.0), "eps/2 each side"),
    (_jr(mean=True), "do not average"),
])
def test_jumprelu_threshold_grad_check(wrong, message):
    E.check_jumprelu_threshold_grad(E.solutions.jumprelu_threshold_grad)
    _rejects(E.check_jumprelu_threshold_grad, wrong, message)


def test_jumprelu_exercise_solution_agrees_with_the_training_code():
    from saelab.sae.families.jumprelu import jumprelu

    g = torch.Generator().manual_seed(0)
    pre, theta = torch.rand(16, 8, generator=g), torch.rand(8, generator=g).requires_grad_(True)
    grad = torch.randn(16, 8, generator=g)
    jumprelu(pre, theta, 0.2).backward(grad)
    torch.testing.assert_close(E.solutions.jumprelu_threshold_grad(pre, theta.detach(), 0.2, grad), theta.grad)


# ---- 08 absorption for one parent/child pair --------------------------------------------------------------------
A = E.after


def _absorb(over="both", child_fires=True, cosine=True, one_to_one=False, axis=1, normalise=True, py_div=False):
    """A learner's pair_absorption with one mistake switched on."""
    def fn(z, W, F, coeffs, parent, child, carries=0.1):
        if normalise:
            F, W = F / F.norm(dim=1, keepdim=True), W / W.norm(dim=1, keepdim=True)
        cos = F @ W.T
        match = cos.argmax(dim=axis)
        lp, lc = int(match[parent]), int(match[child])
        if one_to_one and lc == lp:  # give the child a latent of its own, as a one-to-one matching would
            order = cos[child].argsort(descending=True)
            lc = int(order[1])
        both = (coeffs[:, parent] > 0) & (coeffs[:, child] > 0)
        hit = z[:, lp] == 0
        if child_fires:
            hit = hit & (z[:, lc] > 0)
        if cosine and float(cos[parent, lc]) < carries:
            hit = torch.zeros_like(hit)
        if over == "all":
            return float(hit.float().mean())
        if over == "both/B":
            return float((hit & both).sum()) / len(z)
        if over == "parent":
            return float((hit & both).sum()) / int((coeffs[:, parent] > 0).sum())
        if py_div:
            return int((hit & both).sum()) / int(both.sum())
        return float((hit & both).sum() / both.sum())
    return fn


@pytest.mark.parametrize("wrong, message", [
    (_absorb(over="all"), "ALL samples"),
    (_absorb(over="both/B"), "not by all samples"),
    (_absorb(over="parent"), "where the parent fires"),
    (_absorb(child_fires=False), "child's latent FIRES"),
    (_absorb(cosine=False), "carry the parent's direction"),
    (_absorb(one_to_one=True), "share their best-matching latent"),
    (_absorb(axis=0), "TRUE feature to its best latent"),
    (_absorb(normalise=False), "by cosine"),
    (_absorb(py_div=True), "return nan"),
])
def test_pair_absorption_check(wrong, message):
    A.check_pair_absorption(A.pair_absorption)
    A.check_pair_absorption(_absorb())  # the learner-style version without a mistake passes
    _rejects(A.check_pair_absorption, wrong, message)


def test_pair_absorption_agrees_with_saelab_on_a_trained_sae():
    from saelab.evals.ground_truth import absorption
    from saelab.sae.model import encode_dense

    data = A.hierarchy_data(20_000)
    sae = A.train_on_synthetic(data.x_BD[4096:], "topk", k=7, epochs=1)
    x, c = data.x_BD[:4096], data.coeffs_BF[:4096]
    z = encode_dense(sae, x)
    W = sae.W_dec.detach().cpu()
    pairs = absorption(z, W, data.features_FD, c, data.parent_F)["pairs"]
    assert len(pairs) > 100 and any(share > 0 for _, _, share, _ in pairs)
    for parent, child, share, _ in pairs:
        assert A.pair_absorption(z, W, data.features_FD, c, parent, child) == pytest.approx(share, abs=1e-6)
    table = A.parent_firing(z, W, data.features_FD, c, data.parent_F)
    assert len(table) == len(pairs) and table.fires_alone.between(0, 1).all()


def test_notebook_08_solution_passes_its_check():
    text = (NOTEBOOKS / "08_after_the_paper.py").read_text()
    after = text[text.index('todo("8.4")'):]
    after = after[after.index("<summary>Hint</summary>"):]
    code = re.search(r"```python\n(.*?)```", after[after.index("<summary>Solution</summary>"):], re.S).group(1)
    namespace = {"torch": torch}
    exec("\n".join(line[2:] for line in code.splitlines()), namespace)
    A.check_pair_absorption(namespace["pair_absorption"])
