"""Splicing an SAE into a language model: where it sits, which positions it handles, and its codes.

At the hooked site (`SpliceSite`), the activation of every eligible position is rewritten (by the
SAE's reconstruction, or an ablation baseline) and the rest of the forward pass runs on it. An SAE that reads
another site than it writes (a transcoder: the MLP's input in, its output out) is given the activation of the
site it reads, captured in the same forward pass (`SpliceSite.reads`).
Positions the SAE never saw in training (position < exclude_first, the attention sink, and norm
outliers such as document separators, both as in the harvest) are left clean.
`encode_contexts` gives the metrics (`downstream`, `probes`, `n2g`, `ablation`) the SAE's codes.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from saelab.acts.corpus import ContextConfig
from saelab.acts.outliers import outlier_mask
from saelab.lm.models import LM
from saelab.lm.sites import capture_hook, run_to_site, site_module
from saelab.sae.model import SAE

# replacement(x_BTD, mask_BT, positions_BT) -> new activations [B, T, D] (used where mask is True)
Replacement = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


@dataclass
class SpliceSite:
    """Where the SAE sits in the LM and which positions it handles."""

    layer: int
    """Block index (0-based): the SAE's recorded layer, or the LM's default (see `of`)."""
    site: str = "resid_post"
    exclude_first: int = 1
    """Positions < this stay clean (not trained on)."""
    outlier_factor: float | None = 10.0
    """Tokens above this multiple of the median norm stay clean (as in the harvest; None: none)."""
    reads: str | None = None
    """The site whose activation the replacement is computed from, when not `site` (a transcoder's input)."""

    @property
    def source(self) -> str:
        """The site the SAE reads: `reads`, else `site`."""
        return self.reads or self.site

    @classmethod
    def of(cls, sae: SAE, lm: LM, positions: str = "trained", **overrides) -> SpliceSite:
        """The site recorded in the SAE's config (falling back to the LM's default layer), checked to fit.

        positions: 'trained' (default) leaves clean what the SAE's training harvest left out, read from its
        data record (`SAE.data_record`: exclude_first, outlier_factor), else the harvest's defaults (position 0
        and tokens above 10x the median norm); 'all' splices every position (the convention issue 27 gives for the
        paper and other libraries; not checked against the paper's text here).
        """
        c = sae.cfg
        if positions not in ("trained", "all"):
            raise ValueError(f"positions must be 'trained' or 'all', got {positions!r}")
        check_fits(sae, lm)
        if c.layer is None and c.hook and "layer" not in overrides:
            raise ValueError(f"the SAE from {c.source or 'elsewhere'} reads hook {c.hook!r}, which saelab cannot map "
                             "to a site (resid_post, mlp_out, attn_out of a GPT-2 or Llama-style block); pass site= "
                             "and layer= to load_sae")
        if c.layer is None and c.source and "layer" not in overrides:
            warnings.warn(f"the SAE from {c.source} does not say its layer (hook {c.hook!r}); splicing it at "
                          f"{lm.name}'s default layer {lm.default_layer}: pass layer= to load_sae to choose",
                          stacklevel=2)
        writes = sae.family.writes(c)
        kw = {"site": writes or c.site or "resid_post", "layer": c.layer if c.layer is not None else lm.default_layer,
              "reads": c.site if writes != c.site else None}
        if positions == "all":
            kw.update(exclude_first=0, outlier_factor=None)
        else:
            kw.update(recorded_positions(sae))
        return cls(**{**kw, **overrides})


def recorded_positions(sae: SAE) -> dict:
    """The positions rule of the SAE's training harvest, from its data record: {'exclude_first', 'outlier_factor'}
    where recorded (an outlier_factor recorded as None means the harvest had no outlier rule); {} when unknown."""
    record = sae.data_record or {}
    return {k: record[k] for k in ("exclude_first", "outlier_factor")
            if k in record and (record[k] is not None or k == "outlier_factor")}


def check_fits(sae: SAE, lm: LM) -> None:
    """A clear error when the SAE's width is not the LM's (an SAE trained on another model)."""
    if sae.cfg.d_in != lm.d_model:
        made_for = f" (it was trained on {sae.cfg.model})" if sae.cfg.model else ""
        raise ValueError(f"this SAE reads {sae.cfg.d_in}-wide activations but {lm.name} has d_model {lm.d_model}"
                         f"{made_for}; load the model it was trained on (e.g. --model {sae.cfg.model or 'NAME'})")


def heldout_context(saes) -> ContextConfig:
    """A ContextConfig whose document split is the one the SAEs' training harvest used (their data records:
    `heldout_fraction` and `seed` decide which documents are held out), so the evaluation's held-out documents are
    the ones they never trained on; every other field keeps the evaluation's own default. SAEs made elsewhere
    record none: the default split is used, with a warning that those documents may be in their training data."""
    records = [s.data_record or {} for s in saes]
    splits = [(r["context"]["heldout_fraction"], r["context"]["seed"]) for r in records
              if isinstance(r.get("context"), dict) and {"heldout_fraction", "seed"} <= set(r["context"])]
    if any(r.get("split") == "all" for r in records):
        warnings.warn("an SAE here was trained on every document (split 'all'): no held-out document is unseen by it",
                      stacklevel=2)
    if not splits:
        if records:
            warnings.warn("no SAE here records its training split (made elsewhere, or before saelab 0.2): scoring on "
                          "saelab's default held-out documents, which they may have trained on", stacklevel=2)
        return ContextConfig()
    if len(splits) < len(records):
        warnings.warn("an SAE here does not record its training split (made elsewhere, or before saelab 0.2): scoring "
                      "every SAE on the recorded split of the others, which it may have trained on", stacklevel=2)
    if any(sp != splits[0] for sp in splits[1:]):
        warnings.warn("the SAEs were trained on different document splits; scoring all of them on the first's "
                      "held-out documents, which the others may have trained on", stacklevel=2)
    return ContextConfig(heldout_fraction=splits[0][0], seed=splits[0][1])


def eligible_mask(acts_BTD: torch.Tensor, where: SpliceSite, positions_BT: torch.Tensor | None = None,
                  median_norm: torch.Tensor | float | None = None) -> torch.Tensor:
    """[B, T] True where the SAE handles the position (the harvest's token policy). `positions_BT`: the
    tokens' absolute positions (default 0..T-1; a generation step with a KV cache starts later).
    `median_norm`: the outlier rule's reference median (default: these tokens')."""
    B, T, D = acts_BTD.shape
    if positions_BT is None:
        positions_BT = torch.arange(T, device=acts_BTD.device).expand(B, T)
    late = positions_BT.to(acts_BTD.device) >= where.exclude_first
    mask = torch.zeros(B, T, dtype=torch.bool, device=acts_BTD.device)
    if not late.any():
        return mask
    keep = outlier_mask(acts_BTD[late].float(), where.outlier_factor, median_norm).to(acts_BTD.device)
    mask[late] = keep
    return mask


def _positions(args: tuple, kwargs: dict) -> torch.Tensor | None:
    """Absolute positions of a forward call's tokens (broadcastable to [B, T]), from its arguments:
    position_ids, else cache_position, else the KV cache's length; None when there are no tokens."""
    ids = kwargs.get("input_ids", args[0] if args else None)
    if ids is None and kwargs.get("inputs_embeds") is not None:
        ids = kwargs["inputs_embeds"][..., 0]
    if kwargs.get("position_ids") is not None:
        return kwargs["position_ids"]
    if kwargs.get("cache_position") is not None:
        return kwargs["cache_position"][None]
    if ids is None:
        return None
    cache = kwargs.get("past_key_values", kwargs.get("cache"))
    start = int(cache.get_seq_length()) if hasattr(cache, "get_seq_length") else 0
    return torch.arange(start, start + ids.shape[-1], device=ids.device)[None]


def _n_positional(fn) -> int:
    import inspect

    try:
        params = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):
        return 3
    if any(p.kind is p.VAR_POSITIONAL for p in params):
        return 3
    return sum(p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD) for p in params)


