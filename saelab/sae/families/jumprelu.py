"""JumpReLU training (Rajamanoharan et al. 2024, arXiv 2407.14435): a per-latent threshold theta learned with
straight-through estimators, and an L0 penalty trained directly.

    f(x)  = JumpReLU_theta(pre) = pre * H(pre - theta)
    L     = nmse(x, x_hat) + l0_coef * E_tokens ||f(x)||_0                (the paper: squared error + lambda L0)

H has no useful gradient, so the paper's pseudo-derivatives with respect to theta replace it, with the
rectangle kernel K(u) = 1{-1/2 < u < 1/2} and a bandwidth epsilon:

    d JumpReLU / d theta := -(theta / eps) K((pre - theta) / eps)       d JumpReLU / d pre := H(pre - theta)
    d H / d theta        := -(1 / eps)     K((pre - theta) / eps)       d H / d pre        := 0

So theta gets gradient only from pre-activations within eps/2 of it, on both sides: the training selection is every
pre-activation above theta - eps/2 (`select_window`), the active ones plus those just below. While many latents
pass it (early in training, theta starts at 0.001), the model runs this densely; once the codes are sparse, on the
selected entries only (the same kernels as TopK). Both give the same gradients (tests/test_jumprelu.py).

theta is a parameter of its own, clamped at 0, as SAE Lens 6.54 trains it (its docstring: Adam moves a parameter by
about lr a step, so DeepMind's log(theta) barely moves a small initial threshold, SAE Lens issue #494). The bandwidth
and initial threshold (`SAEConfig`, both 0.001 in the SAE's input space, per-token unit norm here) are saelab's
choice, not checked against the paper's text, which could not be read from here. No AuxK by default (the paper has
none; `k_aux` turns it on). The unit-norm decoder is kept from the TopK recipe. After each optimiser step the
thresholds are clamped at 0 (`after_step`), so what is saved is what was trained.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from saelab.sae import kernels
from saelab.sae.families.base import Family, ForwardOut, Penalty
from saelab.sae.kernels import dense_decode, sparse_decode, transposed_pattern
from saelab.sae.losses import mean_predictor_mse


@dataclass
class JumpReLUOptions:
    l0_coef: float = 0.0
    """JumpReLU's L0 coefficient lambda (the loss is nmse + lambda E||f||_0; ramped up over l1_warmup_frac)."""
    jumprelu_bandwidth: float = 0.001
    """JumpReLU's straight-through bandwidth epsilon (in the SAE's input space)."""
    jumprelu_init_threshold: float = 0.001
    """JumpReLU's initial threshold theta, every latent."""

DENSE_WHILE_WIDER_THAN = 1 / 16
"""The training forward runs densely while the selection holds more than this fraction of the latents per token on
average (sparse rows cost more than dense products there), and on the selected entries below it."""


def rectangle(u: torch.Tensor) -> torch.Tensor:
    """The paper's kernel K: 1 on (-1/2, 1/2), else 0."""
    return ((u > -0.5) & (u < 0.5)).to(u.dtype)


class JumpReLUFn(torch.autograd.Function):
    """pre * H(pre - theta), elementwise (theta broadcast to pre's shape), with the paper's pseudo-derivative in
    theta and H(pre - theta) in pre."""

    @staticmethod
    def forward(ctx, pre, theta, eps: float):
        ctx.save_for_backward(pre, theta)
        ctx.eps = eps
        return pre * (pre > theta).to(pre.dtype)

    @staticmethod
    def backward(ctx, g):
        pre, theta = ctx.saved_tensors
        g_pre = g * (pre > theta).to(g.dtype)
        g_theta = -(theta / ctx.eps) * rectangle((pre - theta) / ctx.eps) * g
        return g_pre, g_theta, None


class StepFn(torch.autograd.Function):
    """H(pre - theta), elementwise, with the paper's pseudo-derivative in theta and none in pre."""

    @staticmethod
    def forward(ctx, pre, theta, eps: float):
        ctx.save_for_backward(pre, theta)
        ctx.eps = eps
        return (pre > theta).to(pre.dtype)

    @staticmethod
    def backward(ctx, g):
        pre, theta = ctx.saved_tensors
        return None, -(1.0 / ctx.eps) * rectangle((pre - theta) / ctx.eps) * g, None


def jumprelu(pre: torch.Tensor, theta: torch.Tensor, eps: float) -> torch.Tensor:
    return JumpReLUFn.apply(pre, theta.expand_as(pre), eps)


def step(pre: torch.Tensor, theta: torch.Tensor, eps: float) -> torch.Tensor:
    return StepFn.apply(pre, theta.expand_as(pre), eps)


