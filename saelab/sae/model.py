"""The sparse autoencoder of Gao et al. 2024 (sections 2-5): what every family shares.

    x_n     = normalise(x)                           (saelab.sae.input_norm)
    z       = f(W_enc (x_n - b_pre) + b_enc)         (f: the family's selection; TopK: the k largest, through a ReLU)
    x_hat_n = W_dec^T z + b_pre,   x_hat = denormalise(x_hat_n)

`SAE` holds the parameters (unit-norm decoder rows, the paper's transpose init), the input normalisation, decoding,
the dead-latent statistics AuxK reads (`saelab.sae.auxk`) and save/load. Everything a family does differently (its
selection and loss terms in training, how it encodes at inference, its own parameters, its hooks into training)
lives in its file under `saelab.sae.families`, found through `cfg.activation` (`family_of`). The losses are in the
normalised space: nmse = MSE / MSE of always predicting the batch mean (the paper's normalized MSE).

Test-time activations live in `saelab.sae.activation_fns`; `save`/`load` write and read saelab's folder through
`saelab.sae.folder`; other libraries' layouts are `saelab.sae.formats` (`saelab.load_sae` reads SAE Lens, sparsify,
OpenAI and Hub SAEs into this class).
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

from saelab.sae import kernels
from saelab.sae.activation_fns import make_activation
from saelab.sae.config import SAEConfig
from saelab.sae.families import FAMILIES, family_of
from saelab.sae.families.base import EncodeOut, ForwardOut, StepContext, dense_reference_encode, sparse_encode
from saelab.sae.folder import check_shapes, read_folder, write_folder
from saelab.sae.input_norm import PER_TOKEN, Undo, check_input, geometric_median, normalize
from saelab.sae.kernels import dense_codes, topk_rows

__all__ = ["SAE", "EncodeOut", "ForwardOut", "encode_dense", "geometric_median"]


@torch.no_grad()
def encode_dense(sae, x_BD: torch.Tensor, **encode_kwargs) -> torch.Tensor:
    """The codes of `x_BD` as a dense [B, n] float32 matrix on the CPU (0 where a latent does not fire), for the
    metrics that read codes latent by latent. `sae`: saelab's SAE, or anything with `encode` and `cfg.n_latents`."""
    enc = sae.encode(x_BD, **encode_kwargs)
    return dense_codes(enc.top_acts_BK.float().cpu(), enc.top_idx_BK.cpu(), sae.cfg.n_latents)