@contextmanager
def site_hooked(lm: LM, where: SpliceSite, replace: Replacement | None, capture: dict | None = None):
    """Every forward pass of `lm.model` inside the block (plain calls and `generate()`) has the site's output
    rewritten by `replace(x_BTD, mask_BT, positions_BT)` on the eligible positions. `capture` receives the
    last call's clean activations, mask and positions. The one splice every metric and edit goes through."""
    state: dict = {}
    if replace is not None and _n_positional(replace) == 2:  # replacements written for (x, mask) only
        two = replace
        replace = lambda x, m, _p: two(x, m)  # noqa: E731

    def pre_hook(_mod, args, kwargs):
        state["positions"] = _positions(args, kwargs)
        state.pop("source", None)

    def hook(_mod, _inp, out):
        hidden = out[0] if isinstance(out, tuple) else out
        B, T, _ = hidden.shape
        positions = state.get("positions")
        positions = torch.arange(T, device=hidden.device)[None] if positions is None else positions.to(hidden.device)
        try:
            positions = positions.expand(B, T)
        except RuntimeError:
            raise RuntimeError(f"the positions of this forward call {tuple(positions.shape)} do not fit its "
                               f"activations [{B}, {T}]; pass position_ids of shape [batch, tokens]") from None
        if where.outlier_factor is None:
            state["median"] = None
        elif T > 1 or "median" not in state:  # a cached generation step reuses its prompt's outlier median
            late = positions >= where.exclude_first
            state["median"] = hidden[late].float().norm(dim=-1).median() if late.any() else None
        mask = eligible_mask(hidden, where, positions, state["median"])
        if capture is not None:
            capture["acts"], capture["mask"], capture["positions"] = hidden.detach(), mask, positions
        if replace is None or not mask.any():
            return None
        new = replace(state.get("source", hidden), mask, positions).to(hidden.dtype)
        hidden = torch.where(mask[..., None], new, hidden)
        return (hidden, *out[1:]) if isinstance(out, tuple) else hidden

    handles = [lm.model.register_forward_pre_hook(pre_hook, with_kwargs=True)]
    if where.reads and where.reads != where.site:  # a transcoder: what it reads, from this same pass
        handles.append(capture_hook(lm.model, where.reads, where.layer, state, "source"))
    handles.append(site_module(lm.model, where.site, where.layer).register_forward_hook(hook))
    try:
        yield state
    finally:
        for h in handles:
            h.remove()


