"""The exercise mechanism: stubs that stop a learner, a solutions switch for CI, and wrong-answer diagnosis."""

from __future__ import annotations

import os

import torch


class NotWrittenYet(NotImplementedError):
    """An exercise stub the learner has not filled in."""


def solutions_on() -> bool:
    """True when SAELAB_SOLUTIONS is set (to anything but 0/false): checks grade the reference solutions."""
    return os.environ.get("SAELAB_SOLUTIONS", "") not in ("", "0", "false", "False")


def todo(exercise: str):
    """Stop here: the learner has not written exercise `exercise` yet."""
    raise NotWrittenYet(f"exercise {exercise}: not written yet. Fill in the function in this cell and run it "
                        "again (or run the series with SAELAB_SOLUTIONS=1 to use the reference solutions)")


def graded(learner_fn, solution_fn):
    """The function a check should grade: the reference solution under SAELAB_SOLUTIONS=1, else the learner's."""
    return solution_fn if solutions_on() else learner_fn


def passed(name: str) -> None:
    print(f"{name}: all checks passed")


def close(a, b, atol: float = 1e-5, rtol: float = 1e-4) -> bool:
    """Same shape and values (tensors or numbers)."""
    a, b = torch.as_tensor(a, dtype=torch.float64), torch.as_tensor(b, dtype=torch.float64)
    return a.shape == b.shape and bool(torch.allclose(a, b, atol=atol, rtol=rtol, equal_nan=True))


def diagnose(got, mistakes: list[tuple[object, str]], atol: float = 1e-5, rtol: float = 1e-4) -> None:
    """Raise the message of the first known mistake whose answer `got` reproduces."""
    for wrong, message in mistakes:
        if close(got, wrong, atol, rtol):
            raise AssertionError(message)


def expect_shape(got: torch.Tensor, shape: tuple, what: str) -> None:
    got_shape = tuple(torch.as_tensor(got).shape)
    assert got_shape == tuple(shape), f"return {what}, shape {tuple(shape)}; got shape {got_shape}"
