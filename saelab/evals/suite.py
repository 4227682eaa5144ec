"""The paper's evaluation suite on one or several SAEs, side by side: `run_suite` and `saelab eval`.

Downstream loss (`downstream`: spliced at the positions each SAE trained on and at every position, SAEBench's
default, each stored under its own name), probe loss (`probes`, beside the controls that probe directions that are
not an SAE's), N2G explanations (`n2g`) and ablation sparsity (`ablation`) on the test half of the held-out
documents of the embedded corpus (the SAEs' recorded split), and on request SAEBench's first-letter absorption
(`absorption`: on its own spelling prompts over the tokenizer's alphabetic tokens; about 4 minutes of SmolLM2 at its
defaults on a 2-core CPU, shared by every SAE at the same layer) and SAEBench's core metrics under SAEBench's names
(`core`: `saelab.evals.core`), written as report.json and report.html.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Literal

import torch

from saelab.acts.corpus import DEFAULT_CORPUS, build_contexts, load_corpus
from saelab.evals.ablation import ablation_sparsity, position_ablation_sparsity
from saelab.evals.absorption import AbsorptionConfig, fast_absorption_config, first_letter_absorption
from saelab.evals.downstream import CONVENTIONS, downstream_loss
from saelab.evals.n2g import N2GConfig, n2g_evaluation
from saelab.evals.probes import ProbeConfig, probe_losses
from saelab.evals.splice import SpliceSite, encode_contexts, heldout_context, site_mean
from saelab.files import atomic_write_text
from saelab.flags import check_choices
from saelab.lm.models import LM
from saelab.sae.model import SAE


@dataclass
class SuiteConfig:
    """Sizes of the evaluation suite (defaults: minutes on a 2-core CPU for SmolLM2)."""

    corpus: str = DEFAULT_CORPUS
    """Corpus whose test documents (the second half of the held-out ones) are evaluated; its training documents
    build the N2G explanations and the mean-ablation mean. Default: the main job's English mixture."""
    downstream_contexts: int = 256
    """Held-out contexts (64 tokens) for the downstream loss (both splice conventions) and the core metrics."""
    splice_positions: Literal["trained", "all"] = "trained"
    """Which positions the splice replaces: those each SAE trained on (its harvest's rule, by default not position 0
    nor norm outliers) or every position."""
    n2g_build_contexts: int = 512
    """Training-split contexts whose top activations build the N2G explanations."""
    n2g_heldout_contexts: int = 256
    """Held-out contexts the explanations are scored on."""
    n2g_latents: int = 256
    """Latents explained (a random sample of those that fire)."""
    ablation_sampling: Literal["positions", "latents"] = "positions"
    """Ablation sparsity sampled by token position (every latent active at a sampled token is ablated, so latents
    count by how often they fire) or by latent (a uniform sample of live latents, each at a few contexts)."""
    ablation_positions: int = 32
    """Token positions sampled ('positions'; each ablates the k latents active there); the report's interval on the
    median is a bootstrap over these positions."""
    ablation_latents: int = 32
    """Latents whose ablation sparsity is measured ('latents': a random sample of those that fire)."""
    ablation_contexts: int = 4
    """Contexts per ablated latent ('latents')."""
    probes: ProbeConfig = field(default_factory=ProbeConfig)
    """Probe tasks (see saelab.evals.probes)."""
    n2g: N2GConfig = field(default_factory=N2GConfig)
    """N2G explainer settings."""
    absorption: AbsorptionConfig = field(default_factory=AbsorptionConfig)
    """SAEBench's first-letter absorption (saelab.evals.absorption)."""
    metrics: str = "downstream,probe,n2g,ablation"
    """Comma-separated metrics to run: downstream, probe, n2g, ablation, absorption (not in the default: it adds
    about 4 minutes on SmolLM2), core (SAEBench's core metrics: explained variance, cosine similarity, l2 ratio,
    relative reconstruction bias, L0, L1, feature density; `--metrics core` alone runs them with the downstream
    loss they read)."""
    seed: int = 0
    """Seed of the sampled latents (N2G explanations, ablation)."""


