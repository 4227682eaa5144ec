"""Exercise 7.3: attribution_estimates, activation x gradient for every latent from one backward pass."""
import torch


def _block(model, layer):
    n = model.config.num_hidden_layers
    for _, mod in model.named_modules():
        if isinstance(mod, torch.nn.ModuleList) and len(mod) == n:
            return mod[layer]
    raise ValueError("no transformer blocks found")


def _run(model, sae, input_ids_BT, metric, *, start=1, detach_error=True, normalized_only=False,
         combine="index_add", factor="minus_act"):
    """One forward with the SAE spliced in at block sae.cfg.layer (clean value, gradient through the selected
    activations), one backward of metric(logits); returns the per-latent estimates [n_latents]."""
    store = {}

    def hook(_mod, _inp, out):
        h = out[0] if isinstance(out, tuple) else out
        B, T, D = h.shape
        rows = h[:, start:].reshape(-1, D).to(sae.W_dec.device, sae.W_dec.dtype)
        enc = sae.encode(rows.detach())
        leaf = enc.top_acts_BK.clone().requires_grad_(True)
        if normalized_only:   # decodes in the SAE's input space and never maps back
            recon = sae.decode_normalized(leaf, enc.top_idx_BK, grad=True)
        else:
            recon = sae.decode(leaf, enc.top_idx_BK, x_like=rows.detach(), grad=True)
        err = rows - recon
        new = recon + (err.detach() if detach_error else err)
        store.update(leaf=leaf, idx=enc.top_idx_BK)
        new_h = torch.cat([h[:, :start], new.reshape(B, T - start, D).to(h.dtype)], dim=1)
        return (new_h,) + tuple(out[1:]) if isinstance(out, tuple) else new_h

    handle = _block(model, sae.cfg.layer).register_forward_hook(hook)
    try:
        with torch.enable_grad():
            logits = model(input_ids=input_ids_BT, use_cache=False).logits
            m = metric(logits)
            (grad,) = torch.autograd.grad(m, store["leaf"], allow_unused=True)
    finally:
        handle.remove()
    leaf, idx = store["leaf"].detach(), store["idx"]
    if grad is None:
        grad = torch.zeros_like(leaf)
    if factor == "minus_act":
        per_slot = grad * (0 - leaf)
    elif factor == "plus_act":
        per_slot = grad * leaf
    else:  # "grad_only"
        per_slot = grad
    out = torch.zeros(sae.cfg.n_latents, device=per_slot.device, dtype=torch.float32)
    flat_idx, flat_val = idx.reshape(-1).to(out.device), per_slot.reshape(-1).float()
    if combine == "index_add":
        out.index_add_(0, flat_idx, flat_val)
    else:  # "assign": the last slot written wins
        out[flat_idx] = flat_val
    return out.detach()


# ---- my honest attempt ---------------------------------------------------------------------------
def attribution_estimates_mine(model, sae, input_ids_BT, metric):
    return _run(model, sae, input_ids_BT, metric)


# ---- wrong 1: sign flipped: gradient x activation estimates adding the latent again, not removing it ---------
def attribution_estimates_plus(model, sae, input_ids_BT, metric):
    return _run(model, sae, input_ids_BT, metric, factor="plus_act")


# ---- wrong 2: the gradient alone, never multiplied by the change of the activation --------------------------
def attribution_estimates_grad_only(model, sae, input_ids_BT, metric):
    return _run(model, sae, input_ids_BT, metric, factor="grad_only")


# ---- wrong 3: position 0 (the attention sink) encoded and attributed too ----------------------------------
def attribution_estimates_with_pos0(model, sae, input_ids_BT, metric):
    return _run(model, sae, input_ids_BT, metric, start=0)


# ---- wrong 4: est[idx] = value: a latent selected at several positions keeps only one position's estimate ---
def attribution_estimates_assign(model, sae, input_ids_BT, metric):
    return _run(model, sae, input_ids_BT, metric, combine="assign")


# ---- wrong 5: error term not detached: recon + (x - recon) has zero gradient to the activations -----------
def attribution_estimates_error_attached(model, sae, input_ids_BT, metric):
    return _run(model, sae, input_ids_BT, metric, detach_error=False)


# ---- wrong 6: gradient through decode_normalized: the per-token scale back to the residual stream is missing --
def attribution_estimates_no_unnormalize(model, sae, input_ids_BT, metric):
    return _run(model, sae, input_ids_BT, metric, normalized_only=True)


CANDIDATES = [
    ("plus_act", attribution_estimates_plus, "gradient x activation with the wrong sign (a -> 2a, not a -> 0)", False),
    ("grad_only", attribution_estimates_grad_only, "sums the gradients without multiplying by the activation change", False),
    ("with_pos0", attribution_estimates_with_pos0, "encodes and attributes position 0 too", False),
    ("assign_not_add", attribution_estimates_assign, "est[idx] = val overwrites: a latent selected at many positions keeps one", False),
    ("error_attached", attribution_estimates_error_attached, "error term not detached: the gradient to the activations cancels to 0", False),
    ("no_unnormalize", attribution_estimates_no_unnormalize, "gradient path in the SAE's normalised space, missing each token's scale", False),
    ("mine", attribution_estimates_mine, "my honest attempt at a correct solution", True),
]
