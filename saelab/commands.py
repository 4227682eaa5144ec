"""What each `saelab` command does, one function a command (`cmd_train`, `cmd_eval`, ...); the parser is `saelab.cli`.

Each takes the parsed arguments and returns the exit code; the heavy imports happen inside each command.
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections import Counter
from dataclasses import asdict, replace
from pathlib import Path

from saelab.flags import build_dataclass
from saelab.presets import eval_tokens_default, fast_mode, harvest_defaults, train_defaults


def cmd_assets(args) -> int:
    from saelab import assets

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


def cmd_course(args) -> int:
    from saelab import assets
    from saelab.teach import kit

    if args.action == "slides":
        from saelab.teach.slides import build_slides

        written = build_slides(args.file, args.series)
        print(f"wrote {len(written)} slide decks into {args.file} (open them in a browser; arrow keys move)")
        return 0
    if args.action == "pack":
        manifest = kit.pack(args.file, with_assets=args.with_assets)
        size = sum(f["size"] for f in manifest["files"].values())
        print(f"packed {len(manifest['units'])} units ({len(manifest['files'])} files, {size / 2**20:.0f} MiB) from "
              f"{assets.home()} into {args.file}")
        print(f"students: `saelab course unpack {Path(args.file).name}`" +
              ("" if args.with_assets else ", after `saelab assets fetch` (or pack with --with-assets)"))
        return 0
    report = kit.unpack(args.file)
    print(f"installed {len(report.installed)} units into {assets.home()}"
          + (f"; kept {len(report.kept)} already there: {', '.join(report.kept)}" if report.kept else ""))
    return 0


def cmd_demo(args) -> int:
    from saelab.acts.corpus import load_corpus
    from saelab.lm.models import greedy_complete, load_lm

    t0 = time.time()
    lm = load_lm(args.model, device=args.device)
    print(f"{args.model}: {lm.n_layers} blocks, d_model {lm.d_model}, default hook layer {lm.default_layer} "
          f"(loaded in {time.time() - t0:.1f} s)")
    prompt = "The capital of Germany is"
    print(f"{prompt!r} -> {greedy_complete(lm, prompt)!r}")
    for name in ("english-mix", "wiki-en", "wiki-multi", "news", "parliament-en", "tweets-en", "python-docs"):
        ds = load_corpus(name)
        extra = f", {len(set(ds['topic']))} topics" if name == "wiki-en" else ""
        parts = f" ({', '.join(f'{s} {n}' for s, n in Counter(ds['source']).items())})" if name == "english-mix" else ""
        print(f"corpus {name}: {len(ds)} documents{extra}{parts}")
    return 0


def cmd_harvest(args) -> int:
    from saelab.acts.harvest import HarvestConfig, harvest
    from saelab.acts.outliers import norm_stats

    cfg = replace(build_dataclass(HarvestConfig, args, "", base=harvest_defaults()), device=args.device)
    cache = harvest(cfg, args.out)
    stats = norm_stats(cache.sample(min(cache.n_tokens, 20_000)))
    print(json.dumps({"folder": str(cache.folder), "n_tokens": cache.n_tokens,
                      "n_dropped_outliers": cache.manifest["n_dropped_outliers"], "norms": stats}, indent=1))
    return 0


def _init_distributed(device: str) -> str:
    """Under torchrun (WORLD_SIZE > 1): join the process group (NCCL on CUDA, else gloo); return the device."""
    import torch
    import torch.distributed as dist

    from saelab.lm.models import resolve_device

    local_ranks = int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
    if device == "auto" and local_ranks > 1:  # one GPU a rank, or all on CPU
        device = "cuda" if torch.cuda.device_count() >= local_ranks else "cpu"
    device = resolve_device(device)
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1 or dist.is_initialized():
        return device
    on_cuda = device.startswith("cuda")
    dist.init_process_group("nccl" if on_cuda else "gloo")
    if on_cuda:
        local = int(os.environ.get("LOCAL_RANK", "0"))
        torch.cuda.set_device(local)
        return f"cuda:{local}"
    return device


def cmd_train(args) -> int:
    """Hold the run folder's lock for the whole job and check its settings, both before any harvest: a second
    run on the folder, or a run with other settings, is refused before any model runs."""
    from contextlib import nullcontext

    from saelab.acts.harvest import HarvestConfig
    from saelab.files import run_lock
    from saelab.training.runs import check_run_folder
    from saelab.training.trainer import TrainConfig

    hcfg = replace(build_dataclass(HarvestConfig, args, "harvest.", base=harvest_defaults()), device=args.device)
    tcfg = build_dataclass(TrainConfig, args, "train.", base=train_defaults())
    if args.on_the_fly and hasattr(args, "train.epochs"):
        raise ValueError("--on-the-fly trains on one pass of --harvest.max_tokens tokens; --train.epochs does not "
                         "apply (raise --harvest.max_tokens to train longer, or drop --on-the-fly)")
    if args.on_the_fly and hcfg.max_tokens is None:
        raise ValueError("--on-the-fly needs --harvest.max_tokens (the number of tokens to train on)")
    eval_tokens = args.eval_tokens if args.eval_tokens is not None else eval_tokens_default()
    settings = {"harvest": asdict(hcfg), "train": asdict(tcfg), "eval_tokens": eval_tokens,
                "on_the_fly": args.on_the_fly, "train_cache": args.train_cache, "eval_cache": args.eval_cache}
    if args.on_the_fly:  # a resumed stream is replayed: its buffer and rank split must be the same
        settings.update(shuffle_buffer=args.shuffle_buffer, world_size=int(os.environ.get("WORLD_SIZE", "1")))
    main_rank = int(os.environ.get("RANK", "0")) == 0
    with run_lock(args.out, "training run") if main_rank else nullcontext():
        if main_rank:
            check_run_folder(args.out, settings, tcfg.epochs)
        return _train_job(args, hcfg, tcfg, eval_tokens)


def _train_job(args, hcfg, tcfg, eval_tokens: int) -> int:
    import torch.distributed as dist

    from saelab.acts.harvest import harvest, load_harvest_lm
    from saelab.pages import summary_table
    from saelab.training.report import write_report
    from saelab.training.trainer import Trainer

    t0 = time.time()
    device = _init_distributed(hcfg.device)
    hcfg = replace(hcfg, device=device)
    out = Path(args.out)
    lm = load_harvest_lm(hcfg)  # loaded once for both harvests (or the stream)
    # validation: the curves logged while training; test (other documents): the figures reported at the end
    eval_cache = harvest(replace(hcfg, split="validation", max_tokens=eval_tokens), args.eval_cache, lm=lm)
    test_cache = harvest(replace(hcfg, split="test", max_tokens=eval_tokens), lm=lm)
    if args.on_the_fly:
        from saelab.acts.stream import StreamShuffleBuffer, stream_activations
        from saelab.distributed import rank_world

        rank, world = rank_world()
        stream = StreamShuffleBuffer(stream_activations(hcfg, lm=lm), tcfg.batch_size // world,
                               capacity=args.shuffle_buffer // world, seed=tcfg.seed + rank)
        trainer = Trainer(tcfg, None, out, eval_cache=eval_cache, stream=stream, stream_tokens=hcfg.max_tokens,
                          provenance={"model": hcfg.model, "site": hcfg.site, "layer": eval_cache.manifest["layer"],
                                      "corpus": hcfg.corpus, "split": hcfg.split, "context": asdict(hcfg.context),
                                      "exclude_first": hcfg.exclude_first, "outlier_factor": hcfg.outlier_factor},
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
    final = trainer.heldout_metrics(test_cache)
    validation = trainer.heldout_metrics()
    t_total = time.time() - t0
    m = eval_cache.manifest
    rows = {
        "model / site": f"{m['model']} {m['site']} layer {m['layer']}",
        "training tokens harvested": n_harvested if not args.on_the_fly else f"{n_harvested} (on the fly)",
        "tokens seen (epochs)": f"{int(trainer.sae.tokens_seen)} ({tcfg.epochs:g})",
        "n_latents / k": f"{tcfg.sae.n_latents} / {tcfg.sae.k}" + (" (Multi-TopK)" if tcfg.sae.multi_topk else ""),
        "test tokens (held-out documents)": final["tokens"],
        "test normalized MSE": final["nmse"],
        "validation normalized MSE (the curves)": validation["nmse"],
        "test L0": final["l0"],
        "dead latents (train tracker)": f"{final['dead_train_frac']:.2%} (no firing in {trainer.dead_tokens} tokens)",
        "never fired on test": f"{final['dead_eval_frac']:.2%}",
        "harvest time (s)": round(t_harvest, 1) if not args.on_the_fly else "(interleaved with training)",
        "total time (s)": round(t_total, 1),
        "SAE": str(out / "sae"),
        "report": str(out / "report"),
    }
    metrics = {"final": final, "validation": validation, "summary": {k: v for k, v in rows.items()},
               "harvest": asdict(hcfg), "train": asdict(tcfg), "seconds": {"harvest": t_harvest, "total": t_total}}
    write_report(out / "report", metrics, out / "log.jsonl")
    print(summary_table(rows))
    return 0


def _named_saes(specs: list[str] | None, zoo: str | None, default: str | None):
    """{name: SAE} from NAME=SOURCE / SOURCE specs (any layout `load_sae` reads: a saelab, SAE Lens or sparsify
    folder, an OpenAI .pt, hf://owner/repo[/subfolder]) and zoo kinds (trained on first use)."""
    from saelab.sae.formats import load_sae
    from saelab.zoo import ZOO, zoo_sae

    saes = {}
    for kind in [z for z in (zoo or "").split(",") if z]:
        saes[kind] = zoo_sae(kind)[0]
    for spec in specs or ([] if saes else [default] if default else []):
        name, _, source = spec.rpartition("=")
        if not source.startswith("hf://") and not Path(source).exists():
            raise FileNotFoundError(f"no SAE at {source}: train one with `saelab train`, pass --sae PATH (a saelab, "
                                    "SAE Lens or sparsify folder, an OpenAI .pt, hf://owner/repo[/subfolder]), or "
                                    f"--zoo {','.join(ZOO)} to use the zoo")
        parts = [p for p in source.rstrip("/").split("/") if p]
        default_name = parts[-2] if len(parts) > 1 and parts[-1] == "sae" else parts[-1] if parts else source
        saes[name or default_name] = load_sae(source)
    if not saes:
        raise ValueError(f"no SAE given: pass --sae PATH (repeatable) or --zoo {','.join(ZOO)}")
    models = {s.cfg.model for s in saes.values() if s.cfg.model}
    if len(models) > 1:
        print(f"saelab: warning: the SAEs record different models {sorted(models)}; all are spliced into one LM "
              "(--model, else the first SAE's)", file=sys.stderr)
    keys = {(s.family.writes(s.cfg), s.cfg.layer, s.cfg.d_in) for s in saes.values()}  # a transcoder: its output
    if len(keys) > 1:
        raise ValueError(f"the SAEs sit at different sites/layers/widths: {sorted(map(str, keys))}; "
                         "compare SAEs of one site at a time")
    return saes


def _model_for(args, first) -> str:
    """--model, else the model the SAE records, else the embedded default."""
    return getattr(args, "model", None) or first.cfg.model or "smollm2-135m"


def cmd_eval(args) -> int:
    from saelab.evals.suite import SuiteConfig, fast_suite_config, run_suite, summary_rows, write_suite_report
    from saelab.lm.models import load_lm
    from saelab.pages import summary_table

    saes = _named_saes(args.sae, args.zoo, "runs/default/sae")
    cfg = build_dataclass(SuiteConfig, args, "", base=fast_suite_config() if fast_mode() else SuiteConfig())
    first = next(iter(saes.values()))
    lm = load_lm(_model_for(args, first), device=args.device)
    saes = {name: sae.to(lm.device) for name, sae in saes.items()}
    report = run_suite(lm, saes, cfg)
    folder = write_suite_report(report, args.out)
    for row in summary_rows(report):
        print(summary_table({k: v for k, v in row.items() if k != "sae"}, row["sae"]))
    if "absorption" in report:  # how many letters passed SAEBench's gate, and whether it could be read at all
        from saelab.evals.absorption import absorption_summary

        print(absorption_summary(report["absorption"]))
    print(f"report: {folder / 'report.json'}  plots: {folder / 'report.html'}")
    return 0


def cmd_sweep(args) -> int:
    import torch

    from saelab.acts.harvest import harvest
    from saelab.evals.splice import heldout_context, recorded_positions
    from saelab.files import atomic_write_text
    from saelab.lm.models import resolve_device
    from saelab.pages import write_html_page
    from saelab.studies.progressive_recovery import shrinkage_table, sweep, sweep_figure

    saes = _named_saes(args.sae, args.zoo, "runs/default/sae")
    first = next(iter(saes.values()))
    hcfg = replace(harvest_defaults(), model=_model_for(args, first), site=first.cfg.site or "resid_post",
                   layer=first.cfg.layer, split="test", max_tokens=args.eval_tokens or eval_tokens_default(),
                   device=args.device, context=heldout_context(saes.values()), **recorded_positions(first))
    x = harvest(hcfg).activations()
    calib_x = harvest(replace(hcfg, split="validation", max_tokens=4096)).activations()  # JumpReLU thresholds
    ks = [int(v) for v in args.ks.split(",")] if args.ks else None
    lm = tokens = None
    if args.delta_loss_contexts:
        from saelab.acts.corpus import build_contexts, load_corpus
        from saelab.lm.models import load_lm

        lm = load_lm(hcfg.model, device=args.device)
        tokens = torch.from_numpy(build_contexts(load_corpus(hcfg.corpus), lm.tokenizer, hcfg.context, "test",
                                                 args.delta_loss_contexts).tokens_NT).long()
    saes = {name: sae.to(resolve_device(args.device)) for name, sae in saes.items()}
    df = sweep(saes, x, ks=ks, lm=lm, tokens_NT=tokens, calibration_BD=calib_x)
    shrink = shrinkage_table(saes, x[: args.shrinkage_tokens])
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for name, table in (("sweep.csv", df), ("shrinkage.csv", shrink)):
        atomic_write_text(out / name, table.to_csv(index=False))
    write_html_page(out / "sweep.html", "saelab progressive recovery", [sweep_figure(df)])
    print(df.to_string(index=False, float_format=lambda v: f"{v:.4g}"))
    print(shrink.to_string(index=False, float_format=lambda v: f"{v:.4g}"))
    print(f"tables: {out / 'sweep.csv'}, {out / 'shrinkage.csv'}  plot: {out / 'sweep.html'}")
    return 0


def cmd_domains(args) -> int:
    from saelab.files import atomic_write_text
    from saelab.lm.models import load_lm, resolve_device
    from saelab.studies.domain_shift import DomainConfig, domain_table

    cfg = build_dataclass(DomainConfig, args, "", base=DomainConfig())
    saes = _named_saes(args.sae, args.zoo, "runs/default/sae")
    first = next(iter(saes.values()))
    lm = load_lm(_model_for(args, first), device=args.device)
    saes = {name: sae.to(resolve_device(args.device)) for name, sae in saes.items()}
    df = domain_table(saes, lm, cfg, progress=True)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "domains.csv", df.to_csv(index=False))
    print(df.to_string(index=False, float_format=lambda v: f"{v:.4g}"))
    print(f"table: {out / 'domains.csv'}")
    return 0


