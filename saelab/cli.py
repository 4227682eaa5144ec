"""The `saelab` command line (also `python -m saelab`).

    saelab assets [list|fetch|licenses]   the embedded model and corpora
    saelab demo                           load the embedded model and corpora, complete a prompt
    saelab harvest [--flags]              harvest activations into a cache
    saelab train [--flags]                the main job: harvest (or reuse), train, evaluate, report

Every config field is a flag (`saelab train --help` lists them with their meaning).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from dataclasses import asdict, replace
from pathlib import Path

from .config import add_dataclass_args, build_dataclass

FAST_ENV = "SAELAB_FAST"


def fast_mode() -> bool:
    """True when SAELAB_FAST=1: tiny sizes so CI and notebooks finish in minutes."""
    return os.environ.get(FAST_ENV, "") not in ("", "0", "false")


def _cmd_assets(args) -> int:
    from . import assets

    if args.action == "licenses":
        print(assets.license_text())
        return 0
    names = args.names or list(assets.manifest())
    for name in names:
        a = assets.get(name)
        if args.action == "fetch":
            path = assets.ensure(name)
            print(f"{name:16s} ready   {path}")
        else:
            state = "ready  " if assets.is_ready(name) else "missing"
            print(f"{name:16s} {state} {a.requirement:32s} {a.license}")
    print(f"cache: {assets.home()}  (set SAELAB_HOME to move it)")
    return 0


def _cmd_demo(args) -> int:
    from .data import load_corpus
    from .models import greedy_complete, load_lm

    t0 = time.time()
    lm = load_lm(args.model)
    print(f"{args.model}: {lm.n_layers} blocks, d_model {lm.d_model}, default hook layer {lm.default_layer} "
          f"(loaded in {time.time() - t0:.1f} s)")
    prompt = "The capital of Germany is"
    print(f"{prompt!r} -> {greedy_complete(lm, prompt)!r}")
    for name in ("wiki-en", "wiki-multi", "news"):
        ds = load_corpus(name)
        extra = f", {len(set(ds['topic']))} topics" if name == "wiki-en" else ""
        print(f"corpus {name}: {len(ds)} documents{extra}")
    return 0


def _harvest_defaults():
    from .harvest import HarvestConfig

    cfg = HarvestConfig()
    if fast_mode():
        cfg = replace(cfg, max_tokens=8_000)
    return cfg


def _cmd_harvest(args) -> int:
    from .harvest import HarvestConfig, harvest, norm_stats

    cfg = build_dataclass(HarvestConfig, args, "", base=_harvest_defaults())
    cache = harvest(cfg, args.out)
    stats = norm_stats(cache.sample(min(cache.n_tokens, 20_000)))
    print(json.dumps({"folder": str(cache.folder), "n_tokens": cache.n_tokens,
                      "n_dropped_outliers": cache.manifest["n_dropped_outliers"], "norms": stats}, indent=1))
    return 0


def _train_defaults():
    from .train import TrainConfig

    # Short CPU runs (hundreds of steps) need a larger step than the paper's lr for billions of
    # tokens: at n=4096 on 120k SmolLM2 tokens, lr 4e-4 (the paper's scaling) reached held-out
    # normalized MSE 0.31 and 2e-3 reached 0.22 in the same 232 steps.
    # 8 epochs with the last 30% decaying: at 400k tokens, 4 epochs reached 0.180 and 8 reached 0.164.
    cfg = TrainConfig(lr=2e-3, epochs=8.0, decay_frac=0.3)
    if fast_mode():
        cfg = replace(cfg, n_latents=1024, batch_size=1024, epochs=2.0, eval_every=50, checkpoint_every=0)
    return cfg


def _init_distributed(device: str) -> str:
    """Under torchrun (WORLD_SIZE > 1): join the process group (NCCL on CUDA, else gloo); return the device."""
    import torch
    import torch.distributed as dist

    if int(os.environ.get("WORLD_SIZE", "1")) <= 1 or dist.is_initialized():
        return device
    on_cuda = device.startswith("cuda")
    dist.init_process_group("nccl" if on_cuda else "gloo")
    if on_cuda:
        local = int(os.environ.get("LOCAL_RANK", "0"))
        torch.cuda.set_device(local)
        return f"cuda:{local}"
    return device


def _cmd_train(args) -> int:
    import torch.distributed as dist

    from .harvest import HarvestConfig, harvest, load_harvest_lm
    from .report import summary_table, write_report
    from .train import TrainConfig, Trainer

    t0 = time.time()
    hcfg = build_dataclass(HarvestConfig, args, "harvest.", base=_harvest_defaults())
    tcfg = build_dataclass(TrainConfig, args, "train.", base=_train_defaults())
    device = _init_distributed(hcfg.device)
    hcfg = replace(hcfg, device=device)
    out = Path(args.out)
    eval_tokens = args.eval_tokens if args.eval_tokens is not None else (4_000 if fast_mode() else 16_000)
    lm = load_harvest_lm(hcfg)  # loaded once for both harvests (or the stream)
    eval_cache = harvest(replace(hcfg, split="heldout", max_tokens=eval_tokens), args.eval_cache, lm=lm)
    if args.on_the_fly:
        from .harvest import ShuffleBuffer, stream_activations

        if hcfg.max_tokens is None:
            raise ValueError("--on-the-fly needs --harvest.max_tokens (the number of tokens to train on)")
        stream = ShuffleBuffer(stream_activations(hcfg, lm=lm), tcfg.batch_size, capacity=args.shuffle_buffer,
                               seed=tcfg.seed)
        trainer = Trainer(tcfg, None, out, eval_cache=eval_cache, stream=stream, stream_tokens=hcfg.max_tokens,
                          provenance={"model": hcfg.model, "site": hcfg.site, "layer": eval_cache.manifest["layer"]},
                          device=device)
        n_harvested = hcfg.max_tokens
    else:
        train_cache = harvest(hcfg, args.train_cache, lm=lm)
        trainer = Trainer(tcfg, train_cache, out, eval_cache=eval_cache, device=device)
        n_harvested = train_cache.n_tokens
    t_harvest = time.time() - t0
    trainer.train()
    if dist.is_initialized():
        rank = dist.get_rank()
        dist.destroy_process_group()
        if rank != 0:  # rank 0 evaluates and reports
            return 0
    final = trainer.evaluate()
    t_total = time.time() - t0
    m = eval_cache.manifest
    rows = {
        "model / site": f"{m['model']} {m['site']} layer {m['layer']}",
        "training tokens harvested": n_harvested if not args.on_the_fly else f"{n_harvested} (on the fly)",
        "tokens seen (epochs)": f"{trainer.sae.cfg.tokens_seen} ({tcfg.epochs:g})",
        "n_latents / k": f"{tcfg.n_latents} / {tcfg.k}" + (" (Multi-TopK)" if tcfg.multi_topk else ""),
        "held-out tokens": final["tokens"],
        "held-out normalized MSE": final["nmse"],
        "held-out L0": final["l0"],
        "dead latents (train tracker)": f"{final['dead_train_frac']:.2%} (no firing in {trainer.dead_tokens} tokens)",
        "never fired on held-out": f"{final['dead_eval_frac']:.2%}",
        "harvest time (s)": round(t_harvest, 1) if not args.on_the_fly else "(interleaved with training)",
        "total time (s)": round(t_total, 1),
        "SAE": str(out / "sae"),
        "report": str(out / "report"),
    }
    metrics = {"final": final, "summary": {k: v for k, v in rows.items()}, "harvest": asdict(hcfg),
               "train": asdict(tcfg), "seconds": {"harvest": t_harvest, "total": t_total}}
    write_report(out / "report", metrics, out / "log.jsonl")
    print(summary_table(rows))
    return 0


def build_parser() -> argparse.ArgumentParser:
    from .harvest import HarvestConfig
    from .train import TrainConfig

    p = argparse.ArgumentParser(prog="saelab", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)

    a = sub.add_parser("assets", help="list, fetch or show licences of the embedded assets")
    a.add_argument("action", nargs="?", default="list", choices=["list", "fetch", "licenses"])
    a.add_argument("names", nargs="*", help="asset names (default: all)")
    a.set_defaults(func=_cmd_assets)

    d = sub.add_parser("demo", help="load the embedded model and corpora and complete a prompt")
    d.add_argument("--model", default="smollm2-135m")
    d.set_defaults(func=_cmd_demo)

    h = sub.add_parser("harvest", help="harvest activations into a disk cache (resumable)")
    h.add_argument("--out", default=None, help="cache folder (default: under $SAELAB_HOME/acts)")
    add_dataclass_args(h, HarvestConfig, "", _harvest_defaults())
    h.set_defaults(func=_cmd_harvest)

    t = sub.add_parser("train", help="the main job: harvest (or reuse), train a TopK SAE, evaluate, report")
    t.add_argument("--out", default="runs/default", help="run folder: sae/, checkpoints/, log.jsonl, report/")
    t.add_argument("--train-cache", default=None,
                   help="training activation cache folder (default: under $SAELAB_HOME/acts)")
    t.add_argument("--eval-cache", default=None,
                   help="held-out activation cache folder (default: under $SAELAB_HOME/acts)")
    t.add_argument("--eval-tokens", type=int, default=None, help="held-out tokens (default 16000; 4000 fast)")
    t.add_argument("--on-the-fly", action="store_true",
                   help="train straight from the model through a shuffle buffer (no training cache on disk)")
    t.add_argument("--shuffle-buffer", type=int, default=65536, help="tokens in the on-the-fly shuffle buffer")
    add_dataclass_args(t, HarvestConfig, "harvest.", _harvest_defaults())
    add_dataclass_args(t, TrainConfig, "train.", _train_defaults())
    t.set_defaults(func=_cmd_train)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (ValueError, FileNotFoundError, RuntimeError) as e:
        from .assets import AssetError
        from .harvest import CacheError

        if isinstance(e, AssetError | CacheError | ValueError | FileNotFoundError):
            print(f"saelab: error: {e}", file=sys.stderr)
            return 2
        raise


if __name__ == "__main__":
    sys.exit(main())