class SAE(nn.Module):
    """A sparse autoencoder of any registered family, with unit-norm decoder rows.

    Buffers (saved with the weights): `tokens_since_fired` (drives AuxK's dead mask), `input_scale`
    ('dataset_unit_norm' only, set from data by `init_from_data`) and `tokens_seen` (provenance); a family may add
    its own (BatchTopK's inference `threshold`). `data_record`: what the training activations were (corpus, context
    split, the positions the harvest left out), saved in cfg.json as "data" and read by the evaluations; None for
    SAEs made elsewhere.
    """

    def __init__(self, cfg: SAEConfig, seed: int | None = 0, device=None):
        super().__init__()
        if cfg.d_in is None:
            raise ValueError("SAEConfig.d_in is None: set it to the activations' width (the Trainer sets it from its "
                             "data)")
        self.cfg = cfg
        self.family = family_of(cfg)
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
        self.family.add_parameters(self, dtype, device)

    # ---- the training pre-activations' workspace ------------------------------------------------
    def _workspace(self, rows: int, dtype: torch.dtype) -> torch.Tensor:
        """A reused [rows, n] buffer for the training pre-activations. A fresh 64 MB tensor each step
        costs ~30 ms of page faults on CPU (allocations above 32 MB always come from mmap). Its rows are
        bounded by `workspace_rows`; `release_workspace()` frees it (the trainer does, when it finishes)."""
        buf = getattr(self, "_pre_buf", None)
        if buf is None or buf.shape[0] != rows or buf.device != self.W_enc.device or buf.dtype != dtype:
            self._pre_buf = None  # free the old one before allocating
            buf = self._pre_buf = torch.empty(rows, self.cfg.n_latents, dtype=dtype, device=self.W_enc.device)
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
        return max(1, min(rows, kernels.WORKSPACE_BYTES // per_row))

    # ---- the family API: what family files build their training passes from ----------------------
    @kernels.eager
    @torch.no_grad()
    def select(self, centred_BD: torch.Tensor, k: int, sorted_: bool):
        """TopK of the pre-activations W_enc centred + b_enc: (values, indices, the dense pre-activations when
        they were computed in one piece, else None). No autograd.

        The product runs in the parameters' dtype, or in bf16 inside a `torch.autocast` region (`kernels.
        autocast_dtype`: an `out=` product is not autocast by torch, so the casts are made here), and so do the
        top-k and the values returned. Under `torch.compile` it runs eagerly (a cuBLAS product and a top-k: nothing
        to fuse, and its buffer is reused across steps)."""
        rows = len(centred_BD)
        chunk = self.workspace_rows(rows)
        dtype = kernels.autocast_dtype(self.W_enc)
        W_DN, b_N, centred_BD = self.W_enc.t().to(dtype), self.b_enc.to(dtype), centred_BD.to(dtype)
        if chunk >= rows:
            pre_BN = torch.addmm(b_N, centred_BD, W_DN, out=self._workspace(rows, dtype))
            return *topk_rows(pre_BN, k, sorted_), pre_BN
        buf = self._workspace(chunk, dtype)
        vals, idx = [], []
        for s in range(0, rows, chunk):
            part = buf[: min(chunk, rows - s)]
            torch.addmm(b_N, centred_BD[s:s + chunk], W_DN, out=part)
            v, i = topk_rows(part, k, sorted_)
            vals.append(v)
            idx.append(i)
        return torch.cat(vals), torch.cat(idx), None

    def encode_selected(self, x_n, idx, pre_vals, pattern=None, centred=None):
        """The selected pre-activations, with gradients into W_enc, b_enc and b_pre (only their rows)."""
        if self.cfg.kernel == "sparse":
            return sparse_encode(self, x_n, idx, pre_vals, pattern, centred)
        return dense_reference_encode(self, x_n, idx)

    # ---- normalisation -------------------------------------------------------------------------
    def preprocess(self, x: torch.Tensor) -> tuple[torch.Tensor, Undo]:
        """(x in the SAE's input space, the `Undo` that maps a reconstruction there back to x's space)."""
        return normalize(x, self.cfg.normalize, self.input_scale.to(x.device, x.dtype))

    def split(self, rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(what the SAE encodes, what it reconstructs) of rows of its data (an SAE: the same; a transcoder reads
        rows of two sites)."""
        return self.family.split(self, rows)

    def target_space(self, inputs: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, Undo]:
        """(the targets where the losses and the normalized MSE are measured, the `Undo` back to theirs)."""
        return self.family.target_space(self, inputs, targets)

    @torch.no_grad()
    def init_from_data(self, sample_BD: torch.Tensor, bias_init: str = "geometric_median") -> None:
        """Set the normalisation's scale ('dataset_unit_norm') and b_pre from a sample of the data's rows (paper:
        the geometric median, of what the SAE reconstructs)."""
        inputs, targets = self.split(sample_BD.to(self.W_enc.device, torch.float32))
        check_input(inputs, self.cfg.d_in)
        self.family.fit_scales(self, inputs, targets)
        x_n, _ = self.target_space(inputs, targets)
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
        acts, idx = make_activation(FAMILIES[self.cfg.activation].selection, self.cfg.n_latents, self.cfg.k,
                                    getattr(self, "threshold", None)).select(self.pre_acts(x_n))
        scale = float((self.decode_normalized(acts, idx) - self.b_pre).norm(dim=1).mean())
        if scale > 0:
            self.W_enc.div_(scale)
        return scale

    # ---- encode / decode -----------------------------------------------------------------------
    def pre_acts(self, x_n: torch.Tensor) -> torch.Tensor:
        return F.linear(x_n - self.family.encoder_bias(self), self.W_enc, self.b_enc)

    def encode(self, x: torch.Tensor, activation: str | None = None, k: int | None = None,
               threshold: float | torch.Tensor | None = None, keep_pre: bool = False, grad: bool = False
               ) -> EncodeOut:
        """Encode as the SAE's family does at inference, or with a test-time activation (section 5.3,
        `saelab.sae.activation_fns`): 'topk' (k' = `k`), 'jumprelu' (pre > `threshold`; the SAE's own
        thresholds by default), 'batchtopk' (k*B over the batch), 'relu'.
        Runs on the SAE's device; the codes come back on `x`'s device (`keep_pre`'s dense pre-activations
        stay on the SAE's). `grad=True` keeps the autograd graph (to `x` and the weights): the selected
        activations are differentiable, the selection itself is not."""
        check_input(x.detach(), self.cfg.d_in)
        with torch.set_grad_enabled(grad):
            x_n, _ = self.preprocess(x.to(self.W_enc.device, self.W_enc.dtype))
            pre = self.pre_acts(x_n)
            name, own = self.family.inference(self) if activation is None else (activation, None)
            if name == "jumprelu" and threshold is None:
                threshold = own if own is not None else getattr(self, "threshold", None)
            acts, idx = make_activation(name, self.cfg.n_latents, k or self.cfg.k, threshold).select(pre)
            return EncodeOut(acts.to(x.device), idx.to(x.device), pre if keep_pre else None)

    def decode_normalized(self, top_acts_BK: torch.Tensor, top_idx_BK: torch.Tensor, grad: bool = False,
                          x_like: torch.Tensor | None = None) -> torch.Tensor:
        """Reconstruction in the SAE's input space (where the losses and the paper's normalized MSE live),
        on the SAE's device. `grad=True` keeps the graph (to the activations and the decoder). `x_like`: the input,
        for a family that adds a term of it (a transcoder's skip connection)."""
        dev = self.W_dec.device
        with torch.set_grad_enabled(grad):
            recon_n = F.embedding_bag(top_idx_BK.to(dev), self.W_dec,
                                      per_sample_weights=top_acts_BK.to(dev, self.W_dec.dtype), mode="sum") + self.b_pre
            return self.family.decode_extra(self, recon_n, x_like)

    def decode(self, top_acts_BK: torch.Tensor, top_idx_BK: torch.Tensor, x_like: torch.Tensor | None = None,
               grad: bool = False) -> torch.Tensor:
        """Reconstruct from sparse latents (on the device of `x_like`, else of the codes); per-token
        normalisations need the input (`x_like`) to undo it. `grad=True` keeps the graph."""
        if self.cfg.normalize in PER_TOKEN and x_like is None:
            raise ValueError(f"a {self.cfg.normalize} SAE needs the original input to undo the normalisation")
        with torch.set_grad_enabled(grad):
            recon_n = self.decode_normalized(top_acts_BK, top_idx_BK, grad, x_like)
            return self.undo_for(x_like, recon_n)(recon_n).to(
                x_like.device if x_like is not None else top_acts_BK.device)

    def undo_for(self, x_like: torch.Tensor | None, like: torch.Tensor) -> Undo:
        """The `Undo` that maps the SAE's input space back to the space of `x_like` (per token when the
        normalisation is per token; `like` gives the device and dtype; a transcoder: to its target's space)."""
        return self.family.output_undo(self, x_like, like)

    def reconstruct(self, x: torch.Tensor, grad: bool = False, **encode_kwargs) -> torch.Tensor:
        out = self.encode(x, grad=grad, **encode_kwargs)
        return self.decode(out.top_acts_BK, out.top_idx_BK, x, grad=grad)

    # ---- training forward ----------------------------------------------------------------------
    def forward(self, x: torch.Tensor, dead_mask_N: torch.Tensor | None = None, ranks=None, dead_mask_fn=None,
                ramp: float = 1.0) -> ForwardOut:
        """The family's training forward pass: the reconstruction and named losses (`ForwardOut`).

        dead_mask_N: a fixed mask of dead latents for AuxK. dead_mask_fn: called with this batch's fired latents
        after the selection and before AuxK, returns the dead mask (the trainer updates its "last fired"
        statistics there first, so a latent that fires in this batch is not dead in it, as the released code).
        `ranks` (`saelab.distributed.Ranks`): the data-parallel job whose global batch the normalisers and
        selections are of (default: this batch only). `ramp`: the sparsity penalty's warmup factor this step.
        """
        return self.family.forward(self, x, StepContext(dead_mask_N, dead_mask_fn, ranks, ramp))

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
