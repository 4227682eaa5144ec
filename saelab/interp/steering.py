"""Use an SAE causally: splice it into the LM for any forward pass or `generate()`, and edit latents.

    with spliced(lm, sae, edits=[steer(1234, 8.0)]):        # every forward pass inside runs with the SAE
        out = lm.model.generate(ids, max_new_tokens=20)

At the SAE's site (`saelab.evals.splice.SpliceSite`, the same splice the evaluation suite measures with), each
position the SAE handles is replaced by

    keep_error=True  (default)   x + sum of the edits' changes   (the SAE's error term kept: with no edits
                                                                  the LM runs exactly as without the SAE)
    keep_error=False             x_hat + sum of the edits' changes   (the reconstruction alone)

An edit sets a latent's activation a -> a' at chosen absolute positions (default: every position the SAE
handles, the generated ones included) and adds (a' - a) times the latent's decoder row, mapped back from the
SAE's input space (for per-token normalisations, times that token's scale):

    ablate(j)          a' = 0                  clamp(j, v)    a' = v (also where j was not active)
    scale(j, f)        a' = f * a              steer(j, alpha)  a' = a + alpha (adds alpha decoder rows)

Edits are the standard SAE interventions (as in SAE Lens's error-term hooks and Neuronpedia's steering).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import torch

from saelab.evals.splice import Replacement, SpliceSite, apply_to_rows, check_fits, site_hooked
from saelab.lm.models import LM
from saelab.sae.model import SAE

OPS = ("ablate", "clamp", "scale", "steer")


@dataclass(frozen=True)
class Edit:
    """A change to one latent's activation at chosen positions (see the module docstring)."""

    latent: int
    op: str
    value: float = 0.0
    positions: tuple[int, ...] | None = None
    """Absolute token positions (0 = the first token); None = every position the SAE handles."""

    def __post_init__(self):
        if self.op not in OPS:
            raise ValueError(f"edit op must be one of {OPS}, got {self.op!r}")

    def apply(self, a: torch.Tensor) -> torch.Tensor:
        """The new activation for current activations `a`."""
        if self.op == "ablate":
            return torch.zeros_like(a)
        if self.op == "clamp":
            return torch.full_like(a, self.value)
        if self.op == "scale":
            return a * self.value
        return a + self.value


def _as_positions(positions: int | Iterable[int] | None) -> tuple[int, ...] | None:
    if positions is None:
        return None
    return (int(positions),) if isinstance(positions, int) else tuple(int(p) for p in positions)


def ablate(latent: int, positions=None) -> Edit:
    return Edit(int(latent), "ablate", 0.0, _as_positions(positions))


def clamp(latent: int, value: float, positions=None) -> Edit:
    return Edit(int(latent), "clamp", float(value), _as_positions(positions))


def scale(latent: int, factor: float, positions=None) -> Edit:
    return Edit(int(latent), "scale", float(factor), _as_positions(positions))


def steer(latent: int, alpha: float, positions=None) -> Edit:
    return Edit(int(latent), "steer", float(alpha), _as_positions(positions))


def check_edits(sae: SAE, edits: Sequence[Edit]) -> None:
    n = sae.cfg.n_latents
    for e in edits:
        if not isinstance(e, Edit):
            raise TypeError(f"edits must be saelab.interp.steering.Edit (ablate/clamp/scale/steer), "
                            f"got {type(e).__name__}")
        if not 0 <= e.latent < n:
            raise ValueError(f"edit {e}: latent must be between 0 and {n - 1}")


def edit_rows(sae: SAE, rows_RD: torch.Tensor, positions_R: torch.Tensor, edits: Sequence[Edit],
              keep_error: bool = True, **encode_kwargs) -> torch.Tensor:
    """The spliced value of activation rows [R, D] at absolute positions [R] (see the module docstring)."""
    if keep_error and not edits:
        return rows_RD
    enc = sae.encode(rows_RD, **encode_kwargs)
    base = rows_RD if keep_error else sae.decode(enc.top_acts_BK, enc.top_idx_BK, rows_RD)
    if not edits:
        return base
    current: dict[int, torch.Tensor] = {}
    delta_RD = torch.zeros_like(rows_RD, dtype=sae.W_dec.dtype)
    for e in edits:
        a = current.get(e.latent)
        if a is None:
            a = (enc.top_acts_BK * (enc.top_idx_BK == e.latent)).sum(-1).to(sae.W_dec.dtype)
        where = torch.ones_like(a, dtype=torch.bool) if e.positions is None else \
            torch.isin(positions_R.to(a.device), torch.tensor(e.positions, device=a.device))
        new = torch.where(where, e.apply(a), a)
        delta_RD += (new - a)[:, None] * sae.W_dec[e.latent].detach().to(delta_RD.device)[None]
        current[e.latent] = new
    undo = sae.undo_for(rows_RD, delta_RD)
    return base + (delta_RD * undo.scale).to(base.device, base.dtype)


def edited_replacement(sae: SAE, edits: Sequence[Edit] = (), keep_error: bool = True, **encode_kwargs
                       ) -> Replacement:
    """A `saelab.evals.splice.Replacement` that applies `edit_rows` to the positions the SAE handles."""

    def replace(x_BTD, mask_BT, positions_BT):
        positions_R = positions_BT[mask_BT]
        return apply_to_rows(lambda r: edit_rows(sae, r, positions_R, edits, keep_error, **encode_kwargs),
                             x_BTD, mask_BT, sae.W_dec.dtype)

    return replace


@contextmanager
def spliced(lm: LM, sae: SAE, edits: Sequence[Edit] = (), keep_error: bool = True, where: SpliceSite | None = None,
            capture: dict | None = None, **encode_kwargs):
    """Inside the block every forward pass of `lm.model` (and `generate()`) runs with the SAE spliced in at its
    site, with `edits` applied. `encode_kwargs` pick a test-time activation (e.g. k=64)."""
    where = where or SpliceSite.of(sae, lm)
    check_fits(sae, lm)
    edits = list(edits)
    check_edits(sae, edits)
    with site_hooked(lm, where, edited_replacement(sae, edits, keep_error, **encode_kwargs), capture):
        yield where


@torch.no_grad()
def generate(lm: LM, sae: SAE, prompt: str, edits: Sequence[Edit] = (), max_new_tokens: int = 20,
             keep_error: bool = True, where: SpliceSite | None = None) -> str:
    """Greedy continuation of `prompt` with the SAE spliced in and `edits` applied (the new text only).
    Greedy decoding, so that a comparison with and without edits shows the edits' effect, not sampling."""
    ids = lm.tokenizer(prompt, return_tensors="pt")["input_ids"].to(lm.device)
    pad = lm.tokenizer.pad_token_id if lm.tokenizer.pad_token_id is not None else lm.tokenizer.eos_token_id
    with spliced(lm, sae, edits, keep_error, where):
        out = lm.model.generate(ids, max_new_tokens=max_new_tokens, do_sample=False, pad_token_id=pad,
                                attention_mask=torch.ones_like(ids))
    return lm.tokenizer.decode(out[0, ids.shape[1]:], skip_special_tokens=True)
