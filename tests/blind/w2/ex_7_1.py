"""Exercise 7.1: add_steering_hook, steer a latent by alpha at every position but 0, error term kept."""
import torch


def _block(model, layer):
    """Block `layer` of a Hugging Face causal LM (the ModuleList with num_hidden_layers entries)."""
    n = model.config.num_hidden_layers
    for _, mod in model.named_modules():
        if isinstance(mod, torch.nn.ModuleList) and len(mod) == n:
            return mod[layer]
    raise ValueError("no transformer blocks found")


def _split(out):
    return (out[0], True) if isinstance(out, tuple) else (out, False)


def _join(out, h, was_tuple):
    return (h,) + tuple(out[1:]) if was_tuple else h


def _register(model, sae, delta_fn, skip_first=True):
    """Registers a hook adding delta_fn(h) [B, T, D] to the block's output (from position 1 unless told)."""
    def hook(_mod, _inp, out):
        h, was_tuple = _split(out)
        delta = delta_fn(h).to(h.device, h.dtype)
        h = h.clone()
        if skip_first:
            h[:, 1:] += delta[:, 1:]
        else:
            h += delta
        return _join(out, h, was_tuple)
    return _block(model, sae.cfg.layer).register_forward_hook(hook)


def _per_token_scale(sae, h):
    """The factor that maps a difference in the SAE's input space back to the residual stream, per token."""
    _, undo = sae.preprocess(h.detach().to(sae.W_dec.device, sae.W_dec.dtype))
    scale = undo.scale
    if not torch.is_tensor(scale):
        scale = torch.full(h.shape[:-1] + (1,), float(scale), device=sae.W_dec.device, dtype=sae.W_dec.dtype)
    return scale.expand(*h.shape[:-1], 1)


# ---- my honest attempt: delta x = alpha * W_dec[latent] * s_t (s_t: the token's centred norm) -----------
def add_steering_hook_mine(model, sae, latent, alpha):
    def delta(h):
        with torch.no_grad():
            return alpha * sae.W_dec[latent].detach() * _per_token_scale(sae, h)
    return _register(model, sae, delta)


# ---- wrong 1: adds alpha * W_dec[latent] straight to the residual stream (forgot the per-token scale) -------
def add_steering_hook_no_scale(model, sae, latent, alpha):
    def delta(h):
        return (alpha * sae.W_dec[latent].detach()).expand_as(h)
    return _register(model, sae, delta)


# ---- wrong 2: steers position 0 (the attention sink) too -------------------------------------------------
def add_steering_hook_all_positions(model, sae, latent, alpha):
    def delta(h):
        with torch.no_grad():
            return alpha * sae.W_dec[latent].detach() * _per_token_scale(sae, h)
    return _register(model, sae, delta, skip_first=False)


# ---- wrong 3: scales by the token's norm without centring it (||x||, not ||x - mean(x)||) --------------
def add_steering_hook_uncentred_norm(model, sae, latent, alpha):
    def delta(h):
        with torch.no_grad():
            s = h.detach().float().norm(dim=-1, keepdim=True)
            return alpha * sae.W_dec[latent].detach().to(s.device) * s
    return _register(model, sae, delta)


# ---- wrong 4: "decodes the change": sae.decode of a lone alpha at the latent, b_pre and the shift included ----
def add_steering_hook_decode_whole(model, sae, latent, alpha):
    def delta(h):
        with torch.no_grad():
            B, T, D = h.shape
            x = h.detach().reshape(-1, D).to(sae.W_dec.device, sae.W_dec.dtype)
            acts = torch.full((len(x), 1), float(alpha), device=x.device, dtype=x.dtype)
            idx = torch.full((len(x), 1), latent, device=x.device, dtype=torch.long)
            return sae.decode(acts, idx, x_like=x).reshape(B, T, D)
    return _register(model, sae, delta)


# ---- wrong 5: one scale for the whole sequence (the mean of the tokens' centred norms) ------------------------
def add_steering_hook_mean_scale(model, sae, latent, alpha):
    def delta(h):
        with torch.no_grad():
            s = _per_token_scale(sae, h)
            s = s[:, 1:].mean() if s.shape[1] > 1 else s.mean()
            return (alpha * sae.W_dec[latent].detach() * s).expand(*h.shape)
    return _register(model, sae, delta)


CANDIDATES = [
    ("no_scale", add_steering_hook_no_scale, "adds alpha x decoder row in the residual stream, without each token's scale", False),
    ("all_positions", add_steering_hook_all_positions, "also steers position 0, the attention sink", False),
    ("uncentred_norm", add_steering_hook_uncentred_norm, "scales by the uncentred norm ||x|| instead of ||x - mean(x)||", False),
    ("decode_whole", add_steering_hook_decode_whole, "adds sae.decode of the lone activation: b_pre and the mean shift added too", False),
    ("mean_scale", add_steering_hook_mean_scale, "one scale for all tokens (the mean norm) instead of each token's own", False),
    ("mine", add_steering_hook_mine, "my honest attempt at a correct solution", True),
]
