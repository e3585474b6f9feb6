#!/usr/bin/env bash
# The test suite: unit tests and hub-level tests against a real JupyterHub, its proxy,
# Kore and the built-in LMS. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
.venv/bin/ruff check .
exec .venv/bin/python -m pytest -ra "$@"
