"""The TopK sparse autoencoder of Gao et al. 2024 (sections 2-5), with its ReLU+L1 baseline.

    x_n     = normalise(x)                           (see NORMALIZATIONS)
    z       = TopK(W_enc (x_n - b_pre) + b_enc)      (ReLU on the kept values, as the paper)
    x_hat_n = W_dec^T z + b_pre,   x_hat = denormalise(x_hat_n)

Training losses, all in the normalised space (section 2.2 and appendix A.2):
    nmse  = MSE / MSE of always predicting the batch mean (the paper's normalized MSE)
    aux   = nmse of the residual e = x_n - x_hat_n (detached) by the top-k_aux *dead* latents,
            decoded WITHOUT b_pre: the residual has no bias to add (sparsify #132 added it twice)
    multi = Multi-TopK: nmse(k) + coef * nmse(factor * k)   (default L(k) + L(4k)/8)
    total = nmse [+ multi term] + aux_coef * aux [+ l1_coef * L1 for the ReLU baseline]
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import NamedTuple

import torch
import torch.nn as nn
import torch.nn.functional as F
from safetensors.torch import load_file, save_file

from .files import atomic_write, atomic_write_text
from .kernels import dense_decode, dense_encode, selected_encode, sparse_decode, transposed_pattern

FORMAT_VERSION = 1
ACTIVATIONS = ("topk", "relu")
TEST_ACTIVATIONS = ("topk", "jumprelu", "batchtopk", "relu")
# Input normalisation, applied before encoding; reconstruction errors are measured in that space.
#   per_token_unit_norm  the paper's (section 2.1): each token mean-subtracted over d_model, scaled to unit norm
#   layernorm            the released code's LN: (x - mean) / (std + 1e-5), the same direction at norm ~sqrt(d-1)
#   unit_msn             one dataset-wide scale: unit mean squared norm over a sample (set by init_from_data)
#   none                 raw activations
NORMALIZATIONS = ("none", "unit_msn", "layernorm", "per_token_unit_norm")
PER_TOKEN = ("layernorm", "per_token_unit_norm")
LN_EPS = 1e-5  # as in openai/sparse_autoencoder's LN (std is the unbiased estimate, eps added to std)
NORM_EPS = 1e-8  # per_token_unit_norm: a floor on the centred norm (a constant token has none)


def default_k_aux(d_in: int) -> int:
    """The paper's guidance: a power of two near d_in / 2 (512 for GPT-2 small's 768)."""
    return 2 ** round(math.log2(max(d_in / 2, 1)))


@dataclass
class SAEConfig:
    """Architecture, losses and provenance of an SAE; saved as cfg.json next to its weights."""

    d_in: int
    """Width of the activations (the LM's d_model for the residual stream)."""
    n_latents: int
    """Number of latents n."""
    k: int = 32
    """Active latents per token for TopK."""
    activation: str = "topk"
    """Training activation: 'topk' or 'relu' (the ReLU+L1 baseline)."""
    k_aux: int | None = None
    """Dead latents used by the AuxK loss; None = a power of two near d_in/2; 0 disables AuxK."""
    aux_coef: float = 1 / 32
    """AuxK coefficient alpha (paper: 1/32)."""
    multi_topk: bool = False
    """Train with Multi-TopK: L(k) + multi_topk_coef * L(multi_topk_factor * k)."""
    multi_topk_factor: int = 4
    multi_topk_coef: float = 1 / 8
    l1_coef: float = 0.0
    """L1 coefficient for the ReLU baseline (ignored by TopK)."""
    normalize: str = "none"
    """Input normalisation: 'per_token_unit_norm' (paper 2.1: centre each token, scale it to unit norm),
    'layernorm' (the released code's LN), 'unit_msn' (one dataset-wide scale to unit mean squared norm), 'none'."""
    input_scale: float = 1.0
    """Scale applied to inputs under 'unit_msn' (set from data by init_from_data)."""
    kernel: str = "sparse"
    """'sparse' (k-row backward) or 'dense' (plain autograd reference)."""
    dtype: str = "float32"
    model: str | None = None
    """Provenance: the LM, hook site, layer and number of tokens the SAE was trained on."""
    site: str | None = None
    layer: int | None = None
    tokens_seen: int = 0

    def __post_init__(self):
        if self.d_in < 1 or self.n_latents < 1:
            raise ValueError(f"d_in and n_latents must be >= 1, got {self.d_in}, {self.n_latents}")
        if not 1 <= self.k <= self.n_latents:
            raise ValueError(f"k must be between 1 and n_latents={self.n_latents}, got k={self.k}")
        if self.activation not in ACTIVATIONS:
            raise ValueError(f"activation must be one of {ACTIVATIONS}, got {self.activation!r}")
        if self.normalize not in NORMALIZATIONS:
            raise ValueError(f"normalize must be one of {NORMALIZATIONS}, got {self.normalize!r}")
        if self.kernel not in ("sparse", "dense"):
            raise ValueError(f"kernel must be 'sparse' or 'dense', got {self.kernel!r}")
        if self.k_aux is None:
            self.k_aux = default_k_aux(self.d_in)
        if self.multi_topk and self.k * self.multi_topk_factor > self.n_latents:
            raise ValueError(f"Multi-TopK needs k*{self.multi_topk_factor} <= n_latents={self.n_latents}")

    @property
    def k_train(self) -> int:
        """Latents selected in the training forward pass (k, or factor*k with Multi-TopK)."""
        return self.k * self.multi_topk_factor if self.multi_topk else self.k


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


def geometric_median(x_BD: torch.Tensor, iters: int = 200, tol: float = 1e-7) -> torch.Tensor:
    """Weiszfeld's algorithm: the point minimising the sum of Euclidean distances to the rows."""
    x = x_BD.double()
    m = x.mean(0)
    for _ in range(iters):
        w = 1.0 / (x - m).norm(dim=1).clamp_min(1e-12)
        new = (w[:, None] * x).sum(0) / w.sum()
        if (new - m).norm() <= tol * m.norm().clamp_min(1e-12):
            m = new
            break
        m = new
    return m.to(x_BD.dtype)


def mean_predictor_mse(v_BD: torch.Tensor, reduce=None) -> torch.Tensor:
    """Per-token squared error of always predicting the mean: E||v||^2 - ||E v||^2 (in fp64).

    `reduce` averages a statistic over data-parallel ranks, so the mean is the global batch's.
    """
    reduce = reduce or (lambda t: t)
    v = v_BD.detach().double()
    mean = reduce(v.mean(0))
    sq = reduce(v.pow(2).sum(-1).mean())
    return (sq - mean.pow(2).sum()).clamp_min(1e-30).to(v_BD.dtype)


def normalized_mse(recon_BD: torch.Tensor, x_BD: torch.Tensor) -> float:
    """The paper's normalized MSE: SSE of the reconstruction / SSE of always predicting the mean of x."""
    x = x_BD.double()
    base = float((x - x.mean(0)).pow(2).sum())
    return float((recon_BD.double() - x).pow(2).sum()) / base if base > 0 else float("nan")


def check_input(x: torch.Tensor, d_in: int) -> None:
    """Raise a clear error for a wrong width or non-finite rows."""
    if x.ndim < 1 or x.shape[-1] != d_in:
        raise ValueError(f"expected activations with last dimension d_in={d_in}, got shape {tuple(x.shape)}")
    bad = (~torch.isfinite(x)).any(-1)
    if bad.any():
        raise ValueError(f"input has {int(bad.sum())} of {bad.numel()} rows with NaN or inf values; "
                         "drop or fix those tokens before encoding")


class SAE(nn.Module):
    """A TopK (or ReLU+L1) sparse autoencoder with unit-norm decoder rows."""

    def __init__(self, cfg: SAEConfig, seed: int | None = 0, device=None):
        super().__init__()
        self.cfg = cfg
        dtype = getattr(torch, cfg.dtype)
        gen = torch.Generator().manual_seed(seed) if seed is not None else None
        # Paper init: random unit-norm decoder rows, encoder = decoder transpose (same n x d matrix here).
        W = torch.randn(cfg.n_latents, cfg.d_in, generator=gen, dtype=torch.float32)
        W /= W.norm(dim=1, keepdim=True)
        self.W_dec = nn.Parameter(W.to(dtype=dtype, device=device))
        self.W_enc = nn.Parameter(W.clone().to(dtype=dtype, device=device))
        self.b_enc = nn.Parameter(torch.zeros(cfg.n_latents, dtype=dtype, device=device))
        self.b_pre = nn.Parameter(torch.zeros(cfg.d_in, dtype=dtype, device=device))
        # Tokens since each latent last fired (drives AuxK's "dead" mask; saved with the SAE).
        self.register_buffer("tokens_since_fired", torch.zeros(cfg.n_latents, dtype=torch.long, device=device))

    def _workspace(self, rows: int) -> torch.Tensor:
        """A reused [rows, n] buffer for the training pre-activations. A fresh 64 MB tensor each step
        costs ~30 ms of page faults on CPU (allocations above 32 MB always come from mmap)."""
        buf = getattr(self, "_pre_buf", None)
        if buf is None or buf.shape[0] != rows or buf.device != self.W_enc.device or buf.dtype != self.W_enc.dtype:
            buf = self._pre_buf = torch.empty(rows, self.cfg.n_latents, dtype=self.W_enc.dtype,
                                              device=self.W_enc.device)
        return buf

    # ---- normalisation -------------------------------------------------------------------------
    def preprocess(self, x: torch.Tensor) -> tuple[torch.Tensor, dict]:
        """The SAE's input space; per-token modes also return the centre and scale to undo it."""
        norm = self.cfg.normalize
        if norm == "none":
            return x, {}
        if norm == "unit_msn":
            return x * self.cfg.input_scale, {}
        mu = x.mean(-1, keepdim=True)
        xc = x - mu
        if norm == "layernorm":
            scale = xc.std(-1, keepdim=True) + LN_EPS
        else:
            scale = xc.norm(dim=-1, keepdim=True).clamp_min(NORM_EPS)
        return xc / scale, {"mu": mu, "scale": scale}

    def postprocess(self, x_n: torch.Tensor, info: dict) -> torch.Tensor:
        norm = self.cfg.normalize
        if norm == "none":
            return x_n
        if norm == "unit_msn":
            return x_n / self.cfg.input_scale
        return x_n * info["scale"] + info["mu"]

    @torch.no_grad()
    def init_from_data(self, sample_BD: torch.Tensor, bias_init: str = "geometric_median") -> None:
        """Set the input scale (unit_msn) and b_pre from a data sample (paper: geometric median)."""
        sample = sample_BD.to(self.W_enc.device, torch.float32)
        check_input(sample, self.cfg.d_in)
        if self.cfg.normalize == "unit_msn":
            self.cfg.input_scale = float(1.0 / sample.pow(2).sum(-1).mean().sqrt())
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

    # ---- encode / decode -----------------------------------------------------------------------
    def pre_acts(self, x_n: torch.Tensor) -> torch.Tensor:
        return F.linear(x_n - self.b_pre, self.W_enc, self.b_enc)

    @torch.no_grad()
    def encode(self, x: torch.Tensor, activation: str | None = None, k: int | None = None,
               threshold: float | None = None, keep_pre: bool = False) -> EncodeOut:
        """Encode with the training activation or a test-time one (section 5.3).

        activation: 'topk' (k' = `k`), 'jumprelu' (z = pre where pre > `threshold`),
        'batchtopk' (the k*B largest activations over the batch; beyond the paper), 'relu'.
        Variable-count activations come back padded: acts 0 at index 0.
        """
        check_input(x, self.cfg.d_in)
        x_n, _ = self.preprocess(x.to(self.W_enc.dtype))
        pre = self.pre_acts(x_n)
        act = activation or self.cfg.activation
        if act == "topk":
            kk = k or self.cfg.k
            if not 1 <= kk <= self.cfg.n_latents:
                raise ValueError(f"k must be between 1 and n_latents={self.cfg.n_latents}, got {kk}")
            top = pre.topk(kk, dim=-1)
            acts, idx = top.values.relu(), top.indices
        elif act in ("jumprelu", "relu", "batchtopk"):
            if act == "jumprelu":
                if threshold is None:
                    raise ValueError("jumprelu needs a threshold")
                mask = pre > threshold
            elif act == "relu":
                mask = pre > 0
            else:
                kk = (k or self.cfg.k) * pre.shape[0]
                flat = pre.relu().flatten()
                kth = flat.topk(min(kk, flat.numel())).values[-1]
                mask = (pre >= kth) & (pre > 0)
            acts, idx = padded_from_mask(pre, mask)
        else:
            raise ValueError(f"unknown activation {act!r}; choose from {TEST_ACTIVATIONS}")
        return EncodeOut(acts, idx, pre if keep_pre else None)

    @torch.no_grad()
    def decode_normalized(self, top_acts_BK: torch.Tensor, top_idx_BK: torch.Tensor) -> torch.Tensor:
        """Reconstruction in the SAE's input space (where the losses and the paper's normalized MSE live)."""
        return F.embedding_bag(top_idx_BK, self.W_dec, per_sample_weights=top_acts_BK.to(self.W_dec.dtype),
                               mode="sum") + self.b_pre

    @torch.no_grad()
    def decode(self, top_acts_BK: torch.Tensor, top_idx_BK: torch.Tensor, x_like: torch.Tensor | None = None
               ) -> torch.Tensor:
        """Reconstruct from sparse latents; per-token normalisations need the input (`x_like`) to undo it."""
        recon_n = self.decode_normalized(top_acts_BK, top_idx_BK)
        info = {}
        if self.cfg.normalize in PER_TOKEN:
            if x_like is None:
                raise ValueError(f"a {self.cfg.normalize} SAE needs the original input to undo the normalisation")
            info = self.preprocess(x_like.to(self.W_dec.dtype))[1]
        return self.postprocess(recon_n, info)

    @torch.no_grad()
    def reconstruct(self, x: torch.Tensor, **encode_kwargs) -> torch.Tensor:
        out = self.encode(x, **encode_kwargs)
        return self.decode(out.top_acts_BK, out.top_idx_BK, x)

    # ---- training forward ----------------------------------------------------------------------
    def forward(self, x: torch.Tensor, dead_mask_N: torch.Tensor | None = None, reduce=None,
                dead_mask_fn=None) -> ForwardOut:
        """Reconstruction and named losses; the dead latents (bool [n]) feed AuxK.

        dead_mask_N: a fixed dead mask. dead_mask_fn: called with this batch's fired latents after the
        TopK selection and before AuxK, returns the dead mask; the trainer updates its "last fired"
        statistics there first, so a latent that fires in this batch is not dead in it (as the released
        training code does: "has to go after stats update").
        `reduce` averages a statistic over data-parallel ranks (default: this batch only), so that
        the normalisers (the mean predictor's MSE) are those of the global batch.
        """
        cfg = self.cfg
        check_input(x, cfg.d_in)
        x_n, info = self.preprocess(x.to(self.W_enc.dtype))
        x_n = x_n.detach()
        centred_var = mean_predictor_mse(x_n, reduce)
        if cfg.activation == "relu":
            out = self._forward_relu(x_n, info, centred_var)
            if dead_mask_fn is not None:
                dead_mask_fn(out.fired_N)
            return out
        sparse = cfg.kernel == "sparse"
        decode = sparse_decode if sparse else dense_decode
        with torch.no_grad():
            centred = x_n - self.b_pre
            pre_BN = torch.addmm(self.b_enc, centred, self.W_enc.t(), out=self._workspace(len(x_n)))
            top = pre_BN.topk(cfg.k_train, dim=-1, sorted=cfg.multi_topk)
        idx = top.indices
        k = cfg.k
        pattern = transposed_pattern(idx, cfg.n_latents) if sparse else None  # shared by both gradients
        vals = self._selected(x_n, idx, top.values, pattern, centred)
        acts = vals.relu()
        pattern_k = transposed_pattern(idx[:, :k], cfg.n_latents) if sparse and cfg.multi_topk else pattern
        recon_n = decode(idx[:, :k], acts[:, :k], self.W_dec, pattern_k) + self.b_pre
        mse = (recon_n - x_n).pow(2).sum(-1).mean()
        losses = {"mse": mse / cfg.d_in, "nmse": mse / centred_var}
        total = losses["nmse"]
        if cfg.multi_topk:
            recon_multi = decode(idx, acts, self.W_dec, pattern) + self.b_pre
            losses["multi_topk"] = (recon_multi - x_n).pow(2).sum(-1).mean() / centred_var
            total = total + cfg.multi_topk_coef * losses["multi_topk"]
        fired = torch.zeros(cfg.n_latents, dtype=torch.bool, device=x.device)
        act_k = acts[:, :k].detach()
        fired[idx[:, :k][act_k > 0]] = True
        if dead_mask_fn is not None:
            dead_mask_N = dead_mask_fn(fired)
        if cfg.k_aux and dead_mask_N is not None and bool(dead_mask_N.any()):
            losses["aux"] = self._aux_loss(x_n, recon_n, pre_BN, dead_mask_N, decode, reduce, centred)
            total = total + cfg.aux_coef * losses["aux"]
        losses["total"] = total
        recon = self.postprocess(recon_n, info)
        return ForwardOut(recon, losses, act_k, idx[:, :k], fired, (act_k > 0).sum(-1).float().mean())

    def _selected(self, x_n, idx, pre_vals, pattern=None, centred=None):
        if self.cfg.kernel == "sparse":
            return selected_encode(x_n, self.b_pre, self.W_enc, self.b_enc, idx, pre_vals, pattern, centred)
        return dense_encode(x_n, self.b_pre, self.W_enc, self.b_enc, idx)

    def _aux_loss(self, x_n, recon_n, pre_BN, dead_mask_N, decode, reduce=None, centred=None) -> torch.Tensor:
        """AuxK (appendix A.2): model the residual with the top-k_aux dead latents, no b_pre added."""
        dead_idx = dead_mask_N.nonzero().squeeze(1)
        k_aux = min(self.cfg.k_aux, dead_idx.numel())
        with torch.no_grad():
            sub = pre_BN.index_select(1, dead_idx)
            top = sub.topk(k_aux, dim=-1, sorted=False)
            aux_idx = dead_idx[top.indices]
        pattern = transposed_pattern(aux_idx, self.cfg.n_latents) if self.cfg.kernel == "sparse" else None
        aux_acts = self._selected(x_n, aux_idx, top.values, pattern, centred).relu()
        resid = (x_n - recon_n).detach()
        resid_hat = decode(aux_idx, aux_acts, self.W_dec, pattern)
        denom = mean_predictor_mse(resid, reduce)
        return ((resid_hat - resid).pow(2).sum(-1).mean() / denom).nan_to_num(0.0)

    def _forward_relu(self, x_n, info, centred_var) -> ForwardOut:
        z = self.pre_acts(x_n).relu()
        recon_n = z @ self.W_dec + self.b_pre
        mse = (recon_n - x_n).pow(2).sum(-1).mean()
        l1 = z.sum(-1).mean()  # decoder rows are unit norm, so this is the paper's L1 penalty
        losses = {"mse": mse / self.cfg.d_in, "nmse": mse / centred_var, "l1": l1}
        losses["total"] = losses["nmse"] + self.cfg.l1_coef * l1
        active = z.detach() > 0
        return ForwardOut(self.postprocess(recon_n, info), losses, None, None, active.any(0),
                          active.sum(-1).float().mean())

    # ---- unit-norm decoder (section 2.3) -------------------------------------------------------
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

    @torch.no_grad()
    def update_fired_(self, fired_N: torch.Tensor, n_tokens: int) -> None:
        self.tokens_since_fired += n_tokens
        self.tokens_since_fired[fired_N] = 0

    def dead_mask(self, threshold_tokens: int) -> torch.Tensor:
        return self.tokens_since_fired >= threshold_tokens

    # ---- persistence ---------------------------------------------------------------------------
    def save(self, folder: str | Path, extra: dict | None = None) -> Path:
        """Write sae.safetensors and cfg.json (atomically: temp file then rename)."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        tensors = {k: v.detach().contiguous().cpu() for k, v in self.state_dict().items()}
        atomic_write(folder / "sae.safetensors", lambda p: save_file(tensors, p))
        meta = {"format_version": FORMAT_VERSION, "config": asdict(self.cfg), **(extra or {})}
        atomic_write_text(folder / "cfg.json", json.dumps(meta, indent=2))
        return folder

    @classmethod
    def load(cls, folder: str | Path, device=None) -> SAE:
        """Load a folder written by `save`; other layouts and damaged files get an error naming the fix."""
        folder = Path(folder)
        _check_saelab_folder(folder)
        try:
            meta = json.loads((folder / "cfg.json").read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise ValueError(f"{folder}/cfg.json is damaged ({e}); re-save the SAE, or retrain it with "
                             "`saelab train --out` on that run folder") from None
        version = meta.get("format_version") if isinstance(meta, dict) else None
        if not isinstance(version, int) or "config" not in meta:
            raise ValueError(f"{folder}/cfg.json is not a saelab SAE config ({_foreign_format(meta)}); "
                             "saelab reads folders written by SAE.save or `saelab train`")
        if version > FORMAT_VERSION:
            raise ValueError(f"{folder}/cfg.json has format_version {version}, newer than this saelab reads "
                             f"({FORMAT_VERSION}); upgrade saelab (pip install -U saelab)")
        known = {f.name for f in fields(SAEConfig)}
        unknown = set(meta["config"]) - known
        if unknown:
            raise ValueError(f"{folder}/cfg.json has unknown config fields {sorted(unknown)}; upgrade saelab")
        cfg = SAEConfig(**meta["config"])
        sae = cls(cfg, seed=None, device=device)
        try:
            state = load_file(folder / "sae.safetensors", device=str(device or "cpu"))
        except Exception as e:  # noqa: BLE001 - safetensors raises its own error types for truncated files
            raise ValueError(f"{folder}/sae.safetensors is damaged or truncated ({type(e).__name__}: {e}); "
                             "re-save the SAE, or retrain it") from None
        expected = {k: tuple(v.shape) for k, v in sae.state_dict().items()}
        got = {k: tuple(v.shape) for k, v in state.items()}
        if expected != got:
            raise ValueError(f"{folder}/sae.safetensors does not match its cfg.json: expected {expected}, got {got}")
        sae.load_state_dict(state)
        return sae

    @classmethod
    def from_openai(cls, path: str | Path, normalize: str | None = None, **provenance) -> SAE:
        """Load a state dict released with the paper (GPT-2 small SAEs, ``.pt``), safely.

        Their layout: encoder.weight [n, d], decoder.weight [d, n], pre_bias, latent_bias,
        activation ('TopK' or 'ReLU'), activation_state_dict {'k': ...}. Their loader turns on
        input layer norm exactly when the activation is TopK; that choice is recorded in our config
        (`normalize`) instead of being guessed again later. Pass `normalize` to override it.
        """
        state = torch.load(path, map_location="cpu", weights_only=True)
        for key in ("encoder.weight", "decoder.weight", "pre_bias", "latent_bias"):
            if key not in state:
                raise ValueError(f"{path} is not an openai/sparse_autoencoder state dict: no {key!r}")
        n, d = state["encoder.weight"].shape
        if tuple(state["decoder.weight"].shape) != (d, n):
            raise ValueError(f"{path}: decoder.weight has shape {tuple(state['decoder.weight'].shape)}, "
                             f"expected {(d, n)}")
        act_name = state.get("activation", "ReLU")
        k = int(state.get("activation_state_dict", {}).get("k", 0)) if act_name == "TopK" else 1
        cfg = SAEConfig(d_in=d, n_latents=n, k=max(k, 1), activation="topk" if act_name == "TopK" else "relu",
                        normalize=normalize or ("layernorm" if act_name == "TopK" else "none"), **provenance)
        sae = cls(cfg, seed=None)
        with torch.no_grad():
            sae.W_enc.copy_(state["encoder.weight"])
            sae.W_dec.copy_(state["decoder.weight"].t())
            sae.b_enc.copy_(state["latent_bias"])
            sae.b_pre.copy_(state["pre_bias"])
        return sae

    def folded_weights(self) -> dict[str, torch.Tensor]:
        """Weights with a constant input scale folded in: unit_msn's scale (the SAE then works on raw
        activations), or per_token_unit_norm's 1/sqrt(d-1) relative to layer norm (it then works on
        layer-normalised inputs, as SAE Lens's 'layer_norm' gives them; equal up to LN's eps)."""
        s = {"unit_msn": self.cfg.input_scale,
             "per_token_unit_norm": 1 / math.sqrt(max(self.cfg.d_in - 1, 1))}.get(self.cfg.normalize, 1.0)
        with torch.no_grad():
            return {"W_enc": (self.W_enc * s).t().contiguous().cpu(), "b_enc": self.b_enc.detach().cpu().clone(),
                    "W_dec": (self.W_dec / s).contiguous().cpu(), "b_dec": (self.b_pre / s).detach().cpu()}

    def to_saelens(self, folder: str | Path, context_size: int = 64) -> Path:
        """Export SAE Lens's layout: cfg.json + sae_weights.safetensors (scales folded in)."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        c = self.cfg
        weights = self.folded_weights()
        hook = f"blocks.{c.layer}.hook_{c.site or 'resid_post'}" if c.layer is not None else "unknown"
        cfg = {
            "architecture": "topk" if c.activation == "topk" else "standard",
            "d_in": c.d_in, "d_sae": c.n_latents, "dtype": c.dtype, "device": "cpu",
            "apply_b_dec_to_input": True,
            "normalize_activations": "layer_norm" if c.normalize in PER_TOKEN else "none",
            "activation_fn": c.activation, "activation_fn_kwargs": {"k": c.k} if c.activation == "topk" else {},
            "k": c.k if c.activation == "topk" else None,
            "model_name": c.model, "hook_name": hook, "hook_layer": c.layer, "context_size": context_size,
            "prepend_bos": False, "finetuning_scaling_factor": False,
            "metadata": {"model_name": c.model, "hook_name": hook, "context_size": context_size,
                         "exported_by": "saelab", "tokens_seen": c.tokens_seen},
        }
        atomic_write(folder / "sae_weights.safetensors", lambda p: save_file(weights, p))
        atomic_write_text(folder / "cfg.json", json.dumps(cfg, indent=2))
        return folder


