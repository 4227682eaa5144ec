"""Rewrite the README's notebook table's exercise and learner-time columns from the notebooks themselves
(saelab.teach.syllabus): every exercise with its difficulty and importance, and the learner time each notebook states.

    .venv/bin/python scripts/notebook_table.py        # tests/test_teaching.py fails when the table is stale
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from saelab.teach.syllabus import exercises, learner_minutes, notebook_sources  # noqa: E402

HEADER = ("| notebook | teaches | exercises (difficulty; ★ essential) | learner time | compute: fast (CI) | "
          "compute: full size, measured |")


def exercise_cell(path: Path) -> str:
    return "; ".join(f"{e.id} {e.title} ({e.difficulty}{', ★' if e.importance == 'essential' else ''})"
                     for e in exercises(path))


def updated_readme(text: str) -> str:
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("| notebook | teaches |"))
    lines[start] = HEADER
    lines[start + 1] = "|---|---|---|---|---|---|"
    sources = {p.stem: p for p in notebook_sources(ROOT / "notebooks")}
    i = start + 2
    while i < len(lines) and lines[i].startswith("| ["):
        cells = [c.strip() for c in lines[i].strip().strip("|").split(" | ")]
        stem = re.search(r"\[(\d\d_\w+)\]", cells[0]).group(1)
        fast, full = cells[-2], cells[-1]
        minutes = learner_minutes(sources[stem])
        lines[i] = "| " + " | ".join([cells[0], cells[1], exercise_cell(sources[stem]), f"~{minutes} min",
                                      fast, full]) + " |"
        i += 1
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    readme = ROOT / "README.md"
    new = updated_readme(readme.read_text())
    changed = new != readme.read_text()
    readme.write_text(new)
    print("README.md notebook table " + ("updated" if changed else "already up to date"))
