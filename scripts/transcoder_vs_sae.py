"""A transcoder beside an SAE on the same MLP at matched L0 (issue 39): SmolLM2-135M's MLP at the main job's layer.

One harvest of the MLP's input and output (paired sites, `mlp_in+mlp_out`), then on the same tokens for the same steps,
all TopK with the same k (so the same L0: k latents a token) and the same number of latents:

    skip transcoder   MLP input -> MLP output, with a learned skip connection (Paulo et al. 2025)
    transcoder        MLP input -> MLP output (Dunefsky et al. 2024)
    SAE               MLP output -> MLP output (trained on the output half of the same rows)

Each is scored on the test documents: the normalized MSE of the MLP's output (its prediction of it), and spliced in
the MLP's place at every position (delta CE, KL, loss recovered against zero- and mean-ablating the MLP's output).

    PYTHONPATH=. python scripts/transcoder_vs_sae.py --out runs/transcoder-vs-sae

Resumable: finished SAEs are reused (`saelab.studies.frontier.train_point`). Writes results.csv in --out.
"""

from __future__ import annotations

import argparse
import time
from dataclasses import replace
from pathlib import Path

import torch


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="runs/transcoder-vs-sae")
    p.add_argument("--tokens", type=int, default=60_000, help="training tokens harvested (paired)")
    p.add_argument("--test-tokens", type=int, default=8_000, help="test tokens for the normalized MSE")
    p.add_argument("--contexts", type=int, default=64, help="test contexts (64 tokens) spliced for delta CE")
    p.add_argument("--n-latents", type=int, default=4096)
    p.add_argument("--k", type=int, default=32)
    p.add_argument("--epochs", type=float, default=8.0)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()

    import pandas as pd

    from saelab.acts.corpus import ContextConfig, build_contexts, load_corpus
    from saelab.acts.harvest import harvest, load_harvest_lm
    from saelab.evals.downstream import downstream_loss
    from saelab.evals.reconstruction import reconstruction_metrics
    from saelab.evals.splice import SpliceSite
    from saelab.presets import harvest_defaults, train_defaults
    from saelab.sae.model import SAE
    from saelab.studies.frontier import train_point
    from saelab.training.trainer import Trainer

    t0, out = time.time(), Path(args.out)
    hcfg = replace(harvest_defaults(fast=False), site="mlp_in+mlp_out", max_tokens=args.tokens)
    lm = load_harvest_lm(hcfg)
    train = harvest(hcfg, lm=lm)
    test = harvest(replace(hcfg, split="test", max_tokens=args.test_tokens), lm=lm)
    d, layer = train.d_model // 2, train.manifest["layer"]
    print(f"harvested {train.n_tokens} + {test.n_tokens} paired tokens at layer {layer} ({time.time() - t0:.0f} s)")
    base = replace(train_defaults(fast=False), n_latents=args.n_latents, k=args.k, epochs=args.epochs,
                   normalize="dataset_unit_norm", seed=args.seed, checkpoint_every=0, keep_checkpoints=0,
                   eval_every=10**9, progress=False)
    outputs = torch.cat([train.read_shard(i)["acts"][:, d:].float() for i in range(len(train.shard_sizes))])
    runs = {"skip transcoder": (replace(base, activation="transcoder", transcoder_skip=True), train, {}),
            "transcoder": (replace(base, activation="transcoder"), train, {}),
            "SAE on the MLP output": (base, outputs, {"site": "mlp_out"})}
    saes = {}
    for name, (cfg, data, prov) in runs.items():
        t = time.time()
        folder = out / name.replace(" ", "-")
        if not prov:  # the cache records its model, site and layer
            saes[name] = train_point(cfg, data, folder)
        else:  # a tensor records none: say where it came from (the Trainer reads it as provenance)
            if not (folder / "sae" / "cfg.json").exists():
                Trainer(cfg, data, folder, provenance={"model": hcfg.model, "layer": layer, **prov}).train()
            saes[name] = SAE.load(folder / "sae")
        print(f"{name}: trained in {time.time() - t:.0f} s")
    rows_test = test.activations()
    tokens = torch.from_numpy(build_contexts(load_corpus(hcfg.corpus), lm.tokenizer, ContextConfig(), "test",
                                             args.contexts).tokens_NT).long()
    table = []
    for name, sae in saes.items():
        r = reconstruction_metrics(sae, rows_test if sae.cfg.activation == "transcoder" else rows_test[:, d:])
        where = SpliceSite.of(sae, lm, positions="all")
        ce = downstream_loss(lm, sae, tokens, where, progress=False)
        table.append({"": name, "reads": where.source, "writes": where.site, "k": sae.cfg.k, "L0": r["l0"],
                      "nmse (MLP output)": r["nmse"], "never fired": r["dead_eval_frac"],
                      "delta CE": ce["delta_loss"], "KL": ce["kl"], "loss recovered (zero)": ce["loss_recovered"],
                      "loss recovered (mean)": ce["loss_recovered_mean"], "CE clean": ce["ce_clean"],
                      "CE MLP zeroed": ce["ce_zero"], "positions spliced": ce["n_positions_spliced"]})
    df = pd.DataFrame(table)
    out.mkdir(parents=True, exist_ok=True)
    df.to_csv(out / "results.csv", index=False)
    print(df.to_string(index=False, float_format=lambda v: f"{v:.4g}"))
    print(f"total {time.time() - t0:.0f} s; table: {out / 'results.csv'}")


if __name__ == "__main__":
    main()
