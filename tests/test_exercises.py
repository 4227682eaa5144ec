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
from saelab.teach.exercises import ablation as AB
from saelab.teach.exercises import attribution as AT

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


def _recovery_raw_features(W, F):
    return (F @ (W / W.norm(dim=1, keepdim=True)).T).max(1).values


def _recovery_columns(W, F):
    return ((F / F.norm(dim=1, keepdim=True)) @ (W / W.norm(dim=0, keepdim=True)).T).max(1).values


def _recovery_in_place(W, F):
    W /= W.norm(dim=1, keepdim=True)
    F /= F.norm(dim=1, keepdim=True)
    return (F @ W.T).max(1).values


def _recovery_squeezed(W, F):
    return E.solutions.feature_recovery(W, F).squeeze()


@pytest.mark.parametrize("wrong,message", [(_dot_recovery, "not cosines"), (_abs_recovery, "OPPOSITE way"),
                                           (_per_latent_recovery, "one per TRUE feature"),
                                           (_recovery_raw_features, "normalise the true features too"),
                                           (_recovery_columns, "COLUMNS"), (_recovery_in_place, "in place"),
                                           (lambda W, F: E.solutions.feature_recovery(W, F).tolist(),
                                            "return a tensor"),
                                           (_recovery_squeezed, "one true feature and one decoder row.*shape")])
def test_feature_recovery_check(wrong, message):
    E.check_feature_recovery(E.solutions.feature_recovery)
    _rejects(E.check_feature_recovery, wrong, message)


def _roles(normalise=True, signed=True, dead=True, dead_claims=False, duplicates=True, best_first=True,
           threshold=None, dead_if_any_zero=False, normalise_features=True, strict=False, in_place=False,
           alive_share=None):
    """latent_roles with one mistake switched on."""
    def fn(W, F, acts, thr=0.9):
        t = thr if threshold is None else threshold
        if in_place:
            W /= W.norm(dim=1, keepdim=True)
        F = F / F.norm(dim=1, keepdim=True) if normalise_features else F
        cos = (W / W.norm(dim=1, keepdim=True) if normalise else W) @ F.T
        best, feat = (cos if signed else cos.abs()).max(1)
        alive = (acts != 0).all(0) if dead_if_any_zero else (acts > 0).any(0)
        if alive_share is not None:  # "alive" = fires on more than this share of the rows
            alive = (acts > 0).float().mean(0) > alive_share
        if not dead:
            alive = torch.ones_like(alive)
        roles = ["other" if a else "dead" for a in alive.tolist()]
        order = best.argsort(descending=True, stable=True).tolist() if best_first else range(len(best))
        taken = set()
        for j in order:
            if (alive[j] or dead_claims) and (best[j] > t if strict else best[j] >= t):
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
    (_roles(normalise_features=False), "normalise the features too"), (_roles(strict=True), ">=, not >"),
    (_roles(in_place=True), "in place"),
    (_roles(alive_share=0.01), "a rare latent is alive"),
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


def _hidden_states_after(model, ids, layer):
    with torch.no_grad():
        return model(input_ids=ids, output_hidden_states=True).hidden_states[layer + 1]


def _no_finally(model, ids, layer):
    got = {}
    handle = find_blocks(model)[layer].register_forward_hook(
        lambda m, i, o: got.setdefault("a", o[0] if isinstance(o, tuple) else o))
    with torch.no_grad():
        model(input_ids=ids)
    handle.remove()
    return got["a"]


@pytest.mark.parametrize("wrong,message", [
    (_block_input, "INPUT of block"), (_next_block, "off by one"), (_hook_left_behind, "handle.remove"),
    (_mlp_output, "MLP"),
    (lambda model, ids, layer: E.solutions.residual_after_block(model, ids, 2), "captured block 2 again"),
    (_hidden_states_after, "final norm"),
    (lambda model, ids, layer: E.solutions.residual_after_block(model, ids[:1], layer), "batch of 3.*shape"),
    (_no_finally, "in a finally"),
])
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


def _topk_threshold(pre, k):
    return torch.where(pre >= pre.topk(k, dim=-1).values[:, -1:], pre, 0.0).relu()


def _topk_in_place(pre, k):
    pre[pre < pre.topk(k, dim=-1).values[:, -1:]] = 0.0
    return pre.relu()


def _topk_squeezed(pre, k):
    top = pre.topk(k, dim=-1)
    return torch.zeros_like(pre).scatter(-1, top.indices.squeeze(), top.values.squeeze().relu())


@pytest.mark.parametrize("wrong,message", [
    (_topk_no_relu, "ReLU"), (_topk_columns, "COLUMN"),
    (lambda p, k: E.solutions.topk_activation(p, k - 1), "not k - 1"),
    (lambda p, k: E.solutions.topk_activation(p, k + 1), "not k \\+ 1"),
    (lambda p, k: E.solutions.topk_activation(p, 5), "with k = 1: row .* k the argument"),  # k ignored
    (_topk_threshold, "keep exactly k even when several entries tie"),
    (_topk_in_place, "in place"),
    (_topk_squeezed, "with k = 1: your function raised RuntimeError"),
    (lambda p, k: E.solutions.topk_activation(p.detach(), k), "carries no gradient"),
])
def test_topk_activation_check(wrong, message):
    E.check_topk_activation(E.solutions.topk_activation)
    _rejects(E.check_topk_activation, wrong, message)


