"""A training run's report: metrics.json and curves.html (the page and table helpers are `saelab.pages`)."""

from __future__ import annotations

import json
from pathlib import Path

from saelab.files import atomic_write_text
from saelab.pages import write_html_page


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
