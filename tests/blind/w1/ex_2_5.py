"""Exercise 2.5 — (constrain_decoder_grad_, renormalize_decoder_): blind candidates."""
import torch


@torch.no_grad()
def constrain_right(W_dec):
    u = W_dec / W_dec.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    W_dec.grad.sub_((W_dec.grad * u).sum(-1, keepdim=True) * u)


@torch.no_grad()
def renorm_right(W_dec):
    W_dec.div_(W_dec.norm(dim=-1, keepdim=True).clamp_min(1e-12))


@torch.no_grad()
def constrain_column_axis(W_dec):
    # dot product over dim 0 (per column of [n, d]) instead of per row over d
    u = W_dec / W_dec.norm(dim=0, keepdim=True).clamp_min(1e-12)
    W_dec.grad.sub_((W_dec.grad * u).sum(0, keepdim=True) * u)


@torch.no_grad()
def constrain_missing_w(W_dec):
    # subtracts the scalar (g . w) from every entry instead of (g . w) w
    W_dec.grad.sub_((W_dec.grad * W_dec).sum(-1, keepdim=True))


@torch.no_grad()
def renorm_rebind(W_dec):
    # rebinds the local name: the parameter itself is never changed
    W_dec = W_dec / W_dec.norm(dim=-1, keepdim=True)


@torch.no_grad()
def renorm_frobenius(W_dec):
    # divides by the whole matrix's norm, not each row's
    W_dec.div_(W_dec.norm())


@torch.no_grad()
def renorm_only_shrink(W_dec):
    # only scales down rows that grew past 1; rows that shrank stay short
    W_dec.div_(W_dec.norm(dim=-1, keepdim=True).clamp_min(1.0))


@torch.no_grad()
def constrain_on_weights(W_dec):
    # projects the component out of the weights instead of the gradient
    u = W_dec / W_dec.norm(dim=-1, keepdim=True)
    W_dec.sub_((W_dec.grad * u).sum(-1, keepdim=True) * u)


CANDIDATES = [
    ("column_axis", (constrain_column_axis, renorm_right), "gradient projection per column (dim 0), not per row", False),
    ("missing_row_factor", (constrain_missing_w, renorm_right), "subtracts (g.w) as a scalar, forgetting to multiply by w", False),
    ("weights_not_grad", (constrain_on_weights, renorm_right), "removes the parallel component from W_dec, not from W_dec.grad", False),
    ("rebind_not_inplace", (constrain_right, renorm_rebind), "renormalise assigns a new local tensor: nothing changes in place", False),
    ("frobenius_norm", (constrain_right, renorm_frobenius), "divides by the matrix norm, not each row's norm", False),
    ("only_shrink", (constrain_right, renorm_only_shrink), "clamp_min(1): rows below unit norm are never scaled back up", False),
    ("mine", (constrain_right, renorm_right), "my honest attempt at a correct solution", True),
]
