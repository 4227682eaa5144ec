"""Slides a teacher can project: one self-contained HTML file a meeting, that opens offline.

Built from the lecture outlines in `saelab/teach/lectures/meeting-N.md` (markdown, one slide per `---` line; the
first `# ` heading titles the deck). A line of its own may hold a directive:

    {{diagram: sae}}            the package's diagrams (inline SVG): sae, sae_auxk, splice
    {{figure: 02_train_topk 3}}  the 3rd plotly figure of notebook 02 as executed by `scripts/run_series.py`
                                 (runs/series/02_train_topk.ipynb); absent, a note says how to make it

Formulas become MathML, figures are drawn by plotly.js (inlined once, only when a deck has figures); the arrow keys,
space and PageUp/PageDown move between slides; printing gives one slide a page.
"""

from __future__ import annotations

import html
import json
import re
from pathlib import Path

from saelab.teach import diagrams
from saelab.teach.handout import PLOTLY_MIME, markdown_math_to_mathml

LECTURES = Path(__file__).with_name("lectures")
_DIRECTIVE = re.compile(r"^\{\{\s*(diagram|figure):\s*([^}]*?)\s*\}\}\s*$", re.M)
_DIAGRAMS = {"sae": lambda: diagrams.sae_diagram(), "sae_auxk": lambda: diagrams.sae_diagram(auxk=True),
             "splice": diagrams.splice_diagram}
_MATH = re.compile(r"(\$\$.+?\$\$|(?<![\\$])\$(?!\s)[^$\n]+?(?<![\s\\])\$(?!\d))", re.S)

_STYLE = """
html { scroll-snap-type: y mandatory; }
body { margin: 0; font-family: system-ui, sans-serif; background: #fafafa; color: #1c2430; }
section.slide { box-sizing: border-box; min-height: 100vh; scroll-snap-align: start; padding: 5vh 7vw;
  border-bottom: 1px solid #ddd; display: flex; flex-direction: column; justify-content: center; font-size: 2.6vh; }
section.slide h1 { font-size: 5.5vh; margin: 0 0 3vh; } section.slide h2 { font-size: 4.4vh; margin: 0 0 2.5vh; }
section.slide li { margin: 0.6vh 0; } code { background: #eef1f5; padding: 0 .25em; border-radius: 3px; }
.figure, .diagram { margin: 2vh 0; max-width: 100%; overflow-x: auto; } .missing { color: #8a5a00; }
.footer { position: fixed; right: 2vw; bottom: 1.5vh; font-size: 1.6vh; color: #888; }
@media print { section.slide { page-break-after: always; min-height: auto; border: none; } .footer { display: none; } }
"""
_SCRIPT = """
document.addEventListener('keydown', function (e) {
  var next = ['ArrowRight', 'ArrowDown', 'PageDown', ' '].indexOf(e.key) >= 0;
  var prev = ['ArrowLeft', 'ArrowUp', 'PageUp'].indexOf(e.key) >= 0;
  if (!next && !prev) return;
  var slides = Array.prototype.slice.call(document.querySelectorAll('section.slide'));
  var y = window.scrollY + 5, i = 0;
  while (i < slides.length - 1 && slides[i + 1].offsetTop <= y) i++;
  var j = Math.max(0, Math.min(slides.length - 1, i + (next ? 1 : -1)));
  slides[j].scrollIntoView(); e.preventDefault();
});
"""


def notebook_figures(executed: Path) -> list[str]:
    """The plotly figures of an executed notebook, in order, as HTML divs (plotly.js not included)."""
    import nbformat
    import plotly.io as pio

    nb = nbformat.read(executed, as_version=4)
    found = []
    for cell in nb.cells:
        for out in cell.get("outputs", []):
            data = out.get("data", {})
            if PLOTLY_MIME in data:
                fig = pio.from_json(json.dumps(data[PLOTLY_MIME]))
                found.append(pio.to_html(fig, include_plotlyjs=False, full_html=False))
    return found


def _markdown(text: str) -> str:
    """Markdown to HTML with `$...$` formulas as MathML (protected from the markdown parser)."""
    import mistune

    formulas: list[str] = []

    def hide(m):
        formulas.append(m.group(0))
        return f"MATHSLOT{len(formulas) - 1}X"

    body = mistune.html(_MATH.sub(hide, text))
    return re.sub(r"MATHSLOT(\d+)X", lambda m: markdown_math_to_mathml(formulas[int(m.group(1))]), body)


def _directive(kind: str, arg: str, series: Path, cache: dict) -> str:
    if kind == "diagram":
        if arg not in _DIAGRAMS:
            raise ValueError(f"unknown diagram {arg!r} in a lecture outline; known: {sorted(_DIAGRAMS)}")
        return f'<div class="diagram">{_DIAGRAMS[arg]().svg}</div>'
    name, _, number = arg.partition(" ")
    if not number.strip().isdigit():
        raise ValueError(f"figure directive {arg!r}: write {{{{figure: NOTEBOOK_STEM N}}}}, e.g. 02_train_topk 3")
    path = series / f"{name}.ipynb"
    if not path.exists():
        return (f'<p class="missing">[figure {html.escape(arg)}: run <code>scripts/run_series.py</code> to execute '
                f"the notebooks into {html.escape(str(series))}, then build the slides again]</p>")
    if path not in cache:
        cache[path] = notebook_figures(path)
    figures, i = cache[path], int(number)
    if not 1 <= i <= len(figures):
        return f'<p class="missing">[figure {html.escape(arg)}: the executed notebook has {len(figures)} figures]</p>'
    return f'<div class="figure">{figures[i - 1]}</div>'


def render_deck(outline: str, series: Path) -> tuple[str, str, int]:
    """(title, HTML page, number of slides) of one lecture outline."""
    from plotly.offline import get_plotlyjs

    title_match = re.search(r"^# (.+)$", outline, flags=re.M)
    title = title_match.group(1).strip() if title_match else "saelab"
    cache: dict = {}
    slides = [s.strip() for s in re.split(r"^---\s*$", outline, flags=re.M) if s.strip()]
    sections = []
    for i, text in enumerate(slides, 1):
        parts, last = [], 0
        for m in _DIRECTIVE.finditer(text):
            parts.append(_markdown(text[last:m.start()]))
            parts.append(_directive(m.group(1), m.group(2), series, cache))
            last = m.end()
        parts.append(_markdown(text[last:]))
        sections.append(f'<section class="slide" id="s{i}">{"".join(parts)}</section>')
    plotly = f"<script>{get_plotlyjs()}</script>" if any(cache.values()) else ""
    page = (f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>'
            f"<style>{_STYLE}</style>{plotly}</head><body>{''.join(sections)}"
            f'<div class="footer">{html.escape(title)} · arrow keys move</div><script>{_SCRIPT}</script>'
            "</body></html>")
    return title, page, len(slides)


def build_slides(out_dir: str | Path, series: str | Path = "runs/series") -> list[Path]:
    """Write one HTML deck per lecture outline into `out_dir`; returns their paths."""
    out_dir, series = Path(out_dir), Path(series)
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for outline in sorted(LECTURES.glob("meeting-*.md")):
        _, page, _ = render_deck(outline.read_text(encoding="utf-8"), series)
        target = out_dir / f"{outline.stem}.html"
        tmp = target.with_suffix(".html.tmp")
        tmp.write_text(page, encoding="utf-8")
        tmp.replace(target)
        written.append(target)
    return written
