"""Notebook 07, exercise 7.3: attribution patching from one backward pass (the gradient through the decoder, the
error term kept). The reference solution, its parametrised twin `_attribution_parts` and the check."""

from __future__ import annotations

import torch

from saelab.teach.exercises.base import call_learner, close, diagnose, exercise, passed, unlike
from saelab.teach.exercises.steering import _check_ids, _site_layer, check_sae


# ---- 7.3 attribution patching -----------------------------------------------------------------------------
def attribution_estimates(model: torch.nn.Module, sae, input_ids_BT: torch.Tensor, metric) -> torch.Tensor:
    """The reference solution of exercise 7.3: per latent [n_latents], the first-order estimate of the change of
    `metric(logits)` when the latent is ablated at every position >= 1, from one forward and one backward pass with
    the SAE spliced in at the output of block `sae.cfg.layer` and its error term kept."""
    z, grad, *_ = _attribution_parts(model, sae, input_ids_BT, metric)
    return -(z * grad).sum(0)


def _attribution_parts(model, sae, ids, metric, keep_error: bool = True, first: int = 1, flat: bool = False):
    """(codes z [R, n] as the graph's leaf, dm/dz [R, n], pre-activations [R, n], scale s [R, 1]) at the rows the
    SAE handles; dense codes, so that the gradient exists for every latent (the checks' wrong answers need it).
    `flat`: the mistake of leaving clean only the first row of the flattened batch (not position 0 of each sequence)."""
    from saelab.lm.sites import find_blocks

    saved = {}

    def hook(_module, _inputs, output):
        hidden = output[0] if isinstance(output, tuple) else output
        flat_rows = hidden.reshape(-1, hidden.shape[-1])
        x = flat_rows[first:].detach() if flat else hidden[:, first:].detach()
        rows = x.reshape(-1, x.shape[-1]).to(sae.W_dec.device, sae.W_dec.dtype)
        enc = sae.encode(rows, keep_pre=True)
        z = torch.zeros(len(rows), sae.cfg.n_latents, device=rows.device, dtype=rows.dtype)
        z = z.scatter(1, enc.top_idx_BK.to(rows.device), enc.top_acts_BK.to(rows.device)).requires_grad_(True)
        undo = sae.preprocess(rows)[1]
        recon = undo(z @ sae.W_dec.detach() + sae.b_pre.detach())
        new = recon + (rows - recon).detach() if keep_error else recon
        saved.update(z=z, pre=enc.pre_acts_BN.detach(), s=undo.scale)
        new = new.reshape(x.shape).to(hidden.device, hidden.dtype)
        if flat:
            out = torch.cat([flat_rows[:first], new]).reshape(hidden.shape)
        else:
            out = torch.cat([hidden[:, :first], new], 1)
        return (out, *output[1:]) if isinstance(output, tuple) else out

    handle = find_blocks(model)[sae.cfg.layer].register_forward_hook(hook)
    try:
        with torch.enable_grad():
            value = metric(model(input_ids=ids, use_cache=False).logits.float())
            value.backward()
    finally:
        handle.remove()
    z = saved["z"]
    grad = z.grad if z.grad is not None else torch.zeros_like(z)
    return z.detach().cpu(), grad.detach().cpu(), saved["pre"].cpu(), saved["s"].detach().cpu()


def _attribution_variant(model, sae, ids, metric, variant: str = "right") -> torch.Tensor:
    """The reference, or a known mistake: 'sign', 'no_error', 'position0', 'flat' (only the batch's first row left
    clean), 'sums' (product of sums over positions), 'pre' (pre-activations), 'grad' (no activation), 'no_scale'
    (gradient without s)."""
    if variant in ("no_error", "position0", "flat"):
        z, grad, _, _ = _attribution_parts(model, sae, ids, metric, keep_error=variant != "no_error",
                                           first=0 if variant == "position0" else 1, flat=variant == "flat")
        return -(z * grad).sum(0)
    z, grad, pre, s = _attribution_parts(model, sae, ids, metric)
    return {"right": lambda: -(z * grad).sum(0), "sign": lambda: (z * grad).sum(0),
            "sums": lambda: -(z.sum(0) * grad.sum(0)), "pre": lambda: -(pre * grad).sum(0),
            "grad": lambda: -(grad * (z != 0)).sum(0), "grad+": lambda: (grad * (z != 0)).sum(0),
            "no_scale": lambda: -(z * grad / s).sum(0)}[variant]()


_ATTRIBUTION_MISTAKES = [
    ("sign", "wrong sign: ablating moves an activation from a to 0, a change of -a, so the metric moves by about "
             "-a * dm/da"),
    ("no_error", "the forward pass ran on the SAE's reconstruction alone: keep the error term, as a detached constant "
                 "(out = recon + (x - recon).detach()), so that the forward pass is the clean one while the gradient "
                 "still reaches the activations through the decoder"),
    ("position0", "you spliced position 0 too: it is the attention sink the SAE never trained on; leave it clean and "
                  "attribute positions >= 1 only"),
    ("flat", "you left clean only the first token of the whole batch: position 0 of EVERY sequence is an attention "
             "sink; splice hidden[:, 1:] (positions >= 1 of each sequence)"),
    ("sums", "you multiplied the sum of a latent's activations by the sum of its gradients: that counts the gradient "
             "at positions where the latent is not active (nothing to ablate there); sum -a * dm/da over the "
             "positions where it is selected"),
    ("pre", "you used pre-activations: ablating removes the activation a (0 where the latent is not selected), not "
            "the pre-activation, and only where it is selected"),
    ("grad", "you summed the gradient alone: the first-order change when a goes to 0 is the gradient TIMES the "
             "change, -a * dm/da"),
    ("grad+", "you summed the gradient alone: the first-order change when a goes to 0 is the gradient TIMES the "
              "change, -a * dm/da"),
    ("no_scale", "your gradient misses the scale s: decode into the residual stream, not the SAE's input space "
                 "(sae.decode(acts, idx, x, grad=True) maps back per token), so that dm/da = s * W_dec[j] . dm/dx"),
]


