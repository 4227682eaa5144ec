"""Stage 8, teaching: what the notebooks need that is not the library itself.

    toy         synthetic activations with known features (notebook 00)
    exercises/  the notebooks' exercise checks, their reference solutions and `todo` stubs

May import: every earlier stage and the top-level helpers.
"""