@pytest.mark.parametrize("wrong,message", [
    (lambda r, x: (r - x).pow(2).sum(-1).mean() / x.pow(2).sum(-1).mean(), "issue #8"),
    (lambda r, x: (r - x).pow(2).sum(-1).mean() / (x - x.mean()).pow(2).sum(-1).mean(), "mean VECTOR"),
    (lambda r, x: (r - x).pow(2).sum(-1).mean(), "plain MSE"),
    (lambda r, x: ((r - x).pow(2).sum(-1) / (x - x.mean(0)).pow(2).sum(-1)).mean(), "per-token ratios"),
    (lambda r, x: float(E.solutions.normalized_mse(r, x)), "return a tensor, not a float"),
    (lambda r, x: E.solutions.normalized_mse(r, x).item(), "return a tensor, not a float"),
    (lambda r, x: E.solutions.normalized_mse(r, x).detach(), "carries no gradient"),
    (lambda r, x: E.solutions.normalized_mse(x, r), "SECOND argument"),
    (lambda r, x: (r - x).pow(2).sum(-1).mean() / x.var(0).sum(), "\\(B - 1\\) / B"),
    (lambda r, x: (r - x).pow(2).sum(-1).mean() / (x - x.mean(-1, keepdim=True)).pow(2).sum(-1).mean(), "dim=-1"),
    (lambda r, x: E.solutions.normalized_mse(r, x).reshape(1), "expected shape \\(\\)"),
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


def _auxk_fixed_k(x, recon, pre, dead, W, k_aux):
    return E.solutions.auxk_loss(x, recon, pre, dead, W, 2)


def _auxk_no_clamp(x, recon, pre, dead, W, k_aux):
    top = pre.masked_fill(~dead, float("-inf")).topk(k_aux, dim=-1)
    z = torch.zeros_like(pre).scatter(-1, top.indices, top.values.relu())
    return E.solutions.normalized_mse(z @ W, (x - recon).detach())


def _auxk_in_place(x, recon, pre, dead, W, k_aux):
    pre.masked_fill_(~dead, float("-inf"))
    return E.solutions.auxk_loss(x, recon, pre, dead, W, k_aux)


def _auxk_detached_decoder(x, recon, pre, dead, W, k_aux):
    return E.solutions.auxk_loss(x, recon, pre, dead, W.detach(), k_aux)


def _auxk_with_bias(x, recon, pre, dead, W, k_aux):
    b_pre = x.mean(0) * 0 + 50.0  # the case's decoder bias
    return _auxk(bias=b_pre)(x, recon, pre, dead, W, k_aux)


@pytest.mark.parametrize("wrong,message", [(_auxk(mask=False), "only DEAD latents"),
                                           (_auxk(detach=False), "detach the residual"),
                                           (_auxk_with_bias, "decoder bias"),
                                           (_auxk(normalize=False), "plain MSE"),
                                           (_auxk(use_k=False), "top k_aux"),
                                           (_auxk(relu=False), "apply the ReLU"),
                                           (_auxk_fixed_k, "with k_aux = 1: your result is the one for k_aux = 2"),
                                           (_auxk_no_clamp, "k_aux = 40, more than the 16 latents: your function "
                                                            "raised"),
                                           (_auxk_in_place, "changed pre_BN in place"),
                                           (lambda *a: float(E.solutions.auxk_loss(*a)), "return a tensor"),
                                           (lambda *a: E.solutions.auxk_loss(*a).detach(), "carries no gradient"),
                                           (_auxk_detached_decoder, "no gradient reaches W_dec_ND")])
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


def _fixed_rec(x):
    return -2.0 * x.flip(-1)  # a bad, deterministic "reconstruction"


def _splice_without_finally(m, ids, layer, rec, error_scale=0.0):
    """Removes its hook after the forward pass, but not when the forward pass fails."""
    def hook(_module, _inputs, output):
        hidden = output[0] if isinstance(output, tuple) else output
        x = hidden[:, 1:]
        r = rec(x.reshape(-1, x.shape[-1])).reshape(x.shape)
        new = torch.cat([hidden[:, :1], r + error_scale * (x - r)], dim=1)
        return (new, *output[1:]) if isinstance(output, tuple) else new

    handle = find_blocks(m)[layer].register_forward_hook(hook)
    with torch.no_grad():
        logits = m(input_ids=ids, use_cache=False).logits.float()
    handle.remove()
    return float(torch.nn.functional.cross_entropy(logits[:, 1:-1].flatten(0, 1), ids[:, 2:].flatten()))


def _splice_swallowing_errors(m, ids, layer, rec, error_scale=0.0):
    from saelab.teach.exercises import evaluation as EV

    try:
        return EV._splice(m, ids, layer, rec, error_scale)
    except Exception:  # noqa: BLE001 - the mistake under test
        return float("nan")


def _splice_at(fixed_layer=None, fixed_rec=None):
    """The splice with an argument ignored: always block `fixed_layer`, or always `fixed_rec` (an SAE of the
    notebook instead of the `reconstruct` it is given)."""
    from saelab.teach.exercises import evaluation as EV

    return lambda m, ids, layer, rec, error_scale=0.0: EV._splice(m, ids, fixed_layer or layer, fixed_rec or rec,
                                                                  error_scale)


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
    (_splice_without_finally, "when the forward pass fails"), (_splice_swallowing_errors, "let the error through"),
    (_splice_at(fixed_layer=8), "not block `layer` = 4"), (_splice_at(fixed_rec=_fixed_rec), "call the `reconstruct`"),
])
def test_spliced_loss_check(smollm, wrong, message):
    from types import SimpleNamespace

    ids = torch.randint(0, 1000, (4, 24), generator=torch.Generator().manual_seed(0))
    fixed = SimpleNamespace(reconstruct=_fixed_rec)
    try:
        _rejects(lambda fn: E.check_spliced_loss(fn, smollm, fixed, ids, 8), wrong, message)
    finally:  # a leaked hook must not spoil the other tests' model
        for blk in find_blocks(smollm.model):
            blk._forward_hooks.clear()


def test_spliced_loss_check_accepts_the_reference_and_cleans_up_a_leaked_hook(smollm):
    """The reference passes (once: each call runs a dozen forward passes of the real model); a learner's hook left
    behind after a failed forward pass is removed by the check, so the notebook's model runs clean again."""
    from types import SimpleNamespace

    from saelab.lm.sites import find_blocks as blocks
    from saelab.teach.exercises import evaluation as EV
    from saelab.teach.exercises.harvest import _hooks_left

    ids = torch.randint(0, 1000, (4, 24), generator=torch.Generator().manual_seed(0))
    fixed = SimpleNamespace(reconstruct=_fixed_rec)
    E.check_spliced_loss(E.solutions.spliced_loss, smollm, fixed, ids, 8)
    assert EV._splice(smollm.model, ids, 8, fixed.reconstruct, 0.0) != pytest.approx(EV._clean_loss(smollm.model, ids),
                                                                                       rel=1e-2)
    before = _hooks_left(smollm.model)
    try:
        with pytest.raises(AssertionError, match="when the forward pass fails"):
            E.check_spliced_loss(_splice_without_finally, smollm, fixed, ids, 8)
        assert _hooks_left(smollm.model) == before
    finally:
        for blk in blocks(smollm.model):
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


def _probe_adam_unstandardised(x, y):
    """Adam (lr 0.1, 500 steps) on the raw feature: fine near 0, stalls on a feature far from 0."""
    a = torch.zeros((), requires_grad=True)
    b = torch.zeros((), requires_grad=True)
    opt = torch.optim.Adam([a, b], lr=0.1)
    for _ in range(500):
        opt.zero_grad()
        torch.nn.functional.binary_cross_entropy_with_logits(a * x.float() + b, y.float()).backward()
        opt.step()
    with torch.no_grad():
        return float(torch.nn.functional.binary_cross_entropy_with_logits(a * x.float() + b, y.float()))


def _probe_unfitted(x, y):
    prior = float(y.mean())
    return -(prior * math.log(prior) + (1 - prior) * math.log(1 - prior)) + 0 * float(x.sum())


def test_a_learner_style_probe_passes():
    E.check_probe_loss_1d(_probe())


@pytest.mark.parametrize("wrong,message", [(_probe(bias=False), "no bias"), (_probe(log=torch.log2), "bits"),
                                           (_probe(accuracy=True), "accuracy"), (_probe_unfitted, "fitted"),
                                           (_probe_adam_unstandardised, "standardise x")])
def test_probe_loss_1d_check(wrong, message):
    E.check_probe_loss_1d(E.solutions.probe_loss_1d)
    _rejects(E.check_probe_loss_1d, wrong, message)


def _sparsity(centre, square=True, denom="TV", in_place=False):
    def fn(d):
        e = d if in_place else d.double()
        if centre == "median":
            e = e.sub_(e.median(-1, keepdim=True).values) if in_place else e - e.median(-1, keepdim=True).values
        elif centre == "mean":
            e = e - e.mean(-1, keepdim=True)
        elif centre == "global":
            e = e - e.median()
        elif centre == "positions":
            e = e - e.median(0, keepdim=True).values
        e = e.double().flatten()
        r = e.abs().sum() / e.norm()
        r = r ** 2 if square else r
        return float(r / {"TV": e.numel(), "V": d.shape[1], "16V": 16 * d.shape[1], None: 1}[denom])
    return fn


@pytest.mark.parametrize("wrong,message", [(_sparsity(None), "median"), (_sparsity("mean"), "MEAN"),
                                           (_sparsity("median", square=False), "square the ratio"),
                                           (_sparsity("median", denom=None), "number of entries"),
                                           (_sparsity("median", denom="V"), "not V alone"),
                                           (_sparsity("global"), "ONE median of the whole"),
                                           (_sparsity("positions"), "over the positions"),
                                           (_sparsity("median", denom="16V"), "not the paper's 16"),
                                           (_sparsity("median", in_place=True), "changed its input in place")])
def test_effect_sparsity_check(wrong, message):
    E.check_effect_sparsity(E.solutions.effect_sparsity)
    _rejects(E.check_effect_sparsity, wrong, message)


