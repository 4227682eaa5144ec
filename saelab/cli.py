"""The `saelab` command line (also `python -m saelab`).

    saelab assets [list|fetch|licenses]   the embedded model and corpora
    saelab demo                           load the embedded model and corpora, complete a prompt
    saelab harvest [--flags]              harvest activations into a cache
    saelab train [--flags]                the main job: harvest (or reuse), train, evaluate, report
    saelab eval [--sae DIR ...]           downstream loss, probe loss, N2G, ablation sparsity
    saelab sweep [--sae DIR ...]          progressive recovery (TopK(k'), JumpReLU) and shrinkage
    saelab frontier                       TopK vs ReLU+L1 at matched sparsity: L0 and delta CE vs normalized MSE

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
from .presets import eval_tokens_default, fast_mode, harvest_defaults, train_defaults


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


def _cmd_harvest(args) -> int:
    from .harvest import HarvestConfig, harvest, norm_stats

    cfg = build_dataclass(HarvestConfig, args, "", base=harvest_defaults())
    cache = harvest(cfg, args.out)
    stats = norm_stats(cache.sample(min(cache.n_tokens, 20_000)))
    print(json.dumps({"folder": str(cache.folder), "n_tokens": cache.n_tokens,
                      "n_dropped_outliers": cache.manifest["n_dropped_outliers"], "norms": stats}, indent=1))
    return 0


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
    """Hold the run folder's lock for the whole job (before any harvest): a second run on it is refused."""
    from contextlib import nullcontext

    from .files import run_lock

    main_rank = int(os.environ.get("RANK", "0")) == 0
    with run_lock(args.out, "training run") if main_rank else nullcontext():
        return _train_job(args)


