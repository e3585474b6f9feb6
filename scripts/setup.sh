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
    # Debian and Ubuntu ship the venv module (with ensurepip) in a package of its own.
    if ! "$PYTHON" -c 'import ensurepip, venv' 2>/dev/null; then
        echo "$PYTHON cannot make a virtualenv: its venv module (ensurepip) is missing." >&2
        echo "On Debian or Ubuntu install it with: sudo apt-get install python3-venv" >&2
        echo "(for another Python: python3.X-venv), then run $0 again." >&2
        exit 1
    fi
    "$PYTHON" -m venv .venv
fi
# pip's messages go to a log, shown only when it fails: build warnings would otherwise
# bury what the demo prints next.
log=.venv/setup.log
if ! { .venv/bin/python -m pip install --quiet --upgrade pip &&
    .venv/bin/python -m pip install --quiet -e '.[test,docs]' &&
    # The autograding sandbox's kernel spec is only on grader labs' JUPYTER_PATH
    # (spawner.lab_jupyter_path); earlier versions of this script installed it into the
    # venv, where every lab's launcher listed it: take that copy out.
    { [ ! -e .venv/share/jupyter/kernels/ananke-sandbox ] ||
        .venv/bin/jupyter kernelspec remove -y ananke-sandbox; }; } >"$log" 2>&1; then
    cat "$log" >&2
    echo "Setting up .venv failed; pip's output is above and in $log." >&2
    exit 1
fi
echo "Environment ready in .venv ($(.venv/bin/python --version)); pip's messages: $log."
