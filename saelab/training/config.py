"""`TrainConfig`: one training run, holding the `SAEConfig` of the SAE it trains (one config tree, no copies).

The SAE's fields are set as `TrainConfig(sae=SAEConfig(k=16, ...))` or, as in saelab 0.3, flat:
`TrainConfig(k=16)`, `replace(cfg, k=16)`, `cfg.k` (aliases of `cfg.sae.k`); on the command line
`--train.sae.k 16` or `--train.k 16`. The SAE's width and provenance (d_in, model, site, layer) come from the data.

Where each choice comes from (Gao et al. 2024 section 2 and appendix A; openai/sparse_autoencoder):
- from the paper: Adam, betas (0.9, 0.999), eps 6.25e-10, no weight decay; the learning rate falling as
  1/sqrt(n_latents) (default 2e-4 / sqrt(n / 2^14), the scaling EleutherAI's sparsify uses, from the paper's lr-vs-n
  fits); unit-norm decoder (project out the parallel gradient before each step, renormalise after); AuxK on latents
  dead for `dead_tokens` tokens (paper: 10M tokens in runs of billions; here the default scales with the run, see
  `TrainConfig.dead_tokens`);
- saelab's own: the paper and the released training loop use a constant learning rate; saelab warms up over the first
  2% of steps and decays linearly to zero over the last `decay_frac` (0.2 by default, 0.5 in the main job), because
  short CPU runs of a few thousand steps end measurably better with a decay (`saelab.presets.train_defaults` records
  the comparisons). Set warmup_frac=decay_frac=0 for the paper's.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, fields, replace
from typing import Literal

from saelab.flags import check_choices
from saelab.sae.config import SAEConfig
from saelab.sae.families.jumprelu import warn_jumprelu_init

SAE_FIELDS = frozenset(f.name for f in fields(SAEConfig))
"""SAEConfig's fields: TrainConfig reads and writes them flat too (`cfg.k` is `cfg.sae.k`)."""


def training_sae() -> SAEConfig:
    """The SAE a training run trains unless told otherwise: SAEConfig's defaults with the paper's per-token unit
    norm (section 2.1; on the main job it measured as well as one dataset-wide scale and 4% lower delta CE)."""
    return SAEConfig(normalize="per_token_unit_norm")


