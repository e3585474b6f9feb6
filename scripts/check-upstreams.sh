#!/usr/bin/env bash
# Try the newest releases of the upstreams Ananke subclasses (or whose internals it
# uses), past the upper bounds in pyproject.toml, and report which tests still pass.
#
#   scripts/check-upstreams.sh                 # all four upstreams
#   scripts/check-upstreams.sh nbgrader        # only these
#
# It works in a scratch venv (removed afterwards; KEEP=1 keeps it): Ananke with its test
# extra as pinned, then each upstream upgraded to its newest release, then the tests
# that touch that upstream. Nothing in .venv changes. Exit status: 0 when every
# upstream's tests pass, 1 otherwise; a report at the end says which moved and which
# failed. Run it before moving a bound (docs/developer/release.md).
set -uo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
# upstream (PyPI name) -> the tests that exercise what we use of it.
declare -A TESTS=(
    [jupyterhub-ltiauthenticator]="tests/test_authenticator.py tests/test_upstream_internals.py"
    [jupyterhub-systemdspawner]="tests/test_spawner.py tests/test_upstream_internals.py"
    [nbgrader]="tests/test_nbgrader_setup.py tests/test_nbgrader_roundtrip.py tests/test_upstream_internals.py"
    [traitlets]="tests/test_checkconfig.py tests/test_fragments.py"
)
if [ $# -gt 0 ]; then upstreams=("$@"); else upstreams=("${!TESTS[@]}"); fi

# Readable by all: the round-trip tests run nbgrader as other uids from this venv.
scratch="${TMPDIR:-/tmp}/ananke-upstreams-$$"
install -d -m 0755 "$scratch"
[ -n "${KEEP:-}" ] || trap 'rm -rf "$scratch"' EXIT
"$PYTHON" -m venv "$scratch/venv"
py="$scratch/venv/bin/python"
if ! "$py" -m pip install --quiet -e '.[test]' >"$scratch/install.log" 2>&1; then
    cat "$scratch/install.log" >&2
    echo "check-upstreams: installing Ananke into the scratch venv failed (log above)." >&2
    exit 2
fi

report=()
status=0
for upstream in "${upstreams[@]}"; do
    tests=${TESTS[$upstream]:-}
    if [ -z "$tests" ]; then
        echo "check-upstreams: unknown upstream $upstream (known: ${!TESTS[*]})" >&2
        exit 2
    fi
    pinned=$("$py" -m pip show "$upstream" 2>/dev/null | sed -n 's/^Version: //p')
    # --upgrade past our bound: pip warns about the conflict, which is the point.
    if ! "$py" -m pip install --quiet --upgrade "$upstream" >>"$scratch/install.log" 2>&1; then
        report+=("$upstream: newest release does not install (see $scratch/install.log)")
        status=1
        continue
    fi
    newest=$("$py" -m pip show "$upstream" | sed -n 's/^Version: //p')
    # shellcheck disable=SC2086 # the test list is words
    if "$py" -m pytest -q -x -p no:cacheprovider $tests >"$scratch/$upstream.log" 2>&1; then
        result="tests pass"
    else
        result="TESTS FAIL: $(tail -n 1 "$scratch/$upstream.log")"
        status=1
    fi
    report+=("$upstream: $pinned -> $newest: $result")
    # Back to the pinned release, so the next upstream is tried alone.
    "$py" -m pip install --quiet "$upstream==$pinned" >>"$scratch/install.log" 2>&1
done

echo
echo "Newest upstream releases (scratch venv $scratch):"
printf '  %s\n' "${report[@]}"
exit $status
