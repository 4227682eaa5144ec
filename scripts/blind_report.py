"""Every blind candidate (tests/blind/: exercises written from their statements alone, by people who had not read the
checks) through its check, as tests/test_blind_exercises.py runs it, with the verdict and the message the check gave.

    SAELAB_FAST=1 .venv/bin/python scripts/blind_report.py > tests/blind/RESULTS.md     # all exercises
    SAELAB_FAST=1 .venv/bin/python scripts/blind_report.py 2.3 8.5                       # some of them

Exit status 1 when a wrong candidate is accepted or a correct one rejected (the test fails then too).
"""

from __future__ import annotations

import contextlib
import io
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

import conftest  # noqa: E402
import test_blind_exercises as blind  # noqa: E402


class Fixtures:
    """The few pytest fixtures the checks need (tiny_lm, smollm, toy_x), built once."""

    def __init__(self):
        self.cache: dict = {}

    def getfixturevalue(self, name: str):
        if name not in self.cache:
            fixture = getattr(conftest, name, None) or getattr(blind, name)
            fn = getattr(fixture, "__wrapped__", None) or fixture.__pytest_wrapped__.obj
            args = fn.__code__.co_varnames[:fn.__code__.co_argcount]
            self.cache[name] = fn(*[self.getfixturevalue(a) for a in args])
        return self.cache[name]


def main(only: set[str]) -> int:
    fixtures, bad, rows = Fixtures(), [], 0
    print("| exercise | set | candidate | intended mistake | kind | verdict | the check's message |")
    print("|---|---|---|---|---|---|---|")
    for path in sorted(blind.BLIND.glob("*/ex_*.py")):
        exercise = path.stem[3:].replace("_", ".")
        if only and exercise not in only:
            continue
        for name, obj, mistake, correct in blind._load(path):
            out = io.StringIO()
            try:
                with contextlib.redirect_stdout(out):
                    blind._grade(exercise, obj, fixtures)
                verdict, message = "accepted", (out.getvalue().strip().splitlines() or [""])[-1]
            except AssertionError as err:
                verdict, message = "rejected", " ".join(str(err).split())
            ok = (verdict == "accepted") == bool(correct)
            bad += [] if ok else [f"{exercise} {name}"]
            rows += 1
            cell = message[:240].replace("|", "/")
            print(f"| {exercise} | {path.parent.name} | {name} | {mistake} | {'correct' if correct else 'wrong'} | "
                  f"{verdict}{'' if ok else ' (!)'} | {cell} |", flush=True)
    print(f"\n{rows} candidates; wrong ones accepted or correct ones rejected: {bad or 'none'}")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main(set(sys.argv[1:])))
