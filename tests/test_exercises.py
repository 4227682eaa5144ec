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


@pytest.mark.parametrize("wrong,message", [(lambda a: float((a == 0).float().mean()), "zero ENTRIES"),
                                           (lambda a: float((a > 0).any(0).float().mean()), "alive"),
                                           (lambda a: float((a < 0).all(0).float().mean()), "no positive")])
def test_dead_fraction_check(wrong, message):
    E.check_dead_fraction(E.solutions.dead_fraction)
    _rejects(E.check_dead_fraction, wrong, message)


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
@pytest.mark.parametrize("wrong,message", [
    (lambda s, c, a: (s - c) / (a - c), "fraction LOST"),
    (lambda s, c, a: (s - a) / (a - c), "wrong sign"),
    (lambda s, c, a: c / s, "baseline"),
    (lambda s, c, a: s - c, "delta CE"),
])
def test_loss_recovered_check(wrong, message):
    E.check_loss_recovered(E.solutions.loss_recovered)
    _rejects(E.check_loss_recovered, wrong, message)


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
@pytest.mark.parametrize("wrong,message", [
    (lambda p, W, b, k: E.solutions.topk_activation(p, k) @ W, "decoder bias"),
    (lambda p, W, b, k: _topk_no_relu(p, k) @ W + b, "ReLU after TopK"),
    (lambda p, W, b, k: E.solutions.topk_reconstruct(p, W, b, k - 1), "11 latents"),
    (lambda p, W, b, k: p.relu() @ W + b, "only the top k"),
])
def test_topk_reconstruct_check(wrong, message):
    E.check_topk_reconstruct(E.solutions.topk_reconstruct)
    _rejects(E.check_topk_reconstruct, wrong, message)


@pytest.mark.parametrize("wrong,message", [
    (lambda p, t: float(torch.quantile(p.flatten(), t / p.shape[1])), "not the L0 / n one"),
    (lambda p, t: float(p.flatten().topk(int(t)).values[-1]), "PER ROW"),
    (lambda p, t: float(p.topk(int(t), dim=-1).values[:, -1].mean()), "AVERAGE over rows"),
])
def test_threshold_for_l0_check(wrong, message):
    E.check_threshold_for_l0(E.solutions.threshold_for_l0)
    _rejects(E.check_threshold_for_l0, wrong, message)


