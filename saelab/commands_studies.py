"""The `saelab` commands that run the paper's studies: `frontier`, `synthetic` and `scale` (each over `--seeds`,
with per-seed rows and a summary); the parser is `saelab.cli`, the other commands are in `saelab.commands`."""

from __future__ import annotations

import json
import sys
from dataclasses import replace
from pathlib import Path

from saelab.flags import build_dataclass
from saelab.presets import fast_mode, harvest_defaults, train_defaults


def cmd_frontier(args) -> int:
    import torch

    from saelab.acts.corpus import ContextConfig, build_contexts, load_corpus
    from saelab.lm.models import load_lm, resolve_device
    from saelab.pages import write_html_page
    from saelab.presets import default_caches
    from saelab.studies.frontier import FrontierConfig, frontier_figures, run_frontier

    device = resolve_device(args.device)  # a device this machine lacks is refused before any work
    cfg = build_dataclass(FrontierConfig, args, "", base=FrontierConfig())
    hcfg = harvest_defaults()
    lm = load_lm(hcfg.model, device=device)
    train, held = default_caches(lm=lm)
    # the frontier chooses settings (an L1 coefficient, a matched L0): it reads the validation documents
    tokens = torch.from_numpy(build_contexts(load_corpus(hcfg.corpus), lm.tokenizer, ContextConfig(), "validation",
                                             cfg.delta_ce_contexts).tokens_NT).long() if cfg.delta_ce_contexts else None
    df = run_frontier(cfg, train_defaults(), train, held, args.out, lm=lm, tokens_NT=tokens, device=device,
                      seeds=args.seeds)
    write_html_page(Path(args.out) / "frontier.html", "saelab frontier", frontier_figures(df))
    print(df.to_string(index=False, float_format=lambda v: f"{v:.4g}"))
    print(f"table: {Path(args.out) / 'frontier.csv'}  plots: {Path(args.out) / 'frontier.html'}")
    if args.seeds > 1:
        print(f"summary over {args.seeds} seeds (mean, 95% t-interval): {Path(args.out) / 'frontier_summary.csv'}; "
              f"every family against TopK, paired by seed: {Path(args.out) / 'frontier_comparisons.csv'}")
    if args.synthetic:
        from saelab.studies.synthetic_bench import SyntheticBenchConfig, fast_synthetic_config

        base = fast_synthetic_config() if fast_mode() else SyntheticBenchConfig()
        _write_synthetic(replace(base, families=cfg.families), args.out, device, args.seeds)
    return 0


def _write_synthetic(cfg, out, device, seeds: int = 1) -> None:
    from saelab.files import atomic_write
    from saelab.lm.models import resolve_device
    from saelab.studies.synthetic_bench import run_synthetic_bench, synthetic_comparisons, synthetic_summary

    df = run_synthetic_bench(cfg, device=resolve_device(device), seeds=seeds)
    Path(out).mkdir(parents=True, exist_ok=True)
    atomic_write(Path(out) / "synthetic.csv", lambda p: df.to_csv(p, index=False))
    print(df.to_string(index=False, float_format=lambda v: f"{v:.4g}"))
    print(f"table: {Path(out) / 'synthetic.csv'}")
    if seeds > 1:
        summary, comparisons = synthetic_summary(df), synthetic_comparisons(df)
        atomic_write(Path(out) / "synthetic_summary.csv", lambda p: summary.to_csv(p, index=False))
        atomic_write(Path(out) / "synthetic_comparisons.csv", lambda p: comparisons.to_csv(p, index=False))
        print(summary.to_string(index=False, float_format=lambda v: f"{v:.4g}"))
        print(f"summary over {seeds} seeds (mean, 95% t-interval): {Path(out) / 'synthetic_summary.csv'}; every "
              f"family against TopK, paired by seed: {Path(out) / 'synthetic_comparisons.csv'}")


def cmd_synthetic(args) -> int:
    from saelab.lm.models import resolve_device
    from saelab.studies.synthetic_bench import SyntheticBenchConfig, fast_synthetic_config

    device = resolve_device(args.device)
    _write_synthetic(build_dataclass(SyntheticBenchConfig, args, "", base=fast_synthetic_config() if fast_mode()
                                     else SyntheticBenchConfig()), args.out, device, args.seeds)
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
    from saelab.evals.intervals import seed_list
    from saelab.lm.models import resolve_device
    from saelab.presets import default_caches
    from saelab.studies.scaling_grid import ScaleConfig, scale_defaults

    device = resolve_device(args.device)  # a device this machine lacks is refused before any work
    cfg = build_dataclass(ScaleConfig, args, "", base=scale_defaults(fast_mode(), args.ablation))
    base = replace(train_defaults(), progress=False)
    if bool(args.train_cache) != bool(args.eval_cache):
        raise ValueError("pass both --train-cache and --eval-cache (or neither, for the main job's caches)")
    train, held = (ActivationCache(args.train_cache), ActivationCache(args.eval_cache)) if args.train_cache \
        else default_caches()
    if device != "cpu":
        print(f"saelab scale: training on {device}")
    out = Path(args.out)
    seeds = seed_list(args.seeds, base.seed)
    codes, tables, fits = [], [], []
    for seed in seeds:  # each seed is its own grid (the seed is one of a grid's settings): grid-<id>/
        if len(seeds) > 1:
            print(f"saelab scale: seed {seed}")
        one = _scale_ablation if args.ablation else _scale_grid
        code, table, fit = one(cfg, replace(base, seed=seed), train, held, out, device)
        codes.append(code)
        tables.append(table.assign(seed=seed))
        fits.append(fit)
    if len(seeds) > 1:
        _scale_seed_summary(tables, fits, out, args.ablation)
    return max(codes)


