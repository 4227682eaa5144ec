"""The explorer's content as pure functions (figures, HTML, tables) that tests and the static export call.

Every token that reaches HTML goes through `html.escape` (text and attribute values alike).
"""

from __future__ import annotations

import html
import math

import torch

from saelab.interp.latent_stats import LatentStats
from saelab.lm.models import LM
from saelab.sae.model import SAE

DENSE_THRESHOLD = 0.1
"""A latent firing on more than this fraction of tokens is called dense."""


# ---- token rendering --------------------------------------------------------------------------------
def token_texts(tokenizer, ids) -> list[str]:
    """The text of each token id, as the model's tokenizer decodes it alone."""
    return [tokenizer.decode([int(t)]) for t in ids]


def _visible(text: str) -> str:
    return text.replace("\n", "⏎").replace("\t", "⇥") or "∅"


def highlight_html(tokens: list[str], values: list[float], vmax: float, focus: int | None = None) -> str:
    """One line of tokens, each shaded by its activation (0..vmax), value on hover; `focus` underlined."""
    vmax = vmax if vmax > 0 else 1.0
    spans = []
    for i, (tok, v) in enumerate(zip(tokens, values)):
        alpha = max(0.0, min(1.0, v / vmax))
        style = f"background:rgba(255,120,0,{alpha:.2f});"
        if i == focus:
            style += "border-bottom:2px solid #333;"
        title = html.escape(f"{tok!r}: {v:.3f}", quote=True)
        spans.append(f'<span class="sl-tok" style="{style}" title="{title}">{html.escape(_visible(tok))}</span>')
    return "<div class='sl-line' style='font-family:monospace;white-space:pre-wrap;line-height:1.7'>" + \
        "".join(spans) + "</div>"


def context_window(stats: LatentStats, flat_pos: int, latent: int, tokenizer, width: int = 24):
    """(token texts, the latent's activation on each, the index of `flat_pos` among them): `width` tokens before the
    position and 3 after, within its context."""
    T = stats.ctx_len
    c, t = divmod(int(flat_pos), T)
    lo, hi = max(0, t - width), min(T, t + 4)
    ids = stats.codes.tokens_NT[c, lo:hi].tolist()
    hit = (stats.codes.idx_NTK[c, lo:hi] == latent) & (stats.codes.acts_NTK[c, lo:hi] > 0)
    vals = (stats.codes.acts_NTK[c, lo:hi].float() * hit).sum(-1).tolist()
    return token_texts(tokenizer, ids), vals, t - lo


def examples_html(stats: LatentStats, latent: int, tokenizer, positions: torch.Tensor, title: str) -> str:
    """Rows of highlighted contexts around each flat position (ignoring -1 padding)."""
    vmax = float(stats.max_act_N[latent])
    rows = []
    for p in [int(p) for p in positions.flatten().tolist() if p >= 0]:
        toks, vals, focus = context_window(stats, p, latent, tokenizer)
        rows.append(f"<div style='margin:2px 0'><b>{vals[focus]:.2f}</b> " +
                    highlight_html(toks, vals, vmax, focus) + "</div>")
    body = "".join(rows) or "<i>no examples: this latent never fired on the statistics' text</i>"
    return f"<h4>{html.escape(title)}</h4>{body}"


def top_examples_html(stats: LatentStats, latent: int, tokenizer, n: int = 10) -> str:
    return examples_html(stats, latent, tokenizer, stats.top_pos_NM[latent, :n], "Top activations")


def quantile_examples_html(stats: LatentStats, latent: int, tokenizer) -> str:
    parts = []
    n_int = stats.interval_pos_NIP.shape[1]
    for i in reversed(range(n_int)):
        pos = stats.interval_pos_NIP[latent, i]
        if bool((pos >= 0).any()):
            hi = float(stats.interval_edges_NI[latent, i])
            parts.append(examples_html(stats, latent, tokenizer, pos,
                                       f"Interval {i + 1}/{n_int} of the activation ranks (values up to {hi:.2f})"))
    return "".join(parts) or "<i>no quantile samples: this latent never fired on the statistics' text</i>"


# ---- figures ----------------------------------------------------------------------------------------
def density_figure(stats: LatentStats, selected: int | None = None):
    """Histogram of log10 activation density over all latents; dead (never fired) and dense latents counted."""
    import plotly.graph_objects as go

    d = stats.density_N
    alive = d > 0
    dead = int((~alive).sum())
    dense = int((d > DENSE_THRESHOLD).sum())
    fig = go.Figure(go.Histogram(x=torch.log10(d[alive]).tolist(), nbinsx=50, name="latents", marker_color="#4c78a8"))
    fig.add_vline(x=math.log10(DENSE_THRESHOLD), line_dash="dash", line_color="red",
                  annotation_text=f"dense (>{DENSE_THRESHOLD:.0%}): {dense}")
    if selected is not None and 0 <= selected < len(d) and d[selected] > 0:
        fig.add_vline(x=math.log10(float(d[selected])), line_color="orange", annotation_text=f"#{selected}",
                      annotation_position="bottom right")
    fig.update_layout(title=f"Activation density of {len(d)} latents · dead (never fired): {dead}",
                      xaxis_title="log10(fraction of tokens where the latent fires)", yaxis_title="latents",
                      height=300, width=520, margin=dict(t=50, b=40, l=50, r=20), showlegend=False)
    return fig


