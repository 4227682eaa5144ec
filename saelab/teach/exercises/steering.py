"""Notebook 07 (steering and attribution): a steering hook, an ablation with the error term kept, and attribution
patching from one backward pass (the gradient through the decoder, the error term kept).

Each reference solution has a parametrised twin (`_steering_hook`, `_ablate_rows`, `_attribution_parts`) whose flags
make the usual mistakes: the checks compute those wrong answers to name the one a learner's function reproduces, and
the tests feed them to the checks as known-wrong implementations.
"""

from __future__ import annotations

import torch

from saelab.teach.exercises.base import close, diagnose, exercise, passed

TEXT = "The cat sat on the mat. Paris is the capital of France."
"""The checks' text (any text works: the checks compare with saelab's own steering and attribution on it)."""


# ---- the SAE the checks use -------------------------------------------------------------------------------
def check_sae(d: int, n: int = 64, k: int = 6, layer: int | None = None, seed: int = 0, device=None):
    """A small random SAE that normalises each token (per_token_unit_norm), with a non-zero b_pre and b_enc and an
    encoder that is not the decoder's transpose, so that adding b_pre, using the encoder's row or forgetting the
    scale each give a different (wrong) answer."""
    from saelab.sae.config import SAEConfig
    from saelab.sae.model import SAE

    sae = SAE(SAEConfig(d_in=d, n_latents=n, k=k, layer=layer, normalize="per_token_unit_norm"), seed=seed)
    g = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        W = torch.randn(n, d, generator=g)
        sae.W_enc.copy_(W / W.norm(dim=1, keepdim=True))
        b = torch.randn(d, generator=g)
        sae.b_pre.copy_(0.3 * b / b.norm())
        sae.b_enc.copy_(0.05 * torch.randn(n, generator=g))
    return sae.to(device) if device is not None else sae


