"""Several layers from one forward pass against one harvest per layer (issue 40: "Several sites from one pass").

One process, the model loaded once. In interleaved rounds (medians): `harvest_sites` of all `--layers` into fresh
folders, then one `harvest` per layer into fresh folders (each stops after its own layer, as saelab's single-site
harvest does). Both include what a command pays per harvest (the weights hash, the contexts, the shard writes and
manifests); neither includes loading the model. Wall time and the process's CPU time (all threads) are both
reported: on a shared machine the CPU time is the steadier of the two. The caches are compared tensor for tensor.
Usage: python benchmarks/bench_sites.py [--tokens 25000] [--layers 6,12,18,22] [--rounds 1]
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import torch


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--tokens", type=int, default=25_000)
    ap.add_argument("--layers", default="6,12,18,22")
    ap.add_argument("--rounds", type=int, default=1)
    args = ap.parse_args()

    from saelab.acts.harvest import HarvestConfig, harvest, harvest_sites, targets
    from saelab.lm.models import load_lm

    lm = load_lm(args.model)
    cfg = HarvestConfig(model=args.model, max_tokens=args.tokens, layers=args.layers, device="cpu")
    print(f"model={args.model} layers={args.layers} of {lm.n_layers} tokens={args.tokens} batch={cfg.batch_size} "
          f"threads={torch.get_num_threads()} torch={torch.__version__}")
    one_pass, per_layer, cpu_one, cpu_per = [], [], [], []
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(args.rounds):
            t, c = time.perf_counter(), time.process_time()
            many = harvest_sites(cfg, Path(tmp) / f"many-{r}", lm=lm, progress=False)
            one_pass.append(time.perf_counter() - t)
            cpu_one.append(time.process_time() - c)
            t, c = time.perf_counter(), time.process_time()
            singles = {(one.site, one.layer): harvest(one, Path(tmp) / f"single-{r}-{one.layer}", lm=lm,
                                                      progress=False) for one in targets(replace(cfg))}
            per_layer.append(time.perf_counter() - t)
            cpu_per.append(time.process_time() - c)
            print(f"round {r}: one pass {one_pass[-1]:.1f} s wall, {cpu_one[-1]:.1f} s CPU; one harvest per layer "
                  f"{per_layer[-1]:.1f} s wall, {cpu_per[-1]:.1f} s CPU", flush=True)
        equal = all(torch.equal(many[k].activations(), singles[k].activations()) for k in many)
    result = {"model": args.model, "layers": args.layers, "tokens": args.tokens, "rounds": args.rounds,
              "one_pass_s": statistics.median(one_pass), "per_layer_s": statistics.median(per_layer),
              "ratio_wall": statistics.median(per_layer) / statistics.median(one_pass),
              "one_pass_cpu_s": statistics.median(cpu_one), "per_layer_cpu_s": statistics.median(cpu_per),
              "ratio_cpu": statistics.median(cpu_per) / statistics.median(cpu_one), "caches_tensor_equal": equal}
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
