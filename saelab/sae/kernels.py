"""Sparse kernels for TopK SAEs: the backward pass touches only the selected latents.

A TopK SAE keeps k of n latents per token. Its forward pass needs one dense product
(the encoder pre-activations), but every other step is sparse:

- decode: ``recon_BD = sum_j acts_BK[:, j] * W_dec_ND[idx_BK[:, j]]`` (an ``embedding_bag``);
- decoder backward: ``dW_dec[idx] += acts * g_BD`` and ``d_acts = <g_BD, W_dec[idx]>``;
- encoder backward: ``dW_enc[idx] += g_BK * x_BD`` and ``db_enc[idx] += g_BK``.

Each is a sparse-dense product with the B x n selection matrix ``S`` (k non-zeros per row), taken
latent by latent through one `Pattern` (the entries sorted by latent, shared by both gradients):
``S^T @ dense`` for the weight gradients (an `embedding_bag` with one bag per latent on CPU, a
cuSPARSE CSR product on CUDA) and a sampled dense-dense product (`torch.sparse.sampled_addmm`)
for ``d_acts``. (A hand-written OpenMP C++ kernel was tried and measured no faster on a 2-core
CPU: these products are bound by memory bandwidth, B*K rows of d floats read once.)
No dense n x d gradient product is ever formed, so one train step costs about one encoder
product plus O(B k d) work. `dense_*` functions are plain-autograd references for tests.

Under mixed precision (`torch.autocast`, `TrainConfig.autocast`) the sparse kernels (`sparse_decode`,
`split_decode`, `selected_encode`, `subset_decode`) run in fp32 with autocast off: their floating inputs are cast
to fp32 first (the bf16 selected activations included), so the decode, every gradient product and the loss on the
reconstruction are fp32. They are O(B k d), a small part of a step; the bf16 part is the dense encoder product and
its top-k (`SAE.select`, which reads `autocast_dtype`). Under `torch.compile` they are not traced: each call runs
eagerly (a graph break), since the sparse CSR products and the `Pattern` kept on the autograd context are outside
what the compiler handles.
"""

from __future__ import annotations

import functools
import warnings
from typing import NamedTuple

import torch
import torch.nn.functional as F

WORKSPACE_BYTES = 1 << 30
"""The largest [rows, n] pre-activation buffer a training step holds (1 GiB); bigger batches go in chunks (JumpReLU,
which needs them whole, refuses them)."""


def autocast_dtype(like: torch.Tensor) -> torch.dtype:
    """The dtype a product of `like`'s device runs in here: autocast's (bf16) inside a `torch.autocast` region of
    that device type, else `like`'s own."""
    kind = like.device.type
    return torch.get_autocast_dtype(kind) if torch.is_autocast_enabled(kind) else like.dtype


def eager(fn):
    """`fn` runs eagerly under `torch.compile` (a graph break around it, as `torch.compiler.disable`), and as it
    is otherwise. The disabled wrapper is made only inside a compiled region, so importing saelab does not import
    the compiler."""

    @functools.wraps(fn)
    def wrapped(*args, **kwargs):
        if torch.compiler.is_compiling():
            return torch.compiler.disable(fn, recursive=True)(*args, **kwargs)
        return fn(*args, **kwargs)

    return wrapped


def in_fp32(fn):
    """A sparse kernel: inside a `torch.autocast` region its floating tensor arguments are cast to fp32 and it
    runs with autocast off (so its backward, which autocast never sees, gets the same dtypes); under
    `torch.compile` it runs eagerly (`eager`)."""

    def fp32(a):
        return a.float() if isinstance(a, torch.Tensor) and a.is_floating_point() else a

    @functools.wraps(fn)
    def wrapped(*args, **kwargs):
        kind = args[0].device.type
        if not torch.is_autocast_enabled(kind):
            return fn(*args, **kwargs)
        with torch.autocast(kind, enabled=False):
            return fn(*map(fp32, args), **{k: fp32(v) for k, v in kwargs.items()})

    return eager(wrapped)


