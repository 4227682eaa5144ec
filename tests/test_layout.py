"""The package's layout: one subpackage per pipeline stage, imports pointing down the stages only, no circle.

Read from the source with `ast` (nothing is imported or run). Every import counts, the lazy ones inside
functions too. The stage order is written once, here.
"""

import ast
import importlib
import re
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "saelab"

# Lowest first. A module may import its own stage and any earlier one.
STAGES = ("helpers", "lm", "acts", "sae", "evals", "training", "studies", "interp", "teach", "app")
TOP_LEVEL = {  # modules directly under saelab/: which stage each belongs to
    "files": "helpers", "flags": "helpers", "assets": "helpers", "distributed": "helpers", "pages": "helpers",
    "version": "helpers",
    "presets": "app", "zoo": "app", "course": "app", "commands": "app", "commands_share": "app",
    "commands_studies": "app", "cli": "app", "__main__": "app", "__init__": "app",
}
MAX_LINES = 450
"""Longer modules must say why in their docstring (a line starting 'Length:')."""
MAX_FUNCTION_LINES = 60
"""In the stages where a family's code meets the shared code (`sae`, `training`): no function longer than this."""
CORE_MAX_LINES = {"saelab/sae/model.py": 300, "saelab/training/trainer.py": 300}
"""The shared model and the trainer stay small: a family's code belongs in its own file (`saelab.sae.families`)."""


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def stage_of(module: str) -> str:
    parts = module.split(".")
    if len(parts) == 1:
        return "app"  # saelab/__init__.py: the public API, lazily over every stage
    if parts[1] in STAGES:
        return parts[1]
    if len(parts) == 2 and parts[1] in TOP_LEVEL:
        return TOP_LEVEL[parts[1]]
    raise AssertionError(f"{module} belongs to no stage: put it in a stage's subpackage, or add it to TOP_LEVEL")


def imports_in(source: str, package: str, modules=None) -> set[str]:
    """The saelab modules that `source` (a module of `package`) imports, anywhere in it."""
    modules = MODULES if modules is None else modules
    found = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                origin = ".".join(base + ([node.module] if node.module else []))
            else:
                origin = node.module
            names = [f"{origin}.{a.name}" if f"{origin}.{a.name}" in modules else origin for a in node.names]
        else:
            continue
        for name in names:
            while name and name not in modules:  # `import saelab.a.b` where b is an attribute
                name = name.rpartition(".")[0]
            if name:
                found.add(name)
    return found


def imports_of(module: str) -> set[str]:
    path = MODULES[module]
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    return imports_in(path.read_text(), package) - {module}


GRAPH = {m: imports_of(m) for m in MODULES}


def with_packages(graph: dict[str, set[str]]) -> dict[str, set[str]]:
    """`graph` plus what Python runs first: importing a.b.c runs a/__init__ and a/b/__init__ (except the
    packages the importer is itself inside, which are already running)."""
    full = {}
    for m, deps in graph.items():
        full[m] = set(deps)
        for d in deps:
            parts = d.split(".")
            for i in range(1, len(parts)):
                parent = ".".join(parts[:i])
                if parent in graph and parent != m and not m.startswith(parent + "."):
                    full[m].add(parent)
    return full


def upward_imports(graph: dict[str, set[str]]) -> list[tuple[str, str]]:
    """(importer, imported) pairs where a module imports a later stage than its own."""
    return sorted((m, d) for m, deps in graph.items() for d in deps
                  if STAGES.index(stage_of(d)) > STAGES.index(stage_of(m)))


def test_every_module_has_a_stage():
    for module in MODULES:
        stage_of(module)