def patched_logits(lm: LM, input_ids: torch.Tensor, where: SpliceSite,
                   replace: Replacement | None, capture: dict | None = None) -> torch.Tensor:
    """Logits [B, T, V] with the site's output rewritten by `replace` on the eligible positions."""
    with site_hooked(lm, where, replace, capture):
        return lm.model(input_ids=input_ids.to(lm.device), use_cache=False).logits.float()


def apply_to_rows(fn: Callable[[torch.Tensor], torch.Tensor], x_BTD: torch.Tensor, mask_BT: torch.Tensor,
          dtype: torch.dtype) -> torch.Tensor:
    """Apply a row function to the masked rows of [B, T, D]; other rows are zero."""
    out = torch.zeros_like(x_BTD, dtype=dtype)
    flat = x_BTD[mask_BT].to(dtype)
    if len(flat):
        out[mask_BT] = fn(flat)
    return out


def sae_replacement(sae: SAE, **encode_kwargs) -> Replacement:
    """Replace activations by the SAE's reconstruction (test-time activation via `encode_kwargs`)."""
    return lambda x, m, _p=None: apply_to_rows(lambda r: sae.reconstruct(r, **encode_kwargs), x, m, sae.W_dec.dtype)


def zero_replacement() -> Replacement:
    return lambda x, m, _p=None: torch.zeros_like(x)


def mean_replacement(mean_D: torch.Tensor) -> Replacement:
    return lambda x, m, _p=None: mean_D.to(x)[None, None].expand_as(x)