# ---- 04 progressive recovery ---------------------------------------------------------------------------------
def _curve(relu=True, bias=True, baseline="mean vector", per_token=False, turn="lowest", order="ks", top="max"):
    """recovery_curve with one mistake switched on."""
    def fn(pre, x, W, b, ks):
        ks = sorted(ks) if order == "sorted" else list(ks)
        largest = max(ks) if top == "max" else ks[-1]
        curve = []
        for k in ks:
            top_k = min(k, largest)
            z = E.solutions.topk_activation(pre, top_k) if relu else _topk_no_relu(pre, top_k)
            err = (z @ W + (b if bias else 0) - x).pow(2).sum(-1)
            base = {"mean vector": (x - x.mean(0)).pow(2).sum(-1), "none": torch.ones(len(x)),
                    "norm": x.pow(2).sum(-1), "scalar mean": (x - x.mean()).pow(2).sum(-1)}[baseline]
            curve.append(float((err / base).mean()) if per_token else float(err.mean() / base.mean()))
        i = int(np.argmin(curve))
        rises = [j + 1 for j in range(len(ks) - 1) if curve[j + 1] > curve[j]]
        last_low = max(j for j, v in enumerate(curve) if v <= min(curve))
        return curve, {"lowest": ks[i], "index": i, "after": ks[min(i + 1, len(ks) - 1)],
                       "highest": ks[int(np.argmax(curve))], "value": curve[i],
                       "first rise or first": ks[rises[0] - 1] if rises else ks[0], "last of equal": ks[last_low],
                       "array": np.array(ks[i])}[turn]
    return fn


@pytest.mark.parametrize("wrong,message", [
    (_curve(relu=False), "THEN applies the ReLU"), (_curve(bias=False), "decoder bias"),
    (_curve(baseline="none"), "plain MSE"), (_curve(baseline="norm"), r"\|\|x\|\|\^2"),
    (_curve(baseline="scalar mean"), "mean VECTOR"), (_curve(per_token=True), "per-token ratios"),
    (_curve(turn="index"), "POSITION"), (_curve(turn="after"), "AFTER the curve turned"),
    (_curve(turn="highest"), "HIGHEST"), (_curve(turn="value"), "not a normalized MSE"),
    (_curve(turn="first rise or first"), "keeps falling"),
    (_curve(order="sorted"), r"order of sorted\(ks\)"), (_curve(top="last"), r"one topk at max\(ks\)"),
    (_curve(turn="last of equal"), "FIRST of the lowest"),
])
def test_recovery_curve_check(wrong, message):
    E.check_recovery_curve(E.solutions.recovery_curve)
    _rejects(E.check_recovery_curve, wrong, message)


def test_recovery_curve_check_accepts_a_numpy_turn_and_per_k_topk():
    E.check_recovery_curve(_curve(turn="array"))


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
    (lambda p, t: float(torch.quantile(p.flatten().double(), 1 - int(t) / p.shape[1])), "rounded down"),
    (lambda p, t: float(torch.quantile(p.flatten().double(), 1 - t / 4096)), "not another SAE's"),
    (lambda p, t: float(torch.quantile(p[:, :200].flatten().double(), 1 - t / 256)), "all n latents of all B rows"),
])
def test_threshold_for_l0_check(wrong, message):
    E.check_threshold_for_l0(E.solutions.threshold_for_l0)
    _rejects(E.check_threshold_for_l0, wrong, message)


@pytest.mark.parametrize("variant", [
    lambda p, t: float(p.flatten().topk(int(round(len(p) * t))).values[-1]),  # the B*L0-th value: one fewer above it
    lambda p, t: torch.quantile(p.flatten(), 1 - t / p.shape[1], interpolation="higher"),  # a 0-d tensor
    lambda p, t: float(torch.quantile(p.flatten(), 1 - t / p.shape[1], interpolation="lower")),
])
def test_threshold_for_l0_check_accepts_other_quantile_conventions(variant):
    E.check_threshold_for_l0(variant)


# ---- 05 exploring latents ------------------------------------------------------------------------------------
def _dash(top="distinct", intervals="rank", dedup=True, order="lowest first", pairs="c,t", sample="first",
          n_fixed=None, per_fixed=None):
    """dashboard_examples with one mistake switched on; intervals take the first examples of each group unless
    `sample` is "random" (seeded, as the reference) or "global" (the global random state, ignoring the seed)."""
    def fn(a, m, n_intervals, per_interval, seed=0):
        n_intervals, per_interval = n_fixed or n_intervals, per_fixed or per_interval
        gen = torch.Generator().manual_seed(seed)
        N, T = a.shape
        split = (lambda i: (i // N, i % N)) if pairs == "by N" else (lambda i: (i // T, i % T))
        flat = a.flatten()
        if top == "any":
            tops = [split(int(i)) for i in flat.topk(m).indices]
        elif top == "first position":  # each context at its first firing position, not its strongest
            first = (a > 0).float().argmax(1)
            v = a[torch.arange(N), first]
            tops = [(int(c), int(first[c])) for c in v.argsort(descending=True)[:m] if v[c] > 0]
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
        elif intervals == "chunk":  # fewer than n_intervals chunks when the count does not divide
            groups = torch.chunk(ranked, n_intervals)
        else:
            groups = torch.tensor_split(ranked, n_intervals)
        out = []
        for g in groups:
            picked, seen = [], set()
            if sample != "first":
                g = g[torch.randperm(len(g), generator=gen if sample == "random" else None)]
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
    (_dash(top="first position"), "not context 1's strongest position"),
    (_dash(), "seeds 0, 1, 2 and 3 gave the same"), (_dash(sample="global"), "two calls with seed = 0"),
    (_dash(sample="random", n_fixed=3), "return n_intervals = 1 lists"),
    (_dash(sample="random", per_fixed=3), r"per_interval = 1:.* = 1 examples; you returned 3"),
    (_dash(sample="random", intervals="chunk"), "return n_intervals = 4 lists of examples, got 3"),
    (lambda a, m, n_intervals, per_interval: _dash(sample="random")(a, m, n_intervals, per_interval),
     "takes no `seed`"),
])
def test_dashboard_examples_check(wrong, message):
    E.check_dashboard_examples(E.solutions.dashboard_examples)
    _rejects(E.check_dashboard_examples, wrong, message)


def test_dashboard_examples_check_accepts_another_random_sample():
    """Any seeded random sample passes: the check tests properties, not the reference's draw."""
    E.check_dashboard_examples(_dash(sample="random"))


def _concept(pick="f1", geq=False, test_geq=False, choose_on="build", score_on="test", swap=False, score="f1",
             fires_by="acts"):
    """find_concept_latent with one mistake switched on."""
    def scores(idx, acts, concept, n, how, ge):
        on = (acts >= 0 if ge else acts > 0) & ((idx > 0) if fires_by == "idx" else True)  # "idx": skips latent 0
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
        fires = ((idx == latent) & ((acts >= 0) if ge else (acts > 0)) & ((idx > 0) if fires_by == "idx" else True)
                 ).any(-1)
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
    (_concept(fires_by="idx"), r"not by idx > 0"),
])
def test_find_concept_latent_check(wrong, message):
    E.check_find_concept_latent(E.solutions.find_concept_latent)
    _rejects(E.check_find_concept_latent, wrong, message)


def test_find_concept_latent_cases_state_the_reference_answers():
    """The check's hand-counted answers are what the reference computes."""
    from saelab.teach.exercises import explore

    for _, build, test, n, want in explore._concept_cases():
        got = explore.find_concept_latent(build, test, n)
        assert got[0] == want[0] and got[1:] == pytest.approx(want[1:], abs=1e-6)


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


def _log_a(n, loss):
    a, b, c = E.solutions.fit_power_law(n, loss)
    return math.log(a), b, c


def _a_of_relative_n(n, loss):
    """Fits n / n[0] (to keep the numbers small) and forgets to convert a back."""
    n = np.asarray(n, float)
    return E.solutions.fit_power_law(n / n.min(), loss)


def _a_from_the_line(n, loss):
    """b and c right; a from a straight line through log L (one output of three wrong)."""
    _, b, c = E.solutions.fit_power_law(n, loss)
    return _straight_line(n, loss)[0], b, c


def _without_the_largest_n(n, loss):
    """Leaves out the largest n, as if the check's points were the notebook's grid with its held-out n."""
    return E.solutions.fit_power_law(np.asarray(n)[:-1], np.asarray(loss)[:-1])


