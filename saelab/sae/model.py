"""The TopK sparse autoencoder of Gao et al. 2024 (sections 2-5), with its ReLU+L1 baseline.

    x_n     = normalise(x)                           (saelab.sae.input_norm)
    z       = TopK(W_enc (x_n - b_pre) + b_enc)      (ReLU on the kept values, as the released code;
                                                      the paper's eq. 2 writes TopK(W_enc (x_n - b_pre)))
    x_hat_n = W_dec^T z + b_pre,   x_hat = denormalise(x_hat_n)

Training losses, all in the normalised space (sections 2.2-2.3, 5.3 and appendix A.2):
    nmse  = MSE / MSE of always predicting the batch mean (the paper's normalized MSE)
    aux   = nmse of the residual e = x_n - x_hat_n (detached) by the top-k_aux *dead* latents,
            decoded WITHOUT b_pre: the residual has no bias to add (sparsify #132 added it twice)
    multi = Multi-TopK: nmse(k) + coef * nmse(factor * k)   (default L(k) + L(4k)/8)
    total = nmse [+ multi term] + aux_coef * aux [+ l1_coef * L1 for the ReLU baseline]

Test-time activations live in `saelab.sae.activation_fns`; `save`/`load` write and read saelab's folder through
`saelab.sae.folder`; other libraries' layouts are `saelab.sae.formats` (`saelab.load_sae` reads SAE Lens, sparsify,
OpenAI and Hub SAEs into this class).
"""

from __future__ import annotations

from pathlib import Path
from typing import NamedTuple

import torch
import torch.nn as nn
import torch.nn.functional as F

from saelab.sae.activation_fns import BATCHTOPK_CANDIDATES, make_activation
from saelab.sae.batchtopk import select_batch, update_threshold_
from saelab.sae.config import SAEConfig
from saelab.sae.folder import check_shapes, read_folder, write_folder
from saelab.sae.input_norm import PER_TOKEN, Undo, check_input, dataset_scale_from, geometric_median, normalize
from saelab.sae.jumprelu import jumprelu_forward
from saelab.sae.kernels import (
    WORKSPACE_BYTES,
    dense_decode,
    dense_encode,
    selected_encode,
    sparse_decode,
    split_decode,
    subset_decode,
    topk_rows,
    transposed_pattern,
)
from saelab.sae.losses import mean_predictor_mse, normalized_mse
from saelab.sae.matryoshka import inner_prefix_losses

AUX_DENSE_RATIO = 16
"""AuxK decodes densely over the M dead latents when M <= this x k_aux (see `SAE._aux_loss`)."""


class EncodeOut(NamedTuple):
    top_acts_BK: torch.Tensor
    """Activations of the selected latents (zero where a row has fewer than K active)."""
    top_idx_BK: torch.Tensor
    """Indices of the selected latents."""
    pre_acts_BN: torch.Tensor | None
    """Dense pre-activations W_enc (x_n - b_pre) + b_enc (no autograd), or None."""


class ForwardOut(NamedTuple):
    recon_BD: torch.Tensor
    """Reconstruction in the input's space."""
    losses: dict[str, torch.Tensor]
    """Named loss terms: 'total' plus 'nmse', 'mse', 'aux', 'multi_topk', 'l1' when used."""
    top_acts_BK: torch.Tensor | None
    top_idx_BK: torch.Tensor | None
    fired_N: torch.Tensor
    """Bool per latent: did it fire (act > 0) on any token of the batch."""
    l0: torch.Tensor
    """Mean number of active latents per token."""