def _scale_ablation(cfg, base, train, held, out, device):
    from saelab.files import atomic_write_text
    from saelab.pages import write_html_page
    from saelab.studies.scaling_grid import dead_latent_ablation
    from saelab.studies.scaling_laws import dead_latent_figure

    table = dead_latent_ablation(cfg, base, train, held, out, device=device)
    cols = ["variant", "n", "k", "nmse", "dead_train_frac", "dead_eval_frac", "seconds", "status"]
    name = "dead_latents" if base.seed == 0 else f"dead_latents_seed{base.seed}"
    atomic_write_text(out / f"{name}.csv", table[cols].to_csv(index=False))
    write_html_page(out / f"{name}.html", "saelab: dead latents with and without AuxK and tied init",
                    [dead_latent_figure(table)])
    print(table[cols].to_string(index=False, float_format=lambda v: f"{v:.4g}"))
    print(f"table: {out / (name + '.csv')}  plot: {out / (name + '.html')}")
    return (1 if (table.status != "ok").any() else 0), table[cols], None


def _scale_grid(cfg, base, train, held, out, device):
    from saelab.files import atomic_write_text
    from saelab.pages import write_html_page
    from saelab.studies.scaling_grid import loss_curves, run_grid
    from saelab.studies.scaling_laws import fit_grid, scaling_figures

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
        return 1, table, fits
    return 0, table, fits


def _scale_seed_summary(tables, fits, out: Path, ablation: bool) -> None:
    """Over seeds: every point's rows (seeds_points.csv), each point's mean and 95% t-interval (seeds_summary.csv),
    and for a grid each fit's numbers per seed and summarised (seeds_fits.csv, seeds_fits_summary.csv)."""
    import pandas as pd

    from saelab.evals.intervals import summarize
    from saelab.files import atomic_write_text
    from saelab.pages import write_html_page
    from saelab.studies.scaling_laws import seeds_figure

    points = pd.concat(tables, ignore_index=True)
    points = points[points.status == "ok"]
    by = ["variant", "n", "k"] if ablation else ["n", "k"]
    summary = summarize(points, by, ["nmse", "l0", "dead_train_frac", "dead_eval_frac"])
    atomic_write_text(out / "seeds_points.csv", points.to_csv(index=False))
    atomic_write_text(out / "seeds_summary.csv", summary.to_csv(index=False))
    print(summary.to_string(index=False, float_format=lambda v: f"{v:.4g}"))
    written = [out / "seeds_points.csv", out / "seeds_summary.csv"]
    if not ablation:
        rows = []
        for table, fit in zip(tables, fits):
            seed = int(table.seed.iloc[0])
            for k, f in fit["per_k"].items():
                rows.append({"seed": seed, "k": k, "fit": "L(N)", "b": f["b"], "c": f["c"]})
            for k, h in fit["holdout"].items():
                rows.append({"seed": seed, "k": k, "fit": "holdout", "relative_error": h["relative_error"]})
            for k, c in fit["compute"].items():
                rows.append({"seed": seed, "k": k, "fit": "L(C)", "b": c["b"], "c": c["c"]})
        per_seed = pd.DataFrame(rows)
        fits_summary = summarize(per_seed, ["fit", "k"], ["b", "c", "relative_error"]) if rows else per_seed
        atomic_write_text(out / "seeds_fits.csv", per_seed.to_csv(index=False))
        atomic_write_text(out / "seeds_fits_summary.csv", fits_summary.to_csv(index=False))
        write_html_page(out / "seeds.html", "saelab scaling grid over seeds", [seeds_figure(summary)])
        print(fits_summary.to_string(index=False, float_format=lambda v: f"{v:.4g}"))
        written += [out / "seeds_fits.csv", out / "seeds_fits_summary.csv", out / "seeds.html"]
    print(f"over {points.seed.nunique()} seeds (mean, 95% t-interval): " + ", ".join(map(str, written)))

