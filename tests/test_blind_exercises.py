"""Wrong implementations written blind: from each exercise's statement alone, by someone who had read neither its
check nor these tests (the way a student meets it). Every wrong one must be rejected with an AssertionError (the
check's message names the mistake); each writer's honest correct attempt must pass, or the statement is not enough
to write a correct answer from.

tests/blind/<writer>/ex_N_M.py holds `CANDIDATES = [(name, object, mistake, correct), ...]`.
"""

import importlib.util
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from saelab.lm.sites import find_blocks
from saelab.teach import exercises as E

BLIND = Path(__file__).with_name("blind")
SLOW = {"2.6", "3.1"}


def _load(path: Path):
    spec = importlib.util.spec_from_file_location(f"blind_{path.parent.name}_{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.CANDIDATES


def _cases():
    out = []
    for path in sorted(BLIND.glob("*/ex_*.py")):
        exercise = path.stem[3:].replace("_", ".")
        for name, _, mistake, correct in _load(path):
            marks = [pytest.mark.slow] if exercise in SLOW else []
            marks += [pytest.mark.assets] if exercise == "3.1" else []
            out.append(pytest.param(path, name, exercise, correct, id=f"{exercise}-{path.parent.name}-{name}",
                                    marks=marks))
    return out


@pytest.fixture(autouse=True)
def _learner_mode(monkeypatch):
    monkeypatch.delenv("SAELAB_SOLUTIONS", raising=False)


@pytest.fixture(scope="module")
def toy_x():
    from saelab.teach.toy import ToyConfig, make_toy

    return make_toy(ToyConfig(n_samples=16384)).x_BD


def _clear(lm):
    for blk in find_blocks(lm.model):
        blk._forward_hooks.clear()
        blk._forward_pre_hooks.clear()


def _grade(exercise: str, obj, request):
    """Run exercise `exercise`'s check on the candidate `obj` the way its notebook calls it."""
    fns = obj if isinstance(obj, tuple) else (obj,)
    if exercise == "1.1":
        return E.check_residual_after_block(*fns, request.getfixturevalue("tiny_lm"), 2)
    if exercise == "2.6":
        return E.check_training(*fns, request.getfixturevalue("toy_x"), steps=150, multi_topk_steps=150)
    if exercise == "3.1":
        lm = request.getfixturevalue("smollm")
        ids = torch.randint(0, 1000, (4, 24), generator=torch.Generator().manual_seed(0))
        fixed = SimpleNamespace(reconstruct=lambda x: -2.0 * x.flip(-1))
        try:
            return E.check_spliced_loss(*fns, lm, fixed, ids, 8)
        finally:
            _clear(lm)
    if exercise in ("7.1", "7.3"):
        lm = request.getfixturevalue("tiny_lm")
        check = E.check_steering_hook if exercise == "7.1" else E.check_attribution_estimates
        try:
            return check(*fns, lm)
        finally:
            _clear(lm)
    checks = {getattr(E, n).exercise: getattr(E, n) for n in E.__all__ if n.startswith("check_")
              and hasattr(getattr(E, n), "exercise")}
    return checks[exercise](*fns)


@pytest.mark.parametrize("path, name, exercise, correct", _cases())
def test_blind_candidate(path, name, exercise, correct, request, capsys):
    obj = {n: o for n, o, _, _ in _load(path)}[name]
    if correct:
        _grade(exercise, obj, request)
        return
    with pytest.raises(AssertionError) as err:
        _grade(exercise, obj, request)
    assert str(err.value).strip(), "rejected without a message naming the mistake"
