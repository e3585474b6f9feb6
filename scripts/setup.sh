#!/usr/bin/env bash
# Set up a development environment from nothing: a virtualenv in .venv with Ananke
# (editable), its test and docs extras, and the PyPI port of configurable-http-proxy.
# Idempotent: run it again after pulling.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
if ! "$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))'; then
    echo "Ananke needs Python 3.11 or newer; $PYTHON is $("$PYTHON" --version 2>&1)." >&2
    echo "Set PYTHON=/path/to/python3.11 and run again." >&2
    exit 1
fi
if [ ! -x .venv/bin/python ]; then
    "$PYTHON" -m venv .venv
fi
.venv/bin/python -m pip install --quiet --upgrade pip
.venv/bin/python -m pip install --quiet -e '.[test,docs]'
echo "Environment ready in .venv ($(.venv/bin/python --version))."
