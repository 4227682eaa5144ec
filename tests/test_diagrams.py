"""The notebooks' diagrams are valid SVG with the labels they teach, and escape what they print."""

import xml.etree.ElementTree as ET

from saelab.teach import diagrams


def _texts(d):
    root = ET.fromstring(d.svg)  # raises on malformed markup (an unescaped "<" or "&" would)
    return root, " ".join(t.text or "" for t in root.iter("{http://www.w3.org/2000/svg}text"))


def test_sae_diagram_shows_the_forward_pass_and_auxk_only_when_asked():
    root, text = _texts(diagrams.sae_diagram())
    for label in ("normalise", "− b_pre", "TopK, ReLU", "z @ W_dec", "+ b_pre"):
        assert label in text
    assert "AuxK" not in text and root.get("width")
    _, with_aux = _texts(diagrams.sae_diagram(auxk=True))
    assert "dead latents" in with_aux and "no b_pre" in with_aux and "α = 1/32" in with_aux
    assert diagrams.sae_diagram()._repr_svg_().startswith("<svg")


def test_splice_diagram_and_escaping():
    _, text = _texts(diagrams.splice_diagram())
    assert "error x − x̂" in text and "Δ CE" in text
    assert "&lt;b&gt;" in diagrams._box(0, 0, "<b>")  # labels are escaped
