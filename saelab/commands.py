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
    from saelab.acts.harvest import HarvestConfig, harvest_sites
    from saelab.acts.outliers import norm_stats

    cfg = replace(build_dataclass(HarvestConfig, args, "", base=harvest_defaults()), device=args.device)
    for cache in harvest_sites(cfg, args.out).values():  # several sites (--layers, --sites): one pass, a folder each
        stats = norm_stats(cache.sample(min(cache.n_tokens, 20_000)))
        print(json.dumps({"folder": str(cache.folder), "n_tokens": cache.n_tokens, "norms": stats,
                          **{k: cache.manifest[k] for k in ("site", "layer", "n_dropped_outliers")}}, indent=1))
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


def _check_acceleration(tcfg, device: str) -> None:
    """Refuse --train.autocast where it cannot run (a device this machine lacks too), before any folder or model."""
    import torch

    from saelab.lm.models import resolve_device
    from saelab.training.acceleration import check_autocast

    check_autocast(tcfg.autocast, torch.device(resolve_device(device)), tcfg.sae.dtype)


def cmd_train(args) -> int:
    """Hold the run folder's lock for the whole job and check its settings, both before any harvest: a second
    run on the folder, or a run with other settings, is refused before any model runs."""
    from contextlib import nullcontext

    from saelab.acts.harvest import HarvestConfig, harvest_settings
    from saelab.files import run_lock
    from saelab.training.runs import check_run_folder
    from saelab.training.tracking import make_tracker
    from saelab.training.trainer import TrainConfig

    hcfg = replace(build_dataclass(HarvestConfig, args, "harvest.", base=harvest_defaults()), device=args.device)
    tcfg = build_dataclass(TrainConfig, args, "train.", base=train_defaults())
    _check_acceleration(tcfg, args.device)
    if args.on_the_fly and hasattr(args, "train.epochs"):
        raise ValueError("--on-the-fly trains on one pass of --harvest.max_tokens tokens; --train.epochs does not "
                         "apply (raise --harvest.max_tokens to train longer, or drop --on-the-fly)")
    if args.on_the_fly and hcfg.max_tokens is None:
        raise ValueError("--on-the-fly needs --harvest.max_tokens (the number of tokens to train on)")
    eval_tokens = args.eval_tokens if args.eval_tokens is not None else eval_tokens_default()
    settings = {"harvest": harvest_settings(hcfg), "train": asdict(tcfg), "eval_tokens": eval_tokens,
                "on_the_fly": args.on_the_fly, "train_cache": args.train_cache, "eval_cache": args.eval_cache}
    if hcfg.several:  # one pass for all sites, one SAE and run folder a site (saelab.training.sites)
        from saelab.training.sites import summary_text, train_sites_job

        print(summary_text(train_sites_job(args.out, hcfg, tcfg, eval_tokens, settings, args.train_cache,
                                           args.eval_cache, args.track, args.on_the_fly), args.out))
        return 0
    if args.on_the_fly:  # a resumed stream is replayed: its buffer and rank split must be the same
        settings.update(shuffle_buffer=args.shuffle_buffer, world_size=int(os.environ.get("WORLD_SIZE", "1")))
    main_rank = int(os.environ.get("RANK", "0")) == 0
    if args.seeds > 1:  # one run a seed in --out/seed-S, then the summary over them in --out
        from saelab.evals.intervals import seed_list

        code = 0
        for seed in seed_list(args.seeds, tcfg.seed):
            one = replace(tcfg, seed=seed)
            folder = str(Path(args.out) / f"seed-{seed}")
            with run_lock(folder, "training run") if main_rank else nullcontext():
                if main_rank:
                    check_run_folder(folder, {**settings, "train": asdict(one)}, one.epochs)
                tracker = make_tracker(args.track if main_rank else "none", folder, settings)
                code = max(code, _train_job(args, hcfg, one, eval_tokens, tracker, out=folder))
        if main_rank:
            _train_seed_summary(Path(args.out), seed_list(args.seeds, tcfg.seed))
        return code
    with run_lock(args.out, "training run") if main_rank else nullcontext():
        if main_rank:
            check_run_folder(args.out, settings, tcfg.epochs)
        tracker = make_tracker(args.track if main_rank else "none", args.out, settings)
        return _train_job(args, hcfg, tcfg, eval_tokens, tracker)


