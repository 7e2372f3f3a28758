#!/usr/bin/env bash
# Set up (idempotent), check lint and formatting (ruff, configured in pyproject.toml),
# then run the whole test suite. Exit status: 1 when ruff finds a problem, else
# pytest's, except that "no tests collected" (pytest's 5) is a failure of the
# set-up, reported as 1.
set -uo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh || exit 1
if ! { .venv/bin/python -m ruff check . && .venv/bin/python -m ruff format --check .; }; then
    echo "error: ruff: lint or format problems above (fix: .venv/bin/python -m ruff check --fix . && .venv/bin/python -m ruff format .)" >&2
    exit 1
fi
.venv/bin/python -m pytest "$@"
rc=$?
if [ "$rc" -eq 5 ]; then
    echo "error: pytest collected no tests: the test suite or its set-up is broken" >&2
    exit 1
fi
exit "$rc"