@torch.no_grad()
def select_window(pre_BN: torch.Tensor, theta_N: torch.Tensor, eps: float, mask: torch.Tensor | None = None):
    """Every entry with pre > theta - eps/2 (the active ones and those that give theta a gradient), as (values,
    indices, valid 0/1) padded to the widest row; padding has index 0, value 0 and valid 0. `mask`: that
    comparison when already made."""
    mask = pre_BN > (theta_N - eps / 2) if mask is None else mask
    rows, cols = mask.nonzero(as_tuple=True)  # row-major: each row's columns in order
    counts = torch.bincount(rows, minlength=pre_BN.shape[0])  # O(entries), not a pass over [B, n]
    width = max(int(counts.max()) if counts.numel() else 0, 1)
    starts = torch.cumsum(counts, 0) - counts
    slot = torch.arange(len(rows), device=pre_BN.device) - starts[rows]
    idx = torch.zeros(pre_BN.shape[0], width, dtype=torch.long, device=pre_BN.device)
    vals = torch.zeros(pre_BN.shape[0], width, dtype=pre_BN.dtype, device=pre_BN.device)
    valid = torch.zeros_like(vals)
    idx[rows, slot] = cols
    vals[rows, slot] = pre_BN[rows, cols]
    valid[rows, slot] = 1.0
    return vals, idx, valid


def warn_jumprelu_init(activation: str, rescale_encoder_init: bool) -> None:
    """Warn a JumpReLU run that starts from the plain transpose init (TrainConfig checks it)."""
    if activation == JumpReLU.name and not rescale_encoder_init:
        import warnings

        warnings.warn("JumpReLU without rescale_encoder_init: on the main job's data most latents died in the first "
                      "(dense) steps (98.5% at 1/8 of its steps); pass --train.rescale_encoder_init true (saelab "
                      "frontier's recipe, the JumpReLU family's `recipe`)", stacklevel=3)


def runs_dense(per_token: float, n_latents: int) -> bool:
    return per_token > DENSE_WHILE_WIDER_THAN * n_latents


def _check_workspace(rows: int, n: int, element_size: int) -> None:
    if rows * n * element_size > kernels.WORKSPACE_BYTES:
        raise ValueError(f"JumpReLU training holds the [batch, n] pre-activations at once ({rows} x {n} "
                         f"= {rows * n * element_size / 2**30:.1f} GiB, over the 1 GiB workspace); "
                         "use a smaller batch_size, or data parallelism to split it")


def _codes(sae, x_n, centred, pre, pre_BN, window, eps):
    """(decoded without b_pre, L0 term with graph, acts, idx or None (dense), decode kernel): dense while the
    window is wide, on the selected entries once the codes are sparse."""
    cfg, rows = sae.cfg, len(x_n)
    entries = int(torch.count_nonzero(window))  # (a bool .sum() would first copy it to int64)
    if cfg.kernel == "dense" or runs_dense(entries / rows, cfg.n_latents):
        f = jumprelu(pre, sae.threshold, eps)
        l0_graph = step(pre, sae.threshold, eps).sum() / rows
        return f @ sae.W_dec, l0_graph, f.detach(), None, dense_decode
    vals, idx, valid = select_window(pre_BN, sae.threshold.detach(), eps, window)
    pattern = transposed_pattern(idx, cfg.n_latents)
    pre_sel = sae.encode_selected(x_n, idx, vals, pattern, centred)
    theta_sel = sae.threshold[idx]
    f = jumprelu(pre_sel, theta_sel, eps) * valid
    l0_graph = (step(pre_sel, theta_sel, eps) * valid).sum() / rows
    return sparse_decode(idx, f, sae.W_dec, pattern), l0_graph, f.detach(), idx, sparse_decode