class SAE(nn.Module):
    """A TopK (or ReLU+L1) sparse autoencoder with unit-norm decoder rows.

    Buffers (saved with the weights): `tokens_since_fired` (drives AuxK's dead mask), `input_scale`
    ('dataset_unit_norm' only, set from data by `init_from_data`) and `tokens_seen` (provenance).
    `data_record`: what the training activations were (corpus, context split, the positions the harvest left
    out), saved in cfg.json as "data" and read by the evaluations; None for SAEs made elsewhere.
    """

    def __init__(self, cfg: SAEConfig, seed: int | None = 0, device=None):
        super().__init__()
        self.cfg = cfg
        self.data_record: dict | None = None
        dtype = getattr(torch, cfg.dtype)
        gen = torch.Generator().manual_seed(seed) if seed is not None else None
        # Paper init: random unit-norm decoder rows, encoder = decoder transpose (same n x d matrix here).
        W = torch.randn(cfg.n_latents, cfg.d_in, generator=gen, dtype=torch.float32)
        W /= W.norm(dim=1, keepdim=True)
        self.W_dec = nn.Parameter(W.to(dtype=dtype, device=device))
        self.W_enc = nn.Parameter(W.clone().to(dtype=dtype, device=device))
        self.b_enc = nn.Parameter(torch.zeros(cfg.n_latents, dtype=dtype, device=device))
        self.b_pre = nn.Parameter(torch.zeros(cfg.d_in, dtype=dtype, device=device))
        self.register_buffer("tokens_since_fired", torch.zeros(cfg.n_latents, dtype=torch.long, device=device))
        self.register_buffer("input_scale", torch.ones((), dtype=torch.float32, device=device))
        self.register_buffer("tokens_seen", torch.zeros((), dtype=torch.long, device=device))
        if cfg.activation == "jumprelu":  # learned with straight-through estimators (saelab.sae.jumprelu)
            self.threshold = nn.Parameter(torch.full((cfg.n_latents,), cfg.jumprelu_init_threshold, dtype=dtype,
                                                     device=device))
        elif cfg.activation == "batchtopk":  # the inference threshold, estimated in training
            self.register_buffer("threshold", torch.zeros(cfg.n_latents, dtype=dtype, device=device))

    def _workspace(self, rows: int) -> torch.Tensor:
        """A reused [rows, n] buffer for the training pre-activations. A fresh 64 MB tensor each step
        costs ~30 ms of page faults on CPU (allocations above 32 MB always come from mmap). Its rows are
        bounded by `workspace_rows`; `release_workspace()` frees it (the trainer does, when it finishes)."""
        buf = getattr(self, "_pre_buf", None)
        if buf is None or buf.shape[0] != rows or buf.device != self.W_enc.device or buf.dtype != self.W_enc.dtype:
            self._pre_buf = None  # free the old one before allocating
            buf = self._pre_buf = torch.empty(rows, self.cfg.n_latents, dtype=self.W_enc.dtype,
                                              device=self.W_enc.device)
        return buf

    def release_workspace(self) -> None:
        """Free the training pre-activation buffer (it is re-made by the next training step)."""
        self._pre_buf = None

    def _apply(self, fn, recurse=True):  # .to(), .cuda(), .half(): the old device's buffer is not kept alive
        self.release_workspace()
        return super()._apply(fn, recurse)

    def workspace_rows(self, rows: int) -> int:
        """Rows of pre-activations computed at once: all of them while [rows, n] fits WORKSPACE_BYTES, else
        chunks (so a GPU batch of 16384 x 131072 latents holds 1 GiB, not 8.6 GB)."""
        per_row = self.cfg.n_latents * self.W_enc.element_size()
        return max(1, min(rows, WORKSPACE_BYTES // per_row))

    def _select(self, centred_BD: torch.Tensor, k: int, sorted_: bool):
        """TopK of the pre-activations W_enc centred + b_enc: (values, indices, the dense pre-activations when
        they were computed in one piece, else None). No autograd."""
        rows = len(centred_BD)
        chunk = self.workspace_rows(rows)
        if chunk >= rows:
            pre_BN = torch.addmm(self.b_enc, centred_BD, self.W_enc.t(), out=self._workspace(rows))
            return *topk_rows(pre_BN, k, sorted_), pre_BN
        buf = self._workspace(chunk)
        vals, idx = [], []
        for s in range(0, rows, chunk):
            part = buf[: min(chunk, rows - s)]
            torch.addmm(self.b_enc, centred_BD[s:s + chunk], self.W_enc.t(), out=part)
            v, i = topk_rows(part, k, sorted_)
            vals.append(v)
            idx.append(i)
        return torch.cat(vals), torch.cat(idx), None

    def _select_batch(self, centred_BD: torch.Tensor, k: int):
        """BatchTopK's training selection (`saelab.sae.batchtopk.select_batch`); no autograd."""
        vals, idx, pre_BN = self._select(centred_BD, min(self.cfg.n_latents, BATCHTOPK_CANDIDATES * k), sorted_=True)
        return (*select_batch(vals, idx, k), pre_BN)

    # ---- normalisation -------------------------------------------------------------------------
    def preprocess(self, x: torch.Tensor) -> tuple[torch.Tensor, Undo]:
        """(x in the SAE's input space, the `Undo` that maps a reconstruction there back to x's space)."""
        return normalize(x, self.cfg.normalize, self.input_scale.to(x.device, x.dtype))

    @torch.no_grad()
    def init_from_data(self, sample_BD: torch.Tensor, bias_init: str = "geometric_median") -> None:
        """Set the input scale ('dataset_unit_norm') and b_pre from a data sample (paper: geometric median)."""
        sample = sample_BD.to(self.W_enc.device, torch.float32)
        check_input(sample, self.cfg.d_in)
        if self.cfg.normalize == "dataset_unit_norm":
            self.input_scale.fill_(dataset_scale_from(sample))
        x_n, _ = self.preprocess(sample)
        if bias_init == "geometric_median":
            b = geometric_median(x_n)
        elif bias_init == "mean":
            b = x_n.mean(0)
        elif bias_init == "zeros":
            b = torch.zeros_like(self.b_pre)
        else:
            raise ValueError(f"bias_init must be 'geometric_median', 'mean' or 'zeros', got {bias_init!r}")
        self.b_pre.copy_(b.to(self.b_pre.dtype))

    @torch.no_grad()
    def rescale_encoder_init_(self, n: int = 256, seed: int = 0) -> float:
        """The released code's encoder rescale (openai/sparse_autoencoder `train.py`, `init_from_data_`): feed
        `n` random unit directions plus b_pre through the SAE (in its input space) and divide W_enc by the mean
        norm of their reconstructions minus b_pre, so that they come back at about unit norm. Returns the factor."""
        # a stream apart from the initialisation's (seed `seed` drew the decoder: its first rows would be the inputs)
        g = torch.Generator().manual_seed(seed + 0x5EED)
        u = torch.randn(n, self.cfg.d_in, generator=g)
        x_n = (u / u.norm(dim=1, keepdim=True)).to(self.W_enc.device, self.W_enc.dtype) + self.b_pre
        acts, idx = make_activation(self.cfg.activation, self.cfg.n_latents, self.cfg.k,
                                    getattr(self, "threshold", None)).select(self.pre_acts(x_n))
        scale = float((self.decode_normalized(acts, idx) - self.b_pre).norm(dim=1).mean())
        if scale > 0:
            self.W_enc.div_(scale)
        return scale

    # ---- encode / decode -----------------------------------------------------------------------
    def pre_acts(self, x_n: torch.Tensor) -> torch.Tensor:
        return F.linear(x_n - self.b_pre, self.W_enc, self.b_enc)

    def encode(self, x: torch.Tensor, activation: str | None = None, k: int | None = None,
               threshold: float | torch.Tensor | None = None, keep_pre: bool = False, grad: bool = False
               ) -> EncodeOut:
        """Encode with the SAE's activation or a test-time one (section 5.3, `saelab.sae.activation_fns`):
        'topk' (k' = `k`), 'jumprelu' (pre > `threshold`; a JumpReLU SAE's own per-latent thresholds by
        default), 'batchtopk' (k*B over the batch), 'relu'.
        Runs on the SAE's device; the codes come back on `x`'s device (`keep_pre`'s dense pre-activations
        stay on the SAE's). `grad=True` keeps the autograd graph (to `x` and the weights): the selected
        activations are differentiable, the selection itself is not."""
        check_input(x.detach(), self.cfg.d_in)
        with torch.set_grad_enabled(grad):
            x_n, _ = self.preprocess(x.to(self.W_enc.device, self.W_enc.dtype))
            pre = self.pre_acts(x_n)
            name = activation or self.cfg.activation
            if activation is None and name == "batchtopk":  # inference: one threshold instead of the batch
                name = "jumprelu"
            if name == "jumprelu" and threshold is None and hasattr(self, "threshold"):
                threshold = self.threshold
            acts, idx = make_activation(name, self.cfg.n_latents, k or self.cfg.k, threshold).select(pre)
            return EncodeOut(acts.to(x.device), idx.to(x.device), pre if keep_pre else None)

    def decode_normalized(self, top_acts_BK: torch.Tensor, top_idx_BK: torch.Tensor, grad: bool = False
                          ) -> torch.Tensor:
        """Reconstruction in the SAE's input space (where the losses and the paper's normalized MSE live),
        on the SAE's device. `grad=True` keeps the graph (to the activations and the decoder)."""
        dev = self.W_dec.device
        with torch.set_grad_enabled(grad):
            return F.embedding_bag(top_idx_BK.to(dev), self.W_dec,
                                   per_sample_weights=top_acts_BK.to(dev, self.W_dec.dtype), mode="sum") + self.b_pre

    def decode(self, top_acts_BK: torch.Tensor, top_idx_BK: torch.Tensor, x_like: torch.Tensor | None = None,
               grad: bool = False) -> torch.Tensor:
        """Reconstruct from sparse latents (on the device of `x_like`, else of the codes); per-token
        normalisations need the input (`x_like`) to undo it. `grad=True` keeps the graph."""
        if self.cfg.normalize in PER_TOKEN and x_like is None:
            raise ValueError(f"a {self.cfg.normalize} SAE needs the original input to undo the normalisation")
        with torch.set_grad_enabled(grad):
            recon_n = self.decode_normalized(top_acts_BK, top_idx_BK, grad)
            return self.undo_for(x_like, recon_n)(recon_n).to(
                x_like.device if x_like is not None else top_acts_BK.device)

    def undo_for(self, x_like: torch.Tensor | None, like: torch.Tensor) -> Undo:
        """The `Undo` that maps the SAE's input space back to the space of `x_like` (per token when the
        normalisation is per token; `like` gives the device and dtype)."""
        reference = x_like.detach().to(like.device, self.W_dec.dtype) if x_like is not None else like.detach()
        return self.preprocess(reference)[1]

    def reconstruct(self, x: torch.Tensor, grad: bool = False, **encode_kwargs) -> torch.Tensor:
        out = self.encode(x, grad=grad, **encode_kwargs)
        return self.decode(out.top_acts_BK, out.top_idx_BK, x, grad=grad)

    # ---- training forward ----------------------------------------------------------------------
    def forward(self, x: torch.Tensor, dead_mask_N: torch.Tensor | None = None, reduce=None,
                dead_mask_fn=None, l1_coef: float | None = None, l0_coef: float | None = None) -> ForwardOut:
        """Reconstruction and named losses; the dead latents (bool [n]) feed AuxK.

        dead_mask_N: a fixed dead mask. dead_mask_fn: called with this batch's fired latents after the
        TopK selection and before AuxK, returns the dead mask; the trainer updates its "last fired"
        statistics there first, so a latent that fires in this batch is not dead in it (as the released
        training code does: "has to go after stats update").
        `reduce` averages a statistic over data-parallel ranks (default: this batch only), so that
        the normalisers (the mean predictor's MSE) are those of the global batch.
        l1_coef / l0_coef: the ReLU baseline's L1 / JumpReLU's L0 coefficient for this step (default the config's;
        the trainer ramps it up during its warmup).
        """
        cfg = self.cfg
        check_input(x, cfg.d_in)
        x_n, undo = self.preprocess(x.to(self.W_enc.dtype))
        x_n = x_n.detach()
        if cfg.activation == "jumprelu":
            recon_n, losses, acts, idx, fired, l0 = jumprelu_forward(
                self, x_n, reduce, cfg.l0_coef if l0_coef is None else l0_coef, dead_mask_fn, dead_mask_N)
            return ForwardOut(undo(recon_n), losses, acts if idx is not None else None, idx, fired, l0)
        if cfg.activation == "relu":
            out = self._forward_relu(x_n, undo, reduce, cfg.l1_coef if l1_coef is None else l1_coef)
            if dead_mask_fn is not None:
                dead_mask_fn(out.fired_N)
            return out
        sparse = cfg.kernel == "sparse"
        decode = sparse_decode if sparse else dense_decode
        k = cfg.k
        # z = TopK(W_enc (x_n - b_pre) + b_enc): one dense product, then only the selected latents get gradients.
        centred_g = x_n - self.b_pre  # differentiable in b_pre: recon_n - x_n = decoded - centred
        centred = centred_g.detach()
        with torch.no_grad():
            if cfg.activation == "batchtopk":
                top_vals, idx, kept, pre_BN = self._select_batch(centred, cfg.k)
            else:
                top_vals, idx, pre_BN = self._select(centred, cfg.k_train, sorted_=cfg.multi_topk)
        pattern = transposed_pattern(idx, cfg.n_latents) if sparse else None  # shared by both gradients
        acts = self._encode_selected(x_n, idx, top_vals, pattern, centred).relu()
        if cfg.activation == "batchtopk":  # rows hold different counts: the padding slots carry no value or gradient
            acts = acts * kept
            update_threshold_(self.threshold, acts.detach())
            k = idx.shape[1]
        # Multi-TopK: the first k of the sorted top-4k are the top-k; one encode serves both terms, and
        # L(4k)'s reconstruction is L(k)'s plus the other 3k's (`kernels.split_decode`).
        idx_k, acts_k_graph = idx[:, :k], acts[:, :k]
        if cfg.multi_topk and sparse:
            first, rest = split_decode(idx, acts, self.W_dec, k, pattern)
        elif cfg.multi_topk:
            first, rest = decode(idx_k, acts_k_graph, self.W_dec), decode(idx[:, k:], acts[:, k:], self.W_dec)
        else:
            first = decode(idx_k, acts_k_graph, self.W_dec, pattern)
        # x_hat_n = W_dec^T z + b_pre; L = nmse(x_hat_n, x_n), with x_hat_n - x_n = W_dec^T z - (x_n - b_pre)
        rows = len(x_n)
        sse = F.mse_loss(first, centred_g, reduction="sum") / rows
        baseline = mean_predictor_mse(x_n, reduce)
        losses = {"mse": sse.detach() / cfg.d_in, "nmse": sse / baseline}
        total = losses["nmse"]
        if cfg.matryoshka_widths:  # + the inner prefixes' own reconstruction errors
            losses["matryoshka"] = sum(inner_prefix_losses(idx, acts, self.W_dec, cfg.matryoshka_widths, centred_g,
                                                           baseline, decode, pattern))
            total = total + losses["matryoshka"]
        if cfg.multi_topk:  # + L(4k) / 8
            losses["multi_topk"] = normalized_mse(first + rest, centred_g, baseline=baseline)
            total = total + cfg.multi_topk_coef * losses["multi_topk"]
        recon_n = first + self.b_pre  # returned with its graph (a user's own loss on it gets gradients)
        fired = torch.zeros(cfg.n_latents, dtype=torch.bool, device=x.device)
        acts_k = acts_k_graph.detach()
        fired[idx_k[acts_k > 0]] = True
        if dead_mask_fn is not None:
            dead_mask_N = dead_mask_fn(fired)
        if cfg.k_aux and dead_mask_N is not None and bool(dead_mask_N.any()):  # + alpha * AuxK
            losses["aux"] = self._aux_loss(x_n, recon_n, pre_BN, dead_mask_N, decode, reduce, centred)
            total = total + cfg.aux_coef * losses["aux"]
        losses["total"] = total
        return ForwardOut(undo(recon_n), losses, acts_k, idx_k, fired, (acts_k > 0).sum(-1).float().mean())

    def _encode_selected(self, x_n, idx, pre_vals, pattern=None, centred=None):
        """The selected pre-activations, with gradients into W_enc, b_enc and b_pre (only their rows)."""
        if self.cfg.kernel == "sparse":
            return selected_encode(x_n, self.b_pre, self.W_enc, self.b_enc, idx, pre_vals, pattern, centred)
        return dense_encode(x_n, self.b_pre, self.W_enc, self.b_enc, idx)

    def _aux_loss(self, x_n, recon_n, pre_BN, dead_mask_N, decode, reduce=None, centred=None) -> torch.Tensor:
        """AuxK (appendix A.2): model the residual with the top-k_aux dead latents, no b_pre added.

        The dead latents' pre-activations come from the step's buffer (or, when it was computed in chunks,
        from one product over the dead rows of W_enc only). With few dead latents per k_aux
        (M <= AUX_DENSE_RATIO * k_aux) the decode runs densely over them (`kernels.subset_decode`);
        otherwise on the k_aux selected rows per token (sparse), like the main TopK path."""
        dead_idx = dead_mask_N.nonzero().squeeze(1)
        k_aux = min(self.cfg.k_aux, dead_idx.numel())
        centred = centred if centred is not None else (x_n - self.b_pre).detach()
        rows, M = len(x_n), dead_idx.numel()
        fits = rows * M * self.W_enc.element_size() <= WORKSPACE_BYTES
        with torch.no_grad():
            if pre_BN is not None:
                sub = pre_BN.index_select(1, dead_idx)
                top = sub.topk(k_aux, dim=-1, sorted=False)
            elif fits:
                sub = torch.addmm(self.b_enc[dead_idx], centred, self.W_enc[dead_idx].t())
                top = sub.topk(k_aux, dim=-1, sorted=False)
            else:  # too many dead latents for one [rows, M] buffer: their top-k in row chunks
                chunk = max(1, WORKSPACE_BYTES // (M * self.W_enc.element_size()))
                W_dead, b_dead = self.W_enc[dead_idx].t(), self.b_enc[dead_idx]
                parts = [torch.addmm(b_dead, centred[s:s + chunk], W_dead).topk(k_aux, dim=-1, sorted=False)
                         for s in range(0, rows, chunk)]
                top = torch.return_types.topk((torch.cat([p.values for p in parts]),
                                               torch.cat([p.indices for p in parts])))
        resid = (x_n - recon_n).detach()
        if self.cfg.kernel == "sparse" and fits and M <= AUX_DENSE_RATIO * k_aux:
            with torch.no_grad():
                z_BM = sub.zero_().scatter_(1, top.indices, top.values.relu())  # sub is not needed any more
            resid_hat = subset_decode(centred, self.W_enc, self.b_enc, self.b_pre, self.W_dec, dead_idx, z_BM)
            return normalized_mse(resid_hat, resid, reduce).nan_to_num(0.0)
        aux_idx = dead_idx[top.indices]
        pattern = transposed_pattern(aux_idx, self.cfg.n_latents) if self.cfg.kernel == "sparse" else None
        aux_acts = self._encode_selected(x_n, aux_idx, top.values, pattern, centred).relu()
        resid_hat = decode(aux_idx, aux_acts, self.W_dec, pattern)
        return normalized_mse(resid_hat, resid, reduce).nan_to_num(0.0)

    def _forward_relu(self, x_n, undo: Undo, reduce, l1_coef: float) -> ForwardOut:
        z = self.pre_acts(x_n).relu()
        recon_n = z @ self.W_dec + self.b_pre
        l1 = z.sum(-1).mean()  # decoder rows are unit norm, so this is the paper's L1 penalty
        losses = {"mse": (recon_n - x_n).pow(2).sum(-1).mean().detach() / self.cfg.d_in,
                  "nmse": normalized_mse(recon_n, x_n, reduce), "l1": l1}
        losses["total"] = losses["nmse"] + l1_coef * l1
        active = z.detach() > 0
        return ForwardOut(undo(recon_n), losses, None, None, active.any(0), active.sum(-1).float().mean())

    # ---- unit-norm decoder (appendix A.1) -------------------------------------------------------
    @torch.no_grad()
    def project_decoder_grad_(self) -> None:
        """Remove the gradient component parallel to each decoder row (call before the optimiser step)."""
        g = self.W_dec.grad
        if g is not None:
            parallel_N = torch.einsum("nd,nd->n", g, self.W_dec)
            g.addcmul_(parallel_N[:, None], self.W_dec, value=-1.0)

    @torch.no_grad()
    def normalize_decoder_(self) -> None:
        """Renormalise decoder rows to unit norm (call after the optimiser step)."""
        self.W_dec /= self.W_dec.norm(dim=-1, keepdim=True).clamp_min(1e-8)

    # ---- dead latents (AuxK) -------------------------------------------------------------------
    @torch.no_grad()
    def update_fired_(self, fired_N: torch.Tensor, n_tokens: int) -> None:
        self.tokens_since_fired += n_tokens
        self.tokens_since_fired[fired_N] = 0

    def dead_mask(self, threshold_tokens: int) -> torch.Tensor:
        return self.tokens_since_fired >= threshold_tokens

    # ---- persistence: saelab's own folder (`saelab.sae.folder`; other layouts: `saelab.sae.formats`) ----
    def save(self, folder: str | Path, extra: dict | None = None) -> Path:
        """Write sae.safetensors and cfg.json into `folder` (atomically), with the data record when known."""
        record = {"data": self.data_record} if self.data_record is not None else {}
        return write_folder(folder, self.cfg, self.state_dict(), {**record, **(extra or {})})

    @classmethod
    def load(cls, folder: str | Path, device=None) -> SAE:
        """Load a folder written by `save`; `saelab.load_sae` reads every supported layout."""
        cfg, state, meta = read_folder(folder, device)
        sae = cls(cfg, seed=None, device=device)
        check_shapes(folder, sae.state_dict(), state)
        sae.load_state_dict(state)
        sae.data_record = meta.get("data")
        return sae
