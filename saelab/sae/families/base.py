"""What every SAE family is: `Family`, the hooks the model and the trainer call, with the defaults most families keep;
`SparseStep`, the training forward pass shared by the families whose codes are a sparse selection; and the typed
outputs of the model (`EncodeOut`, `ForwardOut`).

A family file (`topk.py`, `batchtopk.py`, ...) holds one `Family` subclass: its options (a small dataclass whose
fields join `SAEConfig`), its training forward pass, how it encodes at inference, its hooks into training
(`after_step`, `finalize`), its names in SAE Lens and its study metadata. The registry (`saelab.sae.families`) maps
its name to it. Family code may use the SAE's family API (`SAE.select`, `SAE.encode_selected`, `saelab.sae.auxk`):
never its private state.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import NamedTuple

import torch
import torch.nn.functional as F

from saelab.sae.input_norm import check_input, dataset_scale_from
from saelab.sae.kernels import dense_decode, dense_encode, selected_encode, sparse_decode, transposed_pattern
from saelab.sae.losses import mean_predictor_mse


class EncodeOut(NamedTuple):
    top_acts_BK: torch.Tensor
    """Activations of the selected latents (zero where a row has fewer than K active)."""
    top_idx_BK: torch.Tensor
    """Indices of the selected latents."""
    pre_acts_BN: torch.Tensor | None
    """Dense pre-activations W_enc (x_n - b_pre) + b_enc (no autograd), or None."""


class ForwardOut(NamedTuple):
    recon_BD: torch.Tensor
    """Reconstruction in the input's space (a transcoder's: in its target's)."""
    losses: dict[str, torch.Tensor]
    """Named loss terms: 'total' plus 'nmse', 'mse' and the family's own ('aux', 'multi_topk', 'l1', ...)."""
    top_acts_BK: torch.Tensor | None
    top_idx_BK: torch.Tensor | None
    fired_N: torch.Tensor
    """Bool per latent: did it fire (act > 0) on any token of the batch."""
    l0: torch.Tensor
    """Mean number of active latents per token."""


class StepContext(NamedTuple):
    """What the trainer tells one training forward pass."""

    dead_mask_N: torch.Tensor | None = None
    """A fixed mask of dead latents for AuxK (tests), or None."""
    dead_mask_fn: object = None
    """Called with the batch's fired latents after the selection, before AuxK; returns the dead mask (the trainer
    updates its "last fired" statistics there first, as the released code: "has to go after stats update")."""
    ranks: object = None
    """`saelab.distributed.Ranks` of a data-parallel job (the global batch's statistics), or None: this batch only."""
    ramp: float = 1.0
    """The sparsity penalty's warmup factor at this step (the ReLU baseline's L1, JumpReLU's L0)."""

    def reduce(self):
        """The mean over ranks (None in one process), for `saelab.sae.losses`."""
        return self.ranks.mean if self.ranks is not None else None


@dataclass(frozen=True)
class Penalty:
    """A family that reaches a target L0 through a penalty coefficient (studies search it)."""

    coef: str
    """The SAEConfig field of the coefficient."""
    guess: float
    """Its first guess for L0 32 on the main job's data."""
    slope: float
    """The guessed slope of log L0 against log coef."""
    synthetic_guess: float
    """Its first guess at the synthetic benchmark's L0 (about 7)."""


