#!/usr/bin/env bash
# The install a hosted notebook service or a student's laptop does, checked end to end: saelab's wheel (no clone,
# no editable install) in a fresh virtual environment, the embedded assets fetched, and notebooks 00 and 05 run under
# nbmake from a folder outside the repository, with the reference solutions (SAELAB_SOLUTIONS=1) at the size
# SAELAB_FAST says. It catches files missing from the wheel and widgets that need a JupyterLab extension.
# Usage: bash scripts/check_wheel_install.sh        (.ci/run calls it; ~5 minutes on 2 cores with a warm pip cache)
set -euo pipefail
cd "$(dirname "$0")/.."
REPO=$PWD
PY=${PYTHON:-python3}
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
export SAELAB_SOLUTIONS=1

echo "wheel check: building saelab's wheel"
"$PY" -m pip wheel -q --no-deps -w "$WORK/dist" .
WHEEL=$(ls "$WORK"/dist/saelab-*.whl)
echo "wheel check: a fresh virtual environment with $(basename "$WHEEL")[dev]"
"$PY" -m venv "$WORK/venv"
"$WORK/venv/bin/python" -m pip install -q --upgrade pip >/dev/null 2>&1 || true
# These are the commands the teacher's guide gives for a hosted service (there: the wheel's path or URL).
"$WORK/venv/bin/python" -m pip install -q -c "${SAELAB_TORCH_CONSTRAINTS:-.ci/constraints.txt}" "$WHEEL[dev]"
cd "$WORK"
"$WORK/venv/bin/python" - "$REPO" <<'EOF'
import sys
from pathlib import Path

import saelab

where = Path(saelab.__file__).resolve()
assert Path(sys.argv[1]).resolve() not in where.parents, f"saelab imported from the repository: {where}"
assert (where.parent / "_data" / "assets.json").is_file(), "the wheel lacks saelab/_data/assets.json"
print(f"wheel check: saelab {saelab.__version__} imported from {where.parent}")
EOF
"$WORK/venv/bin/saelab" assets fetch
"$WORK/venv/bin/jupyter" labextension list 2>&1 | grep -q "jupyterlab_widgets" \
  || { echo "wheel check: the ipywidgets JupyterLab extension is not installed" >&2; exit 1; }
mkdir nb
cp "$REPO"/notebooks/00_*.ipynb "$REPO"/notebooks/05_*.ipynb nb/
"$WORK/venv/bin/python" -m pytest -q -p no:cacheprovider --nbmake nb
echo "wheel check: notebooks 00 and 05 ran from the wheel"
