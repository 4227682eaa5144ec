"""Run reports: a summary table for the terminal, metrics JSON, training curves and offline HTML pages."""

from __future__ import annotations

import html
import json
from pathlib import Path

from .files import atomic_write_text


def write_html_page(path: str | Path, title: str, figures=(), pre_blocks=()) -> Path:
    """An HTML page of plotly figures (and preformatted text blocks, escaped), written atomically, with
    plotly.js written once beside it so the page works offline."""
    from plotly.offline import get_plotlyjs

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if not (path.parent / "plotly.min.js").exists():
        atomic_write_text(path.parent / "plotly.min.js", get_plotlyjs())
    body = "".join(f"<pre>{html.escape(b)}</pre>" for b in pre_blocks)
    body += "".join(f.to_html(full_html=False, include_plotlyjs=False) for f in figures)
    atomic_write_text(path, f"<html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
                            f"<script src='plotly.min.js'></script></head><body><h1>{html.escape(title)}</h1>"
                            f"{body}</body></html>")
    return path


def summary_table(rows: dict[str, object], title: str = "saelab summary") -> str:
    """A two-column plain-text table."""
    width = max(len(k) for k in rows) + 2
    lines = [title, "-" * (width + 24)]
    for k, v in rows.items():
        if isinstance(v, float):
            v = f"{v:.4g}"
        lines.append(f"{k:<{width}}{v}")
    return "\n".join(lines)


def training_curves(log_path: str | Path):
    """A plotly figure of the training log: normalized MSE (train and held-out), L0, dead fraction."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    recs = [json.loads(line) for line in Path(log_path).read_text().splitlines() if line.strip()]
    train = [r for r in recs if "nmse" in r]
    evals = [r for r in recs if "eval_nmse" in r]
    fig = make_subplots(rows=1, cols=3, subplot_titles=("normalized MSE", "L0", "dead latents (train tracker)"))
    fig.add_trace(go.Scatter(x=[r["tokens"] for r in train], y=[r["nmse"] for r in train], name="train nmse"), 1, 1)
    fig.add_trace(go.Scatter(x=[r["tokens"] for r in evals], y=[r["eval_nmse"] for r in evals], name="held-out nmse",
                             mode="lines+markers"), 1, 1)
    if any("aux" in r for r in train):
        fig.add_trace(go.Scatter(x=[r["tokens"] for r in train], y=[r.get("aux") for r in train],
                                 name="AuxK loss"), 1, 1)
    fig.add_trace(go.Scatter(x=[r["tokens"] for r in train], y=[r["l0"] for r in train], name="L0"), 1, 2)
    fig.add_trace(go.Scatter(x=[r["tokens"] for r in train], y=[r["dead_frac"] for r in train], name="dead"), 1, 3)
    fig.update_xaxes(title_text="tokens")
    fig.update_yaxes(type="log", row=1, col=1)
    fig.update_layout(height=380, width=1200, title="training curves")
    return fig


def write_report(folder: str | Path, metrics: dict, log_path: str | Path | None = None) -> Path:
    """metrics.json plus curves.html (plotly.js written beside it once, so the report works offline)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    atomic_write_text(folder / "metrics.json", json.dumps(metrics, indent=2))
    if log_path and Path(log_path).exists():
        write_html_page(folder / "curves.html", "saelab training curves", [training_curves(log_path)])
    return folder