TRAIN_SUMMARY = ("nmse", "nmse_activation_space", "l0", "dead_train_frac", "dead_eval_frac",
                 "delta_ce_trained_positions", "kl_trained_positions", "loss_recovered_trained_positions",
                 "delta_ce_every_position", "kl_every_position", "loss_recovered_every_position")


def _train_seed_summary(out: Path, seeds: list[int]) -> None:
    """seeds.csv (each seed's test figures) and seeds_summary.csv (their mean and 95% t-interval) in `out`."""
    import pandas as pd

    from saelab.evals.intervals import summarize
    from saelab.files import atomic_write_text

    rows = []
    for seed in seeds:
        m = json.loads((out / f"seed-{seed}" / "report" / "metrics.json").read_text())
        row = {"seed": seed, **{k: m["final"].get(k) for k in TRAIN_SUMMARY if k in m["final"]}}
        for conv, d in m.get("downstream", {}).items():
            row.update({f"delta_ce_{conv}": d["delta_loss"], f"kl_{conv}": d["kl"],
                        f"loss_recovered_{conv}": d["loss_recovered"]})
        rows.append(row)
    per_seed = pd.DataFrame(rows)
    summary = summarize(per_seed.assign(run="test"), ["run"], TRAIN_SUMMARY)
    atomic_write_text(out / "seeds.csv", per_seed.to_csv(index=False))
    atomic_write_text(out / "seeds_summary.csv", summary.to_csv(index=False))
    print(per_seed.to_string(index=False, float_format=lambda v: f"{v:.4g}"))
    print(f"over {len(seeds)} seeds (mean, 95% t-interval): {out / 'seeds_summary.csv'}")


def _train_job(args, hcfg, tcfg, eval_tokens: int, tracker, out: str | None = None) -> int:
    import torch.distributed as dist

    from saelab.acts.harvest import harvest, load_harvest_lm
    from saelab.pages import summary_table
    from saelab.training.report import write_report
    from saelab.training.trainer import Trainer

    t0 = time.time()
    device = _init_distributed(hcfg.device)
    hcfg = replace(hcfg, device=device)
    out = Path(out or args.out)
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
                          tracker=tracker,
                          provenance={"model": hcfg.model, "site": hcfg.site, "layer": eval_cache.manifest["layer"],
                                      "corpus": hcfg.corpus, "split": hcfg.split, "context": asdict(hcfg.context),
                                      "exclude_first": hcfg.exclude_first, "outlier_factor": hcfg.outlier_factor},
                          device=device)
        n_harvested = hcfg.max_tokens
    else:
        train_cache = harvest(hcfg, args.train_cache, lm=lm)
        trainer = Trainer(tcfg, train_cache, out, eval_cache=eval_cache, device=device, tracker=tracker)
        n_harvested = train_cache.n_tokens
    t_harvest = time.time() - t0
    trainer.train()
    if dist.is_initialized():
        rank = dist.get_rank()
        dist.barrier()  # rank 0 logs, evaluates and saves after the last step: no rank tears the group down before
        dist.destroy_process_group()
        if rank != 0:  # rank 0 evaluates and reports
            return 0
    final = trainer.heldout_metrics(test_cache)
    validation = trainer.heldout_metrics()
    downstream = _main_job_downstream(args, hcfg, lm, trainer.sae)
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
        **{f"delta CE / KL / loss recovered, {conv.replace('_', ' ')} ({d['n_predictions']} test predictions)":
           f"{d['delta_loss']:.3f} / {d['kl']:.3f} / {d['loss_recovered']:.3f}" for conv, d in downstream.items()},
        "harvest time (s)": round(t_harvest, 1) if not args.on_the_fly else "(interleaved with training)",
        "total time (s)": round(t_total, 1),
        "SAE": str(out / "sae"),
        "report": str(out / "report"),
    }
    metrics = {"final": final, "validation": validation, "downstream": downstream,
               "summary": {k: v for k, v in rows.items()},
               "harvest": asdict(hcfg), "train": asdict(tcfg), "seconds": {"harvest": t_harvest, "total": t_total}}
    write_report(out / "report", metrics, out / "log.jsonl")
    tracker.finish(metrics, out / "report")
    print(summary_table(rows))
    return 0


