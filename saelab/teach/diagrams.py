"""Diagrams the notebooks show, drawn as inline SVG (no image files, no network): the TopK SAE, AuxK on the
residual, and the splice that puts an SAE into the language model.

Each function returns an `SVGDiagram`, which a notebook displays by ending a cell with it (`_repr_svg_`) and a
test can parse as XML (`.svg`). Every label is escaped.
"""

from __future__ import annotations

from dataclasses import dataclass
from html import escape

_BOX_W, _BOX_H, _GAP, _PAD = 118, 46, 34, 16


@dataclass
class SVGDiagram:
    svg: str

    def _repr_svg_(self) -> str:
        return self.svg


def _box(x: float, y: float, label: str, sub: str = "", fill: str = "#eef3fb") -> str:
    text = f'<text x="{x + _BOX_W / 2}" y="{y + (19 if sub else 28)}" text-anchor="middle" font-size="13">' \
           f"{escape(label)}</text>"
    if sub:
        text += f'<text x="{x + _BOX_W / 2}" y="{y + 36}" text-anchor="middle" font-size="11" fill="#555">' \
                f"{escape(sub)}</text>"
    return (f'<rect x="{x}" y="{y}" width="{_BOX_W}" height="{_BOX_H}" rx="7" fill="{fill}" stroke="#456"/>'
            + text)


def _arrow(x1: float, y1: float, x2: float, y2: float, label: str = "") -> str:
    out = (f'<line x1="{x1}" y1="{y1}" x2="{x2}" y2="{y2}" stroke="#333" stroke-width="1.5" '
           'marker-end="url(#head)"/>')
    if label:
        out += (f'<text x="{(x1 + x2) / 2}" y="{(y1 + y2) / 2 - 6}" text-anchor="middle" font-size="11" '
                f'fill="#333">{escape(label)}</text>')
    return out


def _note(y: float, text: str, fill: str = "#333") -> str:
    return f'<text x="16" y="{y:.0f}" font-size="12" fill="{fill}">{escape(text)}</text>'


def _chain(steps: list[tuple[str, str]], y: float, fills: dict[int, str] | None = None) -> tuple[str, list[float]]:
    """Boxes left to right at height y joined by arrows; returns the markup and each box's left x."""
    parts, xs = [], []
    for i, (label, sub) in enumerate(steps):
        x = _PAD + i * (_BOX_W + _GAP)
        xs.append(x)
        parts.append(_box(x, y, label, sub, (fills or {}).get(i, "#eef3fb")))
        if i:
            parts.append(_arrow(x - _GAP, y + _BOX_H / 2, x - 2, y + _BOX_H / 2))
    return "".join(parts), xs


def _svg(width: float, height: float, body: str, title: str) -> SVGDiagram:
    defs = ('<defs><marker id="head" markerWidth="8" markerHeight="8" refX="7" refY="4" orient="auto">'
            '<path d="M0,0 L8,4 L0,8 z" fill="#333"/></marker></defs>')
    return SVGDiagram(f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
                      f'viewBox="0 0 {width} {height}" font-family="sans-serif" role="img">'
                      f"<title>{escape(title)}</title>{defs}{body}</svg>")


def sae_diagram(auxk: bool = False) -> SVGDiagram:
    """The TopK SAE of Gao et al. (2024): normalise, subtract b_pre, encode, TopK, decode, add b_pre. With
    `auxk`, the AuxK branch below it: the top-k_aux dead latents reconstruct the residual x - x̂."""
    steps = [("x", "activation [d]"), ("normalise", "centre, unit norm"), ("− b_pre", ""),
             ("W_enc, + b_enc", "pre-activations [n]"), ("TopK, ReLU", "k of n non-zero: z"),
             ("z @ W_dec", "unit-norm rows"), ("+ b_pre", "x̂: reconstruction")]
    body, xs = _chain(steps, 20, fills={4: "#fde9c8"})
    width = xs[-1] + _BOX_W + _PAD
    height = 20 + _BOX_H + 30
    if auxk:
        y = 20 + _BOX_H + 70
        aux = [("dead latents", "not fired for long"), ("top-k_aux", "of their pre-activations"),
               ("@ W_dec", "no b_pre"), ("ê", "fits e = x − x̂")]
        x0 = xs[3]
        parts = []
        for i, (label, sub) in enumerate(aux):
            x = x0 + i * (_BOX_W + _GAP)
            parts.append(_box(x, y, label, sub, "#e6f4ea"))
            if i:
                parts.append(_arrow(x - _GAP, y + _BOX_H / 2, x - 2, y + _BOX_H / 2))
        parts.append(_arrow(xs[3] + _BOX_W / 2, 20 + _BOX_H, x0 + _BOX_W / 2, y - 2, "pre-activations"))
        parts.append(_note(y + _BOX_H + 22, "AuxK: loss += α · nMSE(ê, e), α = 1/32, e detached", "#2d6a3e"))
        body += "".join(parts)
        height = y + _BOX_H + 34
    return _svg(width, height, body, "TopK sparse autoencoder" + (" with AuxK" if auxk else ""))


def splice_diagram() -> SVGDiagram:
    """The splice (paper section 4.1): the SAE's reconstruction replaces the activation at one layer; with the
    error term added back the model is unchanged, without it the loss rises by Δ CE."""
    steps = [("tokens", ""), ("blocks 0..L", "the LM up to the site"), ("SAE", "x → x̂"),
             ("blocks L+1..", "the rest of the LM"), ("next-token loss", "spliced CE")]
    body, xs = _chain(steps, 20, fills={2: "#fde9c8"})
    y = 20 + _BOX_H + 50
    body += _box(xs[2], y, "error x − x̂", "add back: no change", "#f3e8fd")
    body += _arrow(xs[2] + _BOX_W / 2, y, xs[2] + _BOX_W / 2, 20 + _BOX_H + 2)
    body += _note(y + _BOX_H + 22, "Δ CE = CE(spliced) − CE(clean); loss recovered compares it with zero- and "
                  "mean-ablation")
    return _svg(xs[-1] + _BOX_W + _PAD, y + _BOX_H + 34, body, "splicing an SAE into the language model")