class Family:
    """One SAE family. Class attributes describe it; methods are hooks with the defaults of a TopK-like family."""

    name: str = ""
    """Registry key: `SAEConfig.activation` (Matryoshka: claimed by its option, see `claims`)."""
    display: str = ""
    """Its name in tables and plots."""
    options: type | None = None
    """Its config dataclass: fields that join `SAEConfig` (defaults mean off)."""
    selection: str = "topk"
    """The test-time activation (`saelab.sae.activation_fns`) that mirrors its training selection."""
    nests: bool = False
    """Its codes can be nested in Matryoshka prefixes."""
    centres_input: bool = True
    """Its encoder subtracts b_pre from its input (an SAE: the paper's); False: it reads its input as it is (a
    transcoder, whose b_pre is its output's). SAE Lens calls this apply_b_dec_to_input."""
    saelens_tensors: tuple[str, ...] = ()
    """Its own tensors in SAE Lens's files beside W_enc, W_dec, b_enc, b_dec, threshold (a transcoder's W_skip)."""
    chunks: bool = True
    """Its training pass can compute the [batch, n] pre-activations in row chunks (when they exceed the workspace);
    False: it needs them whole and refuses larger batches."""
    has_k: bool = True
    """k is its sparsity (TopK-like); False: a penalty sets it (k is then only the test-time TopK default)."""
    recipe: dict = {}
    """TrainConfig changes of its study runs (`saelab frontier`), on top of the main job's recipe."""
    synthetic_recipe: dict = {}
    """Further changes for the synthetic benchmark's small SAEs."""
    penalty: Penalty | None = None
    """How studies reach a target L0 when k does not set it."""
    studied: bool = True
    """Part of the studies' family comparisons (frontier, synthetic benchmark)."""
    registry: dict[str, Family] = {}
    """The registry it was registered in (`saelab.sae.families.register` sets it): the other families by name."""
    saelens_reads: dict[str, str] = {}
    """SAE Lens architectures read as this family: {SAE Lens name: saelab activation}."""
    saelens_training: str = ""
    """SAE Lens's name of the training architecture (metadata.training_architecture of an export)."""

    def claims(self, cfg) -> bool:
        """Is `cfg` an SAE of this family? (Families with an option that changes the family override it.)"""
        return cfg.activation == self.name

    def check(self, cfg, selection: Family) -> None:
        """Raise a ValueError for options that do not fit `cfg` (`selection`: the family of cfg.activation)."""

    def default_k_aux(self, d_in: int, standard: int) -> int:
        return standard

    def add_parameters(self, sae, dtype, device) -> None:
        """Register the family's own parameters and buffers on `sae`."""

    def inference(self, sae) -> tuple[str, torch.Tensor | None]:
        """(test-time activation, threshold) the SAE encodes with when none is asked."""
        return "topk", None

    def train_forward(self, sae, x_n: torch.Tensor, undo, ctx: StepContext) -> ForwardOut:
        """The training pass in the SAE's input space (`x_n` normalised and detached; `undo` maps back)."""
        raise NotImplementedError

    # ---- how the family reads its data (an SAE: one site; a family may read one and reconstruct another) ----
    def forward(self, sae, rows: torch.Tensor, ctx: StepContext) -> ForwardOut:
        """The training pass on a batch of training rows (`SAE.forward`)."""
        check_input(rows, sae.cfg.d_in)
        x_n, undo = sae.preprocess(rows.to(sae.W_enc.dtype))
        return self.train_forward(sae, x_n.detach(), undo, ctx)

    def split(self, sae, rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(what the SAE encodes, what it reconstructs) of rows of its data: an SAE's are the same."""
        return rows, rows

    def config_for_data(self, cfg, width: int, where: dict):
        """The SAE's config for training rows `width` wide, from `where` (the data's model, site, layer)."""
        return replace(cfg, d_in=width, **where)

    def encoder_bias(self, sae) -> torch.Tensor:
        """What the encoder subtracts from its input before W_enc: an SAE's b_pre (the paper's)."""
        return sae.b_pre

    def fit_scales(self, sae, inputs: torch.Tensor, targets: torch.Tensor) -> None:
        """Set the normalisation's statistics from a data sample ('dataset_unit_norm': one scale)."""
        if sae.cfg.normalize == "dataset_unit_norm":
            sae.input_scale.fill_(dataset_scale_from(inputs))

    def target_space(self, sae, inputs: torch.Tensor, targets: torch.Tensor):
        """(targets where the losses are measured, the `Undo` back to theirs): an SAE's input space."""
        return sae.preprocess(targets)

    def output_undo(self, sae, x_like: torch.Tensor | None, like: torch.Tensor):
        """The `Undo` from where the SAE reconstructs to the space of its target (per token: from `x_like`)."""
        reference = x_like.detach().to(like.device, sae.W_dec.dtype) if x_like is not None else like.detach()
        return sae.preprocess(reference)[1]

    def decode_extra(self, sae, recon_n: torch.Tensor, x_like: torch.Tensor | None) -> torch.Tensor:
        """What the family adds to the decoded codes (a transcoder's skip connection); an SAE: nothing."""
        return recon_n

    def writes(self, cfg) -> str | None:
        """The site whose activation the SAE's output stands for (spliced there): an SAE's own."""
        return cfg.site

    def data_width(self, cfg) -> int:
        """The width of the rows it trains on (an SAE: d_in; `config_for_data` reads it back)."""
        return cfg.d_in

    def codes(self, sae, step: SparseStep, ctx: StepContext):
        """(acts_BK with graph, idx_BK, dense pre-activations or None) of the training selection (nesting families)."""
        raise NotImplementedError(f"{self.name} codes cannot be nested")

    def after_step(self, sae) -> None:
        """After each optimiser step (and the decoder's renormalisation)."""

    def finalize(self, sae, batches, ranks=None) -> None:
        """After the last step, on the weights that are saved and evaluated (`batches`: training batches)."""

    def export_architecture(self, cfg) -> str:
        """The SAE Lens inference architecture `to_saelens` writes."""
        return self.name

    def training_architecture(self, cfg) -> str:
        """SAE Lens's name of the family it was trained as (an export's metadata.training_architecture)."""
        return self.saelens_training

    def saelens_details(self, cfg) -> dict:
        """The training fields that mean the same in SAE Lens (metadata.training_architecture_details)."""
        return {"k": cfg.k} if self.has_k else {}

    def saelens_options(self, fields: dict, site_of=None) -> dict:
        """SAEConfig options read back from SAE Lens's cfg.json and training fields (`site_of`: its hook names as
        saelab's (site, layer))."""
        return {}

    def saelens_weights(self, sae) -> dict | None:
        """SAE Lens's tensors of the SAE when the family folds them its own way; None: the SAE's way."""
        return None

    def coef(self, cfg) -> float | None:
        return getattr(cfg, self.penalty.coef) if self.penalty else None

    def point_name(self, cfg) -> str:
        """A study point's folder name."""
        if self.penalty:
            return f"{self.name}-{self.penalty.coef.split('_')[0]}-{self.coef(cfg):g}"
        return f"{self.name}-k{cfg.k}"

    def examples(self) -> dict[str, dict]:
        """Small SAEConfig changes that exercise the family (named), for the tests over the registry."""
        return {self.name: {"activation": self.name}}


class SparseStep:
    """One training forward pass of a family whose codes are a sparse selection (TopK, BatchTopK, Matryoshka): the
    encoder input, the kernels, the reconstruction loss and the end of the pass (fired latents, AuxK).

    In the SAE's input space: centred = x_n - b_pre; the codes' decode (no bias) minus `centred` is x_hat_n - x_n.
    A family that reconstructs another target (`target_n`, with a term of its own `extra` added to the decode, such
    as a transcoder's skip connection) passes them: then `centred_g` = target_n - b_pre - extra and the encoder's
    input `centred` = x_n - its `encoder_bias`.
    """

    def __init__(self, sae, x_n: torch.Tensor, target_n: torch.Tensor | None = None,
                 extra: torch.Tensor | None = None):
        self.sae, self.x_n = sae, x_n
        self.target_n, self.extra = (x_n if target_n is None else target_n), extra
        self.sparse = sae.cfg.kernel == "sparse"
        self.decode = sparse_decode if self.sparse else dense_decode
        if target_n is None:
            self.centred_g = x_n - sae.b_pre  # differentiable in b_pre: recon_n - x_n = decoded - centred
            self.centred = self.centred_g.detach()
        else:
            self.centred_g = self.target_n - sae.b_pre - (extra if extra is not None else 0.0)
            self.centred = (x_n - sae.family.encoder_bias(sae)).detach()
        self.pattern = None

    def encode(self, idx_BK: torch.Tensor, vals_BK: torch.Tensor) -> torch.Tensor:
        """The selected activations (ReLU), with gradients into W_enc, b_enc and b_pre (only their rows). The
        selection's pattern is kept for the decode."""
        self.pattern = transposed_pattern(idx_BK, self.sae.cfg.n_latents) if self.sparse else None
        return self.sae.encode_selected(self.x_n, idx_BK, vals_BK, self.pattern, self.centred).relu()

    def decoded(self, idx_BK: torch.Tensor, acts_BK: torch.Tensor) -> torch.Tensor:
        """The codes' decode (no bias), in the input's dtype (the 'dense' kernel's product is bf16 under autocast)."""
        return self.decode(idx_BK, acts_BK, self.sae.W_dec, self.pattern).to(self.centred_g.dtype)

    def reconstruction(self, first: torch.Tensor, ctx: StepContext):
        """({'mse', 'nmse'}, total loss, the mean predictor's MSE) of the decoded codes `first` (no bias)."""
        rows = len(self.x_n)
        sse = F.mse_loss(first, self.centred_g, reduction="sum") / rows
        baseline = mean_predictor_mse(self.target_n, ctx.reduce())
        losses = {"mse": sse.detach() / self.sae.cfg.d_in, "nmse": sse / baseline}
        return losses, losses["nmse"], baseline

    def finish(self, first, acts_BK, idx_BK, losses, total, pre_BN, ctx: StepContext, undo) -> ForwardOut:
        """Fired latents, the dead mask, AuxK, and the outputs."""
        from saelab.sae.auxk import aux_loss

        sae, cfg = self.sae, self.sae.cfg
        recon_n = first + sae.b_pre  # returned with its graph (a user's own loss on it gets gradients)
        if self.extra is not None:
            recon_n = recon_n + self.extra
        fired = torch.zeros(cfg.n_latents, dtype=torch.bool, device=first.device)
        acts = acts_BK.detach()
        fired[idx_BK[acts > 0]] = True
        dead_mask_N = ctx.dead_mask_fn(fired) if ctx.dead_mask_fn is not None else ctx.dead_mask_N
        if cfg.k_aux and dead_mask_N is not None and bool(dead_mask_N.any()):  # + alpha * AuxK
            losses["aux"] = aux_loss(sae, self.x_n, (self.target_n - recon_n).detach(), pre_BN, dead_mask_N,
                                     self.decode, ctx.reduce(), self.centred)
            total = total + cfg.aux_coef * losses["aux"]
        losses["total"] = total
        return ForwardOut(undo(recon_n), losses, acts, idx_BK, fired, (acts > 0).sum(-1).float().mean())


class SparseFamily(Family):
    """A family whose codes are a sparse selection: the forward pass is `codes`, one decode, `extra_losses`."""

    def train_forward(self, sae, x_n, undo, ctx):
        step = SparseStep(sae, x_n)
        acts, idx, pre_BN = self.codes(sae, step, ctx)
        first = step.decoded(idx, acts)
        losses, total, baseline = step.reconstruction(first, ctx)
        total = self.extra_losses(sae, step, idx, acts, baseline, losses, total)
        return step.finish(first, acts, idx, losses, total, pre_BN, ctx, undo)

    def extra_losses(self, sae, step, idx, acts, baseline, losses, total):
        """Add the family's own loss terms to `losses` and return the new total."""
        return total


def dense_reference_encode(sae, x_n, idx_BK):
    """The selected pre-activations by plain autograd (the 'dense' kernel)."""
    return dense_encode(x_n, sae.family.encoder_bias(sae), sae.W_enc, sae.b_enc, idx_BK)


def sparse_encode(sae, x_n, idx_BK, pre_BK, pattern=None, centred=None):
    """The selected pre-activations with the sparse backward (`kernels.selected_encode`)."""
    return selected_encode(x_n, sae.family.encoder_bias(sae), sae.W_enc, sae.b_enc, idx_BK, pre_BK, pattern,
                           centred)