@dataclass
class TrainConfig:
    """Hyperparameters of one SAE training run."""

    sae: SAEConfig = field(default_factory=training_sae, metadata={"flat_aliases": True})
    """The SAE to train: family, n_latents, k, losses, normalisation (its width and provenance come from the data)."""
    l1_warmup_frac: float = 0.0
    """Ramp the sparsity penalty (ReLU's L1, JumpReLU's L0) linearly from 0 over this fraction of the steps (a strong
    L1 from step 0 kills latents before they find data; Anthropic's 2024 ReLU-SAE recipe warms it up)."""
    bias_init: Literal["geometric_median", "mean", "zeros"] = "geometric_median"
    """b_pre initialisation: 'geometric_median' (paper), 'mean' or 'zeros'."""
    tied_init: bool = True
    """Initialise the encoder as the decoder's transpose (paper); False: independent random encoder."""
    rescale_encoder_init: bool = False
    """Divide the initial encoder by the mean reconstruction norm of random unit inputs, as the released code's
    `init_from_data_` does (its comment: no clear evidence it helps). Off: on the main job it measured the same
    normalized MSE, with fewer never-firing latents (README, "Training details")."""
    ema_decay: float | None = None
    """Keep a bias-corrected exponential moving average of the weights (`saelab.training.ema`; the released
    `training_loop_`'s `ema_multiplier`, 0.999 by default there, off in its `Config`) and evaluate and save it;
    None: off (README, "Training details": measured)."""
    batch_size: int = 4096
    """Tokens per optimiser step (global, over all data-parallel ranks)."""
    shard_latents: bool = False
    """Under torchrun, split the latents across the W ranks (model parallelism, for SAEs wider than one device; the
    released code's n_op_shards): each rank holds n/W rows of W_enc, b_enc, W_dec and their Adam state, b_pre is
    replicated, and every rank reads the same whole batch. Per step: an all-gather of k values and indices per token
    (the global top-k), an all-reduce of the [batch, d] reconstruction, the same again for AuxK. TopK (with AuxK)
    only; n must be a multiple of W; no data parallelism beside it, no --on-the-fly. Checkpoints and the saved SAE
    are ordinary (gathered on rank 0), so a run resumes at another world size. Tested on CPU with gloo, not yet
    with NCCL on GPUs (docs/training.md, "Latents sharded across ranks")."""
    epochs: float = 8.0
    """Passes over the training data. Resuming with a larger value extends a run from its last checkpoint
    as a warm restart: the schedule is recomputed for the new length, so a run that was already decaying
    gets its learning rate back (exact only with warmup_frac = decay_frac = 0)."""
    lr: float | None = None
    """Adam learning rate; None: 2e-4 / sqrt(n_latents / 2^14)."""
    adam_eps: float = 6.25e-10
    """Adam epsilon (paper: 6.25e-10)."""
    beta1: float = 0.9
    """Adam beta1 (paper: 0.9)."""
    beta2: float = 0.999
    """Adam beta2 (paper: 0.999)."""
    warmup_frac: float = 0.02
    """Fraction of steps with linear learning-rate warmup."""
    decay_frac: float = 0.2
    """Fraction of final steps with linear decay to zero."""
    grad_clip: float | None = None
    """Clip the global gradient norm to this value (None: off)."""
    autocast: Literal["none", "bf16"] = "none"
    """Mixed precision, CUDA only (refused on another device): 'bf16' runs the SAE's forward pass under
    torch.autocast, so the encoder product and its top-k are bf16, while the sparse decode, the gradients, the losses
    and their normalisers, the parameters and Adam's state stay fp32 (`saelab.training.acceleration`; not yet
    measured on a GPU)."""
    compile: bool = False
    """torch.compile the SAE's training forward pass; the encoder product, top-k and sparse kernels run eagerly
    between the compiled parts (`saelab.training.acceleration`; not yet measured on a GPU)."""
    dead_tokens: int | None = None
    """A latent is dead after this many tokens without firing; None: min(10M, max(total/16, 2 batches))."""
    eval_every: int = 100
    """Evaluate on held-out activations every N steps (and at the end)."""
    log_every: int = 10
    """Write a log line every N steps."""
    checkpoint_every: int = 100
    """Write a checkpoint every N steps (atomic; 0: only at the end)."""
    keep_checkpoints: int = 2
    """How many recent checkpoints to keep after training (0: delete them all once the SAE is saved;
    while training the newest one is always kept, since it is the resume point)."""
    seed: int = 0
    """Seed of the initialisation and the data order."""
    data_parallel: Literal["ddp", "allreduce"] = "ddp"
    """Under torchrun: average the gradients with PyTorch's DistributedDataParallel ('ddp'), or with saelab's one
    flat all-reduce after the backward pass ('allreduce', kept to measure against; docs/performance.md)."""
    tensorboard: bool = False
    """Also log to TensorBoard (needs the tensorboard package)."""
    progress: bool = True
    """Show a progress bar."""

    def __post_init__(self):
        check_choices(self)
        warn_jumprelu_init(self.sae.activation, self.rescale_encoder_init)

    def learning_rate(self) -> float:
        return self.lr if self.lr is not None else 2e-4 / math.sqrt(self.sae.n_latents / 2**14)

    def __getattr__(self, name: str):  # only for names that are not TrainConfig's own: the SAE's, flat
        if name in SAE_FIELDS and "sae" in self.__dict__:
            return getattr(self.__dict__["sae"], name)
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

    def __setattr__(self, name: str, value) -> None:
        if name in SAE_FIELDS:
            self.sae = replace(self.sae, **{name: value})
        else:
            object.__setattr__(self, name, value)


_fields_init = TrainConfig.__init__


def _init(self, *args, **kwargs) -> None:
    """TrainConfig(sae=..., ...) as generated, plus the SAE's fields flat (`TrainConfig(k=16)`, `replace(cfg, k=16)`):
    they change `sae` (by default the training SAE, `training_sae`)."""
    flat = {k: kwargs.pop(k) for k in list(kwargs) if k in SAE_FIELDS}
    if flat:
        if args:
            raise TypeError("pass TrainConfig's fields by name when you also set the SAE's fields flat")
        kwargs["sae"] = replace(kwargs.get("sae") or training_sae(), **flat)
    _fields_init(self, *args, **kwargs)


TrainConfig.__init__ = _init