def fast_suite_config() -> SuiteConfig:
    return SuiteConfig(downstream_contexts=8, n2g_build_contexts=96, n2g_heldout_contexts=48, n2g_latents=64,
                       ablation_positions=2, ablation_latents=4, ablation_contexts=2,
                       probes=ProbeConfig(docs_per_topic=8, docs_per_language=24, news_docs=24, token_contexts=24),
                       absorption=fast_absorption_config())


def run_suite(lm: LM, saes: dict[str, SAE], cfg: SuiteConfig | None = None, mean_D: torch.Tensor | None = None,
              progress: bool = True) -> dict:
    """All four metrics for every SAE in `saes` (same text, same tasks). Returns a JSON-able dict.

    Scored on held-out documents; the mean-ablation mean (unless `mean_D` is given) and the N2G
    explanations come from training-split documents.
    """
    cfg = cfg or SuiteConfig()
    wanted = set(cfg.metrics.split(","))
    unknown = wanted - set(METRICS)
    if unknown:
        raise ValueError(f"unknown metrics {sorted(unknown)}: choose from {', '.join(METRICS)}")
    check_choices(cfg)
    # each SAE spliced at the positions its own harvest trained on (its data record); `where`: the first's
    sites = {name: SpliceSite.of(sae, lm, positions=cfg.splice_positions) for name, sae in saes.items()}
    where = sites[next(iter(saes))]
    if len({w.source for w in sites.values()}) > 1 and wanted & {"probe", "absorption"}:
        raise ValueError("the probes and absorption read every SAE at one site, and these read different ones (a "
                         "transcoder reads its MLP's input): run them on each SAE alone, or pass --metrics "
                         "downstream,n2g,ablation")
    corpus = load_corpus(cfg.corpus)
    ctx_cfg = heldout_context(saes.values())  # the split the SAEs trained on
    n_held = max(cfg.downstream_contexts, cfg.n2g_heldout_contexts)
    held = torch.from_numpy(build_contexts(corpus, lm.tokenizer, ctx_cfg, "test", n_held).tokens_NT).long()
    # training-split contexts: they build the N2G explanations and the mean-ablation mean, so nothing that
    # is fitted or averaged comes from the held-out tokens that are scored
    n_build = max(cfg.n2g_build_contexts, cfg.downstream_contexts)
    build = torch.from_numpy(build_contexts(corpus, lm.tokenizer, ctx_cfg, "train", n_build).tokens_NT).long()
    out: dict = {"config": asdict(cfg), "site": asdict(where), "sites": {n: asdict(w) for n, w in sites.items()},
                 "saes": {}, "seconds": {}}
    t0 = time.time()
    if "downstream" in wanted or "core" in wanted:
        toks = held[: cfg.downstream_contexts]
        for name, sae in saes.items():
            res = out["saes"].setdefault(name, {})
            for conv, positions in CONVENTIONS.items():  # both splice conventions, each under its own name
                site = SpliceSite.of(sae, lm, positions=positions)
                mean = mean_D if mean_D is not None and positions == cfg.splice_positions else \
                    site_mean(lm, build[: cfg.downstream_contexts], site)
                res[f"downstream_{conv}"] = downstream_loss(lm, sae, toks, site, mean_D=mean, progress=progress)
            res["downstream"] = res[f"downstream_{CHOSEN[cfg.splice_positions]}"]  # the one --splice_positions names
        out["seconds"]["downstream"] = time.time() - t0
    if "core" in wanted:
        from saelab.evals.core import core_metrics, downstream_names

        t = time.time()
        for name, sae in saes.items():
            res = out["saes"][name]
            res["core"] = {**core_metrics(lm, sae, held[: cfg.downstream_contexts], SpliceSite.of(sae, lm, "all")),
                           **downstream_names(res["downstream_every_position"])}
            res["core_trained_positions"] = core_metrics(lm, sae, held[: cfg.downstream_contexts], sites[name]
                                                         if cfg.splice_positions == "trained" else
                                                         SpliceSite.of(sae, lm, "trained"))
        out["seconds"]["core"] = time.time() - t
    if "probe" in wanted:
        t = time.time()
        r = probe_losses(lm, saes, cfg.probes, where, progress=progress)
        out["probes"] = r
        for name in saes:
            out["saes"].setdefault(name, {})["probe_loss"] = r["mean"][name]
        out["seconds"]["probe"] = time.time() - t
    if "absorption" in wanted:
        t = time.time()
        r = first_letter_absorption(lm, saes, cfg.absorption, progress=progress)
        out["absorption"] = r
        for name in saes:
            out["saes"].setdefault(name, {})["absorption"] = r["saes"][name]
        out["seconds"]["absorption"] = time.time() - t
    if "n2g" in wanted or "ablation" in wanted:
        build = build[: cfg.n2g_build_contexts]
        for name, sae in saes.items():
            t = time.time()
            held_codes = encode_contexts(lm, sae, held[: cfg.n2g_heldout_contexts], sites[name], progress=progress)
            res = out["saes"].setdefault(name, {})
            if "n2g" in wanted:
                build_codes = encode_contexts(lm, sae, build, sites[name], progress=progress)
                r = n2g_evaluation(build_codes, held_codes, n_latents=cfg.n2g_latents, cfg=cfg.n2g,
                                   tokenizer=lm.tokenizer, seed=cfg.seed)
                res["n2g"] = r["summary"]
                res["n2g_rows"] = r["rows"]
                out["seconds"][f"n2g {name}"] = time.time() - t
            if "ablation" in wanted:
                t = time.time()
                if cfg.ablation_sampling == "positions":
                    rows = position_ablation_sparsity(lm, sae, held_codes, cfg.ablation_positions, sites[name],
                                                      progress=progress, seed=cfg.seed)
                else:
                    lats = held_codes.sample_alive(cfg.ablation_latents, cfg.seed)
                    rows = ablation_sparsity(lm, sae, held_codes, lats, cfg.ablation_contexts, sites[name],
                                             progress=progress)
                vals = [r["sparsity"] for r in rows if r["sparsity"] == r["sparsity"]]
                rand = [r["random_sparsity"] for r in rows if r.get("random_sparsity", math.nan) == r.get(
                    "random_sparsity", math.nan)]
                res["ablation"] = {"median": _median(vals), "mean": _mean(vals), "random_median": _median(rand),
                                   "random_mean": _mean(rand), "n": len(vals), "sampling": cfg.ablation_sampling}
                from saelab.evals.intervals import bootstrap_medians

                # 95% percentile bootstrap over the sampled positions (or latents): the ablations at one position
                # share its context, so whole positions are resampled
                group = ("context", "index") if cfg.ablation_sampling == "positions" else ("latent",)
                boot = bootstrap_medians(rows, ("sparsity", "random_sparsity"), group, seed=cfg.seed)
                res["ablation"].update(median_interval=boot["sparsity"], random_median_interval=boot["random_sparsity"],
                                       median_minus_random_interval=boot["difference"])
                for key in ("own_share", "sparsity_later", "random_own_share", "random_sparsity_later"):
                    got = [r[key] for r in rows if r.get(key, math.nan) == r.get(key, math.nan)]
                    if got:
                        res["ablation"][f"{key}_median"] = _median(got)
                res["ablation_rows"] = rows
                out["seconds"][f"ablation {name}"] = time.time() - t
    return out


