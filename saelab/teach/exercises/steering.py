"""Notebook 07 (steering and attribution): a steering hook, ablating a set of latents through the SAE's own decoder
(the error term kept), and attribution patching from one backward pass (the gradient through the decoder, the error
term kept).

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


# ---- 7.2 ablating a set of latents, the error term kept ---------------------------------------------------
def ablate_rows(sae, x_RD: torch.Tensor, latents: list[int]) -> torch.Tensor:
    """The reference solution of exercise 7.2: activation rows [R, D] with every latent in `latents` ablated (its
    activation set to 0 wherever the SAE selects it) and the SAE's error term kept, for any input normalisation:
    the SAE's output from the edited codes plus the error term x - x_hat, through the SAE's own decode."""
    enc = sae.encode(x_RD)
    idx = enc.top_idx_BK
    drop = torch.isin(idx, torch.as_tensor(list(latents), dtype=idx.dtype, device=idx.device))
    kept = enc.top_acts_BK.masked_fill(drop, 0.0)
    return x_RD + sae.decode(kept, idx, x_RD) - sae.decode(enc.top_acts_BK, idx, x_RD)


def _ablate_rows(sae, x_RD, latents, keep_error: bool = True, scale: str = "sae", sign: float = -1.0,
                 acts: str = "acts", shift: bool = False, b_pre: bool = False, row: str = "dec",
                 only_first: bool = False, reselect: bool = False) -> torch.Tensor:
    """`ablate_rows` computed by hand (the change a * s * W_dec[j] per ablated latent j), with known mistakes:
    `scale` 'none' / 'raw' (||x||) / 'centred' (||x - mean x||, 7.1's scale whatever the normalisation)."""
    latents = list(latents)[:1] if only_first else list(latents)
    enc = sae.encode(x_RD, keep_pre=acts == "pre" or reselect)
    if reselect:  # the ablated latents masked out of the pre-activations, and the top k selected again
        pre = enc.pre_acts_BN.detach().clone().to(x_RD.device)
        pre[:, latents] = -torch.inf
        vals, idx = pre.topk(sae.cfg.k, dim=-1)
        return x_RD + sae.decode(vals.clamp_min(0), idx, x_RD) - sae.decode(enc.top_acts_BK, enc.top_idx_BK, x_RD)
    if not keep_error:  # the reconstruction with the latents' activations set to 0
        drop = torch.isin(enc.top_idx_BK, torch.tensor(latents, dtype=enc.top_idx_BK.dtype))
        return sae.decode(enc.top_acts_BK.masked_fill(drop, 0.0), enc.top_idx_BK, x_RD)
    undo = sae.preprocess(x_RD)[1]
    centred = x_RD - x_RD.mean(-1, keepdim=True)
    s = {"sae": undo.scale, "raw": x_RD.norm(dim=-1, keepdim=True), "none": 1.0,
         "centred": centred.norm(dim=-1, keepdim=True)}[scale]
    change = torch.zeros_like(x_RD)
    for j in latents:
        if acts == "acts":
            a = (enc.top_acts_BK * (enc.top_idx_BK == j)).sum(-1)
        elif acts == "one":  # 1 where the latent is selected, not its activation
            a = ((enc.top_idx_BK == j) & (enc.top_acts_BK > 0)).any(-1).to(x_RD.dtype)
        elif acts == "pre":  # the dense pre-activation, also where the latent is not selected
            a = enc.pre_acts_BN[:, j].to(x_RD.device)
        else:  # "max": the latent's largest activation, subtracted at every row
            a = (enc.top_acts_BK * (enc.top_idx_BK == j)).sum(-1).max().expand(len(x_RD))
        w = (sae.W_dec if row == "dec" else sae.W_enc)[j].detach().to(x_RD.device)
        change = change + (a[:, None] * w + (sae.b_pre.detach() if b_pre else 0.0)) * s \
            + (undo.shift if shift else 0.0)
    return x_RD + sign * change


def _fires(sae, x_RD) -> torch.Tensor:
    """[n, R]: whether each latent is selected (with a positive activation) at each row."""
    enc = sae.encode(x_RD)
    on = (enc.top_acts_BK > 0)
    return torch.stack([((enc.top_idx_BK == j) & on).any(-1) for j in range(sae.cfg.n_latents)])


def _ablate_cases():
    """(what, sae, x, latents) of each case: a latent firing on ~40% of 40 rows, then several at once, each other
    normalisation, a batch of one row (k = 1), an empty set and a latent that never fires."""
    d, n = 16, 24
    out = []
    for normalize, seed, k, rows, pick in [("per_token_unit_norm", 3, 4, 40, "one"),
                                           ("per_token_unit_norm", 3, 4, 40, "three"),
                                           ("none", 5, 4, 40, "two"), ("layernorm", 6, 5, 40, "one"),
                                           ("dataset_unit_norm", 7, 3, 40, "two"),
                                           ("per_token_unit_norm", 8, 1, 1, "one"),
                                           ("per_token_unit_norm", 3, 4, 40, "none"),
                                           ("per_token_unit_norm", 3, 4, 40, "silent")]:
        sae = check_sae(d, n=n, k=k, seed=seed, normalize=normalize)
        g = torch.Generator().manual_seed(seed + 1)
        x = (torch.randn(rows, d, generator=g) + 1.5) * torch.empty(rows, 1).uniform_(0.3, 6.0, generator=g)
        if pick == "silent":  # a latent the SAE never selects on these rows
            with torch.no_grad():
                sae.b_enc[n - 1] = -50.0
        share = _fires(sae, x).float().mean(-1)
        by_share = [j for j in (share - 0.4).abs().argsort().tolist() if share[j] > 0]  # ~40% of the rows first
        latents = {"one": by_share[:1], "two": by_share[:2], "three": by_share[:3], "none": [],
                   "silent": [n - 1]}[pick]
        if pick == "silent":
            assert float(share[latents[0]]) == 0.0
        elif latents:
            assert all(0 < float(share[j]) for j in latents)
        out.append((f"with sae.cfg.normalize = {normalize!r}, k = {k}, {rows} row{'s' if rows > 1 else ''} and "
                    f"latents = {latents}", sae, x, latents))
    return out


@exercise("7.2", ablate_rows)
def check_ablate_rows(fn) -> None:
    """`fn(sae, x_RD, latents) -> [R, D]`: the rows with every latent in `latents` ablated where it fires, the error
    term kept (the same as saelab.interp.steering's ablate() edits). Varies the SAE's normalisation (per-token unit
    norm, none, layer norm, a dataset-wide scale), k (1, 3, 4, 5), the rows (40, a batch of one) and the set of
    latents (one, two, three at once, none, one that never fires); the input must come back unchanged."""
    from saelab.interp.steering import ablate, edit_rows

    for what, sae, x, latents in _ablate_cases():
        x_in = x.clone()
        got = call_learner(fn, what, sae, x_in, list(latents))
        assert close(x_in, x), (f"{what}: your function changed x_RD in place: return new rows and leave the input as "
                                "it was (the splice still reads it)")
        want = edit_rows(sae, x, torch.arange(1, len(x) + 1), [ablate(j) for j in latents])
        assert close(want, ablate_rows(sae, x, latents), atol=1e-4)  # the reference is saelab's ablate()
        assert isinstance(got, torch.Tensor), f"{what}: return a tensor [R, D], got {type(got).__name__}"
        assert tuple(got.shape) == tuple(x.shape), \
            f"{what}: return the ablated rows, shape {tuple(x.shape)} [R, D], got {tuple(got.shape)}"
        if not close(got.detach(), want, atol=1e-4, rtol=1e-4):
            _explain_ablation(got.detach().float(), want, sae, x, latents, what)
    passed("ablate_rows (the same as saelab's ablate, in 8 cases)")


def _explain_ablation(got, want, sae, x, latents, what) -> None:
    if close(got, x, atol=1e-4, rtol=1e-4):
        raise AssertionError(f"{what}: the rows came back unchanged: subtract the latents' contribution where they "
                             "fire")
    A = lambda **flags: _ablate_rows(sae, x, latents, **flags)  # noqa: E731
    mode = sae.cfg.normalize
    diagnose(got, unlike(want, [
        (A(keep_error=False),
         "you returned the SAE's reconstruction without the latents: that drops the error term x - x_hat as well, a "
         "bigger change than the ablation; keep x and remove only the latents' own contribution"),
        (A(sign=1.0), "wrong sign: ablating REMOVES the latents' contribution, so subtract it"),
        (A(only_first=True), f"you ablated only latent {latents[0]} of {latents}: ablate every latent in `latents`"),
        (A(reselect=True),
         "another latent took the ablated one's place: you selected the top k again without it. Ablation sets the "
         "activation to 0 in the code the SAE computed and keeps the other selected latents as they were"),
        (A(acts="pre"),
         "you used the latent's pre-activation: where the SAE does not select it the activation is 0 (nothing to "
         "remove), and where it does, the activation is what the decoder used"),
        (A(acts="one"),
         "you subtracted the decoder row (mapped back) where the latent fires, not times its activation a: the "
         "latent's contribution is a * W_dec[latent]"),
        (A(acts="max"),
         "you subtracted the same amount at every row: remove the activation the latent HAS at each row (0 where it "
         "is not among the selected k)"),
        (A(scale="centred"),
         f"you scaled the change by each row's centred norm, 7.1's scale for a per-token unit-norm SAE; this SAE's "
         f"normalisation is {mode!r}, whose scale is another: let sae.decode map codes back to the rows' space (it "
         "knows every normalisation)"),
        (A(scale="none"),
         f"you subtracted a * W_dec[latent] as it is: the decoder works in the SAE's input space (normalisation "
         f"{mode!r}); map the change back to the rows' space, e.g. by decoding with sae.decode(acts, idx, x_RD)"),
        (A(scale="raw"),
         "you scaled by ||x||: the scale this SAE divided by is another number (sae.decode, or "
         "sae.preprocess(x)[1].scale, knows it)"),
        (A(shift=True),
         "you subtracted the row's mean (the Undo's shift) too: a CHANGE maps back with the scale only (the shift "
         "places a point), and in the difference of two decodes it cancels"),
        (A(b_pre=True),
         "you subtracted b_pre: it is in the reconstruction with and without the latents, so it cancels"),
        (A(row="enc"),
         "that is the ENCODER's row; a latent's contribution is along its decoder row W_dec[latent]"),
    ], what, atol=1e-4, rtol=1e-4), atol=1e-4, rtol=1e-4)
    fires = _fires(sae, x)[latents].any(0) if latents else torch.zeros(len(x), dtype=torch.bool)
    if not close(got[~fires], x[~fires], atol=1e-4, rtol=1e-4):
        raise AssertionError(f"{what}: rows where none of the latents fires changed: there the ablation removes "
                             "nothing")
    err = float((got - want).abs().max())
    raise AssertionError(f"{what}: your rows differ from x minus the latents' contribution by up to {err:.3g}")


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
