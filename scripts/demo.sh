#!/usr/bin/env bash
# The demo: a hub, Kore and the built-in LMS on 127.0.0.1 (free ports); prints one URL.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
exec .venv/bin/ananke demo "$@"
