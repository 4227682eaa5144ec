"""`saelab dashboard`: latent pages a researcher can open anywhere, and a JSON export Neuronpedia reads.

    OUT/index.html              every exported latent: density, max activation, N2G explanation, a link to its page
    OUT/latents/<i>.html        one latent: top activations in context, activation histogram, density, logit effects,
                                quantile examples, N2G explanation (`dashboard.latent_page_html`)
    OUT/plotly.min.js           one copy of plotly.js for all pages: they open offline, from the file system
    OUT/neuronpedia/batch-0.json  the latents in Neuronpedia's feature-batch format, as SAEDashboard 0.8.0 writes it
                                (`NeuronpediaDashboardBatch.to_dict()`: model_id, layer, sae_set, features[...] with
                                activations, logits, histograms), for Neuronpedia's upload
    OUT/stats/                  the latent statistics the pages come from (`latent_stats`), reused on a rerun

Every token text reaches the HTML through `html.escape`. Fields of Neuronpedia's format saelab does not compute
(neuron alignment, correlated neurons and features, DFA, decoder weight distribution by head) are empty lists, as
SAEDashboard leaves them when their components are off.
"""

from __future__ import annotations

import html
import json
from pathlib import Path

import torch

from saelab.evals.n2g import N2GConfig, build_explanations
from saelab.files import atomic_write_text
from saelab.interp import dashboard as D
from saelab.interp.latent_stats import LatentStats, StatsConfig, latent_stats_for
from saelab.lm.models import LM
from saelab.sae.model import SAE

NEURONPEDIA_EMPTY = ("neuron_alignment_indices", "neuron_alignment_values", "neuron_alignment_l1",
                     "correlated_neurons_indices", "correlated_neurons_l1", "correlated_neurons_pearson",
                     "correlated_features_indices", "correlated_features_l1", "correlated_features_pearson",
                     "decoder_weights_dist", "vector")
"""SAEDashboard's feature fields saelab leaves empty (components it does not compute)."""


def _r(values) -> list[float]:
    """Rounded to 3 decimals, as SAEDashboard's converter writes values."""
    return [round(float(v), 3) for v in values]


def activation_records(stats: LatentStats, latent: int, tokenizer) -> list[dict]:
    """Neuronpedia activation records: the top activations (bin_min -1, bin_max the maximum, bin_contains -1, as
    SAEDashboard marks its top group) and each quantile interval's samples (bin edges, share of the activations)."""
    out = []
    hi = float(stats.max_act_N[latent])
    groups = [(stats.top_pos_NM[latent], -1.0, hi, -1.0)]
    n_int = stats.interval_pos_NIP.shape[1]
    for i in reversed(range(n_int)):
        lo = float(stats.interval_edges_NI[latent, i - 1]) if i else 0.0
        groups.append((stats.interval_pos_NIP[latent, i], lo, float(stats.interval_edges_NI[latent, i]), 1 / n_int))
    for positions, bin_min, bin_max, contains in groups:
        for p in [int(p) for p in positions.flatten().tolist() if p >= 0]:
            tokens, values, focus = D.context_window(stats, p, latent, tokenizer)
            out.append({"bin_min": round(bin_min, 3), "bin_max": round(bin_max, 3), "bin_contains": contains,
                        "tokens": tokens, "values": _r(values), "qualifying_token_index": focus})
    return out


def neuronpedia_feature(lm: LM, sae: SAE, stats: LatentStats, latent: int, dataset: str, k: int = 10) -> dict:
    """One latent as SAEDashboard's `NeuronpediaDashboardFeature.to_dict()` writes it."""
    logits = D.logit_vector(lm, sae, latent)
    top, bot = logits.topk(k), (-logits).topk(k)
    counts, edges = torch.histogram(logits, bins=40)
    centres = (edges[:-1] + edges[1:]) / 2
    act_centres = (stats.bin_edges_B[:-1] * stats.bin_edges_B[1:]).sqrt()
    feature = {"feature_index": int(latent), **{name: [] for name in NEURONPEDIA_EMPTY},
               "neg_str": D.token_texts(lm.tokenizer, bot.indices.tolist()), "neg_values": _r(-bot.values),
               "pos_str": D.token_texts(lm.tokenizer, top.indices.tolist()), "pos_values": _r(top.values),
               "frac_nonzero": float(stats.density_N[latent]),
               "freq_hist_data_bar_values": _r(act_centres), "freq_hist_data_bar_heights": _r(stats.hist_NB[latent]),
               "logits_hist_data_bar_heights": _r(counts), "logits_hist_data_bar_values": _r(centres),
               "n_prompts_total": int(stats.codes.tokens_NT.shape[0]), "n_tokens_in_prompt": int(stats.ctx_len),
               "dataset": dataset, "activations": activation_records(stats, latent, lm.tokenizer)}
    return {key: feature[key] for key in FEATURE_KEYS}


