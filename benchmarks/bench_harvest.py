"""Harvest throughput vs a bare truncated forward and the full forward, in one run (issue: Harvest).

Same model, layer, batch and contexts for all three, timed in interleaved rounds (medians):
- harvest: saelab's harvest to a fresh disk cache (hook + early stop + fp16 shards);
- bare truncated forward: the model's blocks cut to 0..L (no hook, no storage, no LM head);
- full forward: every block and the LM head.
Then where a harvest's time goes (set-up, hooked forward, outlier mask, shard writes, the rest), and peak
RSS of harvests of two sizes to disk, each in its own process: it must not grow with
the number of tokens. Usage: python benchmarks/bench_harvest.py [--contexts 256] [--ram-tokens 50000 200000]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time

import torch

RAM_SCRIPT = """
import json, resource, sys
from saelab.acts.harvest import HarvestConfig, harvest
harvest(HarvestConfig(max_tokens=int(sys.argv[1])), sys.argv[2], progress=False)
print(json.dumps({"peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--contexts", type=int, default=256)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--ram-tokens", type=int, nargs="*", default=[50_000, 200_000])
    ap.add_argument("--rounds", type=int, default=3, help="interleaved rounds of the three passes")
    ap.add_argument("--skip-throughput", action="store_true", help="only the peak-RSS harvests")
    args = ap.parse_args()

    from saelab.acts.corpus import ContextConfig, build_contexts, load_corpus
    from saelab.acts.harvest import HarvestConfig, harvest
    from saelab.lm.models import load_lm
    from saelab.lm.sites import find_blocks

    lm = load_lm(args.model)
    L = lm.default_layer
    ctx = build_contexts(load_corpus("wiki-en"), lm.tokenizer, ContextConfig(), max_contexts=args.contexts)
    toks = torch.from_numpy(ctx.tokens_NT).long()
    n_tok = toks.numel()
    print(f"model={args.model} layer={L}/{lm.n_layers} contexts={len(toks)}x64 batch={args.batch} "
          f"threads={torch.get_num_threads()} torch={torch.__version__}")

    def bare_truncated():
        blocks = find_blocks(lm.model)
        saved = list(blocks)
        while len(blocks) > L + 1:
            del blocks[len(blocks) - 1]
        try:
            with torch.no_grad():
                for s in range(0, len(toks), args.batch):
                    lm.model.base_model(input_ids=toks[s:s + args.batch], use_cache=False)
        finally:
            for b in saved[L + 1:]:
                blocks.append(b)

    def full():
        with torch.no_grad():
            for s in range(0, len(toks), args.batch):
                lm.model(input_ids=toks[s:s + args.batch], use_cache=False)

    def harvest_run():
        with tempfile.TemporaryDirectory() as d:
            harvest(HarvestConfig(model=args.model, max_tokens=(n_tok // 64) * 63, batch_size=args.batch,
                                  shard_contexts=args.contexts), d, lm=lm, progress=False)

    if args.skip_throughput:
        ram_table(args.ram_tokens)
        return
    import saelab.acts.harvest as H

    parts = {"weight hash": 0.0, "contexts (corpus, tokeniser)": 0.0, "forward to the site (hooked)": 0.0,
             "outlier mask": 0.0, "shard write (safetensors, fsync)": 0.0}

    def timed(name, fn):
        def wrapper(*a, **kw):
            t0 = time.perf_counter()
            try:
                return fn(*a, **kw)
            finally:
                parts[name] += time.perf_counter() - t0
        return wrapper

    for name, attr in (("weight hash", "weights_hash"), ("contexts (corpus, tokeniser)", "harvest_contexts"),
                       ("forward to the site (hooked)", "run_to_site"), ("outlier mask", "outlier_mask"),
                       ("shard write (safetensors, fsync)", "write_shard")):
        setattr(H, attr, timed(name, getattr(H, attr)))
    passes = {"bare truncated forward": bare_truncated, "harvest to disk": harvest_run,
              "full forward (all blocks + LM head)": full}
    bare_truncated()  # warm-up
    # Interleaved rounds: each pass once per round, so the machine's slow and fast phases hit all of them.
    seconds = {name: [] for name in passes}
    harvest_total = 0.0
    for _ in range(args.rounds):
        for name, fn in passes.items():
            t0 = time.perf_counter()
            fn()
            seconds[name].append(time.perf_counter() - t0)
        harvest_total += seconds["harvest to disk"][-1]
    base = statistics.median(seconds["bare truncated forward"])
    print(f"\n{'pass (median of ' + str(args.rounds) + ' interleaved rounds)':44s} {'tokens/s':>9s} {'x bare':>7s}")
    for name, t in seconds.items():
        med = statistics.median(t)
        print(f"{name:44s} {n_tok / med:9.0f} {base / med:7.2f}")
    setup = parts["weight hash"] + parts["contexts (corpus, tokeniser)"]
    loop = statistics.median([h - setup / args.rounds for h in seconds["harvest to disk"]])
    print(f"{'harvest minus its one-time set-up':44s} {n_tok / loop:9.0f} {base / loop:7.2f}")
    print(f"\nwhere a harvest's time goes ({args.rounds} calls, {harvest_total:.1f} s in all):")
    for name, t in parts.items():
        print(f"  {name:42s} {t / harvest_total:6.1%}")
    rest = harvest_total - sum(parts.values())
    print(f"  {'the rest (slicing, fp16, cat, manifest, tmp dir)':42s} {rest / harvest_total:6.1%}")
    print("(tokens/s counts every position fed to the model, position 0 included)")

    ram_table(args.ram_tokens)


def ram_table(sizes):
    """Peak RSS of a harvest to disk for each size, each in a fresh process."""
    if not sizes:
        return
    print(f"\n{'harvest to disk, tokens':28s} {'peak RSS MiB':>12s}")
    for n in sizes:
        with tempfile.TemporaryDirectory() as d:
            out = subprocess.run([sys.executable, "-c", RAM_SCRIPT, str(n), d], capture_output=True, text=True)
            if out.returncode:
                print(out.stderr[-1500:])
                continue
            rss = json.loads(out.stdout.strip().splitlines()[-1])["peak_rss_mib"]
            print(f"{n:<28d} {rss:12.0f}")

if __name__ == "__main__":
    main()