def _train_job(args) -> int:
    import torch.distributed as dist

    from .harvest import HarvestConfig, harvest, load_harvest_lm
    from .report import summary_table, write_report
    from .train import TrainConfig, Trainer

    t0 = time.time()
    hcfg = build_dataclass(HarvestConfig, args, "harvest.", base=harvest_defaults())
    tcfg = build_dataclass(TrainConfig, args, "train.", base=train_defaults())
    device = _init_distributed(hcfg.device)
    hcfg = replace(hcfg, device=device)
    out = Path(args.out)
    eval_tokens = args.eval_tokens if args.eval_tokens is not None else eval_tokens_default()
    lm = load_harvest_lm(hcfg)  # loaded once for both harvests (or the stream)
    eval_cache = harvest(replace(hcfg, split="heldout", max_tokens=eval_tokens), args.eval_cache, lm=lm)
    if args.on_the_fly:
        from .harvest import ShuffleBuffer, stream_activations

        if hcfg.max_tokens is None:
            raise ValueError("--on-the-fly needs --harvest.max_tokens (the number of tokens to train on)")
        rank, world = (dist.get_rank(), dist.get_world_size()) if dist.is_initialized() else (0, 1)
        stream = ShuffleBuffer(stream_activations(hcfg, lm=lm), tcfg.batch_size // world,
                               capacity=args.shuffle_buffer // world, seed=tcfg.seed + rank)
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


def _named_saes(specs: list[str] | None, zoo: str | None, default: str | None):
    """{name: SAE} from NAME=FOLDER / FOLDER specs and zoo kinds (trained on first use)."""
    from .presets import zoo_sae
    from .sae import SAE

    saes = {}
    for kind in [z for z in (zoo or "").split(",") if z]:
        saes[kind] = zoo_sae(kind)[0]
    for spec in specs or ([] if saes else [default] if default else []):
        name, _, folder = spec.rpartition("=")
        folder_path = Path(folder)
        if not (folder_path / "cfg.json").exists():
            raise FileNotFoundError(f"no SAE at {folder} (expected cfg.json + sae.safetensors): train one with "
                                    "`saelab train`, or pass --zoo topk,relu to use the zoo")
        saes[name or folder_path.parent.name or folder_path.name] = SAE.load(folder_path)
    if not saes:
        raise ValueError("no SAE given: pass --sae FOLDER (repeatable) or --zoo topk,multi_topk,relu")
    keys = {(s.cfg.model, s.cfg.site, s.cfg.layer, s.cfg.d_in) for s in saes.values()}
    if len(keys) > 1:
        raise ValueError(f"the SAEs were trained on different models/sites/layers: {sorted(map(str, keys))}; "
                         "compare SAEs of one site at a time")
    return saes


def _cmd_eval(args) -> int:
    from .models import load_lm
    from .report import summary_table
    from .suite import SuiteConfig, fast_suite_config, run_suite, summary_rows, write_suite_report

    saes = _named_saes(args.sae, args.zoo, "runs/default/sae")
    cfg = build_dataclass(SuiteConfig, args, "", base=fast_suite_config() if fast_mode() else SuiteConfig())
    first = next(iter(saes.values()))
    lm = load_lm(first.cfg.model or "smollm2-135m")
    report = run_suite(lm, saes, cfg)
    folder = write_suite_report(report, args.out)
    for row in summary_rows(report):
        print(summary_table({k: v for k, v in row.items() if k != "sae"}, row["sae"]))
    print(f"report: {folder / 'report.json'}  plots: {folder / 'report.html'}")
    return 0


def _cmd_sweep(args) -> int:
    import torch

    from .harvest import harvest
    from .recovery import shrinkage_table, sweep, sweep_figure

    saes = _named_saes(args.sae, args.zoo, "runs/default/sae")
    first = next(iter(saes.values()))
    hcfg = replace(harvest_defaults(), model=first.cfg.model or "smollm2-135m", site=first.cfg.site or "resid_post",
                   layer=first.cfg.layer, split="heldout", max_tokens=args.eval_tokens or eval_tokens_default())
    held = harvest(hcfg)
    x = torch.cat([held.read_shard(i)["acts"].float() for i in range(len(held.shard_sizes))])
    ks = [int(v) for v in args.ks.split(",")] if args.ks else None
    lm = tokens = None
    if args.delta_loss_contexts:
        from .data import ContextConfig, build_contexts, load_corpus
        from .models import load_lm

        lm = load_lm(hcfg.model)
        tokens = torch.from_numpy(build_contexts(load_corpus(hcfg.corpus), lm.tokenizer, ContextConfig(), "heldout",
                                                 args.delta_loss_contexts).tokens_NT).long()
    df = sweep(saes, x, ks=ks, lm=lm, tokens_NT=tokens)
    shrink = shrinkage_table(saes, x[: args.shrinkage_tokens])
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for name, table in (("sweep.csv", df), ("shrinkage.csv", shrink)):
        tmp = out / f".{name}.tmp"
        table.to_csv(tmp, index=False)
        tmp.replace(out / name)
    sweep_figure(df).write_html(out / "sweep.html", include_plotlyjs="directory")
    print(df.to_string(index=False, float_format=lambda v: f"{v:.4g}"))
    print(shrink.to_string(index=False, float_format=lambda v: f"{v:.4g}"))
    print(f"tables: {out / 'sweep.csv'}, {out / 'shrinkage.csv'}  plot: {out / 'sweep.html'}")
    return 0


def _cmd_frontier(args) -> int:
    import torch

    from .data import ContextConfig, build_contexts, load_corpus
    from .frontier import FrontierConfig, frontier_figures, run_frontier
    from .models import load_lm
    from .presets import ZOO, default_caches

    cfg = build_dataclass(FrontierConfig, args, "", base=FrontierConfig())
    hcfg = harvest_defaults()
    lm = load_lm(hcfg.model)
    train, held = default_caches(lm=lm)
    tokens = torch.from_numpy(build_contexts(load_corpus(hcfg.corpus), lm.tokenizer, ContextConfig(), "heldout",
                                             cfg.delta_ce_contexts).tokens_NT).long() if cfg.delta_ce_contexts else None
    df = run_frontier(cfg, train_defaults(), ZOO["relu"], train, held, args.out, lm=lm, tokens_NT=tokens)
    figs = frontier_figures(df)
    html = "".join(f.to_html(full_html=False, include_plotlyjs=i == 0) for i, f in enumerate(figs))
    page = f"<html><head><meta charset='utf-8'><title>saelab frontier</title></head><body>{html}</body></html>"
    (Path(args.out) / "frontier.html").write_text(page, encoding="utf-8")
    print(df.to_string(index=False, float_format=lambda v: f"{v:.4g}"))
    print(f"table: {Path(args.out) / 'frontier.csv'}  plots: {Path(args.out) / 'frontier.html'}")
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
    add_dataclass_args(h, HarvestConfig, "", harvest_defaults())
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
    add_dataclass_args(t, HarvestConfig, "harvest.", harvest_defaults())
    add_dataclass_args(t, TrainConfig, "train.", train_defaults())
    t.set_defaults(func=_cmd_train)

    def sae_args(sp, out_default):
        sp.add_argument("--sae", action="append", metavar="[NAME=]FOLDER",
                        help="an SAE folder (repeat to compare several; default runs/default/sae)")
        sp.add_argument("--zoo", default=None, metavar="KINDS",
                        help="comma-separated zoo SAEs (topk, multi_topk, relu), trained on first use")
        sp.add_argument("--out", default=out_default, help="output folder")

    from .suite import SuiteConfig, fast_suite_config

    e = sub.add_parser("eval", help="the paper's metrics: downstream loss, probe loss, N2G, ablation sparsity")
    sae_args(e, "runs/eval")
    add_dataclass_args(e, SuiteConfig, "", fast_suite_config() if fast_mode() else SuiteConfig())
    e.set_defaults(func=_cmd_eval)

    w = sub.add_parser("sweep", help="progressive recovery: TopK(k') and JumpReLU sweeps, activation shrinkage")
    sae_args(w, "runs/sweep")
    w.add_argument("--ks", default=None, help="comma-separated k' values (default k/4 .. 8k)")
    w.add_argument("--eval-tokens", type=int, default=None, help="held-out tokens (default 16000; 4000 fast)")
    w.add_argument("--delta-loss-contexts", type=int, default=0,
                   help="also splice each point into the LM on this many held-out contexts (0: off)")
    w.add_argument("--shrinkage-tokens", type=int, default=2000, help="tokens for the shrinkage refinement")
    w.set_defaults(func=_cmd_sweep)

    from .frontier import FrontierConfig

    f = sub.add_parser("frontier", help="TopK vs ReLU+L1 frontiers: L0 and delta CE against normalized MSE")
    f.add_argument("--out", default="runs/frontier", help="output folder: one SAE per point, frontier.csv/.html")
    add_dataclass_args(f, FrontierConfig, "", FrontierConfig())
    f.set_defaults(func=_cmd_frontier)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (ValueError, FileNotFoundError, RuntimeError) as e:
        from .assets import AssetError
        from .files import FolderBusyError
        from .harvest import CacheError

        if isinstance(e, AssetError | CacheError | ValueError | FileNotFoundError | FolderBusyError):
            print(f"saelab: error: {e}", file=sys.stderr)
            return 2
        raise


if __name__ == "__main__":
    sys.exit(main())