def _site_layer(lm) -> int:
    return max(1, lm.n_layers // 2)


# ---- 7.1 a steering hook ----------------------------------------------------------------------------------
def add_steering_hook(model: torch.nn.Module, sae, latent: int, alpha: float):
    """The reference solution of exercise 7.1: register on block `sae.cfg.layer` a forward hook that steers `latent`
    by `alpha` (its activation a -> a + alpha, the error term kept) at every position >= 1 of a forward pass over a
    whole sequence; return the hook's handle."""
    return _steering_hook(model, sae, latent, alpha)


def _steer_delta(sae, x: torch.Tensor, latent: int, alpha: float, first: int = 1, scale: str = "sae",
                 sign: float = 1.0, b_pre: bool = False, shift: bool = False, row: str = "dec") -> torch.Tensor:
    """The change steering makes to activations x [..., T, D] (T the second-to-last axis); flags make mistakes."""
    w = (sae.W_dec if row == "dec" else sae.W_enc)[latent].detach().to(x.device, torch.float32)
    xf = x.detach().float()
    delta_n = sign * alpha * w + (sae.b_pre.detach().to(x.device, torch.float32) if b_pre else 0.0)
    undo = sae.preprocess(xf.to(sae.W_dec.device))[1]
    s = {"sae": undo.scale, "raw": xf.norm(dim=-1, keepdim=True), "none": 1.0}[scale]
    s = s.to(x.device) if isinstance(s, torch.Tensor) else s
    delta = delta_n * s + (undo.shift.to(x.device) if shift and isinstance(undo.shift, torch.Tensor) else 0.0)
    delta = delta.expand_as(xf).clone()
    delta[..., :first, :] = 0.0
    return delta


def _steering_hook(model, sae, latent, alpha, blocks: str = "site", **flags):
    from saelab.lm.sites import find_blocks

    def hook(_module, _inputs, output):
        x = output[0] if isinstance(output, tuple) else output
        x = x + _steer_delta(sae, x, latent, alpha, **flags).to(x.dtype)
        return (x, *output[1:]) if isinstance(output, tuple) else x

    all_blocks = find_blocks(model)
    layer = sae.cfg.layer
    if blocks == "all":
        handles = [b.register_forward_hook(hook) for b in all_blocks]
        return handles[layer]
    if blocks == "next":
        return all_blocks[layer + 1].register_forward_hook(hook)
    if blocks == "pre":  # the block's input instead of its output
        def pre_hook(_module, args):
            return (args[0] + _steer_delta(sae, args[0], latent, alpha, **flags).to(args[0].dtype), *args[1:])
        return all_blocks[layer].register_forward_pre_hook(pre_hook)
    return all_blocks[layer].register_forward_hook(hook)


_HOOK_DICTS = ("_forward_hooks", "_forward_pre_hooks")


def _hook_keys(model) -> dict:
    return {(name, d): set(getattr(m, d)) for name, m in model.named_modules() for d in _HOOK_DICTS}


def _new_hooks(model, before: dict) -> list[tuple[str, str, torch.nn.Module, int]]:
    """(module name, hook dict, module, key) of each hook registered since `before` (not transformers' own)."""
    out = []
    for name, m in model.named_modules():
        for d in _HOOK_DICTS:
            hooks = getattr(m, d)
            for key in set(hooks) - before.get((name, d), set()):
                if not (getattr(hooks[key], "__module__", None) or "").startswith("transformers"):
                    out.append((name, d, m, key))
    return out


def _remove(hooks) -> None:
    for _name, d, m, key in hooks:
        for extra in ("", "_with_kwargs", "_always_called"):
            getattr(m, d + extra, {}).pop(key, None)


@exercise("7.1", add_steering_hook)
def check_steering_hook(fn, lm) -> None:
    """`fn(model, sae, latent, alpha) -> handle` must register on block sae.cfg.layer a forward hook that steers the
    latent by alpha at positions >= 1, in the SAE's input space mapped back to the residual stream (this SAE
    normalises each token); the check compares with saelab.interp.steering on `lm` and removes every hook after."""
    from saelab.evals.splice import SpliceSite
    from saelab.interp.steering import spliced, steer
    from saelab.lm.sites import find_blocks

    model = lm.model
    layer = _site_layer(lm)
    sae = check_sae(lm.d_model, layer=layer, device=lm.device)
    latent, alpha = 5, 1.5
    ids = lm.tokenizer(TEXT, return_tensors="pt").input_ids.to(lm.device)
    blocks = find_blocks(model)
    index = {id(b): i for i, b in enumerate(blocks)}
    block_of = {name: index[id(m)] for name, m in model.named_modules() if id(m) in index}
    captured = {}

    def capture(_module, _inputs, output):
        captured["x"] = (output[0] if isinstance(output, tuple) else output).detach().clone()

    with torch.no_grad():
        handle = blocks[layer].register_forward_hook(capture)
        try:
            model(input_ids=ids, use_cache=False)
        finally:
            handle.remove()
        clean = captured.pop("x")

    before = _hook_keys(model)
    handle = fn(model, sae, latent, alpha)
    added = _new_hooks(model, before)
    try:
        names = sorted({name for name, *_ in added})
        if not added:
            raise AssertionError("no hook is registered after your function returned: register a forward hook on "
                                 "block sae.cfg.layer (find_blocks(model)[sae.cfg.layer].register_forward_hook) and "
                                 "return its handle")
        hooked_blocks = sorted(block_of[n] for n in names if n in block_of)
        if len(names) > 1:
            raise AssertionError(f"you registered hooks on {len(names)} modules ({', '.join(names[:4])}"
                                 f"{', ...' if len(names) > 4 else ''}): steer at the SAE's site only, the output of "
                                 f"block sae.cfg.layer ({layer}); steering every layer adds the push {len(names)} "
                                 "times, at layers the SAE never read")
        if names[0] not in block_of:
            raise AssertionError(f"you hooked {names[0]!r}: hook the whole block find_blocks(model)[sae.cfg.layer] "
                                 "(the SAE reads the residual stream after the block, not a part inside it)")
        if hooked_blocks[0] != layer:
            raise AssertionError(f"you hooked block {hooked_blocks[0]}: the SAE reads the output of block "
                                 f"sae.cfg.layer = {layer} (blocks count from 0)")
        if any(d == "_forward_pre_hooks" for _n, d, *_ in added):
            raise AssertionError("a forward PRE-hook changes the block's input (the output of the block before): "
                                 "use register_forward_hook, which sees and may replace the block's output")
        if not hasattr(handle, "remove"):
            raise AssertionError("return the handle that register_forward_hook gives you: the notebook calls "
                                 "handle.remove() when it is done steering")
        with torch.no_grad():
            handle_c = blocks[layer].register_forward_hook(capture)  # runs after yours: sees your output
            try:
                logits = model(input_ids=ids, use_cache=False).logits.float()
            finally:
                handle_c.remove()
    finally:
        _remove(added)
    assert not _new_hooks(model, before), "hooks left behind"  # the check removes them all (by key)
    got = captured["x"].float() - clean.float()
    if close(got, 0.0 * got):
        raise AssertionError("your hook did not change the block's output: a forward hook must RETURN the new output "
                             "(a tuple with the new hidden states first when the block returns a tuple), or None "
                             "after changing it in place")
    want = _steer_delta(sae, clean, latent, alpha)
    tol = dict(atol=1e-4 * max(1.0, float(clean[:, 1:].abs().max())), rtol=1e-3)
    if not close(got, want, **tol):
        if float(got[:, 0].abs().max()) > tol["atol"]:
            raise AssertionError("you changed position 0: it is the attention sink, which the SAE never trained on "
                                 "(saelab's splice leaves it clean); steer positions >= 1 only")
        diagnose(got, [
            (-want, "wrong sign: steering by alpha raises the latent's activation by alpha, so ADD alpha decoder rows"),
            (_steer_delta(sae, clean, latent, alpha, scale="none"),
             "you added alpha * W_dec[latent] as it is: the decoder row lives in the SAE's input space, where this "
             "SAE put each token at unit norm; map the change back to the residual stream (times the token's scale "
             "s, a different number at each position)"),
            (_steer_delta(sae, clean, latent, alpha, scale="raw"),
             "you scaled by the token's norm ||x||: the SAE divides the CENTRED token (x minus its mean over "
             "d_model) by its norm, so s = ||x - mean(x)||"),
            (_steer_delta(sae, clean, latent, alpha, shift=True),
             "you added the token's mean too (the Undo's shift): mapping a point back adds the mean, but a CHANGE "
             "maps back with the scale only"),
            (_steer_delta(sae, clean, latent, alpha, b_pre=True),
             "you added b_pre: it is in the SAE's output with and without the edit, so it cancels from the change; "
             "add only alpha times the decoder row (mapped back)"),
            (_steer_delta(sae, clean, latent, alpha, scale="none", b_pre=True),
             "you added b_pre and left out the scale: the change is alpha decoder rows only, mapped back to the "
             "residual stream by the token's scale s"),
            (_steer_delta(sae, clean, latent, alpha, row="enc"),
             "that is the ENCODER's row (it reads the latent); what the latent writes is its decoder row "
             "W_dec[latent]"),
        ], **tol)
        if (got[:, 1:].abs().amax(-1) < tol["atol"]).any():
            raise AssertionError("some positions >= 1 were not steered: steer every position from 1 on (a forward "
                                 "pass over the whole sequence)")
        err = float((got - want).abs().max())
        raise AssertionError(f"your change to the residual stream differs from alpha * s * W_dec[latent] at "
                             f"positions >= 1 by up to {err:.3g}")
    where = SpliceSite(layer=layer, exclude_first=1, outlier_factor=None)
    with torch.no_grad(), spliced(lm, sae, [steer(latent, alpha)], where=where):
        ref = model(input_ids=ids, use_cache=False).logits.float()
    assert close(logits, ref, atol=1e-3 * max(1.0, float(ref.abs().max())), rtol=1e-3), \
        "your steered logits differ from saelab.interp.steering's steer() on the same SAE"
    passed("steering_hook (same logits as saelab's steer)")


# ---- 7.2 ablation with the error term kept ----------------------------------------------------------------
def ablate_rows(sae, x_RD: torch.Tensor, latent: int) -> torch.Tensor:
    """The reference solution of exercise 7.2: activation rows [R, D] with `latent` ablated (set to 0 wherever the
    SAE selects it), the SAE's error term kept."""
    return _ablate_rows(sae, x_RD, latent)


def _ablate_rows(sae, x_RD, latent, keep_error: bool = True, scale: str = "sae", sign: float = -1.0,
                 acts: str = "acts", shift: bool = False, b_pre: bool = False, row: str = "dec") -> torch.Tensor:
    enc = sae.encode(x_RD, keep_pre=acts != "acts")
    if acts == "acts":
        a = (enc.top_acts_BK * (enc.top_idx_BK == latent)).sum(-1)
    elif acts == "pre":  # the dense pre-activation, also where the latent is not selected
        a = enc.pre_acts_BN[:, latent].to(x_RD.device)
    else:  # "max": the latent's largest activation, subtracted at every row
        a = (enc.top_acts_BK * (enc.top_idx_BK == latent)).sum(-1).max().expand(len(x_RD))
    if not keep_error:  # the reconstruction with the latent's activation set to 0
        zeroed = enc.top_acts_BK * (enc.top_idx_BK != latent)
        return sae.decode(zeroed, enc.top_idx_BK, x_RD)
    w = (sae.W_dec if row == "dec" else sae.W_enc)[latent].detach().to(x_RD.device)
    undo = sae.preprocess(x_RD)[1]
    s = {"sae": undo.scale, "raw": x_RD.norm(dim=-1, keepdim=True), "none": 1.0}[scale]
    change = (a[:, None] * w + (sae.b_pre.detach() if b_pre else 0.0)) * s + (undo.shift if shift else 0.0)
    return x_RD + sign * change


@exercise("7.2", ablate_rows)
def check_ablate_rows(fn) -> None:
    """`fn(sae, x_RD, latent) -> [R, D]`: the rows with the latent ablated where it fires, the error term kept (the
    same as saelab.interp.steering's ablate() edit)."""
    from saelab.interp.steering import ablate, edit_rows

    d, n = 16, 24
    sae = check_sae(d, n=n, k=4, seed=3)
    g = torch.Generator().manual_seed(4)
    x = (torch.randn(40, d, generator=g) + 1.5) * torch.empty(40, 1).uniform_(0.3, 6.0, generator=g)
    enc = sae.encode(x)
    fires = torch.stack([((enc.top_idx_BK == j) & (enc.top_acts_BK > 0)).any(-1) for j in range(n)])  # [n, R]
    share = fires.float().mean(-1)
    latent = int((share - 0.4).abs().argmin())  # fires on about 40% of the rows
    assert 0.1 < float(share[latent]) < 0.9
    got = fn(sae, x.clone(), latent)
    assert isinstance(got, torch.Tensor), f"return a tensor, got {type(got).__name__}"
    assert tuple(got.shape) == tuple(x.shape), \
        f"return the ablated rows, shape {tuple(x.shape)} [R, D], got {tuple(got.shape)}"
    got = got.detach().float()
    want = edit_rows(sae, x, torch.arange(1, len(x) + 1), [ablate(latent)])
    assert close(want, _ablate_rows(sae, x, latent), atol=1e-5)  # the reference is saelab's ablate()
    if close(got, x):
        raise AssertionError("the rows came back unchanged: subtract the latent's contribution where it fires")
    if not close(got, want, atol=1e-4, rtol=1e-4):
        diagnose(got, [
            (_ablate_rows(sae, x, latent, keep_error=False),
             "you returned the SAE's reconstruction without the latent: that drops the error term x - x_hat as well, "
             "a bigger change than the ablation; keep x and subtract only the latent's own contribution"),
            (_ablate_rows(sae, x, latent, sign=1.0), "wrong sign: ablating REMOVES the latent's contribution a * "
                                                    "decoder row (mapped back), so subtract it"),
            (_ablate_rows(sae, x, latent, acts="pre"),
             "you used the latent's pre-activation: where the SAE does not select it the activation is 0 (nothing to "
             "remove), and where it does, the activation is what the decoder used"),
            (_ablate_rows(sae, x, latent, acts="max"),
             "you subtracted the same amount at every row: remove the activation the latent HAS at each row (0 where "
             "it is not among the selected k)"),
            (_ablate_rows(sae, x, latent, scale="none"),
             "you subtracted a * W_dec[latent] as it is: the decoder works in the SAE's input space (each token "
             "centred and at unit norm); map the change back with each row's scale s = ||x - mean(x)||"),
            (_ablate_rows(sae, x, latent, scale="raw"),
             "s is the norm of the CENTRED row, ||x - mean(x)||, the number the SAE divided by, not ||x||"),
            (_ablate_rows(sae, x, latent, shift=True),
             "you subtracted the row's mean too: a CHANGE maps back with the scale only (the shift is for points)"),
            (_ablate_rows(sae, x, latent, b_pre=True),
             "you subtracted b_pre: it is in the reconstruction with and without the latent, so it cancels"),
            (_ablate_rows(sae, x, latent, row="enc"),
             "that is the ENCODER's row; the latent's contribution is along its decoder row W_dec[latent]"),
        ], atol=1e-4, rtol=1e-4)
        if not close(got[~fires[latent]], x[~fires[latent]], atol=1e-4, rtol=1e-4):
            raise AssertionError("rows where the latent does not fire changed: there the ablation removes nothing")
        err = float((got - want).abs().max())
        raise AssertionError(f"your rows differ from x - a * s * W_dec[latent] by up to {err:.3g}")
    passed("ablate_rows (the same as saelab's ablate)")


# ---- 7.3 attribution patching -----------------------------------------------------------------------------
def attribution_estimates(model: torch.nn.Module, sae, input_ids_BT: torch.Tensor, metric) -> torch.Tensor:
    """The reference solution of exercise 7.3: per latent [n_latents], the first-order estimate of the change of
    `metric(logits)` when the latent is ablated at every position >= 1, from one forward and one backward pass with
    the SAE spliced in at the output of block `sae.cfg.layer` and its error term kept."""
    z, grad, *_ = _attribution_parts(model, sae, input_ids_BT, metric)
    return -(z * grad).sum(0)


def _attribution_parts(model, sae, ids, metric, keep_error: bool = True, first: int = 1):
    """(codes z [R, n] as the graph's leaf, dm/dz [R, n], pre-activations [R, n], scale s [R, 1]) at the rows the
    SAE handles; dense codes, so that the gradient exists for every latent (the checks' wrong answers need it)."""
    from saelab.lm.sites import find_blocks

    saved = {}

    def hook(_module, _inputs, output):
        hidden = output[0] if isinstance(output, tuple) else output
        x = hidden[:, first:].detach()
        rows = x.reshape(-1, x.shape[-1]).to(sae.W_dec.device, sae.W_dec.dtype)
        enc = sae.encode(rows, keep_pre=True)
        z = torch.zeros(len(rows), sae.cfg.n_latents, device=rows.device, dtype=rows.dtype)
        z = z.scatter(1, enc.top_idx_BK.to(rows.device), enc.top_acts_BK.to(rows.device)).requires_grad_(True)
        undo = sae.preprocess(rows)[1]
        recon = undo(z @ sae.W_dec.detach() + sae.b_pre.detach())
        new = recon + (rows - recon).detach() if keep_error else recon
        saved.update(z=z, pre=enc.pre_acts_BN.detach(), s=undo.scale)
        out = torch.cat([hidden[:, :first], new.reshape(x.shape).to(hidden.device, hidden.dtype)], 1)
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
    """The reference, or a known mistake: 'sign', 'no_error', 'position0', 'sums' (product of sums over
    positions), 'pre' (pre-activations), 'grad' (no activation), 'no_scale' (gradient without s)."""
    if variant in ("no_error", "position0"):
        z, grad, _, _ = _attribution_parts(model, sae, ids, metric, keep_error=variant != "no_error",
                                           first=0 if variant == "position0" else 1)
        return -(z * grad).sum(0)
    z, grad, pre, s = _attribution_parts(model, sae, ids, metric)
    return {"right": lambda: -(z * grad).sum(0), "sign": lambda: (z * grad).sum(0),
            "sums": lambda: -(z.sum(0) * grad.sum(0)), "pre": lambda: -(pre * grad).sum(0),
            "grad": lambda: -(grad * (z != 0)).sum(0), "no_scale": lambda: -(z * grad / s).sum(0)}[variant]()


@exercise("7.3", attribution_estimates)
def check_attribution_estimates(fn, lm) -> None:
    """`fn(model, sae, input_ids_BT, metric) -> [n_latents]`: the activation x gradient estimate of each latent's
    ablation effect (the error term kept, positions >= 1), compared with saelab.interp.attribution on `lm`."""
    from saelab.evals.splice import SpliceSite
    from saelab.interp.attribution import attribute
    from saelab.teach.exercises.harvest import _hooks_left

    model = lm.model
    layer = _site_layer(lm)
    sae = check_sae(lm.d_model, n=64, k=6, layer=layer, seed=5, device=lm.device)
    ids = lm.tokenizer(TEXT, return_tensors="pt").input_ids.to(lm.device)
    target = int(ids[0, -1])

    def metric(logits):  # log-probability of the text's last token
        return torch.log_softmax(logits[0, -2], -1)[target]

    before = _hooks_left(model)
    got = fn(model, sae, ids, metric)
    assert _hooks_left(model) == before, ("your hook is still registered after the call: remove it (handle.remove() "
                                          "in a finally block), or every later forward pass stays spliced")
    assert got is not None, "return the estimates, a tensor [n_latents]"
    got = torch.as_tensor(got).detach().float().cpu()
    assert tuple(got.shape) == (sae.cfg.n_latents,), \
        f"return one estimate per latent, shape ({sae.cfg.n_latents},), got {tuple(got.shape)}"
    want = attribute(lm, sae, ids, metric, where=SpliceSite(layer=layer, exclude_first=1, outlier_factor=None)
                     ).per_latent_N.float()
    tol = dict(atol=1e-4 * max(1e-3, float(want.abs().max())), rtol=1e-3)
    if close(got, want, **tol):
        passed("attribution_estimates (the same as saelab's attribute)")
        return
    if float(got.abs().max()) == 0.0:
        raise AssertionError("every estimate is 0: no gradient reached the activations. Make the selected "
                             "activations a leaf (acts.clone().requires_grad_(True)), decode FROM that leaf inside "
                             "the hook, call backward() on the metric and read acts.grad")
    V = lambda variant: _attribution_variant(model, sae, ids, metric, variant)  # noqa: E731
    diagnose(got, [
        (V("sign"), "wrong sign: ablating moves an activation from a to 0, a change of -a, so the metric moves by "
                    "about -a * dm/da"),
        (V("no_error"), "the forward pass ran on the SAE's reconstruction alone: keep the error term, as a "
                        "detached constant (out = recon + (x - recon).detach()), so that the forward pass is the "
                        "clean one while the gradient still reaches the activations through the decoder"),
        (V("position0"), "you spliced position 0 too: it is the attention sink the SAE never trained on; leave it "
                         "clean and attribute positions >= 1 only"),
        (V("sums"), "you multiplied the sum of a latent's activations by the sum of its gradients: that counts the "
                    "gradient at positions where the latent is not active (nothing to ablate there); sum -a * dm/da "
                    "over the positions where it is selected"),
        (V("pre"), "you used pre-activations: ablating removes the activation a (0 where the latent is not "
                   "selected), not the pre-activation, and only where it is selected"),
        (V("grad"), "you summed the gradient alone: the first-order change when a goes to 0 is the gradient TIMES "
                    "the change, -a * dm/da"),
        (V("no_scale"), "your gradient misses the scale s: decode into the residual stream, not the SAE's input "
                        "space (sae.decode(acts, idx, x, grad=True) maps back per token), so that dm/da = s * "
                        "W_dec[j] . dm/dx"),
    ], **tol)
    top = int(want.abs().argmax())
    raise AssertionError(f"latent {top}'s estimate is {float(got[top]):.4g}, expected {float(want[top]):.4g} "
                         "(-a * dm/da summed over the positions >= 1 where it is selected, the error term kept)")
