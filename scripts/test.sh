#!/usr/bin/env bash
# Set up (idempotent) and run the whole test suite. Exit status: pytest's, except
# that "no tests collected" (pytest's 5) is a failure of the set-up, reported as 1.
set -uo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh || exit 1
.venv/bin/python -m pytest "$@"
rc=$?
if [ "$rc" -eq 5 ]; then
    echo "error: pytest collected no tests: the test suite or its set-up is broken" >&2
    exit 1
fi
exit "$rc"