def cmd_frontier(args) -> int:
    import torch

    from saelab.acts.corpus import ContextConfig, build_contexts, load_corpus
    from saelab.lm.models import load_lm
    from saelab.pages import write_html_page
    from saelab.presets import default_caches
    from saelab.studies.frontier import FrontierConfig, frontier_figures, run_frontier

    cfg = build_dataclass(FrontierConfig, args, "", base=FrontierConfig())
    hcfg = harvest_defaults()
    lm = load_lm(hcfg.model, device=args.device)
    train, held = default_caches(lm=lm)
    # the frontier chooses settings (an L1 coefficient, a matched L0): it reads the validation documents
    tokens = torch.from_numpy(build_contexts(load_corpus(hcfg.corpus), lm.tokenizer, ContextConfig(), "validation",
                                             cfg.delta_ce_contexts).tokens_NT).long() if cfg.delta_ce_contexts else None
    df = run_frontier(cfg, train_defaults(), train, held, args.out, lm=lm, tokens_NT=tokens)
    write_html_page(Path(args.out) / "frontier.html", "saelab frontier", frontier_figures(df))
    print(df.to_string(index=False, float_format=lambda v: f"{v:.4g}"))
    print(f"table: {Path(args.out) / 'frontier.csv'}  plots: {Path(args.out) / 'frontier.html'}")
    if args.synthetic:
        from saelab.studies.synthetic_bench import SyntheticBenchConfig, fast_synthetic_config

        base = fast_synthetic_config() if fast_mode() else SyntheticBenchConfig()
        _write_synthetic(replace(base, families=cfg.families), args.out, "cpu")  # as the frontier trains its SAEs
    return 0