@torch.no_grad()
def site_mean(lm: LM, tokens_NT: torch.Tensor, where: SpliceSite, batch_size: int = 32) -> torch.Tensor:
    """Mean activation over the eligible positions of `tokens_NT` (the mean-ablation baseline)."""
    total, count = None, 0
    for s in range(0, len(tokens_NT), batch_size):
        acts = run_to_site(lm, tokens_NT[s:s + batch_size], where.site, where.layer).float()
        mask = eligible_mask(acts, where)
        part = acts[mask].sum(0)
        total = part if total is None else total + part
        count += int(mask.sum())
    return total / max(count, 1)


@dataclass
class Codes:
    """An SAE's sparse codes on token contexts: acts/idx [N, T, K] (padded with act 0), valid [N, T]."""

    tokens_NT: torch.Tensor
    acts_NTK: torch.Tensor
    idx_NTK: torch.Tensor
    valid_NT: torch.Tensor
    n_latents: int

    def sample_alive(self, n: int, seed: int = 0) -> list[int]:
        """A random sample (sorted) of `n` latents that fire somewhere in these codes."""
        ptr, _, _ = self.latent_acts()
        alive = torch.nonzero(ptr[1:] > ptr[:-1]).squeeze(1)
        g = torch.Generator().manual_seed(seed)
        return alive[torch.randperm(len(alive), generator=g)[:n]].sort().values.tolist()

    def latent_values(self, latent: int) -> torch.Tensor:
        """[N, T] activation of `latent` at every position (0 where it does not fire)."""
        hit = (self.idx_NTK == latent) & (self.acts_NTK > 0)
        return (self.acts_NTK.float() * hit).sum(-1)

    def latent_acts(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """CSR view by latent: (ptr [n+1], flat position [nnz], value [nnz]) over valid positions."""
        N, T, K = self.acts_NTK.shape
        a = self.acts_NTK.reshape(-1, K)
        i = self.idx_NTK.reshape(-1, K)
        pos = torch.arange(N * T)[:, None].expand(-1, K)
        keep = (a > 0) & self.valid_NT.reshape(-1, 1)
        lat, p, v = i[keep], pos[keep], a[keep]
        order = torch.argsort(lat * (N * T) + p)
        lat, p, v = lat[order], p[order], v[order]
        ptr = torch.zeros(self.n_latents + 1, dtype=torch.long)
        ptr[1:] = torch.bincount(lat, minlength=self.n_latents).cumsum(0)
        return ptr, p, v.float()


@torch.no_grad()
def encode_contexts(lm: LM, sae: SAE, tokens_NT: torch.Tensor, where: SpliceSite | None = None,
                    batch_size: int = 32, progress: bool = True, return_acts: bool = False, **encode_kwargs):
    """Run the LM to the site on every context and encode with the SAE. Returns `Codes`
    (and the raw activations [N, T, D] when `return_acts`)."""
    from tqdm.auto import tqdm

    where = where or SpliceSite.of(sae, lm)
    tokens_NT = torch.as_tensor(tokens_NT).long()
    acts_l, idx_l, valid_l, raw = [], [], [], []
    for s in tqdm(range(0, len(tokens_NT), batch_size), desc="encode", disable=not progress, leave=False):
        x = run_to_site(lm, tokens_NT[s:s + batch_size], where.source, where.layer).float().cpu()
        B, T, D = x.shape
        enc = sae.encode(x.reshape(-1, D), **encode_kwargs)
        acts_l.append(enc.top_acts_BK.reshape(B, T, -1))
        idx_l.append(enc.top_idx_BK.reshape(B, T, -1))
        valid_l.append(eligible_mask(x, where))
        if return_acts:
            raw.append(x)
    K = max(a.shape[-1] for a in acts_l)
    acts = torch.cat([F.pad(a, (0, K - a.shape[-1])) for a in acts_l])
    idx = torch.cat([F.pad(i, (0, K - i.shape[-1])) for i in idx_l])
    codes = Codes(tokens_NT, acts, idx, torch.cat(valid_l), sae.cfg.n_latents)
    return (codes, torch.cat(raw)) if return_acts else codes
