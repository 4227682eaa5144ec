"""Notebook 07 (steering and attribution): exercise 7.1, a steering hook, and what the notebook's three checks share
(the small SAE they use, the text). Exercises 7.2 and 7.3 are `ablation` and `attribution`.

Each reference solution has a parametrised twin (`_steering_hook`, `_ablate_rows`, `_attribution_parts`) whose flags
make the usual mistakes: the checks compute those wrong answers to name the one a learner's function reproduces, and
the tests feed them to the checks as known-wrong implementations. Each check runs several cases that vary every
argument of the learner's function (its docstring lists them) and names the case in its message.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from saelab.teach.exercises.base import call_learner, close, diagnose, exercise, passed, unlike

TEXT = "The cat sat on the mat. Paris is the capital of France."
"""The checks' text (any text works: the checks compare with saelab's own steering and attribution on it)."""
TEXT2 = "Water boils at one hundred degrees, and the river flows to the sea in spring."
"""The second sequence of the checks' batches of two."""


# ---- the SAE the checks use -------------------------------------------------------------------------------
def check_sae(d: int, n: int = 64, k: int = 6, layer: int | None = None, seed: int = 0, device=None,
              normalize: str = "per_token_unit_norm"):
    """A small random SAE (by default one that normalises each token, per_token_unit_norm), with a non-zero b_pre and
    b_enc and an encoder that is not the decoder's transpose, so that adding b_pre, using the encoder's row or
    forgetting the scale each give a different (wrong) answer. Under 'dataset_unit_norm' its input scale is 0.37."""
    from saelab.sae.config import SAEConfig
    from saelab.sae.model import SAE

    sae = SAE(SAEConfig(d_in=d, n_latents=n, k=k, layer=layer, normalize=normalize), seed=seed)
    g = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        W = torch.randn(n, d, generator=g)
        sae.W_enc.copy_(W / W.norm(dim=1, keepdim=True))
        b = torch.randn(d, generator=g)
        sae.b_pre.copy_(0.3 * b / b.norm())
        sae.b_enc.copy_(0.05 * torch.randn(n, generator=g))
        if normalize == "dataset_unit_norm":
            sae.input_scale.fill_(0.37)
    return sae.to(device) if device is not None else sae


