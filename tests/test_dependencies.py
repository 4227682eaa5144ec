"""pyproject.toml declares what the code imports, and nothing it does not use.

Read from the source with `ast` (nothing is imported): every third-party import of saelab/ is a dependency (or an
extra's, imported lazily, inside a function), every import of the tests, scripts, benchmarks and notebooks is a
dependency or an extra's, and every declared dependency is imported by saelab/ or the notebooks, or is in
`INDIRECT` with the reason, which the test checks still holds.
"""

import ast
import functools
import importlib.metadata
import re
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
DISTRIBUTION = {"sklearn": "scikit-learn", "sae_lens": "sae-lens", "sparsify": "eai-sparsify", "wandb": "wandb",
                "yaml": "pyyaml", "huggingface_hub": "huggingface-hub", "playwright": "playwright"}
"""Import name -> distribution, for packages that may not be installed here (the rest: importlib.metadata)."""
NOT_DISTRIBUTIONS = {"saelab", "tests", "conftest", "test_blind_exercises", "__future__"}
FIXTURE_ONLY = {"dictionary_learning": "tests/data/dictionary_learning/make_fixtures.py runs in a throwaway venv"}
INDIRECT = {  # declared, not imported: why, and a (file, text) that shows the reason still holds
    "gguf": ("transformers reads the embedded model's GGUF file with it", "saelab/lm/models.py", "gguf_file="),
    "anywidget": ("plotly 6's FigureWidget needs it (the explorer's live figures; found by the wheel check)",
                  "saelab/interp/explorer.py", "FigureWidget"),
    "accelerate": ("transformers refuses to load a GGUF file without it (found by scripts/check_wheel_install.sh: a "
                   "fresh venv without the peers extra failed notebook 05)", "saelab/lm/models.py", "gguf_file="),
    "jupyterlab": ("the app the course runs in", "tests/test_browser.py", '"jupyter", "lab"'),
    "tensorboard": ("torch.utils.tensorboard needs it for --train.tensorboard", "saelab/training/tracking.py",
                    "torch.utils.tensorboard"),
    "pytest-xdist": ("pytest -n 2", "README.md", "-m pytest -n 2"),
    "nbmake": ("pytest --nbmake runs the notebooks", "README.md", "--nbmake"),
    "ruff": ("the linter", "pyproject.toml", "[tool.ruff]"),
    "nbstripout": ("notebooks are committed without outputs", "tests/test_notebook_pairs.py", "nbstripout"),
    "mkdocs": ("the documentation site is built with it", ".ci/run", "mkdocs build --strict"),
    "mkdocs-material": ("the site's theme", "mkdocs.yml", "name: material"),
    "mkdocstrings": ("the API pages are read from the docstrings", "mkdocs.yml", "mkdocstrings"),
    "eai-sparsify": ("its folders are checked by name in the round-trip tests", "tests/test_formats.py",
                     'need("sparsify")'),
}


def normalize(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def requirement_name(spec: str) -> str:
    return normalize(re.match(r"[A-Za-z0-9_.\-]+", spec).group(0))


CORE = {requirement_name(s) for s in PYPROJECT["project"]["dependencies"]}
EXTRAS = {group: {requirement_name(s) for s in specs}
          for group, specs in PYPROJECT["project"]["optional-dependencies"].items()}


@functools.cache
def installed() -> dict[str, list[str]]:
    return importlib.metadata.packages_distributions()


@functools.cache
def distribution_of(module: str) -> str:
    if module in DISTRIBUTION:
        return normalize(DISTRIBUTION[module])
    found = installed().get(module)
    assert found, f"import {module!r}: no installed distribution provides it; add it to DISTRIBUTION with its name"
    return normalize(found[0])


def imports(path: Path) -> list[tuple[str, bool]]:
    """(top-level third-party module, imported at module level?) for each import in a file."""
    tree = ast.parse(path.read_text())
    lazy = {id(n) for f in ast.walk(tree) if isinstance(f, (ast.FunctionDef, ast.AsyncFunctionDef))
            for n in ast.walk(f)}
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module]
        else:
            continue
        for name in names:
            top = name.split(".")[0]
            if top not in sys.stdlib_module_names and top not in NOT_DISTRIBUTIONS:
                found.append((top, id(node) not in lazy))
    return found


def files(*folders: str):
    for folder in folders:
        yield from (ROOT / folder).rglob("*.py")


def test_saelab_imports_only_declared_packages_and_extras_only_lazily():
    problems = []
    for path in files("saelab"):
        for module, top_level in imports(path):
            dist = distribution_of(module)
            where = path.relative_to(ROOT)
            if dist in CORE:
                continue
            extra = [g for g, names in EXTRAS.items() if dist in names and g != "dev"]
            if not extra:
                problems.append(f"{where} imports {module} ({dist}), declared nowhere (or only in dev)")
            elif top_level:
                problems.append(f"{where} imports {module} from the {extra[0]!r} extra at module level: import it "
                                "inside the function that needs it, so saelab works without the extra")
    assert not problems, "\n".join(problems)


def test_tests_scripts_and_notebooks_import_declared_packages():
    declared = CORE.union(*EXTRAS.values())
    missing = sorted({f"{path.relative_to(ROOT)}: {module}" for path in files("tests", "scripts", "benchmarks",
                                                                             "notebooks")
                      for module, _ in imports(path)
                      if module not in FIXTURE_ONLY and distribution_of(module) not in declared})
    assert not missing, f"imported but not declared in pyproject.toml: {missing}"


def test_every_core_dependency_is_used():
    used = {distribution_of(m) for path in files("saelab", "notebooks") for m, _ in imports(path)}
    unused = sorted(CORE - used - set(INDIRECT))
    assert not unused, f"declared in [project.dependencies], never imported: {unused}; drop them or say why (INDIRECT)"
    for dist, (why, file, text) in INDIRECT.items():
        assert dist in CORE.union(*EXTRAS.values()), f"INDIRECT names {dist}, which pyproject.toml no longer declares"
        assert text in (ROOT / file).read_text(), f"{dist} is declared because {why}, but {file} no longer shows it"
    extras_used = {distribution_of(m) for path in files("saelab", "tests", "benchmarks", "scripts") for m, _ in
                   imports(path) if m not in FIXTURE_ONLY}
    for group, names in EXTRAS.items():
        idle = sorted(names - extras_used - set(INDIRECT))
        assert not idle, f"the {group!r} extra declares {idle}, which nothing imports"


def test_packages_declared_for_another_library_say_why():
    """accelerate and anywidget were dropped once as never imported, and a fresh install without the peers extra
    broke (transformers' GGUF loading, plotly's FigureWidget): they stay declared, each with its reason."""
    for name in ("accelerate", "anywidget"):
        assert name in CORE and name in INDIRECT
