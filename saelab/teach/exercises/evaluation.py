"""Notebook 03 (evaluation): the splice behind the downstream loss (section 4.1), a 1-D probe and the sparsity of
ablation effects (section 4.5)."""

from __future__ import annotations

import math

import torch

from saelab.evals.ablation import effect_sparsity  # the reference solution and the check's answer
from saelab.evals.probes import fit_logistic_1d, logistic_loss
from saelab.teach.exercises.base import diagnose, exercise, passed


def probe_loss_1d(x_M: torch.Tensor, y_M: torch.Tensor) -> float:
    """Mean binary cross-entropy (nats) of the best logistic probe sigmoid(a x + b) on one feature."""
    a, b, mu, sd = fit_logistic_1d(x_M[:, None], y_M, iters=100, ridge=0.0)
    return float(logistic_loss(x_M[:, None], y_M, a, b, mu, sd)[0])




@torch.no_grad()
def spliced_loss(model: torch.nn.Module, input_ids_BT: torch.Tensor, layer: int, reconstruct,
                 error_scale: float = 0.0) -> float:
    """The reference solution of exercise 3.1: mean next-token cross-entropy (nats) with the output x of block
    `layer` replaced at positions >= 1 by reconstruct(x) + error_scale * (x - reconstruct(x)); scored on the
    predictions made at positions >= 1 (the ones a splice can change)."""
    return _splice(model, input_ids_BT, layer, reconstruct, error_scale)


@torch.no_grad()
def _splice(model, ids, layer, reconstruct, error_scale, splice_from=1, score_from=1, error_sign=1.0,
            log_base=None) -> float:
    import torch.nn.functional as F

    from saelab.lm.sites import find_blocks

    def hook(_module, _inputs, output):
        hidden = output[0] if isinstance(output, tuple) else output
        x = hidden[:, splice_from:]
        recon = reconstruct(x.reshape(-1, x.shape[-1])).reshape(x.shape).to(hidden.dtype)
        new = torch.cat([hidden[:, :splice_from], recon + error_sign * error_scale * (x - recon)], dim=1)
        return (new, *output[1:]) if isinstance(output, tuple) else new

    handle = find_blocks(model)[layer].register_forward_hook(hook)
    try:
        logits = model(input_ids=ids, use_cache=False).logits.float()
    finally:
        handle.remove()
    ce = F.cross_entropy(logits[:, score_from:-1].flatten(0, 1), ids[:, score_from + 1:].flatten())
    return float(ce) / (math.log(log_base) if log_base else 1.0)


@torch.no_grad()
def _clean_loss(model, ids, score_from=1) -> float:
    import torch.nn.functional as F

    logits = model(input_ids=ids, use_cache=False).logits.float()
    return float(F.cross_entropy(logits[:, score_from:-1].flatten(0, 1), ids[:, score_from + 1:].flatten()))


class _ReconstructFailed(RuntimeError):
    """Raised by the check's failing `reconstruct`, to see that a hook goes even when the forward pass fails."""


def _fail(_x):
    raise _ReconstructFailed("the check's reconstruct fails on purpose")


def _hook_ids(model: torch.nn.Module) -> set:
    return {(id(m), key) for m in model.modules() for key in [*m._forward_hooks, *m._forward_pre_hooks]}


def _remove_new_hooks(model: torch.nn.Module, before: set) -> None:
    """Remove the hooks a learner's function left behind, so later forward passes of the notebook run clean."""
    for m in model.modules():
        for hooks in (m._forward_hooks, m._forward_pre_hooks):
            for key in [k for k in hooks if (id(m), k) not in before]:
                del hooks[key]