def test_imports_point_down_the_stages():
    upward = upward_imports(GRAPH)
    assert not upward, "imports of a later stage: " + "; ".join(
        f"{m} ({stage_of(m)}) imports {d} ({stage_of(d)})" for m, d in upward)


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import circle of `graph`, or None."""
    state, stack = {}, []

    def visit(m):
        state[m] = "open"
        stack.append(m)
        for n in sorted(graph[m]):
            if state.get(n) == "open":
                return stack[stack.index(n):] + [n]
            if n not in state and (cycle := visit(n)):
                return cycle
        state[m] = "done"
        stack.pop()
        return None

    for m in sorted(graph):
        if m not in state and (cycle := visit(m)):
            return cycle
    return None


def test_no_import_circle():
    cycle = find_cycle(with_packages(GRAPH))
    assert cycle is None, "import circle: " + " -> ".join(cycle)


def test_the_checks_catch_what_they_are_for():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None
    # the model importing anything under formats/ runs formats/__init__, which imports the model: a circle
    assert find_cycle(with_packages({**GRAPH, "saelab.sae.model": GRAPH["saelab.sae.model"]
                                     | {"saelab.sae.formats.hooks"}})) is not None
    assert upward_imports({"saelab.evals.n2g": {"saelab.training.trainer"}, "saelab.training.trainer": set()}) == [
        ("saelab.evals.n2g", "saelab.training.trainer")]
    relative = ("from ..sae.model import SAE\nfrom . import splice\nfrom .probes import x\n\n"
                "def f():\n    import saelab.lm.sites\n")
    assert imports_in(relative, "saelab.evals") == {"saelab.sae.model", "saelab.evals.splice", "saelab.evals.probes",
                                                    "saelab.lm.sites"}
    assert "saelab.sae.model" in GRAPH["saelab.sae.formats.openai"]  # from-imports resolve to modules
    assert "saelab.interp.dashboard" in GRAPH["saelab.interp.explorer"]  # `from saelab.interp import dashboard`
    with pytest.raises(AssertionError, match="belongs to no stage"):
        stage_of("saelab.newthing")


def test_every_stage_lists_its_modules_and_what_it_may_import():
    assert not (PACKAGE / "helpers").exists() and not (PACKAGE / "app").exists()
    for stage in STAGES[1:-1]:
        init = PACKAGE / stage / "__init__.py"
        doc = ast.get_docstring(ast.parse(init.read_text())) or ""
        assert "May import" in doc, f"{init} needs a docstring saying what the stage does and what it may import"
        children = {p.stem for p in init.parent.glob("*.py")} - {"__init__"}
        children |= {p.parent.name + "/" for p in init.parent.glob("*/__init__.py")}
        listed = set(re.findall(r"^ {4}([a-z0-9_]+/?) ", doc, re.M))
        assert listed == children, f"{init}: its docstring lists {sorted(listed)}, the folder holds {sorted(children)}"
    assert set(TOP_LEVEL) == {p.stem for p in PACKAGE.glob("*.py")}, "each top-level module needs a stage in TOP_LEVEL"


@pytest.mark.parametrize("module", sorted(MODULES))
def test_modules_stay_small(module):
    path = MODULES[module]
    lines = len(path.read_text().splitlines())
    doc = ast.get_docstring(ast.parse(path.read_text())) or ""
    assert lines <= MAX_LINES or "\nLength:" in doc, (
        f"{path.relative_to(PACKAGE.parent)} has {lines} lines: split it by job, or say why in its docstring "
        "('Length: ...')")


PUBLIC_API = {"SAE", "SAEConfig", "load_sae", "Trainer", "TrainConfig", "harvest", "HarvestConfig", "spliced",
              "load_lm", "ActivationCache", "reconstruction_metrics", "zoo_sae"}


def test_public_api_resolves_and_import_saelab_stays_light():
    import saelab

    assert PUBLIC_API <= set(saelab.__all__), f"missing from saelab's API: {sorted(PUBLIC_API - set(saelab.__all__))}"
    light = subprocess.run([sys.executable, "-c", "import sys, saelab; print('torch' in sys.modules)"],
                           capture_output=True, text=True, check=True)
    assert light.stdout.strip() == "False", "`import saelab` imported torch"
    for name in saelab.__all__:
        value = getattr(saelab, name)
        assert getattr(importlib.import_module(saelab._API[name]), name) is value
    with pytest.raises(AttributeError, match="no attribute 'nonexistent'"):
        saelab.nonexistent  # noqa: B018


def long_functions(source: str, limit: int = MAX_FUNCTION_LINES) -> list[tuple[str, int]]:
    """(name, lines) of every function or method of `source` longer than `limit` lines (its decorators left out)."""
    return [(node.name, node.end_lineno - node.lineno + 1) for node in ast.walk(ast.parse(source))
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and node.end_lineno - node.lineno + 1 > limit]


def test_functions_of_the_sae_and_training_stages_stay_short():
    assert long_functions("def f():\n" + "    x = 1\n" * 61) == [("f", 62)]
    assert long_functions("def f():\n" + "    x = 1\n" * 59) == []
    found = [f"{path.relative_to(PACKAGE.parent)}: {name} ({lines} lines)"
             for stage in ("sae", "training") for path in sorted((PACKAGE / stage).rglob("*.py"))
             for name, lines in long_functions(path.read_text())]
    assert not found, f"functions over {MAX_FUNCTION_LINES} lines (split them by job): " + "; ".join(found)


def test_the_model_and_the_trainer_stay_small():
    for rel, limit in CORE_MAX_LINES.items():
        lines = len((PACKAGE.parent / rel).read_text().splitlines())
        assert lines <= limit, f"{rel} has {lines} lines (limit {limit}): move family code to saelab/sae/families/"