def _write_synthetic(cfg, out, device) -> None:
    from saelab.files import atomic_write
    from saelab.lm.models import resolve_device
    from saelab.studies.synthetic_bench import run_synthetic_bench

    df = run_synthetic_bench(cfg, device=resolve_device(device))
    Path(out).mkdir(parents=True, exist_ok=True)
    atomic_write(Path(out) / "synthetic.csv", lambda p: df.to_csv(p, index=False))
    print(df.to_string(index=False, float_format=lambda v: f"{v:.4g}"))
    print(f"table: {Path(out) / 'synthetic.csv'}")


def cmd_synthetic(args) -> int:
    from saelab.studies.synthetic_bench import SyntheticBenchConfig, fast_synthetic_config

    _write_synthetic(build_dataclass(SyntheticBenchConfig, args, "", base=fast_synthetic_config() if fast_mode()
                                     else SyntheticBenchConfig()), args.out, args.device)
    return 0


def _json_safe(value):
    """numpy scalars as numbers and NaN / inf as null (strict JSON has no NaN)."""
    import math

    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(v) for v in value]
    if hasattr(value, "item"):
        value = value.item()
    return None if isinstance(value, float) and not math.isfinite(value) else value


def cmd_scale(args) -> int:
    from saelab.acts.cache import ActivationCache
    from saelab.files import atomic_write_text
    from saelab.lm.models import resolve_device
    from saelab.pages import write_html_page
    from saelab.presets import default_caches
    from saelab.studies.scaling_grid import ScaleConfig, dead_latent_ablation, loss_curves, run_grid, scale_defaults
    from saelab.studies.scaling_laws import dead_latent_figure, fit_grid, scaling_figures

    cfg = build_dataclass(ScaleConfig, args, "", base=scale_defaults(fast_mode(), args.ablation))
    base = replace(train_defaults(), progress=False)
    if bool(args.train_cache) != bool(args.eval_cache):
        raise ValueError("pass both --train-cache and --eval-cache (or neither, for the main job's caches)")
    train, held = (ActivationCache(args.train_cache), ActivationCache(args.eval_cache)) if args.train_cache \
        else default_caches()
    device = resolve_device(args.device)
    if device != "cpu":
        print(f"saelab scale: training on {device}")
    out = Path(args.out)
    if args.ablation:
        table = dead_latent_ablation(cfg, base, train, held, out, device=device)
        cols = ["variant", "n", "k", "nmse", "dead_train_frac", "dead_eval_frac", "seconds", "status"]
        atomic_write_text(out / "dead_latents.csv", table[cols].to_csv(index=False))
        write_html_page(out / "dead_latents.html", "saelab: dead latents with and without AuxK and tied init",
                        [dead_latent_figure(table)])
        print(table[cols].to_string(index=False, float_format=lambda v: f"{v:.4g}"))
        print(f"table: {out / 'dead_latents.csv'}  plot: {out / 'dead_latents.html'}")
        return 1 if (table.status != "ok").any() else 0
    table, folder = run_grid(cfg, base, train, held, out, device=device)
    curves = loss_curves(folder, train.d_model)
    fits = fit_grid(table, curves)
    atomic_write_text(folder / "fits.json", json.dumps(_json_safe(fits), indent=1))
    write_html_page(folder / "scale.html", "saelab scaling laws", scaling_figures(table, curves, fits))
    print(table.drop(columns=["error"]).to_string(index=False, float_format=lambda v: f"{v:.4g}"))  # noqa: E501
    for k, f in fits["per_k"].items():
        print(f"k={k}: L(N) = {f['a']:.3g} N^-({f['b']:.3f} ± {f['b_err']:.3f}) + {f['c']:.3f} ± {f['c_err']:.3f}")
    for k, h in fits["holdout"].items():
        print(f"k={k}: fitted without n={h['held_out_n']}, predicted {h['predicted']:.4f}, measured "
              f"{h['measured']:.4f} ({h['relative_error']:+.1%})")
    for k, c in fits["compute"].items():
        print(f"k={k}: L(C) = {c['a']:.3g} C^-({c['b']:.3f} ± {c['b_err']:.3f}) + {c['c']:.3f} (C in FLOPs); "
              "compute-optimal n: " + ", ".join(f"{s['n']} from {s['from_flops']:.2g}" for s in c["optimal_n"]))
    for name, err in fits["errors"].items():
        print(f"saelab scale: the {name} fit did not converge ({err})", file=sys.stderr)
    print(f"table: {folder / 'points.csv'}  fits: {folder / 'fits.json'}  plots: {folder / 'scale.html'}")
    failed = table[table.status != "ok"]
    if len(failed):
        print(f"saelab scale: {len(failed)} point(s) failed (rerun to retry):\n"
              + failed[["n", "k", "error"]].to_string(index=False), file=sys.stderr)
        return 1
    return 0
