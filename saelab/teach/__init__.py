"""Stage 8, teaching: what the notebooks need that is not the library itself.

    toy         synthetic activations with known features (notebook 00)
    exercises/  the notebooks' exercise checks, their reference solutions and `todo` stubs
    diagrams    the SAE, AuxK and the splice drawn as inline SVG for the notebooks
    handout     an executed notebook as one HTML file that renders offline (MathML formulas, inlined plotly.js)
    kit         the class kit: the series' caches and SAEs in one checksummed archive (`saelab course pack/unpack`)
    slides      the lecture outlines as offline HTML slides (`saelab course slides`)
    syllabus    every exercise's heading and each notebook's stated times, read from the notebooks

May import: every earlier stage and the top-level helpers.
"""