def _site_layer(lm) -> int:
    return max(1, lm.n_layers // 2)


def _check_ids(lm, batch: int) -> torch.Tensor:
    """The checks' token ids [batch, T]: TEXT, then TEXT2, cut to the same length (no padding)."""
    rows = [lm.tokenizer(t, return_tensors="pt").input_ids[0] for t in (TEXT, TEXT2)[:batch]]
    length = min(len(r) for r in rows)
    return torch.stack([r[:length] for r in rows]).to(lm.device)


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


@dataclass(frozen=True)
class _SteerCase:
    layer: int
    latent: int
    alpha: float
    n: int
    seed: int
    batch: int

    @property
    def what(self) -> str:
        return (f"with latent {self.latent}, alpha {self.alpha:g}, sae.cfg.layer {self.layer} and a batch of "
                f"{self.batch} sequence{'s' if self.batch > 1 else ''}")


def _steer_cases(lm) -> list[_SteerCase]:
    """The middle block first (the known mistakes are named there), then a negative alpha and the last latent, alpha 0
    at the last block, and a batch of two sequences at block 0."""
    mid, last = _site_layer(lm), lm.n_layers - 1
    return [_SteerCase(mid, 5, 1.5, 64, 0, 1), _SteerCase(mid, 63, -2.5, 64, 1, 1),
            _SteerCase(last, 0, 0.0, 32, 2, 1), _SteerCase(0, 17, 0.75, 32, 3, 2)]


@exercise("7.1", add_steering_hook)
def check_steering_hook(fn, lm) -> None:
    """`fn(model, sae, latent, alpha) -> handle` must register on block sae.cfg.layer a forward hook that steers the
    latent by alpha at positions >= 1, in the SAE's input space mapped back to the residual stream (this SAE
    normalises each token), and return a handle whose remove() takes the steering away. Varies the latent (0, 5, the
    last), alpha (1.5, 0.75, 0 and -2.5), the block (0, the middle, the last), the SAE (three seeds, 64 and 32 latents)
    and the batch (one sequence, two); compares the block's output change with saelab.interp.steering's steer and
    the logits with a spliced steer() on `lm`, and removes every hook after."""
    cases = _steer_cases(lm)
    clean = {b: _block_outputs(lm.model, _check_ids(lm, b), {c.layer for c in cases if c.batch == b})
             for b in {c.batch for c in cases}}
    for i, case in enumerate(cases):
        _check_steer_case(fn, lm, case, clean[case.batch][case.layer], compare_logits=i == 0 or case.batch > 1)
    passed("steering_hook (same block outputs and logits as saelab's steer, in 4 cases)")


@torch.no_grad()
def _block_outputs(model, ids, layers) -> dict:
    """{layer: the output of block `layer` [B, T, D]} on `ids`, from one forward pass."""
    from saelab.lm.sites import find_blocks

    out, blocks = {}, find_blocks(model)

    def capture(layer):
        def hook(_module, _inputs, output):
            out[layer] = (output[0] if isinstance(output, tuple) else output).detach().clone()
        return hook

    handles = [blocks[layer].register_forward_hook(capture(layer)) for layer in layers]
    try:
        model(input_ids=ids, use_cache=False)
    finally:
        for h in handles:
            h.remove()
    return out


def _check_steer_case(fn, lm, case: _SteerCase, clean: torch.Tensor, compare_logits: bool) -> None:
    """One case of check_steering_hook: `clean` is the block's output without the hook; the logits are compared with
    a spliced steer() when `compare_logits` (the block's output is compared in every case)."""
    from saelab.evals.splice import SpliceSite
    from saelab.interp.steering import spliced, steer
    from saelab.lm.sites import find_blocks

    model, what, layer = lm.model, case.what, case.layer
    sae = check_sae(lm.d_model, n=case.n, layer=layer, seed=case.seed, device=lm.device)
    ids = _check_ids(lm, case.batch)
    blocks = find_blocks(model)
    index = {id(b): i for i, b in enumerate(blocks)}
    block_of = {name: index[id(m)] for name, m in model.named_modules() if id(m) in index}
    captured = {}

    def capture(_module, _inputs, output):
        captured["x"] = (output[0] if isinstance(output, tuple) else output).detach().clone()

    before = _hook_keys(model)
    handle = call_learner(fn, what, model, sae, case.latent, case.alpha)
    added = _new_hooks(model, before)
    try:
        names = sorted({name for name, *_ in added})
        if not added:
            raise AssertionError(f"{what}: no hook is registered after your function returned: register a forward "
                                 "hook on block sae.cfg.layer (find_blocks(model)[sae.cfg.layer].register_forward_hook)"
                                 " and return its handle, for every alpha (alpha 0 too: the hook then changes nothing)")
        hooked_blocks = sorted(block_of[n] for n in names if n in block_of)
        if len(names) > 1:
            raise AssertionError(f"{what}: you registered hooks on {len(names)} modules ({', '.join(names[:4])}"
                                 f"{', ...' if len(names) > 4 else ''}): steer at the SAE's site only, the output of "
                                 f"block sae.cfg.layer ({layer}); steering every layer adds the push {len(names)} "
                                 "times, at layers the SAE never read")
        if names[0] not in block_of:
            raise AssertionError(f"{what}: you hooked {names[0]!r}: hook the whole block "
                                 "find_blocks(model)[sae.cfg.layer] (the SAE reads the residual stream after the "
                                 "block, not a part inside it)")
        if hooked_blocks[0] != layer:
            raise AssertionError(f"{what}: you hooked block {hooked_blocks[0]}: the SAE reads the output of block "
                                 f"sae.cfg.layer = {layer} (blocks count from 0)")
        if any(d == "_forward_pre_hooks" for _n, d, *_ in added):
            raise AssertionError(f"{what}: a forward PRE-hook changes the block's input (the output of the block "
                                 "before): use register_forward_hook, which sees and may replace the block's output")
        if not hasattr(handle, "remove"):
            raise AssertionError(f"{what}: return the handle that register_forward_hook gives you: the notebook "
                                 "calls handle.remove() when it is done steering")
        with torch.no_grad():
            handle_c = blocks[layer].register_forward_hook(capture)  # runs after yours: sees your output
            try:
                logits = model(input_ids=ids, use_cache=False).logits.float()
            finally:
                handle_c.remove()
        handle.remove()
        if _new_hooks(model, before):
            raise AssertionError(f"{what}: after handle.remove() a hook of yours is still registered: return the "
                                 "handle of the steering hook itself (and register nothing else), so that removing "
                                 "it ends the steering")
    finally:
        _remove(added)
    assert not _new_hooks(model, before), "hooks left behind"  # the check removes them all (by key)
    got = captured["x"].float() - clean.float()
    want = _steer_delta(sae, clean, case.latent, case.alpha)
    tol = dict(atol=1e-4 * max(1.0, float(clean[:, 1:].abs().max())), rtol=1e-3)
    if not close(got, want, **tol):
        _explain_steer(got, want, clean, sae, case, tol)
    if not compare_logits:
        return
    where = SpliceSite(layer=layer, exclude_first=1, outlier_factor=None)
    with torch.no_grad(), spliced(lm, sae, [steer(case.latent, case.alpha)], where=where):
        ref = model(input_ids=ids, use_cache=False).logits.float()
    assert close(logits, ref, atol=1e-3 * max(1.0, float(ref.abs().max())), rtol=1e-3), \
        f"{what}: your steered logits differ from saelab.interp.steering's steer() on the same SAE"


def _explain_steer(got, want, clean, sae, case: _SteerCase, tol: dict) -> None:
    """Raise the message that names what the learner's change to the block's output got wrong."""
    what, latent, alpha = case.what, case.latent, case.alpha
    if float(got[:, 0].abs().max()) > tol["atol"]:
        raise AssertionError(f"{what}: you changed position 0: it is the attention sink, which the SAE never trained "
                             "on (saelab's splice leaves it clean); steer positions >= 1 only")
    if close(got, 0.0 * got, **tol):
        raise AssertionError(f"{what}: your hook did not change the block's output: a forward hook must RETURN the "
                             "new output (a tuple with the new hidden states first when the block returns a tuple), "
                             "or None after changing it in place")
    D = lambda **flags: _steer_delta(sae, clean, latent, alpha, **flags)  # noqa: E731
    diagnose(got, unlike(want, [
        (-want, "wrong sign: steering by alpha raises the latent's activation by alpha (a negative alpha lowers it), "
                "so ADD alpha decoder rows"),
        (D(scale="none"),
         "you added alpha * W_dec[latent] as it is: the decoder row lives in the SAE's input space, where this SAE put "
         "each token at unit norm; map the change back to the residual stream (times the token's scale s, a "
         "different number at each position)"),
        (D(scale="raw"),
         "you scaled by the token's norm ||x||: the SAE divides the CENTRED token (x minus its mean over d_model) by "
         "its norm, so s = ||x - mean(x)||"),
        (D(shift=True),
         "you added the token's mean too (the Undo's shift): mapping a point back adds the mean, but a CHANGE maps "
         "back with the scale only"),
        (D(b_pre=True),
         "you added b_pre: it is in the SAE's output with and without the edit, so it cancels from the change; add "
         "only alpha times the decoder row (mapped back)"),
        (D(b_pre=True, shift=True),
         "you added the SAE's decode of the edit alone: decode maps a POINT back (b_pre and the token's mean "
         "included); the change is the difference of two decodes, alpha decoder rows times the token's scale s"),
        (D(scale="none", b_pre=True),
         "you added b_pre and left out the scale: the change is alpha decoder rows only, mapped back to the residual "
         "stream by the token's scale s"),
        (D(row="enc"),
         "that is the ENCODER's row (it reads the latent); what the latent writes is its decoder row W_dec[latent]"),
    ], what, **tol), **tol)
    if alpha == 0:
        raise AssertionError(f"{what}: steering by alpha = 0 must leave the block's output as it was; yours changed "
                             f"it by up to {float(got.abs().max()):.3g}")
    for j in range(sae.cfg.n_latents):
        if j != latent and close(got, _steer_delta(sae, clean, j, alpha), **tol):
            raise AssertionError(f"{what}: you steered latent {j}, not latent {latent}: use the `latent` argument "
                                 "(W_dec[latent])")
    w = sae.W_dec[latent].detach().to(got.device, torch.float32)
    c_t = (got[:, 1:] @ w) / (w @ w)  # [B, T-1]: how many decoder rows each position got
    if close(got[:, 1:], c_t[..., None] * w, **tol) and float(c_t.std()) <= 1e-3 * float(c_t.abs().mean()):
        raise AssertionError(f"{what}: every position got the same push ({float(c_t.mean()):.4g} decoder rows): the "
                             "scale s is each token's own centred norm, a different number at each position")
    unit = _steer_delta(sae, clean, latent, 1.0)
    c = float((got * unit).sum() / (unit * unit).sum())
    if close(got, c * unit, **tol):
        raise AssertionError(f"{what}: you pushed by {c:.4g} decoder rows (mapped back), not by alpha = {alpha:g}: "
                             "scale the change by the `alpha` argument, sign included")
    for b in range(got.shape[0]):
        if float(got[b, 1:].abs().max()) <= tol["atol"]:
            raise AssertionError(f"{what}: sequence {b} of the batch was not steered: the block's output is "
                                 "[batch, tokens, d_model]; steer positions >= 1 of every sequence")
    if (got[:, 1:].abs().amax(-1) <= tol["atol"]).any():
        raise AssertionError(f"{what}: some positions >= 1 were not steered: steer every position from 1 on, whether "
                             "or not the SAE selects the latent there (steering adds alpha to its activation, 0 or "
                             "not), in a forward pass over the whole sequence")
    err = float((got - want).abs().max())
    raise AssertionError(f"{what}: your change to the residual stream differs from alpha * s * W_dec[latent] at "
                         f"positions >= 1 by up to {err:.3g}")