METRICS = ("downstream", "probe", "n2g", "ablation", "absorption", "core")
CHOSEN = {"trained": "trained_positions", "all": "every_position"}
CORE_SUMMARY = ("explained_variance", "explained_variance_legacy", "cossim", "l2_ratio", "relative_reconstruction_bias",
                "l0", "frac_alive", "ce_loss_score", "kl_div_score")


def _median(v):
    return float(torch.tensor(v).median()) if v else math.nan


def _mean(v):
    return float(sum(v) / len(v)) if v else math.nan


def summary_rows(report: dict) -> list[dict]:
    """One flat row per SAE with the headline numbers (for tables and notebooks)."""
    rows = []
    for name, r in report["saes"].items():
        row = {"sae": name}
        if "downstream" in r:
            d = r["downstream"]
            row.update({"delta_loss": d["delta_loss"], "kl": d["kl"], "loss_recovered": d["loss_recovered"],
                        "loss_recovered_vs_mean": d["loss_recovered_mean"]})
            for conv in CONVENTIONS:  # both conventions, named
                if f"downstream_{conv}" in r:
                    d = r[f"downstream_{conv}"]
                    row.update({f"delta_loss_{conv}": d["delta_loss"], f"kl_{conv}": d["kl"],
                                f"loss_recovered_{conv}": d["loss_recovered"]})
        if "core" in r:
            row.update({f"core_{k}": r["core"][k] for k in CORE_SUMMARY if k in r["core"]})
        if "probe_loss" in r:
            row["probe_loss"] = r["probe_loss"]
        if "n2g" in r and "f1" in r["n2g"]:
            row.update({"n2g_precision": r["n2g"]["precision"]["mean"], "n2g_recall": r["n2g"]["recall"]["mean"],
                        "n2g_f1": r["n2g"]["f1"]["mean"]})
        if "absorption" in r:
            a = r["absorption"]
            row.update({"absorption": a["absorption"], "full_absorption": a["full_absorption"],
                        "absorption_letters_passing": a["letters_passing"]})
        if "ablation" in r:
            row.update({"ablation_sparsity": r["ablation"]["median"], "ablation_sparsity_mean": r["ablation"]["mean"],
                        "ablation_sparsity_random": r["ablation"]["random_median"]})
        rows.append(row)
    if "probes" in report:
        rows.append({"sae": "residual basis (baseline)", "probe_loss": report["probes"]["mean"]["residual"]})
    return rows


