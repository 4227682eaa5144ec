"""Notebook 07, exercise 7.2: ablating a set of latents through the SAE's own decoder, the error term kept. The
reference solution, its parametrised twin `_ablate_rows` (whose flags make the usual mistakes) and the check."""

from __future__ import annotations

import torch

from saelab.teach.exercises.base import call_learner, close, diagnose, exercise, passed, unlike
from saelab.teach.exercises.steering import check_sae


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