def _check_splice_case(fn, model, ids, layer: int, rec, scale: float, what: str, base_layer: int, base_rec) -> None:
    """One varied call against the reference; a miss that matches an ignored argument names it."""
    got, want = float(fn(model, ids, layer, rec, error_scale=scale)), _splice(model, ids, layer, rec, scale)
    if abs(got - want) < 1e-3 * max(1.0, abs(want)):
        return
    mistakes = []
    if layer != base_layer:
        mistakes.append((_splice(model, ids, base_layer, rec, scale),
                         f"{what}: you spliced block {base_layer}, not block `layer` = {layer}: hook "
                         "find_blocks(model)[layer], the argument"))
    if rec is not base_rec:
        mistakes.append((_splice(model, ids, layer, base_rec, scale),
                         f"{what}: that is the loss with the SAE's own reconstruction: call the `reconstruct` you "
                         "are given (the notebook also passes the identity and other SAEs), not an SAE of the "
                         "notebook"))
    if scale != 0.0:
        mistakes.append((_splice(model, ids, layer, rec, 0.0), f"{what}: error_scale = {scale} is ignored"))
    diagnose(got, mistakes, atol=1e-4, rtol=1e-4)
    raise AssertionError(f"{what}: spliced cross-entropy {got:.4f}, expected {want:.4f}")


@exercise("3.1", spliced_loss)
def check_spliced_loss(fn, lm, sae, tokens_NT: torch.Tensor, layer: int) -> None:
    """`fn(model, input_ids_BT, layer, reconstruct, error_scale=0.0) -> float` must splice and score as the paper's
    downstream loss does (positions >= 1; cross-entropy in nats) and leave no hook behind, even when the forward pass
    fails.

    Varies error_scale (0, 0.25, 0.5, 1), the layer (`layer` and another), `reconstruct` (the SAE's, the identity,
    half the SAE's, one that raises) and the batch (four contexts, one); compares each loss with the reference."""
    from saelab.teach.exercises.harvest import _hooks_left

    ids = torch.as_tensor(tokens_NT[:4]).long().to(lm.device)
    recon = lambda x: sae.reconstruct(x)  # noqa: E731
    model = lm.model
    before, before_ids = _hooks_left(model), _hook_ids(model)
    got = float(fn(model, ids, layer, recon))
    if _hooks_left(model) != before:
        _remove_new_hooks(model, before_ids)  # the notebook's later cells must not run spliced
        raise AssertionError("your hook is still registered after the call: remove it (handle.remove() in a finally "
                             "block), or every later forward pass stays spliced")
    clean = _clean_loss(model, ids)
    want = _splice(model, ids, layer, recon, 0.0)
    right = abs(got - want) < 1e-4 * max(1.0, abs(want))
    diagnose(got, [] if right else [
                   (clean, "that is the clean loss: your hook did not change the block's output. A forward hook "
                           "must RETURN the new output (a tuple with the new hidden states first when the block "
                           "returns a tuple)"),
                   (_splice(model, ids, layer, recon, 0.0, splice_from=0),
                    "you replaced position 0 too: it is the attention sink the SAE never trained on; splice "
                    "positions >= 1 and leave position 0 clean"),
                   (_splice(model, ids, layer, recon, 0.0, score_from=0),
                    "you also scored the prediction made at position 0, which the splice cannot change: score the "
                    "predictions made at positions >= 1 (logits[:, 1:-1] against tokens [:, 2:])"),
                   (_splice(model, ids, layer, recon, 0.0, log_base=2), "that is in bits: use the natural log "
                                                                        "(nats), as the paper's losses")],
             atol=1e-4, rtol=1e-4)
    assert abs(got - want) < 1e-3 * max(1.0, abs(want)), \
        f"spliced cross-entropy {got:.4f}, expected {want:.4f} (clean {clean:.4f})"
    full = float(fn(model, ids, layer, recon, error_scale=1.0))
    restored = abs(full - clean) < 1e-4 * max(1.0, clean)
    diagnose(full, [] if restored else [(_splice(model, ids, layer, recon, 1.0, error_sign=-1.0),
                     "with error_scale=1 you added recon - x: the error term is x - reconstruct(x)"),
                    (want, "error_scale is ignored: add error_scale * (x - reconstruct(x)) to the reconstruction")],
             atol=1e-4, rtol=1e-4)
    assert abs(full - clean) < 1e-3 * max(1.0, clean), \
        f"with the whole error added back (error_scale=1) the model must see x again: got {full:.4f}, clean {clean:.4f}"
    half, half_want = float(fn(model, ids, layer, recon, error_scale=0.5)), _splice(model, ids, layer, recon, 0.5)
    assert abs(half - half_want) < 1e-3 * max(1.0, half_want), \
        (f"with error_scale=0.5 you got {half:.4f}, expected {half_want:.4f}: add error_scale * (x - reconstruct(x)), "
         "linear in error_scale (not only at 0 and 1)")
    other = layer // 2 if layer > 1 else layer + 1
    half_sae = lambda x: 0.5 * sae.reconstruct(x)  # noqa: E731
    for what, case_ids, case_layer, rec, scale in (
            ("with reconstruct = the identity (the splice changes nothing: the clean loss)", ids, layer,
             lambda x: x, 0.0),
            (f"at layer {other} with error_scale = 0.25", ids, other, recon, 0.25),
            ("on a batch of one context, with reconstruct = 0.5 * sae.reconstruct(x)", ids[:1], layer, half_sae, 0.0)):
        _check_splice_case(fn, model, case_ids, case_layer, rec, scale, what, layer, recon)
    try:
        fn(model, ids, layer, _fail)
    except Exception:  # noqa: BLE001 - any error may come out; what matters is the hook
        returned = False
    else:
        returned = True
    left = _hooks_left(model) != before
    _remove_new_hooks(model, before_ids)
    assert not left, ("when the forward pass fails (here `reconstruct` raised an error), your hook stays registered "
                      "and every later forward pass of the model stays spliced: remove it in a `finally:` block")
    assert not returned, ("`reconstruct` raised an error, yet your function returned a loss: let the error through "
                          "(a failed splice must not look like a result)")
    assert _hooks_left(model) == before, "your hook is still registered after a call: remove it (handle.remove())"
    passed(f"spliced_loss (spliced {got:.3f} nats, clean {clean:.3f})")


