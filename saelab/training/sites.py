"""Several sites from one harvest (`saelab train --harvest.layers 6,12,18,22`, `--harvest.sites ...`): the LM runs
once per batch for all of them (`saelab.acts.harvest.harvest_sites`), then one SAE is trained per site, each in its
own run folder (OUT/resid_post6/: sae/, log.jsonl, report/, run.json, resumable like any run), and one summary
table compares them (OUT/summary.csv, printed at the end).
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, replace
from pathlib import Path

from saelab.acts.harvest import (
    HarvestConfig,
    harvest_settings,
    harvest_sites,
    load_harvest_lm,
    target_name,
    targets,
)
from saelab.files import atomic_write_text
from saelab.training.report import write_report
from saelab.training.runs import check_run_folder
from saelab.training.tracking import make_tracker
from saelab.training.trainer import TrainConfig, Trainer

SUMMARY_COLUMNS = ("site", "layer", "n_latents", "k", "test_nmse", "validation_nmse", "test_l0", "dead_train_frac",
                   "never_fired_on_test", "tokens_seen", "folder")


def site_settings(settings: dict, one: HarvestConfig) -> dict:
    """A site's own run.json settings: the whole job's, with that site's single-site harvest config."""
    return {**settings, "harvest": harvest_settings(one)}


def check_site_folders(out: str | Path, hcfg: HarvestConfig, settings: dict, epochs: float) -> None:
    """Check every site's run folder before any model runs (a mismatch is refused before the harvest)."""
    if hcfg.layer is None and not hcfg.layers:
        raise ValueError("several sites at the model's default layer: name it (--harvest.layer) or the layers "
                         "(--harvest.layers), so each site's run folder is known before the model loads")
    for one in targets(hcfg):
        check_run_folder(Path(out) / target_name(one), site_settings(settings, one), epochs)


def train_sites(hcfg: HarvestConfig, tcfg: TrainConfig, out: str | Path, eval_tokens: int, settings: dict,
                train_cache: str | None = None, eval_cache: str | None = None, track: str = "none",
                device: str = "cpu") -> list[dict]:
    """Harvest every site in one pass per split, train one SAE per site, report each, write OUT/summary.csv;
    returns the summary rows."""
    t0 = time.time()
    out = Path(out)
    lm = load_harvest_lm(hcfg)
    jobs = targets(hcfg, lm)
    # validation: the curves logged while training; test (other documents): the figures reported at the end
    evals = harvest_sites(replace(hcfg, split="validation", max_tokens=eval_tokens), eval_cache, lm=lm)
    tests = harvest_sites(replace(hcfg, split="test", max_tokens=eval_tokens), lm=lm)
    trains = harvest_sites(hcfg, train_cache, lm=lm)
    t_harvest = time.time() - t0
    del lm
    rows = []
    for one in jobs:
        key, folder = (one.site, one.layer), out / target_name(one)
        tracker = make_tracker(track, folder, site_settings(settings, one), name=f"{out.name}/{target_name(one)}",
                               group=out.name)
        trainer = Trainer(tcfg, trains[key], folder, eval_cache=evals[key], device=device, tracker=tracker)
        trainer.train()
        final, validation = trainer.heldout_metrics(tests[key]), trainer.heldout_metrics()
        row = {"site": one.site, "layer": one.layer, "n_latents": tcfg.n_latents, "k": tcfg.k,
               "test_nmse": final["nmse"], "validation_nmse": validation["nmse"], "test_l0": final["l0"],
               "dead_train_frac": final["dead_train_frac"], "never_fired_on_test": final["dead_eval_frac"],
               "tokens_seen": int(trainer.sae.tokens_seen), "folder": str(folder)}
        metrics = {"final": final, "validation": validation, "summary": row, "harvest": asdict(one),
                   "train": asdict(tcfg), "seconds": {"harvest (all sites, one pass a batch)": t_harvest}}
        write_report(folder / "report", metrics, folder / "log.jsonl")
        tracker.finish(metrics, folder / "report")
        rows.append(row)
    write_summary(out, rows, {"harvest_seconds": t_harvest, "total_seconds": time.time() - t0})
    return rows


def train_sites_job(out: str | Path, hcfg: HarvestConfig, tcfg: TrainConfig, eval_tokens: int, settings: dict,
                    train_cache: str | None = None, eval_cache: str | None = None, track: str = "none",
                    on_the_fly: bool = False) -> list[dict]:
    """`saelab train` with several sites: refuse what it cannot do, hold OUT's lock, check every site's run folder
    before any model runs, then `train_sites`."""
    import os

    from saelab.files import run_lock
    from saelab.lm.models import resolve_device

    if on_the_fly:
        raise ValueError("--on-the-fly trains one site; several sites (--harvest.layers / --harvest.sites) are "
                         "harvested to disk in one pass: drop --on-the-fly")
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        raise ValueError("several sites in one run are not split over torchrun ranks; run them on one process, or "
                         "one site a torchrun job")
    with run_lock(out, "training run"):
        check_site_folders(out, hcfg, settings, tcfg.epochs)
        return train_sites(hcfg, tcfg, out, eval_tokens, settings, train_cache, eval_cache, track,
                           resolve_device(hcfg.device))


def write_summary(out: Path, rows: list[dict], seconds: dict) -> None:
    """OUT/summary.csv (one row a site) and OUT/summary.json (the rows and the times)."""
    import pandas as pd

    atomic_write_text(out / "summary.csv", pd.DataFrame(rows, columns=list(SUMMARY_COLUMNS)).to_csv(index=False))
    atomic_write_text(out / "summary.json", json.dumps({"sites": rows, "seconds": seconds}, indent=1))


def summary_text(rows: list[dict], out: str | Path) -> str:
    """The summary table for the terminal, and where it and the sites' folders are."""
    import pandas as pd

    shown = pd.DataFrame(rows, columns=list(SUMMARY_COLUMNS)).drop(columns=["folder"])
    return (shown.to_string(index=False, float_format=lambda v: f"{v:.4g}") +
            f"\nsummary: {Path(out) / 'summary.csv'}  (one run folder a site: sae/, report/, log.jsonl)")
