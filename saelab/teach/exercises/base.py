"""The exercise mechanism: stubs that stop a learner, a solutions switch for CI, and wrong-answer diagnosis."""

from __future__ import annotations

import functools
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


OPTIONAL = {"3.2", "3.3", "4.2", "5.2", "6.2", "7.2", "7.3", "8.2", "8.3", "8.5"}
"""The exercises the notebooks rate optional (tests/test_teaching.py keeps this in step with their headings): left
unwritten, their reference solution stands in (with a note) so the notebook goes on to the next essential one."""


def exercise(number: str, *references):
    """Make a check grade the learner's code: `check(my_fn, *other_args)`.

    The decorated check takes the learner's functions (or classes) first, as many as `references`, then its other
    arguments. Under SAELAB_SOLUTIONS=1 it grades `references` instead, so a notebook cell never names the
    solutions. It returns what it graded (one function, or a tuple of them), for the notebook to go on with. An
    optional exercise (`OPTIONAL`) the learner left unwritten is not a stop: its reference solution is graded and
    returned instead, and a note says so.
    """
    def wrap(check):
        @functools.wraps(check)
        def run(*args, **kwargs):
            n = len(references)
            if len(args) < n:
                raise TypeError(f"{check.__name__} (exercise {number}) takes your {n} function(s) first: "
                                f"{', '.join(getattr(r, '__name__', '?') for r in references)}")
            fns = tuple(references) if solutions_on() else tuple(args[:n])
            try:
                check(*fns, *args[n:], **kwargs)
            except NotWrittenYet:
                if number not in OPTIONAL or fns == tuple(references):
                    raise
                print(f"exercise {number} is optional and not written yet: the reference solution stands in so the "
                      "notebook can go on (write it later and run this cell again to have yours checked)")
                fns = tuple(references)
                check(*fns, *args[n:], **kwargs)
            return fns[0] if n == 1 else fns

        run.exercise = number
        run.references = references
        return run
    return wrap


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


def _describe(value) -> str:
    if isinstance(value, torch.Tensor):
        return f"a tensor of shape {tuple(value.shape)}, dtype {value.dtype}"
    return f"a {type(value).__name__}"


def same_output(got, want, what: str, atol: float = 1e-5, rtol: float = 1e-4) -> None:
    """Compare a learner's output with the reference's, element by element, and name the first that differs.

    Walks tuples, lists and dicts (every element, not only the first), pandas DataFrames (every column of the
    reference, by name) and numbers; a tensor must come back as a tensor (not a Python float) with the same shape.
    `what` names the case in the message, e.g. "with k = 1".
    """
    import pandas as pd

    if isinstance(want, pd.DataFrame):
        assert isinstance(got, pd.DataFrame), f"{what}: return a DataFrame, got {_describe(got)}"
        for col in want.columns:
            assert col in got.columns, f"{what}: your DataFrame has no column {col!r}"
            same_output(got[col].to_numpy(copy=True), want[col].to_numpy(copy=True), f"{what}, column {col!r}", atol,
                        rtol)
        return
    if isinstance(want, (tuple, list)):
        assert isinstance(got, (tuple, list)) and len(got) == len(want), \
            f"{what}: return {len(want)} values, got {_describe(got)}" + (f" of {len(got)}" if
                                                                         isinstance(got, (tuple, list)) else "")
        for i, (g, w) in enumerate(zip(got, want)):
            same_output(g, w, f"{what}, returned value {i + 1} of {len(want)}", atol, rtol)
        return
    if isinstance(want, dict):
        assert isinstance(got, dict) and set(got) == set(want), \
            f"{what}: return a dict with keys {sorted(want)}, got {sorted(got) if isinstance(got, dict) else got!r}"
        for key in want:
            same_output(got[key], want[key], f"{what}, key {key!r}", atol, rtol)
        return
    if isinstance(want, torch.Tensor):
        assert isinstance(got, torch.Tensor), f"{what}: return a tensor (as the next step needs), got {_describe(got)}"
        assert got.shape == want.shape, f"{what}: expected shape {tuple(want.shape)}, got {tuple(got.shape)}"
    if not close(got, want, atol, rtol):
        g = torch.as_tensor(got, dtype=torch.float64)
        w = torch.as_tensor(want, dtype=torch.float64)
        if g.shape != w.shape:
            raise AssertionError(f"{what}: expected shape {tuple(w.shape)}, got {tuple(g.shape)}")
        worst = float((g - w).abs().nan_to_num(float("inf")).max()) if g.numel() else 0.0
        raise AssertionError(f"{what}: your result differs from the expected one (largest difference {worst:.3g})"
                             + ("" if g.numel() > 1 else f": got {float(g):.6g}, expected {float(w):.6g}"))


def expect_gradient(out, leaves: dict, what: str) -> None:
    """`out` must be a tensor whose backward reaches every leaf in `leaves` (name -> tensor with requires_grad):
    a later exercise backpropagates through it."""
    assert isinstance(out, torch.Tensor), \
        f"{what}: return a tensor, not {_describe(out)}: a Python number carries no gradient, and training needs one"
    assert out.requires_grad, f"{what}: the result carries no gradient (detached, .item(), or computed under no_grad)"
    grads = torch.autograd.grad(out.sum(), list(leaves.values()), allow_unused=True)
    for (name, _), g in zip(leaves.items(), grads):
        assert g is not None and bool(g.abs().sum() > 0), f"{what}: no gradient reaches {name}"


def run_case(what: str, fn, *args, **kwargs):
    """Call the learner's `fn` on one case; an exception becomes an AssertionError that names the case (`what`, e.g.
    "with k = 1") and the error, so the learner sees which input broke it. A stub still stops as a stub."""
    try:
        return fn(*args, **kwargs)
    except (NotWrittenYet, AssertionError):
        raise
    except Exception as err:
        raise AssertionError(f"{what}: your function raised {type(err).__name__}: {err}") from err


def call_learner(fn, what: str, *args, **kwargs):
    """`run_case` with the function first (the order notebooks 07-08's checks use)."""
    return run_case(what, fn, *args, **kwargs)


def unlike(want, mistakes: list[tuple[object, str]], what: str, atol: float = 1e-5, rtol: float = 1e-4) -> list:
    """The (wrong answer, message) pairs of `mistakes` whose answer differs from `want` in this case, each message
    prefixed with the case `what`: for `diagnose`, so that a mistake that happens to give the right answer in one
    case names nothing there."""
    return [(v, f"{what}: {m}") for v, m in mistakes if not close(v, want, atol, rtol)]
