"""Output a person reads: offline HTML pages of plotly figures, and plain-text tables for the terminal."""

from __future__ import annotations

import html
from pathlib import Path

from saelab.files import atomic_write_text


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