def jumprelu_forward(sae, x_n: torch.Tensor, undo, ctx) -> ForwardOut:
    """A JumpReLU SAE's training forward pass in its input space."""
    from saelab.sae.auxk import aux_loss

    cfg, eps = sae.cfg, sae.cfg.jumprelu_bandwidth
    rows = len(x_n)
    _check_workspace(rows, cfg.n_latents, x_n.element_size())
    with torch.no_grad():
        sae.threshold.clamp_(min=0.0)  # below zero the gate would pass negative pre-activations (as SAE Lens)
        theta = sae.threshold.detach()
    centred_g = x_n - sae.b_pre
    centred = centred_g.detach()
    pre = F.linear(centred_g, sae.W_enc, sae.b_enc)  # one product; its graph is used only on the dense path
    pre_BN = pre.detach()
    with torch.no_grad():
        window = pre_BN > (theta - eps / 2)
    decoded, l0_graph, acts, idx, decode = _codes(sae, x_n, centred, pre, pre_BN, window, eps)
    del pre
    sse = F.mse_loss(decoded, centred_g, reduction="sum") / rows
    baseline = mean_predictor_mse(x_n, ctx.reduce())
    losses = {"mse": sse.detach() / cfg.d_in, "nmse": sse / baseline, "l0_penalty": l0_graph}
    total = losses["nmse"] + cfg.l0_coef * ctx.ramp * l0_graph
    recon_n = decoded + sae.b_pre
    active = acts > 0
    if idx is None:
        fired = active.any(0)
    else:
        fired = torch.zeros(cfg.n_latents, dtype=torch.bool, device=x_n.device)
        fired[idx[active]] = True
    dead_mask_N = ctx.dead_mask_fn(fired) if ctx.dead_mask_fn is not None else ctx.dead_mask_N
    if cfg.k_aux and dead_mask_N is not None and bool(dead_mask_N.any()):
        losses["aux"] = aux_loss(sae, x_n, (x_n - recon_n).detach(), pre_BN, dead_mask_N, decode, ctx.reduce(),
                                 centred)
        total = total + cfg.aux_coef * losses["aux"]
    losses["total"] = total
    return ForwardOut(undo(recon_n), losses, acts if idx is not None else None, idx, fired,
                      active.sum(-1).float().mean())


class JumpReLU(Family):
    name, display, options, selection = "jumprelu", "JumpReLU", JumpReLUOptions, "jumprelu"
    has_k, chunks = False, False
    recipe = {"activation": "jumprelu", "k_aux": 0, "rescale_encoder_init": True, "l1_warmup_frac": 0.1}
    """Without AuxK, as its paper, and with the released TopK code's encoder rescale at init: without it the dense
    first steps (every positive pre-activation passes theta = 0.001) overshoot the input and kill most latents.
    Measured on the main job's data at 1/8 of its steps, lambda 0.002: without the rescale 98.5% dead in training
    and normalized MSE 0.573 at L0 23.1; with it 0.219 at L0 34.3 (7.7% never fired on held-out tokens; 0.219 at
    L0 34.2 and 4.6% with AuxK added)."""
    penalty = Penalty("l0_coef", 0.002, 1.0, 0.4)
    """First guess and slope measured on the main job's data (README); 0.25 gave L0 10.7 on the synthetic data."""
    saelens_reads, saelens_training = {"jumprelu": "jumprelu"}, "jumprelu"

    def check(self, cfg, selection) -> None:
        if cfg.activation == self.name and not (cfg.jumprelu_bandwidth > 0 and cfg.jumprelu_init_threshold >= 0):
            raise ValueError("jumprelu_bandwidth must be > 0 and jumprelu_init_threshold >= 0, got "
                             f"{cfg.jumprelu_bandwidth}, {cfg.jumprelu_init_threshold}")

    def saelens_details(self, cfg) -> dict:
        return {"jumprelu_bandwidth": cfg.jumprelu_bandwidth, "jumprelu_init_threshold": cfg.jumprelu_init_threshold}

    def saelens_options(self, fields: dict, site_of=None) -> dict:
        # not its l0_coefficient: SAE Lens's L0 term is relative to summed squared error, saelab's to normalised MSE
        return {f: float(fields[f]) for f in ("jumprelu_bandwidth", "jumprelu_init_threshold")
                if isinstance(fields.get(f), (int, float))}

    def default_k_aux(self, d_in: int, standard: int) -> int:
        return 0  # JumpReLU's paper has no AuxK

    def add_parameters(self, sae, dtype, device) -> None:  # learned with the straight-through estimators
        sae.threshold = torch.nn.Parameter(torch.full((sae.cfg.n_latents,), sae.cfg.jumprelu_init_threshold,
                                                      dtype=dtype, device=device))

    def train_forward(self, sae, x_n, undo, ctx):
        return jumprelu_forward(sae, x_n, undo, ctx)

    def inference(self, sae):
        return "jumprelu", sae.threshold

    @torch.no_grad()
    def after_step(self, sae) -> None:
        sae.threshold.clamp_(min=0.0)  # thresholds stay >= 0 (also in what is saved)

    def examples(self):
        return {"jumprelu": {"activation": "jumprelu", "l0_coef": 0.01, "jumprelu_bandwidth": 0.02,
                             "jumprelu_init_threshold": 0.45},
                "jumprelu_dense_phase": {"activation": "jumprelu", "l0_coef": 0.01, "jumprelu_bandwidth": 0.02,
                                         "jumprelu_init_threshold": 0.0005}}


FAMILY = JumpReLU()
