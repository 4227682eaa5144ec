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


def _exercises(nb):
    """(number, statement markdown, stub code, solution code) of every exercise of a notebook: the stub is the
    code cell that calls todo("N.M"), the statement the markdown cell before it (after its last </details>), the
    solution the first folded Solution's code block after the stub."""
    out, cells = [], nb.cells
    for i, c in enumerate(cells):
        if c.cell_type != "code":
            continue
        for number in dict.fromkeys(re.findall(r'todo\("(\d+\.\d+)"\)', c.source)):
            if any(number == e[0] for e in out):
                continue
            before = next((cells[j].source for j in range(i - 1, -1, -1) if cells[j].cell_type == "markdown"), "")
            statement = before.rsplit("</details>", 1)[-1]
            after = "\n".join(x.source for x in cells[i + 1:] if x.cell_type == "markdown")
            folded = after.split("<summary>Solution</summary>", 1)
            code = re.search(r"```python\n(.*?)```", folded[1], flags=re.S) if len(folded) == 2 else None
            out.append((number, statement, c.source, code.group(1) if code else ""))
    return out


def _key_lines(solution: str) -> list[str]:
    """The solution's lines that carry the answer: code (not comments), long enough not to be generic."""
    lines = []
    for line in solution.splitlines():
        line = " ".join(line.split("#", 1)[0].split())
        if len(line) >= 18 and not line.startswith(("def ", "import ", "from ", "return float(", "for _ in")):
            lines.append(line)
    return lines


@pytest.mark.parametrize("path", IPYNB, ids=lambda p: p.stem)
def test_no_exercise_shows_its_answer_above_or_in_its_stub(path):
    nb = jupytext.read(path.with_suffix(".py"))
    found = _exercises(nb)
    assert found, f"{path.name}: no exercise found"
    for number, statement, stub, solution in found:
        assert solution, f"{path.name}: exercise {number} has no folded Solution with a python block after its stub"
        shown = " ".join(statement.split()) + "\n" + "\n".join(" ".join(s.split()) for s in stub.splitlines())
        leaked = [line for line in _key_lines(solution) if line in shown]
        assert not leaked, f"{path.name}: exercise {number} shows its solution's line(s) {leaked} in its stub or text"
        assert not re.search(r"graded\([^()]*,\s*lambda", stub), \
            f"{path.name}: exercise {number} passes an inline lambda as the solution to graded(): the answer shows"


@pytest.mark.parametrize("path", IPYNB, ids=lambda p: p.stem)
def test_every_solution_has_a_hint_before_it(path):
    text = "\n".join(c.source for c in jupytext.read(path.with_suffix(".py")).cells if c.cell_type == "markdown")
    for i, since_previous in enumerate(text.split("<summary>Solution</summary>")[:-1], 1):
        assert "<summary>Hint</summary>" in since_previous, \
            f"{path.name}: folded Solution {i} has no folded Hint between it and the previous Solution"


def test_readme_lists_every_exercise_with_its_level():
    readme = (NOTEBOOKS.parent / "README.md").read_text()
    for path in IPYNB:
        row = next((line for line in readme.splitlines() if line.startswith(f"| [{path.stem}]")), None)
        assert row, f"README's notebook table has no row for {path.stem}"
        code = "\n".join(c.source for c in jupytext.read(path.with_suffix(".py")).cells if c.cell_type == "code")
        for number in dict.fromkeys(re.findall(r'todo\("(\d+\.\d+)"\)', code)):
            m = re.search(re.escape(number) + r" [^|]*?\((easy|medium|hard)", row)
            assert m, (f"README's row for {path.stem} must list exercise {number} with its level: "
                       f"'{number} name (level)'")


def test_the_answer_scan_catches_a_leak():
    """The scan above flags a solution line shown in the statement, and passes when it is only in the Solution."""
    def notebook(statement):
        return jupytext.reads(f'''# %% [markdown]
# ### Exercise 9.1
# {statement}

# %%
def f(x):
    todo("9.1")

# %% [markdown]
# <details><summary>Hint</summary>hint</details>
# <details><summary>Solution</summary>
#
# ```python
# return torch.zeros_like(pre_BN).scatter(-1, top.indices, top.values)
# ```
# </details>
''', fmt="py:percent")

    def leaks(nb):
        (number, statement, stub, solution), = _exercises(nb)
        shown = " ".join(statement.split()) + "\n" + stub
        return [line for line in _key_lines(solution) if line in shown]

    assert leaks(notebook("Write `return torch.zeros_like(pre_BN).scatter(-1, top.indices, top.values)`."))
    assert not leaks(notebook("Scatter the kept values into zeros."))
