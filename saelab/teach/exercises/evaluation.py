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


@exercise("3.1", spliced_loss)
def check_spliced_loss(fn, lm, sae, tokens_NT: torch.Tensor, layer: int) -> None:
    """`fn(model, input_ids_BT, layer, reconstruct, error_scale=0.0) -> float` must splice and score as the paper's
    downstream loss does (positions >= 1; cross-entropy in nats) and leave no hook behind."""
    from saelab.teach.exercises.harvest import _hooks_left

    ids = torch.as_tensor(tokens_NT[:4]).long().to(lm.device)
    recon = lambda x: sae.reconstruct(x)  # noqa: E731
    model = lm.model
    before = _hooks_left(model)
    got = float(fn(model, ids, layer, recon))
    assert _hooks_left(model) == before, ("your hook is still registered after the call: remove it (handle.remove() "
                                          "in a finally block), or every later forward pass stays spliced")
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
    passed(f"spliced_loss (spliced {got:.3f} nats, clean {clean:.3f})")


def _bce(p: float, y: torch.Tensor, log=math.log) -> float:
    p = min(max(p, 1e-12), 1 - 1e-12)
    return float(-(y * log(p) + (1 - y) * log(1 - p)).mean())


@exercise("3.2", probe_loss_1d)
def check_probe_loss_1d(fn) -> None:
    """`fn(x_M, y_M) -> float`: the cross-entropy in nats of the best 1-D logistic probe."""
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
    passed("probe_loss_1d")


@exercise("3.3", effect_sparsity)
def check_effect_sparsity(fn) -> None:
    """`fn(logit_diff_TV) -> float`: section 4.5's sparsity of an ablation's effect on the logits."""
    g = torch.Generator().manual_seed(0)
    T, V = 4, 51  # odd V: every median convention (lower middle, average of the two middle) agrees
    diff = torch.zeros(T, V)
    diff[:, :3] = torch.randn(T, 3, generator=g) * 2  # a few tokens move
    diff[1] += 0.7  # position 1's logits all shift by a constant: no probability changes
    diff[2, 10:] += torch.randn(V - 10, generator=g).abs() * 0.01
    got = float(fn(diff.clone()))
    e = diff.double()
    mean_c = (e - e.mean(-1, keepdim=True)).flatten()
    raw = e.flatten()
    med = (e - e.median(-1, keepdim=True).values).flatten()
    diagnose(got, [(float((raw.abs().sum() / raw.norm()) ** 2 / raw.numel()),
                    "position 1's logits all moved by 0.7, which changes no probability: subtract each position's "
                    "median (over the vocabulary) first"),
                   (float((mean_c.abs().sum() / mean_c.norm()) ** 2 / mean_c.numel()),
                    "you subtracted each position's MEAN; the paper subtracts the median (robust to the few large "
                    "effects)"),
                   (float(med.abs().sum() / med.norm() / med.numel()), "square the ratio: (L1 / L2)^2"),
                   (float((med.abs().sum() / med.norm()) ** 2), "divide by the number of entries T * V, so that 1 "
                                                                "means every entry moved by the same amount"),
                   (float((med.abs().sum() / med.norm()) ** 2 / V), "divide by T * V (all positions' entries), "
                                                                    "not V alone")], atol=1e-6)
    want = effect_sparsity(diff)
    assert abs(got - want) < 1e-6, f"expected {want:.5f}, got {got:.5f}"
    one = torch.zeros(T, V)
    one[0, 0] = 5.0
    assert abs(float(fn(one)) - 1 / (T * V)) < 1e-9, "an effect on a single logit has sparsity 1 / (T V)"
    passed("effect_sparsity")