def _attribution_cases(lm):
    """(what, sae, ids, metric) of each case: the middle block with one sequence and the log-probability of its last
    token; block 1 (later blocks mix the positions, so each sequence's position 0 matters) with two sequences and a
    logit difference summed over both; the last block with k = 1 and the mean log-probability of every next token (a
    metric that reads every position)."""
    mid, last = _site_layer(lm), lm.n_layers - 1
    one, two = _check_ids(lm, 1), _check_ids(lm, 2)
    target = int(one[0, -1])

    def last_token_logprob(logits):  # log-probability of the text's last token
        return torch.log_softmax(logits[0, -2], -1)[target]

    a, b = int(two[0, -1]), int(two[1, -1])

    def logit_difference(logits):  # summed over the batch's two sequences, at the second-to-last position
        return (logits[:, -2, a] - logits[:, -2, b]).sum()

    def mean_next_token_logprob(logits):  # every position's prediction of the next token
        logp = torch.log_softmax(logits[0, :-1], -1)
        return logp.gather(-1, one[0, 1:, None].to(logp.device)).mean()

    return [(f"with sae.cfg.layer {mid}, 64 latents, k = 6, one sequence and metric = log p(last token)",
             check_sae(lm.d_model, n=64, k=6, layer=mid, seed=5, device=lm.device), one, last_token_logprob),
            ("with sae.cfg.layer 1, 32 latents, k = 3, a batch of two sequences and metric = a logit difference "
             "summed over the batch", check_sae(lm.d_model, n=32, k=3, layer=1, seed=6, device=lm.device), two,
             logit_difference),
            (f"with sae.cfg.layer {last}, 48 latents, k = 1, one sequence and metric = the mean log p of every next "
             "token", check_sae(lm.d_model, n=48, k=1, layer=last, seed=7, device=lm.device), one,
             mean_next_token_logprob)]


@exercise("7.3", attribution_estimates)
def check_attribution_estimates(fn, lm) -> None:
    """`fn(model, sae, input_ids_BT, metric) -> [n_latents]`: the activation x gradient estimate of each latent's
    ablation effect (the error term kept, positions >= 1 of every sequence), compared with
    saelab.interp.attribution on `lm`. Varies the block (the middle, 1, the last), the SAE (64, 32, 48 latents; k 6,
    3, 1), the batch (one sequence, two) and the metric (one position's log-probability, a logit difference summed
    over the batch, the mean over every position); no hook may be left behind."""
    from saelab.evals.splice import SpliceSite
    from saelab.interp.attribution import attribute
    from saelab.teach.exercises.harvest import _hooks_left

    model = lm.model
    for what, sae, ids, metric in _attribution_cases(lm):
        before = _hooks_left(model)
        got = call_learner(fn, what, model, sae, ids, metric)
        assert _hooks_left(model) == before, (f"{what}: your hook is still registered after the call: remove it "
                                              "(handle.remove() in a finally block), or every later forward pass "
                                              "stays spliced")
        assert got is not None, f"{what}: return the estimates, a tensor [n_latents]"
        got = torch.as_tensor(got).detach().float().cpu()
        assert tuple(got.shape) == (sae.cfg.n_latents,), \
            f"{what}: return one estimate per latent, shape ({sae.cfg.n_latents},), got {tuple(got.shape)}"
        want = attribute(lm, sae, ids, metric, where=SpliceSite(layer=sae.cfg.layer, exclude_first=1,
                                                                 outlier_factor=None)).per_latent_N.float()
        tol = dict(atol=1e-4 * max(1e-3, float(want.abs().max())), rtol=1e-3)
        if close(got, want, **tol):
            continue
        if float(got.abs().max()) == 0.0:
            raise AssertionError(f"{what}: every estimate is 0: no gradient reached the activations. Make the "
                                 "selected activations a leaf (acts.clone().requires_grad_(True)), decode FROM that "
                                 "leaf inside the hook, call backward() on the metric and read acts.grad")
        diagnose(got, unlike(want, [(_attribution_variant(model, sae, ids, metric, variant), message)
                                     for variant, message in _ATTRIBUTION_MISTAKES], what, **tol), **tol)
        top = int((got - want).abs().argmax())
        raise AssertionError(f"{what}: latent {top}'s estimate is {float(got[top]):.4g}, expected "
                             f"{float(want[top]):.4g} (-a * dm/da summed over the positions >= 1 where it is "
                             "selected, the error term kept)")
    passed("attribution_estimates (the same as saelab's attribute, in 3 cases)")
