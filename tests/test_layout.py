"""The package's layout: one subpackage per pipeline stage, imports pointing down the stages only, no circle.

Read from the source with `ast` (nothing is imported or run). Every import counts, the lazy ones inside
functions too. The stage order is written once, here.
"""

import ast
import importlib
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "saelab"

# Lowest first. A module may import its own stage and any earlier one.
STAGES = ("helpers", "lm", "acts", "sae", "evals", "training", "studies", "interp", "teach", "app")
TOP_LEVEL = {  # modules directly under saelab/: which stage each belongs to
    "files": "helpers", "config": "helpers", "assets": "helpers", "distributed": "helpers", "pages": "helpers",
    "presets": "app", "commands": "app", "cli": "app", "__main__": "app", "__init__": "app",
}
MAX_LINES = 450
"""Longer modules must say why in their docstring (a line starting 'Length:')."""


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


def imports_of(module: str) -> set[str]:
    """The saelab modules that `module` imports, anywhere in its file."""
    path = MODULES[module]
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                origin = ".".join(base + ([node.module] if node.module else []))
            else:
                origin = node.module
            names = [f"{origin}.{a.name}" if f"{origin}.{a.name}" in MODULES else origin for a in node.names]
        else:
            continue
        for name in names:
            while name and name not in MODULES:  # `import saelab.a.b` where b is an attribute
                name = name.rpartition(".")[0]
            if name:
                found.add(name)
    found.discard(module)
    return found


GRAPH = {m: imports_of(m) for m in MODULES}


def test_every_module_has_a_stage():
    for module in MODULES:
        stage_of(module)


@pytest.mark.parametrize("module", sorted(MODULES))
def test_imports_point_down_the_stages(module):
    rank = STAGES.index(stage_of(module))
    upward = sorted(m for m in GRAPH[module] if STAGES.index(stage_of(m)) > rank)
    assert not upward, (f"{module} ({stage_of(module)}) imports later stages: "
                        + ", ".join(f"{m} ({stage_of(m)})" for m in upward))


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
    cycle = find_cycle(GRAPH)
    assert cycle is None, "import circle: " + " -> ".join(cycle)


def test_the_checks_catch_what_they_are_for():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None
    assert "saelab.sae.model" in GRAPH["saelab.sae.formats.openai"]  # from-imports resolve to modules
    assert "saelab.interp.dashboard" in GRAPH["saelab.interp.explorer"]  # `from saelab.interp import dashboard`
    with pytest.raises(AssertionError, match="belongs to no stage"):
        stage_of("saelab.newthing")


def test_every_stage_says_what_it_does_and_may_import():
    for stage in STAGES:
        init = PACKAGE / stage / "__init__.py"
        if stage in ("helpers", "app"):
            continue
        doc = ast.get_docstring(ast.parse(init.read_text())) or ""
        assert "May import" in doc, f"{init} needs a docstring saying what the stage does and what it may import"


@pytest.mark.parametrize("module", sorted(MODULES))
def test_modules_stay_small(module):
    path = MODULES[module]
    lines = len(path.read_text().splitlines())
    doc = ast.get_docstring(ast.parse(path.read_text())) or ""
    assert lines <= MAX_LINES or "\nLength:" in doc, (
        f"{path.relative_to(PACKAGE.parent)} has {lines} lines: split it by job, or say why in its docstring "
        "('Length: ...')")


def test_public_api_resolves():
    import saelab

    for name in saelab.__all__:
        value = getattr(saelab, name)
        assert getattr(importlib.import_module(saelab._API[name]), name) is value
    with pytest.raises(AttributeError, match="no attribute 'nonexistent'"):
        saelab.nonexistent  # noqa: B018
