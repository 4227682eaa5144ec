"""Notebook 01 (harvest): capture the residual stream after a block with a hook you write."""

from __future__ import annotations

import torch

from saelab.lm.models import LM
from saelab.lm.sites import find_blocks, run_to_site
from saelab.teach.exercises.base import exercise, passed


@torch.no_grad()
def residual_after_block(model: torch.nn.Module, input_ids_BT: torch.Tensor, layer: int) -> torch.Tensor:
    """The residual stream after block `layer` [B, T, d], captured with a forward hook that is removed after."""
    captured = {}

    def hook(_module, _inputs, output):
        captured["acts"] = output[0] if isinstance(output, tuple) else output

    handle = find_blocks(model)[layer].register_forward_hook(hook)
    try:
        model(input_ids=input_ids_BT, use_cache=False)
    finally:
        handle.remove()
    return captured["acts"]


def _hooks_left(model: torch.nn.Module) -> int:
    """Forward hooks registered on the model, except the output-capturing ones transformers installs itself."""
    return sum(not getattr(h, "__module__", "").startswith("transformers")
               for m in model.modules() for h in [*m._forward_hooks.values(), *m._forward_pre_hooks.values()])


@exercise("1.1", residual_after_block)
def check_residual_after_block(fn, lm: LM, layer: int) -> None:
    """`fn(model, input_ids_BT, layer) -> [B, T, d]` must equal what saelab harvests at ('resid_post', layer)."""
    ids = lm.tokenizer("The cat sat on the mat. Paris is the capital of France.", return_tensors="pt").input_ids
    ids = ids.to(lm.device)
    before = _hooks_left(lm.model)
    got = fn(lm.model, ids, layer)
    if _hooks_left(lm.model) > before:
        raise AssertionError("a hook is still registered after your function returned: keep the handle from "
                             "register_forward_hook and call handle.remove() (in a finally:), or every later "
                             "forward pass keeps capturing")
    if isinstance(got, tuple):
        raise AssertionError("you returned a tuple: a decoder block returns (hidden_states, ...); take element 0")
    got = torch.as_tensor(got).detach()
    want = run_to_site(lm, ids, "resid_post", layer)
    assert tuple(got.shape) == tuple(want.shape), \
        f"expected shape {tuple(want.shape)} [batch, tokens, d_model], got {tuple(got.shape)}"
    for other, message in ((layer - 1, "you captured the INPUT of block {L} (= the output of block {L1}): hook the "
                                      "block's output; note hidden_states[L] from output_hidden_states=True is the "
                                      "input of block L (hidden_states[0] is the embeddings)"),
                           (layer + 1, "you captured the output of block {L2}: off by one, blocks count from 0")):
        if 0 <= other < lm.n_layers and torch.allclose(got, run_to_site(lm, ids, "resid_post", other), atol=1e-5):
            raise AssertionError(message.format(L=layer, L1=layer - 1, L2=layer + 1))
    if layer == 0:
        emb = lm.model.get_input_embeddings()(ids)
        if torch.allclose(got, emb, atol=1e-5):
            raise AssertionError("you captured the embeddings (the input of block 0): hook the block's output")
    if not torch.allclose(got, want, atol=1e-4, rtol=1e-4):
        err = float((got - want).abs().max())
        raise AssertionError(f"your activations differ from the residual stream after block {layer} by up to "
                             f"{err:.3g}: hook the block itself (not its MLP, attention or a norm inside it)")
    passed("residual_after_block")
