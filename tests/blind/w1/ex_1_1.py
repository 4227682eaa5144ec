"""Exercise 1.1 — residual_after_block: blind candidates."""
import torch

from saelab.lm.sites import find_blocks


def _device(model):
    return next(model.parameters()).device


def residual_right(model, input_ids_BT, layer):
    store = {}

    def hook(module, inputs, output):
        store["h"] = output[0] if isinstance(output, tuple) else output

    handle = find_blocks(model)[layer].register_forward_hook(hook)
    try:
        with torch.no_grad():
            model(input_ids=input_ids_BT.to(_device(model)))
    finally:
        handle.remove()
    return store["h"]


def residual_block_input(model, input_ids_BT, layer):
    # stores the block's input (the hook's `inputs` argument) instead of its output
    store = {}

    def hook(module, inputs, output):
        store["h"] = inputs[0]

    handle = find_blocks(model)[layer].register_forward_hook(hook)
    try:
        with torch.no_grad():
            model(input_ids=input_ids_BT.to(_device(model)))
    finally:
        handle.remove()
    return store["h"]


def residual_hidden_states(model, input_ids_BT, layer):
    # skips the hook and reads hidden_states[layer]: index 0 is the embeddings, so this is block layer-1's output
    with torch.no_grad():
        out = model(input_ids=input_ids_BT.to(_device(model)), output_hidden_states=True)
    return out.hidden_states[layer]


def residual_no_finally(model, input_ids_BT, layer):
    # removes the hook only when the forward pass succeeds (no try/finally): a failing pass leaves it registered
    store = {}

    def hook(module, inputs, output):
        store["h"] = output[0] if isinstance(output, tuple) else output

    handle = find_blocks(model)[layer].register_forward_hook(hook)
    with torch.no_grad():
        model(input_ids=input_ids_BT.to(_device(model)))
    handle.remove()
    return store["h"]


def residual_one_based(model, input_ids_BT, layer):
    # reads `layer` as 1-based ("block 22" = the 22nd block) and hooks blocks[layer - 1]
    store = {}

    def hook(module, inputs, output):
        store["h"] = output[0] if isinstance(output, tuple) else output

    handle = find_blocks(model)[layer - 1].register_forward_hook(hook)
    try:
        with torch.no_grad():
            model(input_ids=input_ids_BT.to(_device(model)))
    finally:
        handle.remove()
    return store["h"]


def residual_never_removed(model, input_ids_BT, layer):
    # forgets to remove the hook at all
    store = {}

    def hook(module, inputs, output):
        store["h"] = output[0] if isinstance(output, tuple) else output

    find_blocks(model)[layer].register_forward_hook(hook)
    with torch.no_grad():
        model(input_ids=input_ids_BT.to(_device(model)))
    return store["h"]


CANDIDATES = [
    ("block_input", residual_block_input, "captures the block's input (inputs[0]) rather than its output", False),
    ("hidden_states_index", residual_hidden_states,
     "uses output_hidden_states[layer], which is block layer-1's output (off by one)", False),
    ("one_based_layer", residual_one_based, "hooks blocks[layer - 1], reading the layer as 1-based", False),
    ("no_finally", residual_no_finally, "removes the hook only on success: a failing forward leaves it registered", False),
    ("never_removed", residual_never_removed, "never removes the hook", False),
    ("mine", residual_right, "my honest attempt at a correct solution", True),
]