def _csr(crow: torch.Tensor, col: torch.Tensor, vals: torch.Tensor, shape: tuple[int, int]) -> torch.Tensor:
    """A CSR tensor, without PyTorch's "beta" warning (the ops used here are covered by the equality
    tests). The warning is silenced for this call only, not for the process."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta state")
        return torch.sparse_csr_tensor(crow, col, vals, shape, check_invariants=False)


def dense_codes(acts_BK: torch.Tensor, idx_BK: torch.Tensor, n: int) -> torch.Tensor:
    """The dense [B, n] latent matrix of sparse codes (padding entries with act 0 add nothing)."""
    return torch.zeros(acts_BK.shape[0], n, dtype=acts_BK.dtype, device=acts_BK.device).scatter_add(
        1, idx_BK, acts_BK)


def topk_rows(pre_BN: torch.Tensor, k: int, sorted: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """(values, indices) of the k largest entries of each row, as `torch.topk`, faster on CPU for k << n.

    The columns are split into G groups of 8 (group g = columns g, g+G, ..., strided so the group maximum is
    an elementwise max of 8 contiguous vectors). The k largest entries of a row lie in its k groups with the
    largest maxima (a group outside them has k groups above its maximum, so k entries above each of its
    entries), so one strided max pass and a top-k over 8k candidates replace a top-k over all n. The k groups
    are found the same way, recursively (the G group maxima are a [B, G] matrix): 2-3x faster than `torch.topk`
    at B 4096, n 16384, k 32 on a 2-core CPU (the recursion's second level saves a further ~15%). Values
    equal `torch.topk`'s; indices too, up to the order of equal values. CUDA and small or odd shapes use
    `torch.topk`.
    """
    B, n = pre_BN.shape
    group = 8
    if pre_BN.device.type != "cpu" or n % group or n // group < 4 * k or not pre_BN.is_contiguous():
        return pre_BN.topk(k, dim=-1, sorted=sorted)
    G = n // group
    top_groups = topk_rows(pre_BN.view(B, group, G).amax(1), k)[1]  # [B, k]
    cols = (top_groups[:, None, :] + torch.arange(0, n, G, device=pre_BN.device)[None, :, None]).reshape(B, -1)
    top = pre_BN.gather(1, cols).topk(k, dim=-1, sorted=sorted)
    return top.values, cols.gather(1, top.indices)


def _selection_csr(idx_BK: torch.Tensor, vals_BK: torch.Tensor, n: int) -> torch.Tensor:
    """The B x n CSR matrix with vals_BK at (row b, column idx_BK[b, j])."""
    B, K = idx_BK.shape
    crow = torch.arange(0, B * K + 1, K, device=idx_BK.device, dtype=torch.int64)
    return _csr(crow, idx_BK.reshape(-1).long(), vals_BK.reshape(-1), (B, n))


class Pattern(NamedTuple):
    """The structure of S^T (n x B) for one idx_BK: its B*K entries sorted by latent.

    One argsort serves every product with the same selection (decoder and encoder gradients).
    Building S (B x n) and calling ``.t()`` instead makes PyTorch convert CSR -> CSC -> CSR on
    every product, which cost about a third of each scatter here.
    """

    order: torch.Tensor
    """[B*K] entry ids (b*K + j) sorted by latent."""
    crow: torch.Tensor
    """[n+1] CSR row pointers of S^T."""
    token: torch.Tensor
    """[B*K] the token b of each sorted entry (S^T's column indices)."""
    B: int


def transposed_pattern(idx_BK: torch.Tensor, n: int) -> Pattern:
    B, K = idx_BK.shape
    flat = idx_BK.reshape(-1)
    # stable: each latent's tokens in ascending order (sorted CSR columns); int32 keys sort ~1.6x faster on CPU
    keys = flat.to(torch.int32) if n < 2**31 else flat
    order = torch.sort(keys, stable=True).indices
    crow = torch.zeros(n + 1, dtype=torch.int64, device=idx_BK.device)
    torch.cumsum(torch.bincount(flat, minlength=n), 0, out=crow[1:])
    return Pattern(order, crow, torch.div(order, K, rounding_mode="floor"), B)


def scatter_outer(idx_BK: torch.Tensor, coef_BK: torch.Tensor, rows_BD: torch.Tensor, n: int,
                  pattern: Pattern | None = None) -> torch.Tensor:
    """``out_ND[idx[b, j]] += coef[b, j] * rows[b]`` summed over b, j (i.e. S^T @ rows)."""
    if idx_BK.numel() == 0:
        return rows_BD.new_zeros(n, rows_BD.shape[1])
    p = pattern or transposed_pattern(idx_BK, n)
    return _sum_rows_by_latent(p.crow, p.token, coef_BK.to(rows_BD.dtype).reshape(-1)[p.order], rows_BD, n)


def _sum_rows_by_latent(crow_N1: torch.Tensor, token_E: torch.Tensor, vals_E: torch.Tensor, rows_RD: torch.Tensor,
                        n: int) -> torch.Tensor:
    """``out_ND[l] = sum_e vals[e] * rows[token[e]]`` over latent l's entries crow[l]:crow[l+1] (S^T @ rows).

    On CPU an `embedding_bag` with one bag per latent (0.6-0.75x the time of MKL's CSR product at B 4096,
    n 16384, k 32, the same values up to rounding; the entries of a bag need no order). On CUDA the cuSPARSE
    CSR product, whose columns must be sorted within each row (`transposed_pattern` sorts them)."""
    if rows_RD.device.type == "cpu":
        return F.embedding_bag(token_E, rows_RD, crow_N1, per_sample_weights=vals_E, mode="sum",
                               include_last_offset=True)
    return _csr(crow_N1, token_E, vals_E, (n, rows_RD.shape[0])) @ rows_RD


def sampled_dot(rows_BD: torch.Tensor, W_ND: torch.Tensor, idx_BK: torch.Tensor, pattern: Pattern | None = None
                ) -> torch.Tensor:
    """``out[b, j] = <rows[b], W[idx[b, j]]>`` without materialising W[idx] (B x K x D).

    Given the selection's `pattern` on CPU, the dots are taken latent by latent (S^T's order: each row of W
    read once, the rows of `rows` from cache), then put back in [B, K] order: 0.55-0.6x the time of the
    token-by-token product at B 4096, n 16384, k 32 and 96, with the same values."""
    B, K = idx_BK.shape
    if idx_BK.numel() == 0:
        return rows_BD.new_zeros(B, K)
    if pattern is not None and rows_BD.device.type == "cpu":
        return _sampled_dot_by_latent(pattern.crow, pattern.token, pattern.order, rows_BD, W_ND).view(B, K)
    mask = _selection_csr(idx_BK, rows_BD.new_zeros(B * K), W_ND.shape[0])
    out = torch.sparse.sampled_addmm(mask, rows_BD, W_ND.t(), beta=0.0)
    return out.values().view(B, K)


def _sampled_dot_by_latent(crow_N1, token_E, order_E, rows_RD, W_ND) -> torch.Tensor:
    """``out[order[e]] = <W[l], rows[token[e]]>`` for each entry e of latent l (crow[l]:crow[l+1])."""
    mask = _csr(crow_N1, token_E, rows_RD.new_zeros(token_E.numel()), (W_ND.shape[0], rows_RD.shape[0]))
    vals = torch.sparse.sampled_addmm(mask, W_ND, rows_RD.t(), beta=0.0).values()
    return torch.empty_like(vals).index_put_((order_E,), vals)


class SparseDecode(torch.autograd.Function):
    """recon_BD = sum_j acts_BK[:, j] W_dec_ND[idx_BK[:, j]], with a sparse backward."""

    @staticmethod
    def forward(ctx, idx_BK, acts_BK, W_dec_ND, pattern=None):
        ctx.save_for_backward(idx_BK, acts_BK, W_dec_ND)
        ctx.pattern = pattern
        return F.embedding_bag(idx_BK, W_dec_ND, per_sample_weights=acts_BK, mode="sum")

    @staticmethod
    def backward(ctx, g_BD):
        idx_BK, acts_BK, W_dec_ND = ctx.saved_tensors
        g_BD = g_BD.contiguous()
        d_acts = sampled_dot(g_BD, W_dec_ND, idx_BK, ctx.pattern) if ctx.needs_input_grad[1] else None
        d_W = scatter_outer(idx_BK, acts_BK, g_BD, W_dec_ND.shape[0], ctx.pattern) if ctx.needs_input_grad[2] \
            else None
        return None, d_acts, d_W, None


class SplitDecode(torch.autograd.Function):
    """Multi-TopK's two reconstructions from one selection: (decode of the first k entries of each row,
    decode of the other entries), so that recon_4k = first + rest reuses recon_k. The backward pass does one
    sparse weight-gradient product for both (the selection over 2B "tokens": row b's first k entries meet
    g_first[b], its others g_rest[b]), reusing the encoder's pattern of the whole selection."""

    @staticmethod
    def forward(ctx, idx_BK, acts_BK, W_dec_ND, k, pattern=None):
        ctx.save_for_backward(idx_BK, acts_BK, W_dec_ND)
        ctx.k, ctx.pattern = k, pattern
        first = F.embedding_bag(idx_BK[:, :k], W_dec_ND, per_sample_weights=acts_BK[:, :k], mode="sum")
        rest = F.embedding_bag(idx_BK[:, k:], W_dec_ND, per_sample_weights=acts_BK[:, k:], mode="sum")
        return first, rest

    @staticmethod
    def backward(ctx, g_first, g_rest):
        idx_BK, acts_BK, W_dec_ND = ctx.saved_tensors
        k, (B, K), n = ctx.k, idx_BK.shape, W_dec_ND.shape[0]
        g_first = W_dec_ND.new_zeros(B, W_dec_ND.shape[1]) if g_first is None else g_first.contiguous()
        g_rest = torch.zeros_like(g_first) if g_rest is None else g_rest.contiguous()
        cpu = g_first.device.type == "cpu"
        d_acts = d_W = None
        if ctx.needs_input_grad[1] and not cpu:
            d_acts = torch.cat([sampled_dot(g_first, W_dec_ND, idx_BK[:, :k]),
                                sampled_dot(g_rest, W_dec_ND, idx_BK[:, k:])], dim=1)
        if ctx.needs_input_grad[1] or ctx.needs_input_grad[2]:
            p = ctx.pattern or transposed_pattern(idx_BK, n)
            order, token = p.order, p.token + B * (torch.remainder(p.order, K) >= k)  # the rest's meet rows B..2B-1
            if not cpu:  # re-sorted by token within each latent: cuSPARSE wants sorted columns
                resort = torch.argsort(idx_BK.reshape(-1)[order] * (2 * B) + token)
                order, token = order[resort], token[resort]
            g_both = torch.cat([g_first, g_rest])
            if ctx.needs_input_grad[1] and cpu:
                d_acts = _sampled_dot_by_latent(p.crow, token, order, g_both, W_dec_ND).view(B, K)
            if ctx.needs_input_grad[2]:
                d_W = _sum_rows_by_latent(p.crow, token, acts_BK.reshape(-1)[order].to(g_first.dtype), g_both, n)
        return None, d_acts, d_W, None, None


@in_fp32
def split_decode(idx_BK, acts_BK, W_dec_ND, k: int, pattern: Pattern | None = None):
    return SplitDecode.apply(idx_BK, acts_BK, W_dec_ND, k, pattern)


class SelectedEncode(torch.autograd.Function):
    """pre_BK = ((x - b_pre) @ W_enc^T + b_enc)[idx_BK], given the values already computed.

    The forward pass only attaches the precomputed values to autograd; the backward pass
    scatters into the k selected rows of W_enc and b_enc and reduces the b_pre gradient
    before the mat-vec (``-(db_enc @ W_enc)``), so nothing of size B x n is touched.
    ``centred_BD`` (x - b_pre, already computed for the forward product) saves recomputing it.
    """

    @staticmethod
    def forward(ctx, x_BD, b_pre_D, W_enc_ND, b_enc_N, idx_BK, pre_BK, pattern=None, centred_BD=None):
        ctx.save_for_backward(x_BD, b_pre_D, W_enc_ND, idx_BK, centred_BD)
        ctx.pattern = pattern
        return pre_BK.clone()

    @staticmethod
    def backward(ctx, g_BK):
        x_BD, b_pre_D, W_enc_ND, idx_BK, centred_BD = ctx.saved_tensors
        n = W_enc_ND.shape[0]
        g_BK = g_BK.contiguous()
        d_b_enc = torch.zeros(n, dtype=g_BK.dtype, device=g_BK.device)
        d_b_enc.index_add_(0, idx_BK.reshape(-1), g_BK.reshape(-1))
        d_W = None
        if ctx.needs_input_grad[2]:
            centred = centred_BD if centred_BD is not None else x_BD - b_pre_D
            d_W = scatter_outer(idx_BK, g_BK, centred, n, ctx.pattern)
        d_x = F.embedding_bag(idx_BK, W_enc_ND, per_sample_weights=g_BK, mode="sum") \
            if ctx.needs_input_grad[0] else None
        d_b_pre = -(d_b_enc @ W_enc_ND) if ctx.needs_input_grad[1] else None
        return d_x, d_b_pre, d_W, (d_b_enc if ctx.needs_input_grad[3] else None), None, None, None, None


@in_fp32
def sparse_decode(idx_BK: torch.Tensor, acts_BK: torch.Tensor, W_dec_ND: torch.Tensor,
                  pattern: Pattern | None = None) -> torch.Tensor:
    return SparseDecode.apply(idx_BK, acts_BK, W_dec_ND, pattern)


@in_fp32
def selected_encode(x_BD, b_pre_D, W_enc_ND, b_enc_N, idx_BK, pre_BK, pattern: Pattern | None = None,
                    centred_BD: torch.Tensor | None = None) -> torch.Tensor:
    return SelectedEncode.apply(x_BD, b_pre_D, W_enc_ND, b_enc_N, idx_BK, pre_BK, pattern, centred_BD)


def dense_decode(idx_BK: torch.Tensor, acts_BK: torch.Tensor, W_dec_ND: torch.Tensor, pattern=None) -> torch.Tensor:
    """Reference: scatter into a dense B x n latent matrix and multiply (plain autograd)."""
    return dense_codes(acts_BK, idx_BK, W_dec_ND.shape[0]) @ W_dec_ND


def dense_encode(x_BD, b_pre_D, W_enc_ND, b_enc_N, idx_BK) -> torch.Tensor:
    """Reference: the dense pre-activations with autograd, gathered at idx."""
    return F.linear(x_BD - b_pre_D, W_enc_ND, b_enc_N).gather(1, idx_BK)


class SubsetDecode(torch.autograd.Function):
    """AuxK's decode over a subset M of the latents (the dead ones), densely: B x M products instead of
    B*k_aux sparse rows. With k_aux a sizeable fraction of M (256 of a few thousand dead latents), four
    dense [B, M] x [M, d] products cost a fraction of the sparse path's scattered rows, and they include
    the encoder's gradient too:

        z_BM = ReLU(selected pre-activations of the subset), out_BD = z_BM W_dec[M]
        backward: dz = (g W_dec[M]^T) * [z > 0];  dW_dec[M] = z^T g;  dW_enc[M] = dz^T centred;
                  db_enc[M] = sum_b dz;  db_pre = -(db_enc[M] W_enc[M])
    """

    @staticmethod
    def forward(ctx, centred_BD, W_enc_ND, b_enc_N, b_pre_D, W_dec_ND, subset_M, z_BM):
        assert not centred_BD.requires_grad, "SubsetDecode takes the centred input detached (no input gradient)"
        W_sub = W_dec_ND.index_select(0, subset_M)
        ctx.save_for_backward(centred_BD, W_enc_ND, W_dec_ND, subset_M, z_BM, W_sub)
        return z_BM @ W_sub

    @staticmethod
    def backward(ctx, g_BD):
        centred_BD, W_enc_ND, W_dec_ND, subset_M, z_BM, W_sub = ctx.saved_tensors
        g_BD = g_BD.contiguous()
        dz = torch.ops.aten.threshold_backward(g_BD @ W_sub.t(), z_BM, 0)  # ReLU's mask, in one pass
        n, d = W_enc_ND.shape
        d_W_dec = _rows_of(subset_M, z_BM.t() @ g_BD, (n, d)) if ctx.needs_input_grad[4] else None
        d_W_enc = _rows_of(subset_M, dz.t() @ centred_BD, (n, d)) if ctx.needs_input_grad[1] else None
        db_sub = dz.sum(0)
        d_b_enc = _rows_of(subset_M, db_sub, (n,)) if ctx.needs_input_grad[2] else None
        d_b_pre = -(db_sub @ W_enc_ND.index_select(0, subset_M)) if ctx.needs_input_grad[3] else None
        return None, d_W_enc, d_b_enc, d_b_pre, d_W_dec, None, None


def _rows_of(rows_M: torch.Tensor, values_M: torch.Tensor, shape: tuple[int, ...]) -> torch.Tensor:
    """A gradient that is zero outside rows `rows_M` (sorted, unique), as a sparse COO tensor: autograd adds
    it into the main path's dense gradient without a zero-filled [n, d] tensor and a dense add (~40 ms a step
    at n 16384, d 576 on a 2-core CPU). The parameter's .grad stays dense because `SAE.forward`'s total loss
    always has the main TopK path; a backward of the AuxK term alone leaves a sparse .grad."""
    return torch.sparse_coo_tensor(rows_M[None], values_M, shape, is_coalesced=True, check_invariants=False)


@in_fp32
def subset_decode(centred_BD, W_enc_ND, b_enc_N, b_pre_D, W_dec_ND, subset_M, z_BM) -> torch.Tensor:
    """`SubsetDecode`: z_BM (the ReLU'd, selected pre-activations of latents `subset_M`, zero elsewhere)
    decoded by their decoder rows, with gradients into W_enc, b_enc, b_pre and W_dec through them."""
    return SubsetDecode.apply(centred_BD, W_enc_ND, b_enc_N, b_pre_D, W_dec_ND, subset_M, z_BM)
