"""Stage 8, teaching: what the notebooks need that is not the library itself.

    toy         synthetic activations with known features (notebook 00)
    exercises/  the notebooks' exercise checks, their reference solutions and `todo` stubs
    diagrams    the SAE, AuxK and the splice drawn as inline SVG for the notebooks
    handout     an executed notebook as one HTML file that renders offline (MathML formulas, inlined plotly.js)

May import: every earlier stage and the top-level helpers.
"""
