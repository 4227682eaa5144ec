"""saprmarks/dictionary_learning's folders (and SAEBench's, which it trains): ``ae.pt`` (a state dict, read with
torch's weights-only loader) and ``config.json`` ({"trainer": {dict_class, activation_dim, dict_size, k, layer,
lm_name, submodule_name, ...}, "buffer": {...}}). `trainSAE(save_dir=...)` writes one such folder per trainer,
``trainer_0/``, ``trainer_1/``, ...

    dict_class               tensors                                               saelab
    AutoEncoder              encoder.weight [n,d], encoder.bias, decoder.weight     relu (decoder norms folded into
                             [d,n], bias [d]                                        the encoder, as its loader does)
    AutoEncoderTopK          encoder.*, decoder.weight, b_dec, k, threshold         topk (its forward: per-token TopK)
    BatchTopKSAE             same                                                   batchtopk (forward: the threshold)
    MatryoshkaBatchTopKSAE   W_enc [d,n], b_enc, W_dec [n,d], b_dec, k, threshold,  batchtopk with matryoshka_widths =
                             group_sizes                                            the group sizes' running sums
    JumpReluAutoEncoder      W_enc, b_enc, W_dec, b_dec, threshold [n]              jumprelu (no decoder bias subtracted
                                                                                    from the input: folded into b_enc)

Each reconstructs as the library's own `from_pretrained(...)` then `forward` (tests/test_formats_suites.py, on
files the library wrote). Gated SAEs have no saelab equivalent and are refused. A run trained with
normalize_activations=True has its scale already folded into the biases by the library when it saved.
"""

from __future__ import annotations

import itertools
from pathlib import Path

import torch

from saelab.sae.formats.build import sae_from_weights
from saelab.sae.formats.saelens import read_json
from saelab.sae.model import SAE

WEIGHTS, CONFIG = "ae.pt", "config.json"
KEYS = {
    "AutoEncoder": ("encoder.weight", "encoder.bias", "decoder.weight", "bias"),
    "AutoEncoderTopK": ("encoder.weight", "encoder.bias", "decoder.weight", "b_dec", "k"),
    "BatchTopKSAE": ("encoder.weight", "encoder.bias", "decoder.weight", "b_dec", "k", "threshold"),
    "MatryoshkaBatchTopKSAE": ("W_enc", "b_enc", "W_dec", "b_dec", "k", "threshold", "group_sizes"),
    "JumpReluAutoEncoder": ("W_enc", "b_enc", "W_dec", "b_dec", "threshold"),
}
REFUSED = {"GatedAutoEncoder": "a gated SAE's separate gate and magnitude encoders",
           "AutoEncoderNew": "an encoder without the decoder-bias centring", "IdentityDict": "no dictionary at all"}


def trainer_folders(folder: Path) -> list[str]:
    """The trainer_* subfolders of a dictionary_learning save_dir that hold an ae.pt."""
    return sorted(p.name for p in folder.glob("trainer_*") if (p / WEIGHTS).is_file())


def read_state(path: Path) -> dict[str, torch.Tensor]:
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - UnpicklingError, RuntimeError, EOFError...
        raise ValueError(f"{path} could not be read as a tensors-only state dict ({type(e).__name__}: {e}); saelab "
                         "loads tensors only, never code") from None
    if not isinstance(state, dict):
        raise ValueError(f"{path} is not a dictionary_learning state dict (a {type(state).__name__})")
    return state


def dict_class(state: dict, trainer: dict, where: Path) -> str:
    """The dictionary class: config.json's dict_class, else read from the tensors when they say it alone."""
    name = trainer.get("dict_class")
    if name:
        return name
    if "group_sizes" in state:
        return "MatryoshkaBatchTopKSAE"
    if "W_enc" in state and "k" not in state:
        return "JumpReluAutoEncoder"
    if "bias" in state and "encoder.weight" in state:
        return "AutoEncoder"
    raise ValueError(f"{where}: without config.json saelab cannot tell a TopK from a BatchTopK dictionary (the same "
                     f"tensors: {sorted(state)}); keep the config.json dictionary_learning wrote beside ae.pt")


