"""Write the dictionary_learning fixtures with the real library (saprmarks/dictionary_learning 0.1.0 from PyPI).

Each folder is what `dictionary_learning.training.trainSAE(..., save_dir=...)` wrote after a short run on random
activations (d 16, n 64): `trainer_0/ae.pt` + `trainer_0/config.json`, and `reference.safetensors` with a batch of
inputs `x` and the library's own reconstruction `x_hat` (its `from_pretrained` then `forward`), which
tests/test_formats_suites.py compares saelab's `load_sae` against.

dictionary-learning 0.1.0 does not install beside torch 2.13 (it pulls nnsight 0.3, whose pins move torch), so this
ran in a throwaway venv that sees saelab's venv for torch and installs the library without its dependencies:

    python3.11 -m venv /tmp/dlvenv
    echo "$PWD/.venv/lib/python3.11/site-packages" > /tmp/dlvenv/lib/python3.11/site-packages/main_venv.pth
    /tmp/dlvenv/bin/python -m pip install --no-deps dictionary-learning==0.1.0 nnsight==0.3.7 python-socketio \
        python-engineio bidict simple-websocket wsproto pillow
    /tmp/dlvenv/bin/python tests/data/dictionary_learning/make_fixtures.py
"""

import shutil
from pathlib import Path

import torch
from dictionary_learning.dictionary import AutoEncoder, JumpReluAutoEncoder
from dictionary_learning.trainers.batch_top_k import BatchTopKSAE, BatchTopKTrainer
from dictionary_learning.trainers.jumprelu import JumpReluTrainer
from dictionary_learning.trainers.matryoshka_batch_top_k import MatryoshkaBatchTopKSAE, MatryoshkaBatchTopKTrainer
from dictionary_learning.trainers.standard import StandardTrainer
from dictionary_learning.trainers.top_k import AutoEncoderTopK, TopKTrainer
from dictionary_learning.training import trainSAE
from safetensors.torch import save_file

HERE = Path(__file__).resolve().parent
D, N, K, STEPS, BATCH = 16, 64, 4, 300, 256
COMMON = {"activation_dim": D, "dict_size": N, "layer": 3, "lm_name": "EleutherAI/pythia-70m-deduped",
          "device": "cpu", "steps": STEPS, "seed": 0, "submodule_name": "resid_post_layer_3"}
KINDS = {
    "standard": ({"trainer": StandardTrainer, "lr": 3e-3, "l1_penalty": 1e-2, "warmup_steps": 5,
                  "sparsity_warmup_steps": 5}, AutoEncoder),
    "topk": ({"trainer": TopKTrainer, "k": K, "lr": 3e-3, "warmup_steps": 5, "threshold_start_step": 10},
             AutoEncoderTopK),
    "batchtopk": ({"trainer": BatchTopKTrainer, "k": K, "lr": 3e-3, "warmup_steps": 5, "threshold_start_step": 10},
                  BatchTopKSAE),
    "jumprelu": ({"trainer": JumpReluTrainer, "lr": 3e-3, "warmup_steps": 5, "sparsity_warmup_steps": 5,
                  "target_l0": 8.0, "bandwidth": 0.05}, JumpReluAutoEncoder),
    "matryoshka": ({"trainer": MatryoshkaBatchTopKTrainer, "k": K, "lr": 3e-3, "warmup_steps": 5,
                    "threshold_start_step": 10, "group_fractions": [0.25, 0.25, 0.5]}, MatryoshkaBatchTopKSAE),
}


def batches(seed: int):
    """Random activations with structure: sparse combinations of 32 directions plus noise, shifted off zero."""
    g = torch.Generator().manual_seed(seed)
    dirs = torch.randn(32, D, generator=g)
    shift = torch.randn(D, generator=g)
    while True:
        codes = torch.rand(BATCH, 32, generator=g) * (torch.rand(BATCH, 32, generator=g) < 0.1)
        yield codes @ dirs + 0.05 * torch.randn(BATCH, D, generator=g) + shift


def main():
    x = next(batches(123))[:64]
    for name, (config, cls) in KINDS.items():
        out = HERE / name
        shutil.rmtree(out, ignore_errors=True)
        trainSAE(batches(0), [{**COMMON, **config}], steps=STEPS, save_dir=str(out), device="cpu")
        ae = cls.from_pretrained(str(out / "trainer_0" / "ae.pt"))
        with torch.no_grad():
            x_hat = ae(x)
        save_file({"x": x.contiguous(), "x_hat": x_hat.contiguous()}, out / "reference.safetensors")
        print(name, "relative error", float((x_hat - x).norm() / x.norm()))


if __name__ == "__main__":
    main()
