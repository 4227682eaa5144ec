"""Exercise 3.1 — spliced_loss: blind candidates."""
import torch
import torch.nn.functional as F

from saelab.lm.sites import find_blocks


def _mix(x_MD, rec_MD, error_scale):
    """recon + error_scale * (x - recon), exact at the two ends."""
    if error_scale == 0:
        return rec_MD
    if error_scale == 1:
        return x_MD
    return rec_MD + error_scale * (x_MD - rec_MD)


def _run(model, input_ids_BT, layer, reconstruct, error_scale, *, start=1, sign=1.0, return_new=True,
         finally_remove=True, score="changed"):
    dev = next(model.parameters()).device
    ids = input_ids_BT.to(dev)

    def hook(module, inputs, output):
        h = output[0] if isinstance(output, tuple) else output
        B, T, D = h.shape
        x = h[:, start:]
        rec = reconstruct(x.reshape(-1, D)).reshape(B, T - start, D).to(h.dtype)
        if sign > 0:
            new_rest = _mix(x, rec, error_scale)
        else:
            new_rest = rec + error_scale * (rec - x)  # "error" taken as recon - x
        new = torch.cat([h[:, :start], new_rest], dim=1)
        if not return_new:
            h = new  # rebinds the local name only
            return None
        return (new,) + tuple(output[1:]) if isinstance(output, tuple) else new

    handle = find_blocks(model)[layer].register_forward_hook(hook)
    if finally_remove:
        try:
            with torch.no_grad():
                logits = model(input_ids=ids).logits
        finally:
            handle.remove()
    else:
        with torch.no_grad():
            logits = model(input_ids=ids).logits
        handle.remove()
    logits = logits.float()
    if score == "changed":      # predictions from positions >= 1, of tokens 2..T-1
        lg, tg = logits[:, 1:-1], ids[:, 2:]
    elif score == "all":        # every next-token prediction, including the one from (clean) position 0
        lg, tg = logits[:, :-1], ids[:, 1:]
    else:                       # "same": logits at t scored against token t (no shift)
        lg, tg = logits[:, 1:], ids[:, 1:]
    return float(F.cross_entropy(lg.reshape(-1, lg.shape[-1]), tg.reshape(-1)))


def spliced_right(model, input_ids_BT, layer, reconstruct, error_scale=0.0) -> float:
    return _run(model, input_ids_BT, layer, reconstruct, error_scale)


def spliced_all_predictions(model, input_ids_BT, layer, reconstruct, error_scale=0.0) -> float:
    return _run(model, input_ids_BT, layer, reconstruct, error_scale, score="all")


def spliced_position_zero(model, input_ids_BT, layer, reconstruct, error_scale=0.0) -> float:
    return _run(model, input_ids_BT, layer, reconstruct, error_scale, start=0, score="all")


def spliced_error_sign(model, input_ids_BT, layer, reconstruct, error_scale=0.0) -> float:
    return _run(model, input_ids_BT, layer, reconstruct, error_scale, sign=-1.0)


def spliced_no_return(model, input_ids_BT, layer, reconstruct, error_scale=0.0) -> float:
    return _run(model, input_ids_BT, layer, reconstruct, error_scale, return_new=False)


def spliced_no_finally(model, input_ids_BT, layer, reconstruct, error_scale=0.0) -> float:
    return _run(model, input_ids_BT, layer, reconstruct, error_scale, finally_remove=False)


def spliced_unshifted(model, input_ids_BT, layer, reconstruct, error_scale=0.0) -> float:
    return _run(model, input_ids_BT, layer, reconstruct, error_scale, score="same")


CANDIDATES = [
    ("all_predictions", spliced_all_predictions,
     "scores logits[:, :-1] vs ids[:, 1:]: includes position 0's prediction, which the splice cannot change", False),
    ("splices_position_0", spliced_position_zero, "replaces position 0 (the attention sink) as well", False),
    ("error_sign", spliced_error_sign, "error taken as recon - x, so error_scale=1 gives 2*recon - x, not x", False),
    ("hook_returns_none", spliced_no_return, "builds the new output but returns None: the splice has no effect", False),
    ("no_finally", spliced_no_finally, "hook removed only if the forward pass succeeds", False),
    ("unshifted_targets", spliced_unshifted, "scores logits at t against token t (no next-token shift)", False),
    ("mine", spliced_right, "my honest attempt at a correct solution", True),
]
