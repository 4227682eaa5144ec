"""The package's version (a helper every stage may read; `saelab.__version__` is this one)."""

__version__ = "0.3.0"