def _notebook_fit(n, loss):
    """The notebook's folded solution (fits log a with bounds; a learner's way, not the library's)."""
    from scipy.optimize import curve_fit

    n, loss = np.asarray(n, float), np.asarray(loss, float)
    c_max = 0.999 * loss.min()
    (log_a, b, c), _ = curve_fit(lambda n, log_a, b, c: np.log(np.exp(log_a) * n ** -b + c), n, np.log(loss),
                                 p0=(0.0, 0.5, 0.5 * c_max), bounds=([-20, 0, 0], [20, 5, c_max]))
    return float(np.exp(log_a)), float(b), float(c)


def test_fit_power_law_check_accepts_the_notebook_solution_and_an_array():
    assert E.check_fit_power_law(_notebook_fit) is _notebook_fit
    E.check_fit_power_law(lambda n, loss: np.array(_notebook_fit(n, loss)))  # curve_fit's popt, returned as is


@pytest.mark.parametrize("wrong,message", [(_straight_line, "no irreducible term"), (_negated, "b > 0"),
                                           (_linear_space, "fit log L"), (_log_a, "is log a"),
                                           (_a_of_relative_n, r"coefficient for n / 64"),
                                           (_a_from_the_line, "coefficient a differs"),
                                           (_without_the_largest_n, "differs")])
def test_fit_power_law_check(wrong, message):
    E.check_fit_power_law(E.solutions.fit_power_law)
    _rejects(E.check_fit_power_law, wrong, message)


def _envelope_by_tokens(c):
    return c.sort_values("tokens").assign(best=lambda d: d.nmse.cummin()).query("nmse == best")[
        ["flops", "nmse", "n"]].sort_values("flops")


def _envelope_rows(c, order=("flops", "nmse"), n_from=None, against="best"):
    """A running minimum over `order`, with one mistake switched on: n taken from the unsorted frame, each
    evaluation compared with the previous one only, or the rows taken in the order given."""
    import pandas as pd

    d = c.sort_values(list(order), kind="stable") if order else c
    rows, best, prev = [], float("inf"), float("inf")
    for i, r in enumerate(d.itertuples()):
        if r.nmse < (best if against == "best" else prev):
            rows.append({"flops": r.flops, "nmse": r.nmse, "n": c.n.iloc[i] if n_from == "unsorted" else r.n})
        best, prev = min(best, r.nmse), r.nmse
    return pd.DataFrame(rows, columns=["flops", "nmse", "n"])


@pytest.mark.parametrize("wrong,message", [
    (_envelope_by_tokens, "ordered the evaluations by tokens"),
    (lambda c: c.loc[c.groupby("n").tokens.idxmax()][["flops", "nmse", "n"]].sort_values("flops"), "final evaluation"),
    (lambda c: c.sort_values("flops")[["flops", "nmse", "n"]], "running minimum"),
    (lambda c: c.sort_values("flops")[["flops", "nmse"]], "no 'n'"),
    (lambda c: c.iloc[:0][["flops", "nmse", "n"]], "empty"),
    (lambda c: _envelope_rows(c, n_from="unsorted"), "its n column is not"),
    (lambda c: _envelope_rows(c, against="previous"), "the one just before it"),
    (lambda c: _envelope_rows(c, order=()), "order the rows come"),
    (lambda c: _envelope_rows(c, order=("flops",)), "same compute"),
    (lambda c: _envelope_rows(c).sort_values("nmse"), "order of compute"),
])
def test_compute_envelope_check(wrong, message):
    from saelab.studies.scaling_laws import compute_envelope
    from saelab.teach.exercises import scaling

    E.check_compute_envelope(E.solutions.compute_envelope)
    _rejects(E.check_compute_envelope, wrong, message)
    curves = scaling._toy_curves()  # the check's curves put every n on the envelope, in order of n
    env = compute_envelope(curves, skip_frac=0.0)
    assert list(dict.fromkeys(env.n)) == [256, 1024, 4096]


def _folded_solution(path, number):
    """Exercise `number`'s folded Solution pasted into its stub (signature, docstring and all), as a learner would."""
    import pandas as pd
    from scipy.optimize import curve_fit

    from saelab.sae.losses import normalized_mse

    text = path.read_text()
    stub = re.search(r"^def (\w+)\((.*?)\)( -> [^:]+)?:\n(?:    .*\n)*?    todo\(\"" + re.escape(number) + r"\"\)",
                     text, re.M)
    assert stub, f"no stub for exercise {number}"
    after = text[stub.end():]
    code = re.search(r"```python\n(.*?)```", after[after.find("<summary>Solution</summary>"):], re.S).group(1)
    body = "\n".join("    " + line[2:] if line.startswith("# ") else "" for line in code.splitlines())
    namespace = {"torch": torch, "np": np, "pd": pd, "curve_fit": curve_fit, "normalized_mse": normalized_mse,
                 "__name__": "notebook"}
    exec(f"def {stub.group(1)}({stub.group(2)}):\n{body}\n", namespace)
    return namespace[stub.group(1)]


@pytest.mark.parametrize("notebook,number,check", [
    ("03_evaluate", "3.2", "check_probe_loss_1d"), ("03_evaluate", "3.3", "check_effect_sparsity"),
    ("04_progressive_recovery", "4.1", "check_recovery_curve"),
    ("04_progressive_recovery", "4.2", "check_threshold_for_l0"),
    ("05_explore_latents", "5.1", "check_dashboard_examples"),
    ("05_explore_latents", "5.2", "check_find_concept_latent"),
    ("06_scaling_laws", "6.1", "check_fit_power_law"), ("06_scaling_laws", "6.2", "check_compute_envelope")])
def test_notebooks_03_to_06_folded_solutions_pass_their_checks(notebook, number, check):
    """What a learner pastes from a folded Solution passes the (harder) check, not only the library's reference."""
    fn = _folded_solution(NOTEBOOKS / f"{notebook}.py", number)
    assert getattr(E, check)(fn) is fn


def test_notebook_03_folded_splice_solution_passes_its_check(smollm):
    from types import SimpleNamespace

    fn = _folded_solution(NOTEBOOKS / "03_evaluate.py", "3.1")
    ids = torch.randint(0, 1000, (4, 24), generator=torch.Generator().manual_seed(0))
    assert E.check_spliced_loss(fn, smollm, SimpleNamespace(reconstruct=_fixed_rec), ids, 8) is fn


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


def _steer_hook(change, layer=None):
    """A learner's hook on block `layer` (default sae.cfg.layer) that adds `change(sae, x, latent, alpha)` [B, T, D]
    (positions >= 1 and the scale up to the learner)."""
    def register(model, sae, latent, alpha):
        def hook(module, inputs, output):
            x = output[0] if isinstance(output, tuple) else output
            x = x + change(sae, x, latent, alpha)
            return (x, *output[1:]) if isinstance(output, tuple) else x

        return find_blocks(model)[sae.cfg.layer if layer is None else layer].register_forward_hook(hook)
    return register


def _delta(**flags):
    from saelab.teach.exercises import steering as ST

    return lambda sae, x, latent, alpha: ST._steer_delta(sae, x, latent, alpha, **flags)


def _last_position_only(sae, x, latent, alpha):
    delta = _delta()(sae, x, latent, alpha)
    delta[:, :-1] = 0
    return delta


def _first_sequence_only(sae, x, latent, alpha):  # written for a batch of one: x[0] is "the" sequence
    delta = torch.zeros_like(x)
    delta[0] = _delta()(sae, x[:1], latent, alpha)[0]
    return delta


def _where_selected(sae, x, latent, alpha):  # steers only where the SAE selects the latent
    rows = x.reshape(-1, x.shape[-1])
    enc = sae.encode(rows)
    selected = (enc.top_idx_BK == latent).any(-1).reshape(x.shape[:-1])
    return _delta()(sae, x, latent, alpha) * selected[..., None]


def _steer_wrong_handle(model, sae, latent, alpha):  # the steering hook, and the handle of a second, idle one
    block = find_blocks(model)[sae.cfg.layer]
    _steer_variant()(model, sae, latent, alpha)
    return block.register_forward_hook(lambda *args: None)


