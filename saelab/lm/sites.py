"""Hook sites in a Hugging Face causal LM, and a forward pass that stops right after one.

Sites: ``resid_post`` (the residual stream after block L, the paper's choice), ``mlp_out`` and
``attn_out`` (outputs of block L's MLP and attention), ``mlp_in`` (the input of block L's MLP: after the
block's pre-MLP norm, what the MLP reads). Two sites of one block joined by '+' (``mlp_in+mlp_out``) are a
pair: both captured in the same forward pass, side by side in each row ([x | y], what a transcoder trains on).
`run_to_site` raises from a hook so that no later block and no LM head runs.
"""

from __future__ import annotations

import torch

from saelab.lm.models import LM

SITES = ("resid_post", "mlp_out", "attn_out", "mlp_in")
INPUT_SITES = {"mlp_in": "mlp_out"}
"""Sites read at a module's input: {site: the site of the module whose input it is}."""


def site_parts(site: str) -> list[str]:
    """The sites of a (paired) site name: 'mlp_in+mlp_out' -> ['mlp_in', 'mlp_out']."""
    parts = site.split("+")
    unknown = [p for p in parts if p not in SITES]
    if unknown or len(parts) > 2 or len(set(parts)) != len(parts):
        raise ValueError(f"unknown site {site!r}; choose from {SITES}, or two of them joined by '+' (a pair, e.g. "
                         "'mlp_in+mlp_out')")
    return parts


def find_blocks(model: torch.nn.Module) -> torch.nn.ModuleList:
    """The list of transformer blocks of a Hugging Face causal LM (Llama, GPT-2, NeoX, ...)."""
    n = model.config.num_hidden_layers
    for _, mod in model.named_modules():
        if isinstance(mod, torch.nn.ModuleList) and len(mod) == n:
            return mod
    raise ValueError(f"could not find the {n} transformer blocks in {type(model).__name__}")


def site_module(model: torch.nn.Module, site: str, layer: int) -> torch.nn.Module:
    """The module whose output is `site` (whose input, for an input site such as 'mlp_in'); a pair: its later one."""
    parts = site_parts(site)
    if len(parts) > 1:
        return [site_module(model, p, layer) for p in parts][-1]
    site = INPUT_SITES.get(site, site)
    blocks = find_blocks(model)
    if not 0 <= layer < len(blocks):
        raise ValueError(f"layer {layer} out of range: the model has {len(blocks)} blocks (0..{len(blocks) - 1})")
    block = blocks[layer]
    if site == "resid_post":
        return block
    names = {"mlp_out": ("mlp", "feed_forward", "ffn"), "attn_out": ("self_attn", "attn", "attention")}
    if site not in names:
        raise ValueError(f"unknown site {site!r}; choose from {SITES}")
    for name in names[site]:
        if hasattr(block, name):
            return getattr(block, name)
    raise ValueError(f"block {layer} of {type(model).__name__} has none of {names[site]}")


class _StopForward(Exception):
    pass


def capture_hook(model: torch.nn.Module, site: str, layer: int, store: dict, key: str, stop: bool = False):
    """Register a hook that puts `site`'s activation [B, T, d] in store[key] on every forward pass (raising
    `_StopForward` after it when `stop`); returns the handle."""
    module = site_module(model, site, layer)
    if site in INPUT_SITES:
        def pre_hook(_mod, args, kwargs):
            store[key] = args[0] if args else next(iter(kwargs.values()))
            if stop:
                raise _StopForward
        return module.register_forward_pre_hook(pre_hook, with_kwargs=True)

    def hook(_mod, _inp, out):
        store[key] = out[0] if isinstance(out, tuple) else out
        if stop:
            raise _StopForward
    return module.register_forward_hook(hook)


@torch.no_grad()
def run_to_site(lm: LM, input_ids: torch.Tensor, site: str, layer: int) -> torch.Tensor:
    """Activations [B, T, d] at (site, layer); the forward pass stops right after that module. A pair of sites
    ('mlp_in+mlp_out'): both from the same pass, concatenated along the last dimension ([B, T, 2d])."""
    return run_to_sites(lm, input_ids, [(site, layer)])[(site, layer)]


@torch.no_grad()
def run_to_sites(lm: LM, input_ids: torch.Tensor, targets: list[tuple[str, int]]
                 ) -> dict[tuple[str, int], torch.Tensor]:
    """Activations [B, T, d] at each (site, layer) of `targets` (a pair of sites: [B, T, 2d]) from ONE forward pass,
    which stops right after the last of them has run. Each is the same tensor `run_to_site` gives for that target
    alone (the blocks before it compute the same thing whether or not the pass goes on)."""
    targets = list(dict.fromkeys(targets))
    parts = list(dict.fromkeys((p, layer) for site, layer in targets for p in site_parts(site)))
    captured: dict[tuple[str, int], torch.Tensor] = {}

    def keep(part, acts):
        captured[part] = acts.detach().clone() if len(captured) + 1 < len(parts) else acts
        if len(captured) == len(parts):
            raise _StopForward

    handles = []
    for part in parts:
        site, layer = part
        module = site_module(lm.model, site, layer)
        if site in INPUT_SITES:
            handles.append(module.register_forward_pre_hook(
                lambda _m, args, kwargs, part=part: keep(part, args[0] if args else next(iter(kwargs.values()))),
                with_kwargs=True))
        else:
            handles.append(module.register_forward_hook(
                lambda _m, _inp, out, part=part: keep(part, out[0] if isinstance(out, tuple) else out)))
    try:
        lm.model(input_ids=input_ids.to(lm.device), use_cache=False)
    except _StopForward:
        pass
    finally:
        for h in handles:
            h.remove()
    missing = [t for t in parts if t not in captured]
    if missing:
        raise RuntimeError(f"the hooks at {missing} never ran")
    return {(site, layer): torch.cat([captured[(p, layer)] for p in site_parts(site)], dim=-1)
            for site, layer in targets}