def _bce(p: float, y: torch.Tensor, log=math.log) -> float:
    p = min(max(p, 1e-12), 1 - 1e-12)
    return float(-(y * log(p) + (1 - y) * log(1 - p)).mean())


def _probe_cases():
    """(what, x_M, y_M) beyond the main case: balanced labels and a weak feature; a feature with a large offset and
    scale (x = 50 f + 1000: an unstandardised fit stalls); 5% positives on 300 rows; 40 rows in float64."""
    g = torch.Generator().manual_seed(5)
    half = (torch.rand(1500, generator=g) < 0.5).float()
    far = (torch.rand(1000, generator=g) < 0.3).float()
    rare = (torch.rand(300, generator=g) < 0.05).float()
    small = (torch.arange(40) % 3 == 0).double()
    return [("50% positives and a weak feature (M = 1500)", 0.8 * half + torch.randn(1500, generator=g), half),
            ("x = 50 f + 1000, a feature far from 0 and wide (30% positives)",
             50 * (1.5 * far + torch.randn(1000, generator=g)) + 1000, far),
            ("5% positives on M = 300 rows", 2 * rare + torch.randn(300, generator=g), rare),
            ("40 rows in float64", small + torch.randn(40, generator=g, dtype=torch.float64), small)]


@exercise("3.2", probe_loss_1d)
def check_probe_loss_1d(fn) -> None:
    """`fn(x_M, y_M) -> float`: the cross-entropy in nats of the best 1-D logistic probe.

    Varies the feature (useless, good, negated, weak, far from 0 and wide), the base rate (5% to 50%), M (40 to
    2000) and the dtype; compares the loss with the reference fit (Newton's method to convergence) within 0.02."""
    g = torch.Generator().manual_seed(0)
    y = (torch.rand(2000, generator=g) < 0.2).float()  # 20% positives
    useless = torch.randn(2000, generator=g)
    got = float(fn(useless.clone(), y.clone()))
    prior = float(y.mean())
    entropy = _bce(prior, y)
    if abs(got - math.log(2)) < 0.01:
        raise AssertionError(f"{got:.3f} nats = ln 2: a probe with no bias b predicts 0.5 for an uninformative "
                             f"feature; with the bias it learns the base rate and scores the label entropy "
                             f"{entropy:.3f}")
    if abs(got - entropy / math.log(2)) < 0.01:
        raise AssertionError("you reported bits (log2); the paper's probe loss is in nats (natural log)")
    if 0.75 <= got <= 0.85:
        raise AssertionError(f"{got:.3f} looks like an accuracy: return the binary cross-entropy")
    assert abs(got - entropy) < 0.01, f"a feature unrelated to the labels should score about the label entropy " \
        f"{entropy:.3f} nats (the probe learns only the base rate); got {got:.3f}"
    good = 3.0 * y + torch.randn(2000, generator=g)
    got_good = float(fn(good.clone(), y.clone()))
    want_good = probe_loss_1d(good, y)
    if got_good > entropy - 0.05:
        raise AssertionError(f"a feature that separates the classes well scores {got_good:.3f}, no better than the "
                             f"base rate ({entropy:.3f}): is the probe fitted (a and b learned)?")
    flipped = float(fn(-good, y.clone()))
    assert abs(flipped - want_good) < 0.02, f"the same feature negated must score the same ({want_good:.3f}), got " \
        f"{flipped:.3f}: let the weight a be negative"
    assert abs(got_good - want_good) < 0.02, f"the best probe scores {want_good:.3f} nats, yours {got_good:.3f}: fit " \
        "longer or with a larger learning rate (or Newton's method)"
    for what, x, y in _probe_cases():
        got, want = float(fn(x.clone(), y.clone())), probe_loss_1d(x, y)
        if abs(got - want) >= 0.02 and x.abs().mean() > 100:
            raise AssertionError(f"with {what}: the best probe scores {want:.3f} nats, yours {got:.3f}: standardise x "
                                 "first ((x - mean) / std), or the fit stalls when x is far from 0")
        assert abs(got - want) < 0.02, f"with {what}: the best probe scores {want:.3f} nats, yours {got:.3f} (the " \
            f"base rate alone: {_bce(float(y.float().mean()), y.float()):.3f})"
    passed("probe_loss_1d")