def _steer_none_at_zero(model, sae, latent, alpha):
    return _steer_variant()(model, sae, latent, alpha) if alpha else None


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
    (_steer_hook(_last_position_only), "some positions >= 1 were not steered"),
    # a parameter ignored: alpha, its sign, the latent, the layer, the batch; the handle; alpha = 0
    (_steer_hook(lambda sae, x, latent, alpha: _delta()(sae, x, latent, 1.0)),
     r"alpha 1.5.*you pushed by 1 decoder rows \(mapped back\), not by alpha = 1.5"),
    (_steer_hook(lambda sae, x, latent, alpha: _delta()(sae, x, latent, abs(alpha))), "alpha -2.5.*wrong sign"),
    (_steer_hook(lambda sae, x, latent, alpha: _delta()(sae, x, 5, alpha)),
     "latent 63.*you steered latent 5, not latent 63"),
    (_steer_hook(_delta(), layer=2), r"sae.cfg.layer 3.*you hooked block 2: the SAE reads the output of block "
                                     r"sae.cfg.layer = 3"),
    (_steer_hook(_first_sequence_only), "a batch of 2 sequences: sequence 1 of the batch was not steered"),
    (_steer_hook(_where_selected), "some positions >= 1 were not steered: .*whether or not the SAE selects"),
    (_steer_wrong_handle, r"after handle.remove\(\) a hook of yours is still registered"),
    (_steer_none_at_zero, r"alpha 0, .*no hook is registered.*\(alpha 0 too"),
    (_steer_variant(b_pre=True, shift=True), "decode of the edit alone"),
    (_steer_hook(lambda sae, x, latent, alpha: _delta(b_pre=True)(sae, x, latent, alpha) if not alpha
                 else _delta()(sae, x, latent, alpha)), "alpha 0, .*you added b_pre"),
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


def test_steering_check_cases_vary_every_argument(tiny_lm):
    from saelab.teach.exercises import steering as ST

    cases = ST._steer_cases(tiny_lm)
    assert {c.alpha for c in cases} >= {0.0} and min(c.alpha for c in cases) < 0 < max(c.alpha for c in cases)
    assert len({c.layer for c in cases}) >= 3 and len({c.latent for c in cases}) == len(cases)
    assert {c.batch for c in cases} == {1, 2} and 0 in {c.layer for c in cases}


def _ablate_variant(**flags):

    return lambda sae, x, latents: AB._ablate_rows(sae, x, latents, **flags)


def _ablate_by_hand_per_token(sae, x, latents):
    """7.1's route copied: a * s * W_dec[j] with s the centred norm, right for a per-token unit-norm SAE only."""
    return _ablate_variant(scale="centred")(sae, x, latents)


def _ablate_in_place(sae, x, latents):
    x -= x - E.solutions.ablate_rows(sae, x.clone(), latents)  # the right rows, written into the caller's tensor
    return x


def _ablate_stacked_masks(sae, x, latents):  # right, but torch.stack of no masks fails on an empty set
    enc = sae.encode(x)
    drop = torch.stack([enc.top_idx_BK == j for j in latents]).any(0)
    kept = enc.top_acts_BK.masked_fill(drop, 0.0)
    return x + sae.decode(kept, enc.top_idx_BK, x) - sae.decode(enc.top_acts_BK, enc.top_idx_BK, x)


def _ablate_first_latent(sae, x, latents):  # the exercise's old signature, one latent
    return E.solutions.ablate_rows(sae, x, latents[:1])


@pytest.mark.parametrize("wrong,message", [
    (_ablate_variant(keep_error=False), "drops the error term"),
    (_ablate_variant(sign=1.0), "wrong sign"),
    (_ablate_variant(acts="pre"), "pre-activation"),
    (_ablate_variant(acts="max"), "the same amount at every row"),
    (_ablate_variant(acts="one"), "not times its activation a"),
    (_ablate_variant(scale="none"), "map the change back to the rows' space"),
    (_ablate_variant(scale="raw"), r"scaled by \|\|x\|\|"),
    (_ablate_variant(shift=True), "the row's mean"),
    (_ablate_variant(b_pre=True), "subtracted b_pre"),
    (_ablate_variant(row="enc"), "ENCODER's row"),
    (lambda sae, x, latents: x.clone(), "unchanged"),
    # a parameter ignored (all but the first latent; the normalisation), the mechanism skipped, the input changed
    (_ablate_first_latent, r"latents = \[6, 17, 3\]: you ablated only latent 6 of \[6, 17, 3\]"),
    (_ablate_by_hand_per_token, "normalize = 'none'.*centred norm, 7.1's scale"),
    (_ablate_variant(reselect=True), "another latent took the ablated one's place"),
    (_ablate_in_place, "changed x_RD in place"),
    (_ablate_stacked_masks, r"latents = \[\]: your function raised RuntimeError"),
    (lambda sae, x, latents: E.solutions.ablate_rows(sae, x, latents)[:, :-1], r"shape \(40, 16\)"),
    (lambda sae, x, latents: _ablate_variant()(sae, x, latents) + 0.01 * (x.norm(dim=-1, keepdim=True) > 1e9),
     None),
])
def test_ablate_rows_check(wrong, message):
    E.check_ablate_rows(E.solutions.ablate_rows)
    if message is None:  # a right answer in other words passes too
        E.check_ablate_rows(wrong)
    else:
        _rejects(E.check_ablate_rows, wrong, message)


def test_ablate_rows_by_hand_is_the_reference_on_every_normalisation():

    for what, sae, x, latents in AB._ablate_cases():
        torch.testing.assert_close(AB._ablate_rows(sae, x, latents), AB.ablate_rows(sae, x, latents),
                                   atol=1e-4, rtol=1e-4, msg=what)


def _attribution_variant(variant):

    return lambda model, sae, ids, metric: AT._attribution_variant(model, sae, ids, metric, variant)


def _attribution_leaves_hook(model, sae, ids, metric):
    find_blocks(model)[sae.cfg.layer].register_forward_hook(lambda *a: None)
    return E.solutions.attribution_estimates(model, sae, ids, metric)


def _attribution_at_block(layer):
    """The reference with the SAE placed at a fixed block whatever sae.cfg.layer says."""
    def fn(model, sae, ids, metric):
        from copy import deepcopy

        moved = deepcopy(sae)
        moved.cfg.layer = layer
        return E.solutions.attribution_estimates(model, moved, ids, metric)
    return fn


def _attribution_own_metric(model, sae, ids, metric):  # the metric argument ignored: the last token's log p
    def last_token(logits):
        return torch.log_softmax(logits[0, -2], -1)[int(ids[0, -1])]
    return E.solutions.attribution_estimates(model, sae, ids, last_token)