def _main_job_downstream(args, hcfg, lm, sae) -> dict:
    """Delta CE, KL and loss recovered of the main job's SAE on test contexts under both splice conventions
    (`saelab.evals.downstream.downstream_conventions`): {} when --delta-ce-contexts is 0."""
    import torch

    from saelab.acts.corpus import build_contexts, load_corpus
    from saelab.evals.downstream import downstream_conventions

    n = args.delta_ce_contexts if args.delta_ce_contexts is not None else (8 if fast_mode() else 256)
    if not n:
        return {}
    corpus = load_corpus(hcfg.corpus, config=hcfg.corpus_config, split=hcfg.corpus_split)
    test = build_contexts(corpus, lm.tokenizer, hcfg.context, "test", n).tokens_NT
    mean_from = build_contexts(corpus, lm.tokenizer, hcfg.context, "train", n).tokens_NT  # the ablation mean
    sae = sae.to(lm.device)
    return downstream_conventions(lm, sae, torch.from_numpy(test).long(), torch.from_numpy(mean_from).long(),
                                  progress=False)


def _named_saes(specs: list[str] | None, zoo: str | None, default: str | None, device: str = "cpu"):
    """{name: SAE} from NAME=SOURCE / SOURCE specs (any layout `load_sae` reads: a saelab, SAE Lens or sparsify
    folder, an OpenAI .pt, hf://owner/repo[/subfolder]) and zoo kinds (trained on first use, on `device`)."""
    from saelab.sae.formats import load_sae
    from saelab.zoo import ZOO, zoo_sae

    saes = {}
    for kind in [z for z in (zoo or "").split(",") if z]:
        saes[kind] = zoo_sae(kind, device=device)[0]
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
    from saelab.lm.models import load_lm, resolve_device
    from saelab.pages import summary_table

    device = resolve_device(args.device)
    saes = _named_saes(args.sae, args.zoo, "runs/default/sae", device)
    cfg = build_dataclass(SuiteConfig, args, "", base=fast_suite_config() if fast_mode() else SuiteConfig())
    first = next(iter(saes.values()))
    lm = load_lm(_model_for(args, first), device=device)
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

    device = resolve_device(args.device)  # a device this machine lacks is refused before any work
    saes = _named_saes(args.sae, args.zoo, "runs/default/sae", device)
    first = next(iter(saes.values()))
    hcfg = replace(harvest_defaults(), model=_model_for(args, first), site=first.cfg.site or "resid_post",
                   layer=first.cfg.layer, split="test", max_tokens=args.eval_tokens or eval_tokens_default(),
                   device=device, context=heldout_context(saes.values()), **recorded_positions(first))
    x = harvest(hcfg).activations()
    calib_x = harvest(replace(hcfg, split="validation", max_tokens=4096)).activations()  # JumpReLU thresholds
    ks = [int(v) for v in args.ks.split(",")] if args.ks else None
    lm = tokens = None
    if args.delta_loss_contexts:
        from saelab.acts.corpus import build_contexts, load_corpus
        from saelab.lm.models import load_lm

        lm = load_lm(hcfg.model, device=device)
        tokens = torch.from_numpy(build_contexts(load_corpus(hcfg.corpus), lm.tokenizer, hcfg.context, "test",
                                                 args.delta_loss_contexts).tokens_NT).long()
    saes = {name: sae.to(device) for name, sae in saes.items()}
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

    device = resolve_device(args.device)
    cfg = build_dataclass(DomainConfig, args, "", base=DomainConfig())
    saes = _named_saes(args.sae, args.zoo, "runs/default/sae", device)
    first = next(iter(saes.values()))
    lm = load_lm(_model_for(args, first), device=device)
    saes = {name: sae.to(device) for name, sae in saes.items()}
    df = domain_table(saes, lm, cfg, progress=True)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "domains.csv", df.to_csv(index=False))
    print(df.to_string(index=False, float_format=lambda v: f"{v:.4g}"))
    print(f"table: {out / 'domains.csv'}")
    return 0
