"""Notebook 01 (harvest): capture the residual stream after a block with a hook you write."""

from __future__ import annotations

import torch

from saelab.lm.models import LM
from saelab.lm.sites import find_blocks, run_to_site
from saelab.teach.exercises.base import exercise, passed, run_case, same_output


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
    """`fn(model, input_ids_BT, layer) -> [B, T, d]` must equal what saelab harvests at ('resid_post', layer).

    Varies: the notebook's layer, the first and the last block; one sentence, a batch of three sequences and a single
    token; and a forward pass that fails (no hook may be left registered after it, nor after any other call)."""
    ids = lm.tokenizer("The cat sat on the mat. Paris is the capital of France.", return_tensors="pt").input_ids
    ids = ids.to(lm.device)
    got = _capture(fn, lm, ids, layer, f"at layer {layer}")
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
    g = torch.Generator().manual_seed(0)
    vocab = lm.model.get_input_embeddings().num_embeddings
    batch = torch.randint(0, min(vocab, 5000), (3, 9), generator=g).to(lm.device)
    last = lm.n_layers - 1
    for what, x, L in ((f"with a batch of 3 sequences of 9 tokens, layer {layer}", batch, layer),
                       (f"with a single token, layer {layer}", ids[:, :1], layer),
                       ("at layer 0 (the first block)", ids, 0), (f"at layer {last} (the last block)", ids, last)):
        got = torch.as_tensor(_capture(fn, lm, x, L, what)).detach()
        want = run_to_site(lm, x, "resid_post", L)
        if L != layer and got.shape == want.shape and torch.allclose(got, run_to_site(lm, x, "resid_post", layer),
                                                                   atol=1e-5):
            raise AssertionError(f"{what}: you captured block {layer} again: hook find_blocks(model)[layer], the "
                                 "block the layer argument names")
        if L == last and got.shape == want.shape and not torch.allclose(got, want, atol=1e-4, rtol=1e-4):
            with torch.no_grad():
                final = lm.model(input_ids=x, output_hidden_states=True, use_cache=False).hidden_states[-1]
            if torch.allclose(got, final, atol=1e-4, rtol=1e-4):
                raise AssertionError(f"{what}: the last entry of output_hidden_states has the model's final norm "
                                     "applied, so it is not the last block's output: hook the block itself")
        same_output(got.float().cpu(), want.float().cpu(), what, atol=1e-4)
    _check_hook_removed_on_error(fn, lm, ids, layer)
    passed("residual_after_block")


class _ForwardFailed(RuntimeError):
    """Raised inside the model by the check, to see whether the learner's hook is removed when a forward fails."""


def _capture(fn, lm: LM, ids: torch.Tensor, layer: int, what: str):
    """Run the learner's function; no hook of its own may be left on the model afterwards."""
    before = _hooks_left(lm.model)
    got = run_case(what, fn, lm.model, ids, layer)
    if _hooks_left(lm.model) > before:
        raise AssertionError(f"{what}: a hook is still registered after your function returned: keep the handle from "
                             "register_forward_hook and call handle.remove() (in a finally:), or every later "
                             "forward pass keeps capturing")
    return got


def _check_hook_removed_on_error(fn, lm: LM, ids: torch.Tensor, layer: int) -> None:
    """Make the forward pass fail inside the model (at the embeddings): the learner's hook must still be removed."""
    def fail(*_):
        raise _ForwardFailed("the check made this forward pass fail on purpose")

    before = _hooks_left(lm.model)
    handle = lm.model.get_input_embeddings().register_forward_pre_hook(fail)
    try:
        fn(lm.model, ids, layer)
    except Exception:  # noqa: BLE001 - _ForwardFailed, or the learner's own wrapping of it: only the hooks matter
        pass
    finally:
        handle.remove()
    if _hooks_left(lm.model) > before:
        raise AssertionError("when the forward pass fails (the check made it raise inside the model), your hook stays "
                             "registered: call handle.remove() in a finally: block around the forward pass")