def provenance(trainer: dict) -> dict:
    """model / site / layer / hook from the trainer config (dictionary_learning hooks a block's output, the residual
    stream after it, unless its submodule name says MLP or attention)."""
    layer, sub = trainer.get("layer"), str(trainer.get("submodule_name") or "")
    site = "mlp_out" if "mlp" in sub else "attn_out" if "attn" in sub else "resid_post"
    return {"model": trainer.get("lm_name"), "site": site if isinstance(layer, int) else None,
            "layer": layer if isinstance(layer, int) else None, "hook": sub or None}


def from_dictionary_learning(path: str | Path, trainer_name: str | None = None, device=None, **overrides) -> SAE:
    """Load a dictionary_learning folder (ae.pt + config.json), an ae.pt file, or one trainer of a save_dir
    (`trainer_name`, e.g. 'trainer_0'; the only one when there is one)."""
    path = Path(path)
    folder = path.parent if path.is_file() else path
    if not path.is_file() and not (folder / WEIGHTS).is_file():
        trainers = trainer_folders(folder)
        if trainer_name is None and len(trainers) != 1:
            raise ValueError(f"{folder} holds {len(trainers)} dictionary_learning trainers {trainers}; pick one: "
                             "load_sae(path, hookpoint='trainer_0') or `--sae PATH/trainer_0`")
        trainer_name = trainer_name or trainers[0]
        if trainer_name not in trainers:
            raise ValueError(f"{folder} has no trainer {trainer_name!r}; it has {trainers}")
        folder = folder / trainer_name
    file = path if path.is_file() else folder / WEIGHTS
    state = read_state(file)
    meta = read_json(folder / CONFIG) if (folder / CONFIG).is_file() else {}
    trainer = meta.get("trainer") if isinstance(meta.get("trainer"), dict) else {}
    name = dict_class(state, trainer, file)
    if name in REFUSED or name not in KEYS:
        why = REFUSED.get(name, "a class saelab does not know")
        raise ValueError(f"{file}: dictionary_learning {name} is not supported ({why}); saelab reads {sorted(KEYS)}")
    missing = [k for k in KEYS[name] if k not in state]
    if missing:
        raise ValueError(f"{file}: a {name} needs {missing} (found {sorted(state)})")
    s = {k: v.float() for k, v in state.items()}
    record = {**provenance(trainer), "source": f"dictionary_learning:{file}", **overrides}
    if name == "AutoEncoder":  # ReLU commutes with a positive scale: unit decoder columns, exactly
        norms = s["decoder.weight"].norm(dim=0).clamp_min(1e-12)
        return sae_from_weights(file, (s["encoder.weight"] * norms[:, None]).t(), s["encoder.bias"] * norms,
                                (s["decoder.weight"] / norms).t(), s["bias"], activation="relu", subtracts_b_dec=True,
                                device=device, **record)
    k = int(state["k"]) if "k" in state else 32
    if name in ("AutoEncoderTopK", "BatchTopKSAE"):
        family = "topk" if name == "AutoEncoderTopK" else "batchtopk"
        # a threshold below zero was never set: every positive activation passes, as with 0
        threshold = s["threshold"].clamp_min(0.0) if family == "batchtopk" else None
        return sae_from_weights(file, s["encoder.weight"].t(), s["encoder.bias"], s["decoder.weight"].t(), s["b_dec"],
                                activation=family, subtracts_b_dec=True, k=k, threshold_N=threshold, device=device,
                                **record)
    if name == "MatryoshkaBatchTopKSAE":
        widths = list(itertools.accumulate(int(g) for g in state["group_sizes"].tolist()))
        return sae_from_weights(file, s["W_enc"], s["b_enc"], s["W_dec"], s["b_dec"], activation="batchtopk",
                                subtracts_b_dec=True, k=k, threshold_N=s["threshold"].clamp_min(0.0),
                                matryoshka_widths=widths, device=device, **record)
    return sae_from_weights(file, s["W_enc"], s["b_enc"], s["W_dec"], s["b_dec"], activation="jumprelu",
                            subtracts_b_dec=False, threshold_N=s["threshold"], device=device, **record)
