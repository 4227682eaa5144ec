"""An executed notebook as one self-contained HTML file, for a teacher to hand out: it renders with no network.

nbconvert's HTML loads MathJax and require.js from CDNs, and an executed notebook keeps each plotly figure only
as JSON (`application/vnd.plotly.v1+json`), which nbconvert cannot draw: opened offline, every formula shows as
raw `$...$` and every figure is blank. Here:
- the markdown's `$...$` and `$$...$$` become MathML (`latex2mathml`), which browsers render natively; code
  spans and fenced code keep their dollars;
- each plotly figure becomes a `<div>` drawn by plotly.js, inlined once in the page (the plotly package's own
  copy, ~4.6 MB);
- the CDN `<script>` tags are removed.
"""

from __future__ import annotations

import html
import json
import re

_CODE = re.compile(r"(```.*?```|~~~.*?~~~|`[^`\n]*`)", re.S)
_DISPLAY = re.compile(r"\$\$(.+?)\$\$", re.S)
_INLINE = re.compile(r"(?<![\\$])\$(?!\s)((?:[^$\n]|\n(?!\s*\n))+?)(?<![\s\\])\$(?!\d)")  # one paragraph
_CDN_SCRIPT = re.compile(r"<script[^>]*\bsrc=\"https?://[^\"]*\"[^>]*>\s*</script>", re.I)
_MATHJAX_CONFIG = re.compile(r"<!-- Load mathjax -->.*?<!-- End of mathjax configuration -->", re.S)
PLOTLY_MIME = "application/vnd.plotly.v1+json"


def latex_to_mathml(latex: str, display: bool) -> str:
    """MathML for one formula; on a construct latex2mathml cannot read, the escaped source in <code>."""
    from latex2mathml.converter import convert

    try:
        return convert(latex.strip(), display="block" if display else "inline")
    except Exception:  # noqa: BLE001 - the converter raises many types; a formula it cannot read stays legible
        return f"<code>{html.escape(latex)}</code>"


def markdown_math_to_mathml(source: str) -> str:
    """Replace `$$...$$` and `$...$` in markdown outside code spans and fences with MathML."""
    parts = _CODE.split(source)
    for i in range(0, len(parts), 2):  # even parts are prose, odd ones code
        text = _DISPLAY.sub(lambda m: latex_to_mathml(m.group(1), True), parts[i])
        parts[i] = _INLINE.sub(lambda m: latex_to_mathml(m.group(1), False), text)
    return "".join(parts)


def _plotly_outputs_as_html(nb) -> None:
    import plotly.io as pio

    for cell in nb.cells:
        for out in cell.get("outputs", []):
            data = out.get("data", {})
            if PLOTLY_MIME in data and "text/html" not in data:
                fig = pio.from_json(json.dumps(data[PLOTLY_MIME]))
                data["text/html"] = pio.to_html(fig, include_plotlyjs=False, full_html=False)
                del data[PLOTLY_MIME]


def self_contained_html(nb) -> str:
    """The HTML of executed notebook `nb` (an nbformat node; a copy is converted) that renders offline."""
    import copy

    from nbconvert import HTMLExporter
    from plotly.offline import get_plotlyjs

    nb = copy.deepcopy(nb)
    for cell in nb.cells:
        if cell.cell_type == "markdown":
            cell.source = markdown_math_to_mathml(cell.source)
    _plotly_outputs_as_html(nb)
    page, _ = HTMLExporter().from_notebook_node(nb)
    page = _MATHJAX_CONFIG.sub("", page)
    page = _CDN_SCRIPT.sub("", page)
    plotly_js = f'<script type="text/javascript">{get_plotlyjs()}</script>'
    return page.replace("</head>", plotly_js + "\n</head>", 1)
