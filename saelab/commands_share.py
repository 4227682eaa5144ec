"""What `saelab dashboard` and `saelab push` do (sharing an SAE: pages and a Neuronpedia export, the Hub); the
parser is `saelab.cli`, the other commands `saelab.commands`."""

from __future__ import annotations

from saelab.commands import _model_for
from saelab.flags import build_dataclass


def cmd_dashboard(args) -> int:
    from saelab.interp.export import export_dashboard
    from saelab.interp.latent_stats import StatsConfig
    from saelab.lm.models import load_lm
    from saelab.sae.formats import load_sae

    sae = load_sae(args.sae)
    lm = load_lm(_model_for(args, sae), device=args.device)
    latents = [int(v) for v in args.latents.split(",") if v.strip()] if args.latents else None
    stats_cfg = build_dataclass(StatsConfig, args, "stats.", base=StatsConfig())
    out = export_dashboard(lm, sae.to(lm.device), args.out, latents, args.n_latents, stats_cfg)
    print(f"pages: {out / 'index.html'} (open it in a browser; works offline)  "
          f"Neuronpedia JSON: {out / 'neuronpedia' / 'batch-0.json'}")
    return 0


def cmd_push(args) -> int:
    from saelab.sae.formats.push import check_repo_name, push, stage_folder

    check_repo_name(args.repo)
    if args.dry_run:
        folder = stage_folder(args.sae, args.dry_run, args.repo)
        print(f"wrote {folder} (README.md and the SAE's folder); nothing was uploaded")
        return 0
    url = push(args.sae, args.repo, private=args.private)
    print(f"uploaded {args.sae} to https://huggingface.co/{args.repo} ({url})")
    return 0