FEATURE_KEYS = ("feature_index", "neuron_alignment_indices", "neuron_alignment_values", "neuron_alignment_l1",
                "correlated_neurons_indices", "correlated_neurons_l1", "correlated_neurons_pearson",
                "correlated_features_indices", "correlated_features_l1", "correlated_features_pearson", "neg_str",
                "neg_values", "pos_str", "pos_values", "frac_nonzero", "freq_hist_data_bar_values",
                "freq_hist_data_bar_heights", "logits_hist_data_bar_heights", "logits_hist_data_bar_values",
                "n_prompts_total", "n_tokens_in_prompt", "dataset", "decoder_weights_dist", "activations", "vector")
"""SAEDashboard 0.8.0's feature keys, in its to_dict() order."""


def neuronpedia_batch(lm: LM, sae: SAE, stats: LatentStats, latents: list[int], dataset: str) -> dict:
    """SAEDashboard's `NeuronpediaDashboardBatch.to_dict()`: model_id, layer, sae_set, sae_id_suffix, features."""
    c = sae.cfg
    return {"model_id": c.model or "", "layer": int(c.layer) if c.layer is not None else 0,
            "sae_set": f"{c.site or 'unknown'}-saelab", "sae_id_suffix": None,
            "features": [neuronpedia_feature(lm, sae, stats, i, dataset) for i in latents]}


def index_html(stats: LatentStats, latents: list[int], explanations: dict[int, str], title: str) -> str:
    rows = "".join(
        f"<tr><td><a href='latents/{i}.html'>{i}</a></td><td>{float(stats.density_N[i]):.4%}</td>"
        f"<td>{float(stats.max_act_N[i]):.3f}</td><td>{html.escape(explanations.get(i, ''))}</td></tr>"
        for i in latents)
    return (f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title></head><body>"
            f"<h1>{html.escape(title)}</h1><p>{len(latents)} latents of {stats.n_latents}; statistics on "
            f"{int(stats.config.get('n_valid_tokens', 0))} tokens of {html.escape(str(stats.config.get('corpus')))}"
            f" ({html.escape(str(stats.config.get('split')))}).</p><table><tr><th>latent</th><th>density</th>"
            f"<th>max activation</th><th>N2G explanation</th></tr>{rows}</table></body></html>")


def export_dashboard(lm: LM, sae: SAE, out: str | Path, latents: list[int] | None = None, n_latents: int = 32,
                     stats_cfg: StatsConfig | None = None, n2g: N2GConfig | None = None, seed: int = 0,
                     progress: bool = True) -> Path:
    """Write OUT (see the module docstring) for `latents`, or for `n_latents` latents that fire, drawn at random."""
    out = Path(out)
    stats_cfg = stats_cfg or StatsConfig()
    (out / "stats").mkdir(parents=True, exist_ok=True)
    stats = latent_stats_for(lm, sae, out / "stats", stats_cfg, progress=progress)
    if latents is None:
        latents = stats.codes.sample_alive(n_latents, seed)
    latents = [D.check_latent(stats, i) for i in latents]
    exps = build_explanations(stats.codes, latents, n2g or N2GConfig(), vocab=len(lm.tokenizer))
    explanations = {i: exps[i].describe(lm.tokenizer) for i in latents}
    from plotly.offline import get_plotlyjs

    (out / "latents").mkdir(parents=True, exist_ok=True)
    if not (out / "plotly.min.js").exists():
        atomic_write_text(out / "plotly.min.js", get_plotlyjs())
    back = "<p><a href='../index.html'>all latents</a></p>"
    for i in latents:
        atomic_write_text(out / "latents" / f"{i}.html",
                          D.latent_page_html(lm, sae, stats, i, explanations[i], "../plotly.min.js", back))
    title = f"saelab dashboard · {sae.cfg.model or 'model'} {sae.cfg.site or ''} layer {sae.cfg.layer}"
    atomic_write_text(out / "index.html", index_html(stats, latents, explanations, title))
    batch = neuronpedia_batch(lm, sae, stats, latents, f"{stats_cfg.corpus} ({stats_cfg.split})")
    (out / "neuronpedia").mkdir(exist_ok=True)
    atomic_write_text(out / "neuronpedia" / "batch-0.json", json.dumps(batch))
    atomic_write_text(out / "explanations.json", json.dumps({str(i): e for i, e in explanations.items()}, indent=1))
    return out