def _sparsity_cases():
    """(what, logit_diff_TV) beyond the main case: one position, the paper's T = 16 with a dense change, an even V
    whose rows are mostly unmoved (both middle values 0, so every median convention agrees), float64 input, and a
    change on a single logit."""
    g = torch.Generator().manual_seed(1)
    few = torch.zeros(3, 50)
    few[:, :10] = torch.randn(3, 10, generator=g) * 3
    single = torch.zeros(5, 9)
    single[2, 4] = -1.5
    return [("one position (T = 1, V = 7)", torch.randn(1, 7, generator=g)),
            ("T = 16, V = 101, every logit moved", torch.randn(16, 101, generator=g) + torch.randn(16, 1, generator=g)),
            ("T = 3, V = 50 (even), 10 logits a row moved", few),
            ("a float64 input (T = 2, V = 33)", torch.randn(2, 33, generator=g, dtype=torch.float64) ** 3),
            ("one logit of [5, 9] moved", single)]


_MEDIAN_MISTAKES = {
    "global": "you subtracted ONE median of the whole [T, V] matrix: subtract each position's own median (over its V "
              "logits, dim=-1)",
    "positions": "you took the median over the positions (dim 0): take each position's median over the vocabulary "
                 "(dim=-1)"}


def _sparsity_variant(e: torch.Tensor, centre: str) -> float:
    """The sparsity with the median taken another way: of the whole matrix ("global") or over the positions."""
    e = e.double()
    e = {"global": e - e.median(), "positions": e - e.median(0, keepdim=True).values}[centre].flatten()
    return float((e.abs().sum() / e.norm()) ** 2 / e.numel())


