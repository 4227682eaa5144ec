"""The course's syllabus read from the notebooks: every exercise's heading, and each notebook's stated times.

An exercise heading has one format everywhere (a test parses every notebook with it):

    ### Exercise 2.3 — the AuxK loss (medium, essential, 15 min)

difficulty easy / medium / hard; importance essential / optional (as ARENA rates its exercises); minutes of
learner work. A notebook's first cell states `**Learner time**: about N minutes` (reading plus its essential
exercises) beside its compute `**Time**`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

HEADING = re.compile(r"^#+ Exercise (?P<id>\d+\.\d+) — (?P<title>.+) "
                     r"\((?P<difficulty>easy|medium|hard), (?P<importance>essential|optional), "
                     r"(?P<minutes>\d+) min\)\s*$")
LEARNER_TIME = re.compile(r"\*\*Learner time\*\*: about (\d+) minutes")
_LOOSE = re.compile(r"Exercise \d+\.\d+\s*[—:(-]")  # anything that looks like an exercise heading


@dataclass(frozen=True)
class Exercise:
    id: str
    title: str
    difficulty: str
    importance: str
    minutes: int
    notebook: str


def notebook_sources(folder: Path) -> list[Path]:
    """The course's notebooks (their jupytext `.py` sources), in order."""
    return sorted(Path(folder).glob("[0-9][0-9]_*.py"))


def _markdown_lines(text: str) -> list[str]:
    """The markdown lines of a jupytext percent-format source, without their leading '# '."""
    lines, in_md = [], False
    for line in text.splitlines():
        if line.startswith("# %%"):
            in_md = "[markdown]" in line
            continue
        if in_md and line.startswith("#"):
            lines.append(line[2:] if line.startswith("# ") else line[1:])
    return lines


def exercises(path: Path) -> list[Exercise]:
    """Every exercise of one notebook source, in order; a heading that names an exercise in another format raises."""
    found = []
    for line in _markdown_lines(Path(path).read_text()):
        if not line.lstrip().startswith("#") or not _LOOSE.search(line):
            continue
        m = HEADING.match(line.strip())
        if m is None:
            raise ValueError(f"{Path(path).name}: exercise heading not in the course format "
                             f"'### Exercise N.M — title (easy|medium|hard, essential|optional, M min)': {line!r}")
        found.append(Exercise(m["id"], m["title"], m["difficulty"], m["importance"], int(m["minutes"]),
                              Path(path).stem))
    return found


def learner_minutes(path: Path) -> int | None:
    """The learner time a notebook states in its first cell (reading + essential exercises), or None."""
    m = LEARNER_TIME.search(Path(path).read_text())
    return int(m.group(1)) if m else None


def reading_minutes(path: Path, words_per_minute: int = 130) -> int:
    """A reading-time estimate: the notebook's markdown words at `words_per_minute` (technical prose)."""
    words = sum(len(line.split()) for line in _markdown_lines(Path(path).read_text()))
    return max(1, round(words / words_per_minute))


def syllabus(folder: Path) -> list[Exercise]:
    """Every exercise of the course, notebook by notebook."""
    return [ex for path in notebook_sources(folder) for ex in exercises(path)]