def activation_figure(stats: LatentStats, latent: int):
    """Histogram of one latent's activations (log-spaced bins), its density in the title."""
    import plotly.graph_objects as go

    edges = stats.bin_edges_B
    centers = ((edges[:-1] * edges[1:]).sqrt()).tolist()
    counts = stats.hist_NB[latent].tolist()
    dens = float(stats.density_N[latent])
    title = f"Latent {latent} · density {dens:.3%}" if dens > 0 else f"Latent {latent} · dead (never fired)"
    fig = go.Figure(go.Bar(x=centers, y=counts, marker_color="#f58518", name="activations"))
    fig.update_layout(title=title, xaxis_title="activation", xaxis_type="log", yaxis_title="tokens", height=300,
                      margin=dict(t=50, b=40, l=50, r=20), showlegend=False)
    return fig


# ---- logit effects ----------------------------------------------------------------------------------
def _final_norm(model):
    base = getattr(model, "base_model", model)
    for name in ("norm", "ln_f", "final_layernorm", "final_layer_norm"):
        mod = getattr(base, name, None)
        if mod is not None:
            return mod
    return None


@torch.no_grad()
def logit_vector(lm: LM, sae: SAE, latent: int) -> torch.Tensor:
    """[vocab] the latent's decoder row read through the final norm's weight and the unembedding (its direct
    effect on the logits, ignoring the norm's data-dependent scale)."""
    d = sae.W_dec[latent].detach().float().cpu()
    norm = _final_norm(lm.model)
    if norm is not None:
        if isinstance(norm, torch.nn.LayerNorm):
            d = d - d.mean()
        w = getattr(norm, "weight", None)
        if w is not None:
            d = d * w.detach().float().cpu()
    W_U = lm.model.get_output_embeddings().weight.detach().float().cpu()
    return W_U @ d


@torch.no_grad()
def logit_effects(lm: LM, sae: SAE, latent: int, k: int = 10) -> dict:
    """Top +k / -k tokens of `logit_vector`: what the latent promotes and suppresses directly."""
    logits = logit_vector(lm, sae, latent)
    top = logits.topk(k)
    bot = (-logits).topk(k)
    tok = lm.tokenizer
    return {"positive": [(tok.decode([int(i)]), float(v)) for v, i in zip(top.values, top.indices)],
            "negative": [(tok.decode([int(i)]), -float(v)) for v, i in zip(bot.values, bot.indices)],
            "positive_ids": top.indices.tolist(), "negative_ids": bot.indices.tolist()}


def logit_effects_html(effects: dict) -> str:
    def col(items, color):
        return "".join(f"<div><code style='background:{color}'>{html.escape(_visible(t))}</code> {v:+.3f}</div>"
                       for t, v in items)
    return ("<div style='display:flex;gap:2em'><div><h4>Promotes</h4>" + col(effects["positive"], "#d4f4d4") +
            "</div><div><h4>Suppresses</h4>" + col(effects["negative"], "#f8d4d4") + "</div></div>")


# ---- search and live text ---------------------------------------------------------------------------
def latents_for_token(stats: LatentStats, tokenizer, text: str, n: int = 10) -> list[tuple[int, float]]:
    """Latents that fire most (mean activation) on tokens whose text contains `text` (case-insensitive)."""
    text = text.strip().lower()
    if not text:
        return []
    ids = torch.unique(stats.codes.tokens_NT)
    match = torch.tensor([text in tokenizer.decode([int(t)]).lower() for t in ids.tolist()], dtype=torch.bool)
    wanted = ids[match]
    if len(wanted) == 0:
        return []
    where = torch.isin(stats.codes.tokens_NT, wanted) & stats.codes.valid_NT
    if not bool(where.any()):
        return []
    acts = stats.codes.acts_NTK[where].float()
    idx = stats.codes.idx_NTK[where]
    sums = torch.zeros(stats.n_latents).index_add_(0, idx.flatten(), acts.flatten())
    mean = sums / int(where.sum())
    top = mean.topk(min(n, stats.n_latents))
    return [(int(i), float(v)) for v, i in zip(top.values, top.indices) if v > 0]


@torch.no_grad()
def encode_text(lm: LM, sae: SAE, text: str, max_tokens: int = 128) -> tuple[list[str], torch.Tensor]:
    """Run the LM and the SAE on `text`: (token texts, dense activations [T, n]). Empty text -> ([], [0, n])."""
    from saelab.evals.splice import SpliceSite
    from saelab.lm.sites import run_to_site
    from saelab.sae.model import encode_dense

    ids = lm.tokenizer(text, add_special_tokens=False)["input_ids"][:max_tokens] if text.strip() else []
    if not ids:
        return [], torch.zeros(0, sae.cfg.n_latents)
    where = SpliceSite.of(sae, lm)
    x = run_to_site(lm, torch.tensor([ids]), where.source, where.layer)[0].float().cpu()
    dense = encode_dense(sae, x)
    dense[: where.exclude_first] = 0.0  # position 0 is an attention sink the SAE was not trained on
    return token_texts(lm.tokenizer, ids), dense