@exercise("3.3", effect_sparsity)
def check_effect_sparsity(fn) -> None:
    """`fn(logit_diff_TV) -> float`: section 4.5's sparsity of an ablation's effect on the logits.

    Varies the shape (T = 1 to 16, V = 7 to 101, even and odd), the dtype (float32, float64) and the effect (a few
    logits, every logit, one logit, constant shifts of a position); compares the number with the reference and
    checks the input is left as it was."""
    g = torch.Generator().manual_seed(0)
    T, V = 4, 51  # odd V: every median convention (lower middle, average of the two middle) agrees
    diff = torch.zeros(T, V)
    diff[:, :3] = torch.randn(T, 3, generator=g) * 2  # a few tokens move
    diff += 0.3  # every position's logits shift by a constant (position 1's by 1.0): no probability changes
    diff[1] += 0.7
    diff[2, 10:] += torch.randn(V - 10, generator=g).abs() * 0.01
    given = diff.clone()
    got = float(fn(given))
    assert torch.equal(given, diff), "your function changed its input in place (e.g. -= on it): work on a copy, the " \
        "caller's logit differences must stay as they were"
    e = diff.double()
    mean_c = (e - e.mean(-1, keepdim=True)).flatten()
    raw = e.flatten()
    med = (e - e.median(-1, keepdim=True).values).flatten()
    diagnose(got, [(float((raw.abs().sum() / raw.norm()) ** 2 / raw.numel()),
                    "every position's logits moved by a constant (0.3, position 1's by 1.0), which changes no "
                    "probability: subtract each position's median (over the vocabulary) first"),
                   (_sparsity_variant(diff, "global"), _MEDIAN_MISTAKES["global"]),
                   (float((mean_c.abs().sum() / mean_c.norm()) ** 2 / mean_c.numel()),
                    "you subtracted each position's MEAN: subtract its median (robust to the few large effects, which "
                    "drag a mean)"),
                   (_sparsity_variant(diff, "positions"), _MEDIAN_MISTAKES["positions"]),
                   (float(med.abs().sum() / med.norm() / med.numel()), "square the ratio: (L1 / L2)^2"),
                   (float((med.abs().sum() / med.norm()) ** 2), "divide by the number of entries T * V, so that 1 "
                                                                "means every entry moved by the same amount"),
                   (float((med.abs().sum() / med.norm()) ** 2 / V), "divide by T * V (all positions' entries), "
                                                                    "not V alone"),
                   (float((med.abs().sum() / med.norm()) ** 2 / (16 * V)), "you divided by 16 V: T is the number of "
                                                                           "rows of the input (here 4), not the "
                                                                           "paper's 16")], atol=1e-6)
    want = effect_sparsity(diff)
    assert abs(got - want) < 1e-6, f"expected {want:.5f}, got {got:.5f}"
    one = torch.zeros(T, V)
    one[0, 0] = 5.0
    assert abs(float(fn(one)) - 1 / (T * V)) < 1e-9, "an effect on a single logit has sparsity 1 / (T V)"
    for what, case in _sparsity_cases():
        given = case.clone()
        got, want = fn(given), effect_sparsity(case)
        assert torch.equal(given, case), f"with {what}: your function changed its input in place: work on a copy"
        assert isinstance(got, float | torch.Tensor) and torch.as_tensor(got).numel() == 1, \
            f"with {what}: return one number, got {got!r}"
        if abs(float(got) - want) > 1e-6 * max(1.0, want) and len(case) > 1:
            diagnose(float(got), [(_sparsity_variant(case, c), f"with {what}: {m}")
                                  for c, m in _MEDIAN_MISTAKES.items()],
                     atol=1e-6)
        assert abs(float(got) - want) <= 1e-6 * max(1.0, want), \
            f"with {what} (shape {tuple(case.shape)}): expected {want:.6g}, got {float(got):.6g}"
    passed("effect_sparsity")