@pytest.mark.parametrize("wrong,message", [
    (_attribution_variant("sign"), "wrong sign"),
    (_attribution_variant("no_error"), "reconstruction alone: keep the error term"),
    (_attribution_variant("position0"), "position 0 too"),
    (_attribution_variant("sums"), "positions where the latent is not active"),
    (_attribution_variant("pre"), "pre-activations"),
    (_attribution_variant("grad"), "gradient alone"),
    (_attribution_variant("grad+"), "gradient alone"),
    (_attribution_variant("no_scale"), "misses the scale s"),
    (lambda model, sae, ids, metric: torch.zeros(sae.cfg.n_latents), "no gradient reached the activations"),
    (lambda model, sae, ids, metric: torch.zeros(sae.cfg.n_latents + 1), "one estimate per latent"),
    (_attribution_leaves_hook, "still registered"),
    # the batch: position 0 of every sequence; a parameter ignored (the layer)
    (_attribution_variant("flat"), "a batch of two sequences.*position 0 of EVERY sequence"),
    (_attribution_at_block(2), r"sae.cfg.layer 1, .*latent \d+'s estimate is"),
    (_attribution_own_metric, r"metric = a logit difference .*latent \d+'s estimate is"),
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
    stub = re.search(r"^def (\w+)\((.*?)\):\n(?:    (?:#|\"\"\").*\n)*    todo\(\"" + re.escape(number) + r"\"\)", text,
                     re.M)
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
def _sae_variant(encoder="transpose", normalize=True, centre=True, sub_pre=True, add_pre=True, clamp=True,
                 draw="seed", use_k=True, b_enc="zeros", detach=False):
    """MyTopKSAE with one mistake switched on."""
    B = E.build

    class Variant(B.MyTopKSAE):
        def __init__(self, d, n, k, seed=0):
            super().__init__(d, n, k, seed)
            g = torch.Generator().manual_seed(seed + 99)
            with torch.no_grad():
                if encoder == "random":
                    self.W_enc.copy_(torch.nn.functional.normalize(torch.randn(n, d, generator=g), dim=1))
                if draw != "seed":  # torch's global state, or a fixed seed whatever the argument
                    W = torch.randn(n, d) if draw == "global" else torch.randn(n, d, generator=torch.Generator())
                    self.W_dec.copy_(torch.nn.functional.normalize(W, dim=1))
                    self.W_enc.copy_(self.W_dec)
                if b_enc == "random":
                    self.b_enc.copy_(0.1 * torch.randn(n, generator=g))
            if b_enc == "tensor":  # not registered as a parameter
                del self.b_enc
                self.b_enc = torch.zeros(n, requires_grad=True)

        def forward(self, x, k=None):
            x_n = x
            if normalize:
                x_n = x - x.mean(-1, keepdim=True) if centre else x
                norm = x_n.norm(dim=-1, keepdim=True)
                x_n = x_n / (norm.clamp_min(1e-8) if clamp else norm)
            pre = ((x_n - self.b_pre) if sub_pre else x_n) @ self.W_enc.T + self.b_enc
            if detach:
                pre = pre.detach()
            z = E.solutions.topk_activation(pre, (k or self.k) if use_k else self.k)
            return z @ self.W_dec + (self.b_pre if add_pre else 0), x_n, pre, z
    return Variant


@pytest.mark.parametrize("wrong,message", [(_sae_variant(encoder="random"), "transpose"),
                                           (_sae_variant(normalize=False), "normalise each token"),
                                           (_sae_variant(centre=False), "not centred"),
                                           (_sae_variant(sub_pre=False), "subtract b_pre"),
                                           (_sae_variant(add_pre=False), "add b_pre back"),
                                           (_sae_variant(clamp=False), "clamp the norm"),
                                           (_sae_variant(draw="global"), "global random state"),
                                           (_sae_variant(draw="fixed"), "use the seed argument"),
                                           (_sae_variant(use_k=False), "use the k argument"),
                                           (_sae_variant(b_enc="random"), "b_enc should start at zero"),
                                           (_sae_variant(b_enc="tensor"), "b_enc is not an nn.Parameter"),
                                           (_sae_variant(detach=True), "no gradient reaches W_enc")])
def test_my_sae_check(wrong, message):
    E.check_my_sae(E.solutions.MyTopKSAE)
    _rejects(E.check_my_sae, wrong, message)


def _grad_removed(W):
    W.grad.zero_()


def _grad_dim0(W):
    W.grad -= (W.grad * W.data).sum(0, keepdim=True) * W.data


def _renorm_columns(W):
    W.data /= W.data.norm(dim=0, keepdim=True)


def _renorm_global(W):
    W.data /= W.data.norm()


def _project_the_weights(W):
    W.data -= (W.grad * W.data).sum(-1, keepdim=True) * W.data  # the weights instead of their gradient


def _project_unit_rows_only(W):
    """Skips rows past the first 8 (a loop over a fixed range instead of every row)."""
    g = W.grad[:8]
    g -= (g * W.data[:8]).sum(-1, keepdim=True) * W.data[:8]


@pytest.mark.parametrize("project,renorm,message", [
    (_grad_removed, E.solutions.renormalize_decoder_, "whole gradient is gone"),
    (_grad_dim0, E.solutions.renormalize_decoder_, "summed over rows"),
    (lambda W: None, E.solutions.renormalize_decoder_, "gradient is unchanged"),
    (E.solutions.constrain_decoder_grad_, _renorm_columns, "ROW by its norm"),
    (E.solutions.constrain_decoder_grad_, lambda W: None, "every row must have norm 1"),  # the decoder drifts
    (E.solutions.constrain_decoder_grad_, _renorm_global, "every row must have norm 1"),
    (_project_the_weights, E.solutions.renormalize_decoder_, "changed W_dec itself"),
    (_project_unit_rows_only, E.solutions.renormalize_decoder_, "the projected gradient"),
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
    (E.solutions.train_my_sae, _sae_variant(sub_pre=False), "your SAE class .*subtract b_pre"),
])
def test_training_check_rejects_wrong_assemblies_by_name(toy_x, loop, cls, message):
    with pytest.raises(AssertionError, match=message):
        E.check_training(loop, cls, toy_x, steps=150, multi_topk_steps=150)


def _loop(mistake):
    """The reference training loop with one mistake switched on (all of them caught on the dead-latent case)."""
    from saelab.teach.exercises.build import constrain_decoder_grad_, normalize_tokens, renormalize_decoder_

    def fn(sae, x_TD, steps, batch, lr, k_aux, dead_steps, aux_coef=1 / 32, multi_topk=False, seed=0):
        g = torch.Generator().manual_seed(0 if mistake == "seed ignored" else seed)
        with torch.no_grad():
            sae.b_pre.copy_(x_TD[:8192].mean(0) if mistake == "b_pre from the raw samples" else
                            normalize_tokens(x_TD[:8192]).mean(0))
        opt = torch.optim.Adam(sae.parameters(), lr=2e-3 if mistake == "lr ignored" else lr, betas=(0.9, 0.999),
                               eps=6.25e-10)
        since = torch.zeros(sae.W_dec.shape[0], dtype=torch.long)
        history = []
        for _ in range(steps):
            rows = 512 if mistake == "batch ignored" else batch
            pick = torch.randint(len(x_TD), (rows,)) if mistake == "global rng" else \
                torch.randint(len(x_TD), (rows,), generator=g)
            recon, x_n, pre, z = sae(x_TD[pick])
            loss = E.solutions.normalized_mse(recon, x_n)
            if multi_topk:
                four_k = E.solutions.normalized_mse(sae(x_TD[pick], k=4 * sae.k)[0], x_n)
                loss = loss + four_k * (1.0 if mistake == "L(4k) unweighted" else 1 / 8)
            since += 1
            if mistake != "count never reset":
                since[(z > 0).any(0)] = 0
            dead = {"no tracking": ~(z > 0).any(0),  # "dead" = did not fire in this batch
                    "every latent dead": torch.ones_like(since, dtype=torch.bool)}.get(
                mistake, since > (50 if mistake == "dead_steps ignored" else dead_steps))
            ka = 32 if mistake == "k_aux ignored" else k_aux
            coef = 1 / 32 if mistake == "aux_coef ignored" else aux_coef
            total = loss
            if mistake != "no AuxK" and ka and dead.any():
                total = loss + coef * E.solutions.auxk_loss(x_n, recon, pre, dead, sae.W_dec, ka)
            opt.zero_grad()
            total.backward()
            constrain_decoder_grad_(sae.W_dec)
            opt.step()
            renormalize_decoder_(sae.W_dec)
            history.append(float(total.detach() if mistake == "total loss returned" else loss.detach()))
        return history[:-1] if mistake == "one loss short" else history
    return fn


@pytest.mark.parametrize("mistake,message", [
    ("no AuxK", "never received a gradient: add aux_coef \\* auxk_loss"),
    ("no tracking", "at step 1 latent .* without firing .* after only 1 step"),
    ("every latent dead", "at step 1 latent .* without firing"),
    ("count never reset", "received a gradient without firing .* Count, per latent"),
    ("dead_steps ignored", "reached them only from step 51: use the dead_steps argument"),
    ("k_aux ignored", "with k_aux=0, latent .* use the k_aux argument"),
    ("aux_coef ignored", "with aux_coef=0, latent .* aux_coef argument"),
    ("seed ignored", "use the seed argument"),
    ("global rng", "torch.Generator\\(\\).manual_seed\\(seed\\)"),
    ("total loss returned", "without the AuxK or Multi-TopK terms"),
    ("lr ignored", "use the lr argument"),
    ("batch ignored", "use the batch argument"),
    ("one loss short", "one training loss per step"),
    ("b_pre from the raw samples", "mean of the RAW samples"),
    ("L(4k) unweighted", "weighted 1/8"),
])
def test_training_check_rejects_loops_that_mishandle_dead_latents_or_ignore_an_argument(toy_x, mistake, message):
    """Each is caught on the dead-latent case, before the (minute-long) comparison with Trainer, except the Multi-TopK
    weight (its own run at the end)."""
    with pytest.raises(AssertionError, match=message):
        E.check_training(_loop(mistake), E.solutions.MyTopKSAE, toy_x, steps=150, multi_topk_steps=150)


def test_the_dead_latent_case_separates_auxk_from_no_auxk():
    """On DeadCase (96 of 128 latents start dead), saelab's Trainer and the reference loop revive most of them with
    AuxK and none without; the reference loop passes the case's step-by-step reading."""
    import tempfile
    from pathlib import Path

    from saelab.acts.cache import cache_from_tensor
    from saelab.teach.exercises.loop_watch import DeadCase, LoopWatch, check_dead_latent_handling, revived_share
    from saelab.training.trainer import TrainConfig, Trainer

    case = DeadCase()
    x, held = case.data()
    shares = {}
    for k_aux in (case.k_aux, 0):
        sae = E.solutions.MyTopKSAE(case.d, case.n, case.k)
        case.kill_(sae)
        watch = LoopWatch(sae)
        with watch.watching():
            history = E.solutions.train_my_sae(sae, x, steps=case.steps, batch=case.batch, lr=case.lr, k_aux=k_aux,
                                               dead_steps=case.dead_steps)
        if k_aux:
            check_dead_latent_handling(watch, history, case)
        with torch.no_grad():
            shares[("reference loop", k_aux)] = revived_share((sae(held)[3] > 0).any(0), case)
        with tempfile.TemporaryDirectory() as tmp:
            cfg = TrainConfig(n_latents=case.n, k=case.k, k_aux=k_aux, batch_size=case.batch, lr=case.lr,
                              epochs=case.steps * case.batch / len(x), warmup_frac=0.0, decay_frac=0.0,
                              bias_init="mean", dead_tokens=case.dead_steps * case.batch, eval_every=10**9,
                              checkpoint_every=0, progress=False)
            trainer = Trainer(cfg, cache_from_tensor(x, Path(tmp) / "cache", name="dead"), Path(tmp) / "run")
            case.kill_(trainer.sae)
            trainer.train()
            with torch.no_grad():
                out = trainer.sae.encode(held)
            fired = torch.zeros(case.n, dtype=torch.bool)
            fired[out.top_idx_BK[out.top_acts_BK > 0]] = True
            shares[("Trainer", k_aux)] = revived_share(fired, case)
    for who in ("reference loop", "Trainer"):
        assert shares[(who, case.k_aux)] > 0.6, shares  # measured 0.84 and 0.94
        assert shares[(who, 0)] == 0.0, shares


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
def _bt(per_row=False, total_k=False, negatives=False, scaled=False, fixed_k=None, detach=False):
    """batchtopk with one mistake switched on."""
    def fn(pre, k):
        k = fixed_k or k
        if per_row:
            return torch.where(pre >= pre.topk(k, dim=-1).values[:, -1:], pre, 0.0).clamp_min(0)
        cut = pre.flatten().topk(k if total_k else k * len(pre)).values[-1]
        keep = (pre >= cut) if negatives else (pre >= cut) & (pre > 0)
        return torch.where(keep, (pre.detach() if detach else pre) * (2.0 if scaled else 1.0), 0.0)
    return fn


def _bt_sorted_off_by_one(pre, k):  # right wherever the (B*k + 1)-th largest value exists
    cut = pre.flatten().sort(descending=True).values[k * len(pre)]
    return torch.where((pre > cut) & (pre > 0), pre, 0.0)


def _bt_numpy(pre, k):  # right values, rebuilt from numpy: no gradient
    a = pre.detach().numpy().copy()
    cut = np.sort(a.ravel())[::-1][k * len(a) - 1]
    return torch.from_numpy(np.where((a >= cut) & (a > 0), a, 0.0))


def _threshold(kind):
    def fn(codes):
        pos = [c[c > 0] for c in codes]
        if kind == "mean":
            return float(torch.stack([p.mean() for p in pos]).mean())
        if kind == "global min":
            return float(min(p.min() for p in pos))
        if kind == "with zeros":
            return float(torch.stack([c.min() for c in codes]).mean())
        if kind == "first":
            return float(pos[0].min())
        if kind == "last":
            return float(pos[-1].min())
        if kind == "pooled mean":
            return float(torch.cat(pos).mean())
        if kind == "weighted":
            return float(sum(len(c) * p.min() for c, p in zip(codes, pos)) / sum(len(c) for c in codes))
        if kind == "per token":
            return float(torch.cat([torch.stack([r[r > 0].min() for r in c if (r > 0).any()]) for c in codes]).mean())
        if kind == "median":
            return float(torch.stack([p.min() for p in pos]).median())
        return float(max(p.min() for p in pos))
    return fn


@pytest.mark.parametrize("select, threshold, message", [
    (_bt(per_row=True), E.solutions.inference_threshold, "that is TopK"),
    (_bt(total_k=True), E.solutions.inference_threshold, "you kept k values in all"),
    (_bt(scaled=True), E.solutions.inference_threshold, "no rescaling"),
    (_bt(negatives=True), E.solutions.inference_threshold, "fewer positive pre-activations than B.k: a kept value "
                                                           "is negative"),
    (E.solutions.batchtopk, _threshold("mean"), "averaged the kept activations"),
    (E.solutions.batchtopk, _threshold("global min"), "smallest over all batches"),
    (E.solutions.batchtopk, _threshold("with zeros"), "POSITIVE"),
    (E.solutions.batchtopk, _threshold("max"), "largest minimum"),
    # a parameter ignored (k; all batches but the first), edge cases (k = n), a detached result, a pooled statistic
    (_bt(fixed_k=4), E.solutions.inference_threshold, "k = 7: .* values kept; this batch keeps 168"),
    (_bt_sorted_off_by_one, E.solutions.inference_threshold, "k = n = 16: your function raised IndexError"),
    (_bt(detach=True), E.solutions.inference_threshold, "the codes carry no gradient"),
    (_bt_numpy, E.solutions.inference_threshold, "the codes carry no gradient"),
    (E.solutions.batchtopk, _threshold("first"), "the first batch only"),
    (E.solutions.batchtopk, _threshold("last"), "the last batch only"),
    (E.solutions.batchtopk, _threshold("pooled mean"), "averaged the kept activations"),
    (E.solutions.batchtopk, _threshold("weighted"), "weighted each batch's minimum"),
    (E.solutions.batchtopk, _threshold("median"), r"5 batches .*the threshold: your result differs"),
    (E.solutions.batchtopk, _threshold("per token"), "each TOKEN's smallest"),
])
def test_batchtopk_check(select, threshold, message):
    E.check_batchtopk(E.solutions.batchtopk, E.solutions.inference_threshold)
    with pytest.raises(AssertionError, match=message):
        E.check_batchtopk(select, threshold)


def test_batchtopk_check_rejects_negative_kept_values():
    # with few positive values in a batch, keeping the top B*k lets negatives in
    with pytest.raises(AssertionError, match="negative|positive"):
        E.check_batchtopk(lambda pre, k: _bt(negatives=True)(pre - 2.5, k), E.solutions.inference_threshold)


def test_batchtopk_cases_cover_the_edges():
    cases = A._batchtopk_cases()
    assert {k for _, _, k in cases} >= {1, 16, 40} and min(len(pre) for _, pre, _ in cases) == 1
    assert any(int((pre > 0).sum()) < k * len(pre) for _, pre, k in cases)  # fewer positives than B*k
    for _, pre, k in cases:  # no tie at the cut among positive values: the answer does not hang on topk's choice
        flat = pre.flatten().sort(descending=True).values
        n_keep = min(k * len(pre), int((flat > 0).sum()))
        assert n_keep == len(flat) or flat[n_keep - 1] > flat[n_keep] or float(flat[n_keep - 1]) <= 0


def _mat(bias=True, mean=False, groups=False, skip_last=False, normalise=True, detach=False, fixed_widths=False,
         detach_z=False, unbiased=False, detach_b=False, bias_last_only=False, uncentred=False):
    def fn(z, W, b, x, widths):
        b = b.detach() if detach_b else b
        if fixed_widths:  # the doubling layout of the first case, whatever `widths` says
            widths = [len(W) // 8, 3 * len(W) // 8, len(W)]
        z = z.detach() if detach_z else z
        if not normalise:
            base = 1.0
        elif unbiased:
            base = x.var(0).sum()
        elif uncentred:
            base = x.pow(2).sum(-1).mean()
        else:
            base = (x - x.mean(0)).pow(2).sum(-1).mean()
        lows = [0, *widths[:-1]] if groups else [0] * len(widths)
        terms = [(z[:, lo:m] @ W[lo:m] + (b if bias and (m == widths[-1] or not bias_last_only) else 0) - x)
                 .pow(2).sum(-1).mean() / base for lo, m in zip(lows, widths)]
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
    # a parameter ignored (the widths), a detached input, a biased base only a small batch shows
    (_mat(fixed_widths=True), r"widths \[24\] .*the loss: your result differs"),
    (_mat(detach_z=True), "no gradient reaches z_BN"),
    (_mat(detach_b=True), "no gradient reaches b_dec_D"),
    (_mat(bias_last_only=True), "not only the full dictionary"),
    (_mat(uncentred=True), "batch MEAN"),
    (_mat(unbiased=True), "B - 1"),
])
def test_matryoshka_loss_check(wrong, message):
    E.check_matryoshka_loss(E.solutions.matryoshka_loss)
    _rejects(E.check_matryoshka_loss, wrong, message)


def _jr(factor=True, sign=-1, one_sided=False, half=0.5, mean=False, grad=True, theta_mean=False, fixed_eps=None,
        pre_factor=False):
    def fn(pre, theta, eps, g):
        eps = fixed_eps or eps
        u = (pre - theta) / eps
        window = ((u >= 0) if one_sided else (u > -half)) & (u < half)
        t = theta.mean() if theta_mean else pre if pre_factor else theta
        per = sign * (t if factor else 1.0) / eps * window.float() * (g if grad else 1.0)
        return per.mean(0) if mean else per.sum(0)
    return fn


@pytest.mark.parametrize("wrong, message", [
    (_jr(factor=False), "Heaviside"),
    (_jr(sign=1), "sign"),
    (_jr(one_sided=True), "two sides"),
    (_jr(half=1.0), "eps/2 each side"),
    (_jr(mean=True), "do not average"),
    # a parameter ignored: grad_BN, each latent's own theta, eps
    (_jr(grad=False), "upstream gradient grad_BN"),
    (_jr(theta_mean=True), "its own threshold"),
    (_jr(fixed_eps=0.1), r"eps = 0.3: your gradient: your result differs"),
    (_jr(pre_factor=True), "the factor is theta, not the pre-activation"),
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


def _absorb(over="both", child_fires=True, cosine=True, one_to_one=False, axis=1, normalise=True, py_div=False,
            fixed_carries=False, zero_not_nan=False):
    """A learner's pair_absorption with one mistake switched on."""
    def fn(z, W, F, coeffs, parent, child, carries=0.1):
        carries = 0.1 if fixed_carries else carries
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
        if zero_not_nan and not bool(both.any()):
            return 0.0
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
    # a parameter ignored: carries, the pair
    (_absorb(fixed_carries=True), "carries = 0.5: use the `carries` argument"),
    (_absorb(zero_not_nan=True), "never together': the pair never fires together, .*return nan"),
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


def _notebook_08_solution_defs(number):
    """The functions a learner gets from exercise `number`'s folded Solution when it defines them itself."""
    text = (NOTEBOOKS / "08_after_the_paper.py").read_text()
    after = text[text.index(f'todo("{number}")'):]
    after = after[after.index("<summary>Hint</summary>"):]
    code = re.search(r"```python\n(.*?)```", after[after.index("<summary>Solution</summary>"):], re.S).group(1)
    namespace = {"torch": torch}
    exec("\n".join(line[2:] for line in code.splitlines()), namespace)
    return namespace


def test_notebook_08_solutions_pass_their_checks():
    """Each exercise's folded Solution, pasted into its stub, passes the hardened check."""
    defs = _notebook_08_solution_defs("8.1")
    E.check_batchtopk(defs["batchtopk"], defs["inference_threshold"])
    E.check_jumprelu_threshold_grad(_notebook_solution(NOTEBOOKS / "08_after_the_paper.py", "8.2"))
    E.check_matryoshka_loss(_notebook_solution(NOTEBOOKS / "08_after_the_paper.py", "8.3"))
    A.check_pair_absorption(_notebook_08_solution_defs("8.4")["pair_absorption"])
    E.check_transcoder_loss(_notebook_solution(NOTEBOOKS / "08_after_the_paper.py", "8.5"))


def _transcoder_wrong(kind):
    """8.5 written wrong one way (`kind`), otherwise right."""
    def loss(x, y, W_enc, b_enc, W_dec, b_dec, W_skip, k):
        pre = x @ W_enc.t() + b_enc
        top = pre.topk(k, dim=-1)
        z = torch.zeros_like(pre).scatter(-1, top.indices, top.values.relu())
        y_hat = z @ W_dec + b_dec + (0.0 if kind == "no_skip" else x @ W_skip.t())
        base = y - (0.0 if kind == "zero_mean" else y.mean(0))
        err, var = (y_hat - y).pow(2).sum(-1), base.pow(2).sum(-1)
        out = (err / var).mean() if kind == "per_row" else err.mean() / var.mean()
        return float(out) if kind == "float" else out
    return loss


@pytest.mark.parametrize("kind, message", [
    ("no_skip", "skip connection is missing"),
    ("zero_mean", "not zero"),
    ("per_row", "ratio of means"),
    ("float", "return a tensor"),
])
def test_transcoder_loss_check_names_each_mistake(kind, message):
    with pytest.raises(AssertionError, match=message):
        E.check_transcoder_loss(_transcoder_wrong(kind))


def test_the_optional_set_is_the_notebooks_optional_exercises():
    from saelab.teach.exercises.base import OPTIONAL
    from saelab.teach.syllabus import exercises, notebook_sources

    rated = {e.id for p in notebook_sources(NOTEBOOKS) for e in exercises(p) if e.importance == "optional"}
    assert OPTIONAL == rated


_OPTIONAL_CHECKS = {getattr(E, n).exercise: getattr(E, n) for n in E.__all__
                    if n.startswith("check_") and hasattr(getattr(E, n), "exercise")}


@pytest.mark.parametrize("number", sorted(_OPTIONAL_CHECKS))
def test_an_unwritten_optional_exercise_lets_the_notebook_go_on_and_an_essential_one_stops_it(number, request,
                                                                                            monkeypatch, capsys):
    """A learner who skips an optional exercise gets the reference solution back (and a note); an unwritten
    essential one still stops the notebook."""
    from saelab.teach.exercises.base import OPTIONAL, NotWrittenYet, todo

    monkeypatch.delenv("SAELAB_SOLUTIONS", raising=False)
    check = _OPTIONAL_CHECKS[number]
    stubs = [lambda *a, **k: todo(number)] * len(check.references)
    extra = {"7.1": ["tiny_lm"], "7.3": ["tiny_lm"], "1.1": ["tiny_lm", 2], "3.1": None, "2.6": None}.get(number, [])
    if extra is None:  # these two need a real LM or a long run; their stubs stop as every essential one does
        pytest.skip("covered by the notebook runs")
    args = [request.getfixturevalue(a) if a == "tiny_lm" else a for a in extra]
    if number not in OPTIONAL:
        with pytest.raises(NotWrittenYet):
            check(*stubs, *args)
        return
    got = check(*stubs, *args)
    refs = check.references
    assert (got if isinstance(got, tuple) else (got,)) == tuple(refs)
    assert "optional and not written yet" in capsys.readouterr().out