def strongest_latents(dense_TN: torch.Tensor, n: int = 10) -> list[tuple[int, float]]:
    """Latents with the largest max activation over a text."""
    if dense_TN.numel() == 0:
        return []
    m = dense_TN.max(0).values
    top = m.topk(min(n, len(m)))
    return [(int(i), float(v)) for v, i in zip(top.values, top.indices) if v > 0]


def live_text_html(tokens: list[str], dense_TN: torch.Tensor, latent: int, vmax: float | None = None) -> str:
    if not tokens:
        return "<i>type some text and press Run</i>"
    vals = dense_TN[:, latent].tolist()
    vmax = vmax if vmax else max(max(vals), 1e-6)
    return highlight_html(tokens, vals, vmax)


def latent_header_html(stats: LatentStats, latent: int, explanation: str | None = None) -> str:
    d = float(stats.density_N[latent])
    kind = "dead (never fired on the statistics' text)" if d == 0 else \
        ("dense" if d > DENSE_THRESHOLD else "sparse")
    parts = [f"<h3>Latent {latent} <small>of {stats.n_latents}</small></h3>",
             f"<div>density {d:.4%} · {kind} · mean activation {float(stats.mean_act_N[latent]):.3f} · "
             f"max {float(stats.max_act_N[latent]):.3f}</div>"]
    if explanation:
        parts.append(f"<div><b>N2G explanation:</b> {html.escape(explanation)}</div>")
    return "".join(parts)


def check_latent(stats: LatentStats, latent) -> int:
    """The latent index as an int, or a ValueError naming the valid range."""
    try:
        i = int(latent)
    except (TypeError, ValueError):
        raise ValueError(f"latent must be an integer, got {latent!r}") from None
    if not 0 <= i < stats.n_latents:
        raise ValueError(f"latent {i} is out of range: this SAE has latents 0..{stats.n_latents - 1}")
    return i


def latent_page_html(lm: LM, sae: SAE, stats: LatentStats, latent: int, explanation: str | None = None,
                     plotly_src: str | None = None, header: str = "") -> str:
    """A self-contained HTML dashboard of one latent: for places where widgets do not render. plotly.js is inlined,
    or loaded from `plotly_src` (a relative path: many pages share one copy, `saelab.interp.export`); `header`:
    HTML put first (e.g. a link back to an index)."""
    latent = check_latent(stats, latent)
    figs = [activation_figure(stats, latent), density_figure(stats, latent)]
    plots = "".join(f.to_html(full_html=False, include_plotlyjs="inline" if i == 0 and not plotly_src else False)
                    for i, f in enumerate(figs))
    body = (header + latent_header_html(stats, latent, explanation) + plots +
            logit_effects_html(logit_effects(lm, sae, latent)) +
            top_examples_html(stats, latent, lm.tokenizer) + quantile_examples_html(stats, latent, lm.tokenizer))
    title = html.escape(f"saelab · latent {latent}")
    script = f"<script src='{html.escape(plotly_src, quote=True)}'></script>" if plotly_src else ""
    return (f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{title}</title>{script}</head>"
            f"<body>{body}</body></html>")


def export_latent_html(lm: LM, sae: SAE, stats: LatentStats, latent: int, path, explanation: str | None = None):
    """Write `latent_page_html` to `path` atomically; returns the path."""
    from pathlib import Path

    from saelab.files import atomic_write_text

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, latent_page_html(lm, sae, stats, latent, explanation))
    return path


# ---- steering ---------------------------------------------------------------------------------------
def steering_edit(stats: LatentStats, latent: int, mode: str, strength: float):
    """The explorer's edit: 'add' steers by `strength` times the latent's largest activation on the
    statistics' text, 'clamp' sets it to that value at every position (`saelab.interp.steering`)."""
    from saelab.interp.steering import clamp, steer

    value = float(strength) * max(float(stats.max_act_N[latent]), 1e-6)
    if mode == "add":
        return steer(latent, value), f"latent {latent} + {value:.3g} (x{strength:g} its max activation)"
    if mode == "clamp":
        return clamp(latent, value), f"latent {latent} clamped to {value:.3g} (x{strength:g} its max activation)"
    raise ValueError(f"steering mode must be 'add' or 'clamp', got {mode!r}")


def steering_html(prompt: str, plain: str, steered: str, label: str) -> str:
    """The prompt, then the unedited and the steered continuations side by side (all text escaped)."""
    def col(title, text, color):
        return (f"<div style='flex:1;padding:6px;background:{color}'><b>{html.escape(title)}</b>"
                f"<div style='white-space:pre-wrap'><i>{html.escape(prompt)}</i>{html.escape(text)}</div></div>")
    return ("<div class='saelab-steering' style='display:flex;gap:1em'>" + col("unedited", plain, "#f4f4f4") +
            col(label, steered, "#e8f0ff") + "</div>")
