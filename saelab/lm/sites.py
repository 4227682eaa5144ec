"""Hook sites in a Hugging Face causal LM, and a forward pass that stops right after one.

Sites: ``resid_post`` (the residual stream after block L, the paper's choice), ``mlp_out`` and
``attn_out`` (outputs of block L's MLP and attention). `run_to_site` raises from a hook so that no
later block and no LM head runs.
"""

from __future__ import annotations

import torch

from saelab.lm.models import LM

SITES = ("resid_post", "mlp_out", "attn_out")


def find_blocks(model: torch.nn.Module) -> torch.nn.ModuleList:
    """The list of transformer blocks of a Hugging Face causal LM (Llama, GPT-2, NeoX, ...)."""
    n = model.config.num_hidden_layers
    for _, mod in model.named_modules():
        if isinstance(mod, torch.nn.ModuleList) and len(mod) == n:
            return mod
    raise ValueError(f"could not find the {n} transformer blocks in {type(model).__name__}")


def site_module(model: torch.nn.Module, site: str, layer: int) -> torch.nn.Module:
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


@torch.no_grad()
def run_to_site(lm: LM, input_ids: torch.Tensor, site: str, layer: int) -> torch.Tensor:
    """Activations [B, T, d] at (site, layer); the forward pass stops right after that module."""
    captured = {}

    def hook(_mod, _inp, out):
        captured["acts"] = out[0] if isinstance(out, tuple) else out
        raise _StopForward

    handle = site_module(lm.model, site, layer).register_forward_hook(hook)
    try:
        lm.model(input_ids=input_ids.to(lm.device), use_cache=False)
    except _StopForward:
        pass
    finally:
        handle.remove()
    if "acts" not in captured:
        raise RuntimeError(f"the hook at {site} {layer} never ran")
    return captured["acts"]




@torch.no_grad()
def run_to_sites(lm: LM, input_ids: torch.Tensor, targets: list[tuple[str, int]]
                 ) -> dict[tuple[str, int], torch.Tensor]:
    """Activations [B, T, d] at each (site, layer) of `targets` from ONE forward pass, which stops right after the
    last of them has run. Each is the same tensor `run_to_site` gives for that target alone (the blocks before it
    compute the same thing whether or not the pass goes on)."""
    targets = list(dict.fromkeys(targets))
    captured: dict[tuple[str, int], torch.Tensor] = {}

    def hook_for(target):
        def hook(_mod, _inp, out):
            acts = out[0] if isinstance(out, tuple) else out
            captured[target] = acts.detach().clone() if len(captured) + 1 < len(targets) else acts
            if len(captured) == len(targets):
                raise _StopForward
        return hook

    handles = [site_module(lm.model, site, layer).register_forward_hook(hook_for((site, layer)))
               for site, layer in targets]
    try:
        lm.model(input_ids=input_ids.to(lm.device), use_cache=False)
    except _StopForward:
        pass
    finally:
        for h in handles:
            h.remove()
    missing = [t for t in targets if t not in captured]
    if missing:
        raise RuntimeError(f"the hooks at {missing} never ran")
    return captured
