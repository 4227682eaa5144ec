"""How a training step runs fast on a GPU: bf16 autocast of the SAE's forward pass (`TrainConfig.autocast`) and
`torch.compile` of it (`TrainConfig.compile`). Neither has been measured on a GPU yet (docs/performance.md).

Autocast ("bf16", CUDA only): the forward pass runs inside `torch.autocast("cuda", dtype=torch.bfloat16)`. The
encoder's dense [batch, n] product and its top-k run in bf16 (`SAE.select`); the sparse kernels cast what they get
back to fp32 and run with autocast off (`saelab.sae.kernels.in_fp32`), so the decode, the gradient products and the
losses and their normalisers (input normalisation, the normalized MSE's denominator, in fp64 then cast) are fp32.
The parameters, their gradients and Adam's state stay fp32, and the backward pass runs outside the autocast region.

Compile: the SAE's training forward pass (`SAE.forward`: the family's losses, normalisation, bookkeeping) is
wrapped in `torch.compile`; the encoder product with its top-k and the sparse kernels' custom autograd functions are
not traced (each runs eagerly, a graph break: `saelab.sae.kernels.eager`). The optimiser step is Adam's fused one.
"""

from __future__ import annotations

from contextlib import nullcontext

import torch

AUTOCAST_DEVICES = ("cuda",)
"""Device types where `TrainConfig.autocast = "bf16"` is offered (tests add "cpu" to exercise the wiring)."""


def check_autocast(autocast: str, device: torch.device, param_dtype: str = "float32") -> None:
    """Raise a ValueError naming the reason and the fix when `autocast` cannot run on `device`."""
    if autocast == "none":
        return
    if device.type not in AUTOCAST_DEVICES:
        raise ValueError(f"autocast {autocast} is for CUDA: this run is on {device.type}; drop --train.autocast "
                         "or pass --device cuda")
    if param_dtype != "float32":
        raise ValueError(f"autocast {autocast} keeps the parameters in fp32, but this SAE's dtype is {param_dtype}; "
                         "drop --train.autocast or --train.sae.dtype")


def autocast_region(autocast: str, device: torch.device):
    """The context the forward pass runs in: `torch.autocast` of the device's type in bf16, or nothing."""
    if autocast == "bf16":
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return nullcontext()


def compiled_forward(sae):
    """`sae`'s training forward pass through `torch.compile` (the module itself is left as it is: its state dict
    and checkpoints keep their names)."""
    return torch.compile(sae)
