"""Handouts: an executed notebook's HTML keeps no TeX, no CDN script and no undrawable plotly JSON."""

import re

import nbformat

from saelab.teach.handout import markdown_math_to_mathml, self_contained_html


def test_math_becomes_mathml_outside_code_only():
    out = markdown_math_to_mathml("costs $5 and $6; `$HOME`; $x_i$ and\n$$\\sum_i z_i$$\n```\necho $PATH $x$\n```")
    assert out.count("<math") == 2 and 'display="block"' in out and 'display="inline"' in out
    assert "$5 and $6" in out and "`$HOME`" in out and "echo $PATH $x$" in out  # currency and code untouched
    two_lines = markdown_math_to_mathml("$L = e^{a}\n  + c$ done")
    assert two_lines.count("<math") == 1 and two_lines.endswith(" done")
    assert markdown_math_to_mathml("$a$\n\nb$").count("<math") == 1  # a formula never spans a paragraph


def test_handout_has_no_cdn_scripts_and_draws_plotly_outputs():
    fig_json = {"data": [{"type": "scatter", "x": [1, 2], "y": [2, 1]}], "layout": {}}
    nb = nbformat.v4.new_notebook(cells=[
        nbformat.v4.new_markdown_cell("A law $L = a n^{-b} + c$."),
        nbformat.v4.new_code_cell("fig", outputs=[nbformat.v4.new_output(
            "display_data", data={"application/vnd.plotly.v1+json": fig_json})])])
    page = self_contained_html(nb)
    assert not re.findall(r"<script[^>]*src=\"https?://", page)  # MathJax and require.js from CDNs: gone
    assert "MathJax.Hub" not in page and "<math" in page
    from plotly.offline import get_plotlyjs

    assert page.count("Plotly.newPlot") >= 1 and get_plotlyjs()[-2000:] in page  # drawn by the inlined plotly.js
    assert nb.cells[1].outputs[0]["data"].get("text/html") is None  # the caller's notebook is not changed