# ---- 05 exploring latents ------------------------------------------------------------------------------------
def _top_by_n(a, m):
    N = a.shape[0]
    return [(int(i) // N, int(i) % N) for i in a.flatten().topk(m).indices]


def _top_ascending(a, m):
    return list(reversed(E.solutions.top_activations(a, m)))


def _top_swapped(a, m):
    return [(p, c) for c, p in E.solutions.top_activations(a, m)]


@pytest.mark.parametrize("wrong,message", [(_top_by_n, "divide by T"), (_top_ascending, "strongest FIRST"),
                                           (_top_swapped, "swapped")])
def test_top_activations_check(wrong, message):
    E.check_top_activations(E.solutions.top_activations)
    _rejects(E.check_top_activations, wrong, message)


def _pr_swapped(a, p):
    prec, rec = E.solutions.precision_recall(a, p)
    return rec, prec


def _pr_geq(a, p):
    fires, pred = a >= 0, p.bool()
    both = float((fires & pred).sum())
    return both / max(1, int(pred.sum())), both / max(1, int(fires.sum()))


def _pr_accuracy(a, p):
    acc = float(((a > 0) == p.bool()).float().mean())
    return acc, acc


@pytest.mark.parametrize("wrong,message", [(_pr_swapped, "swapped"), (_pr_geq, "not >= 0"),
                                           (_pr_accuracy, "accuracy")])
def test_precision_recall_check(wrong, message):
    E.check_precision_recall(E.solutions.precision_recall)
    _rejects(E.check_precision_recall, wrong, message)


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


def test_prediction_check():
    fit = (2.5, 0.4, 0.08)
    E.check_prediction(2.5 * 8192 ** -0.4 + 0.08, fit, 8192)
    with pytest.raises(AssertionError, match="is the new one|b negated"):
        E.check_prediction(2.5 * 4096 ** -0.4 + 0.08, fit, 8192)
    with pytest.raises(AssertionError, match="below the irreducible"):
        E.check_prediction(2.5 * 8192 ** -0.4, fit, 8192)


# ---- 07 steering and attribution -----------------------------------------------------------------------------
@pytest.mark.parametrize("wrong,message", [
    (lambda p, n: n.mean(0) - p.mean(0), "subtract the OTHER"),
    (lambda p, n: p.sum(0) - n.sum(0), "use means"),
    (lambda p, n: p.mean(0), "mean on the concept's tokens minus"),
])
def test_concept_scores_check(wrong, message):
    E.check_concept_scores(E.solutions.concept_scores)
    _rejects(E.check_concept_scores, wrong, message)


@pytest.mark.parametrize("wrong,message", [
    (lambda x, W, j, a: a * W[j].expand_as(x), "ADD it to x"),
    (lambda x, W, j, a: x + a * W[:, j][: x.shape[1]], "not a column"),
    (lambda x, W, j, a: x - a * W[j], "sign"),
])
def test_steer_rows_check(wrong, message):
    E.check_steer_rows(E.solutions.steer_rows)
    _rejects(E.check_steer_rows, wrong, message)


def _overwrite(a, g, i, n):
    return torch.zeros(n).scatter_(0, i.reshape(-1), (-a * g).reshape(-1))


@pytest.mark.parametrize("wrong,message", [
    (lambda a, g, i, n: torch.zeros(n).index_add_(0, i.reshape(-1), (a * g).reshape(-1)), "wrong sign"),
    (lambda a, g, i, n: torch.zeros(n).index_add_(0, i.reshape(-1), (-g).reshape(-1)), "ACTIVATION"),
    (_overwrite, "SUM over them"),
])
def test_ablation_attribution_check(wrong, message):
    E.check_ablation_attribution(E.solutions.ablation_attribution)
    _rejects(E.check_ablation_attribution, wrong, message)


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


@pytest.mark.parametrize("loop,cls,message", [
    (E.solutions.train_my_sae, _sae_variant(encoder="random"), "transpose"),
    (_loop_without("renormalize_decoder_"), E.solutions.MyTopKSAE, "renormalize_decoder_ after every"),
])
def test_training_check_compares_with_trainer_and_names_the_missing_part(loop, cls, message):
    from saelab.teach.toy import ToyConfig, make_toy

    x = make_toy(ToyConfig(n_samples=16384)).x_BD
    report = E.check_training(E.solutions.train_my_sae, E.solutions.MyTopKSAE, x, steps=150)
    assert abs(report["yours"] - report["Trainer"]) < 0.1 * report["Trainer"]
    with pytest.raises(AssertionError, match=message):
        E.check_training(loop, cls, x, steps=150)


# ---- every notebook -------------------------------------------------------------------------------------------
@pytest.mark.parametrize("path", sorted(NOTEBOOKS.glob("[0-9][0-9]_*.py")), ids=lambda p: p.stem)
def test_every_notebook_has_stubbed_graded_exercises(path):
    """Each notebook has exercises whose stubs call todo("NN.M") with its own number, and every check grades
    through `graded`, so without SAELAB_SOLUTIONS a learner who writes nothing stops at the first exercise."""
    text = path.read_text()
    number = int(path.name[:2])
    todos = re.findall(r'todo\("(\d+)\.(\d+)"\)', text)
    assert todos, f"{path.name} has no exercise stub calling todo(...)"
    assert all(int(nb) == number for nb, _ in todos), f"{path.name}: exercise numbers {todos} must start with {number}"
    checks = re.findall(r"^check_\w+\((.*)$", text, flags=re.M)
    assert checks, f"{path.name} never calls a check"
    assert all(c.startswith("graded(") or c.startswith("predicted") for c in checks), \
        f"{path.name}: every check must grade graded(...): {checks}"
    assert "solutions." not in "".join(re.findall(r"def \w+\(.*?\n(?=\S)", text, flags=re.S)), \
        f"{path.name}: an exercise stub returns the reference solution (a free pass)"


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
