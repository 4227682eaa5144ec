"""Each notebook is a jupytext pair (notebooks/NN_name.py in percent format + NN_name.ipynb) that agrees,
is committed without outputs, and has the parts a class needs: one parameters cell with DEVICE = "auto",
prerequisites, what it teaches, its time, the paper's sections, a recap and questions with hidden answers."""

import json
import re
from pathlib import Path

import jupytext
import pytest

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"
IPYNB = sorted(NOTEBOOKS.glob("[0-9][0-9]_*.ipynb"))


def test_every_notebook_is_a_pair():
    stems = {p.stem for p in IPYNB}
    scripts = {p.stem for p in NOTEBOOKS.glob("[0-9][0-9]_*.py")}
    assert stems == scripts, f"unpaired: {sorted(stems ^ scripts)}; run `.venv/bin/jupytext --sync notebooks/*`"
    assert len(stems) >= 8


@pytest.mark.parametrize("path", IPYNB, ids=lambda p: p.stem)
def test_pair_agrees_and_has_no_outputs(path):
    nb = json.loads(path.read_text())
    script = jupytext.read(path.with_suffix(".py"))
    got = [(c["cell_type"], "".join(c["source"]) if isinstance(c["source"], list) else c["source"])
           for c in nb["cells"]]
    want = [(c.cell_type, c.source) for c in script.cells]
    assert got == want, (f"{path.name} and {path.with_suffix('.py').name} disagree: run "
                         f"`.venv/bin/jupytext --sync {path.with_suffix('.py').relative_to(NOTEBOOKS.parent)}`")
    for c in nb["cells"]:
        if c["cell_type"] == "code":
            assert not c.get("outputs") and c.get("execution_count") is None, (
                f"{path.name} is committed with outputs: run "
                f"`.venv/bin/nbstripout {path.relative_to(NOTEBOOKS.parent)}`")


@pytest.mark.parametrize("path", IPYNB, ids=lambda p: p.stem)
def test_notebook_has_the_parts_a_class_needs(path):
    nb = jupytext.read(path.with_suffix(".py"))
    params = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
    assert len(params) == 1, f"{path.name} needs exactly one cell tagged 'parameters', found {len(params)}"
    assert 'DEVICE = "auto"' in params[0].source, f"{path.name}: the parameters cell must set DEVICE = \"auto\""
    intro = nb.cells[0].source
    for part in ("**Prerequisites**", "**What you will learn**", "**Time**", "**Paper**"):
        assert part in intro, f"{path.name}: the first cell lacks {part}"
    text = "\n".join(c.source for c in nb.cells if c.cell_type == "markdown")
    assert "## Recap" in text, f"{path.name} has no recap"
    questions = text.split("## Check your understanding")
    assert len(questions) == 2, f"{path.name} has no 'Check your understanding' section"
    assert 3 <= questions[1].count("<details>") <= 5, f"{path.name}: 3-5 questions, each with a hidden answer"
    code = "\n".join(c.source for c in nb.cells if c.cell_type == "code")
    exercises = len(set(re.findall(r'todo\("(\d+\.\d+)"\)', code)))  # an exercise may stub several functions
    solutions = text.count("<summary>Solution</summary>")
    assert exercises and solutions == exercises, \
        f"{path.name}: {exercises} exercise stubs but {solutions} folded solutions; show one under each exercise"