def padded_from_mask(pre_BN: torch.Tensor, mask_BN: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Rows of a boolean mask as (acts, idx) padded to the largest row count with zeros."""
    width = max(int(mask_BN.sum(-1).max()) if mask_BN.numel() else 0, 1)
    vals = pre_BN.masked_fill(~mask_BN, 0.0)
    top = vals.topk(width, dim=-1)
    return top.values.clamp_min(0.0), top.indices



def _foreign_format(meta) -> str:
    """Name the library that wrote a cfg.json that is not saelab's, from its keys."""
    keys = set(meta) if isinstance(meta, dict) else set()
    if {"d_sae", "d_in"} <= keys or "architecture" in keys and "hook_name" in keys:
        return "it looks like an SAE Lens config"
    if keys & {"expansion_factor", "num_latents", "normalize_decoder"}:
        return "it looks like an EleutherAI sparsify config"
    return f"keys: {sorted(keys)[:8]}"


def _check_saelab_folder(folder: Path) -> None:
    """Raise a clear error when `folder` is missing, or holds another library's SAE layout."""
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder} is not a folder: pass a folder written by SAE.save or `saelab train` "
                                "(e.g. runs/default/sae)")
    if (folder / "sae_weights.safetensors").is_file():
        raise ValueError(f"{folder} holds an SAE Lens SAE (sae_weights.safetensors); saelab reads its own "
                         "folders (cfg.json + sae.safetensors) and OpenAI .pt files (SAE.from_openai)")
    missing = [n for n in ("cfg.json", "sae.safetensors") if not (folder / n).is_file()]
    if missing:
        raise FileNotFoundError(f"{folder} is not a saved SAE: missing {', '.join(missing)} "
                                "(write one with SAE.save or `saelab train`)")