def report_figures(report: dict):
    """Plotly figures: probe loss per task, N2G F1 distribution, ablation sparsity distribution."""
    import plotly.graph_objects as go

    figs = []
    if "probes" in report:
        tasks = list(report["probes"]["tasks"])
        fig = go.Figure()
        for basis in report["probes"]["mean"]:
            fig.add_bar(name=basis, x=tasks, y=[report["probes"]["tasks"][t][basis]["loss"] for t in tasks])
        fig.add_scatter(name="base rate", x=tasks, y=[next(iter(report["probes"]["tasks"][t].values()))["prior_loss"]
                                                       for t in tasks], mode="markers", marker_symbol="line-ew-open",
                        marker_size=18)
        fig.update_layout(title="Best 1-D probe cross-entropy per task (lower is better)", barmode="group",
                          yaxis_title="nats", height=420)
        figs.append(fig)
    for key, title, field_ in (("n2g_rows", "N2G F1 per latent (held-out)", "f1"),
                               ("ablation_rows", "Ablation sparsity per ablation (lower = sparser)", "sparsity")):
        fig = go.Figure()
        for name, r in report["saes"].items():
            vals = [row[field_] for row in r.get(key, []) if row[field_] == row[field_]]
            if vals:
                fig.add_histogram(x=vals, name=name, opacity=0.6, nbinsx=30)
        if fig.data:
            fig.update_layout(title=title, barmode="overlay", height=360)
            figs.append(fig)
    return figs


def write_suite_report(report: dict, folder: str | Path) -> Path:
    """report.json and report.html (plotly.js beside it, works offline)."""
    from saelab.pages import summary_table, write_html_page

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    atomic_write_text(folder / "report.json", json.dumps(report, indent=1, default=float))
    tables = [summary_table({k: v for k, v in r.items() if k != "sae"}, r["sae"]) for r in summary_rows(report)]
    write_html_page(folder / "report.html", "saelab evaluation", report_figures(report), tables)
    return folder

