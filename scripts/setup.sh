#!/usr/bin/env bash
# Set up a Python environment for this clone; idempotent (a second run installs nothing).
#
# The heavy dependencies (torch, ray, mlflow, ...) go into a shared virtualenv
# keyed by constraints.txt (the lock), kept outside the clone
# (default ~/.cache/oimnet/deps-<key>; override with OIMNET_DEPS_VENV). The clone
# gets a light .venv that sees those packages through a .pth file and holds
# this project in editable mode. A machine without the shared env builds it
# from scratch (~2-3 min, ~6 GB with the CUDA build of torch).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT="$(pwd)"
PY="${PYTHON:-python3}"
KEY="$(sha256sum constraints.txt | cut -c1-16)"
DEPS="${OIMNET_DEPS_VENV:-$HOME/.cache/oimnet/deps-$KEY}"

if [ ! -f "$DEPS/.complete" ]; then
    echo "[setup] building dependency env $DEPS (one time)"
    rm -rf "$DEPS"
    mkdir -p "$(dirname "$DEPS")"
    "$PY" -m venv "$DEPS"
    "$DEPS/bin/python" -m pip install -q --upgrade "pip>=23" >/dev/null
    # Requirements come from pyproject (+ test extras); versions from constraints.txt.
    REQS="$("$DEPS/bin/python" - <<'PYEOF'
import tomllib
p = tomllib.load(open("pyproject.toml", "rb"))["project"]
print("\n".join(p["dependencies"] + p["optional-dependencies"]["test"] + ["setuptools"]))
PYEOF
)"
    echo "$REQS" > "$DEPS/requirements.txt"
    if ! "$DEPS/bin/python" -m pip install -q -c constraints.txt -r "$DEPS/requirements.txt" > "$DEPS/install.log" 2>&1; then
        grep -v "is ignored: it is neither a file nor a directory" "$DEPS/install.log" >&2
        echo "[setup] installing dependencies failed (log: $DEPS/install.log)" >&2
        exit 1
    fi
    touch "$DEPS/.complete"
fi

VENV="$ROOT/.venv"
STAMP="$VENV/.oimnet-setup"
# pyproject.toml decides what the editable install maps (packages, scripts): a change reinstalls
WANT="$KEY $DEPS $ROOT $(sha256sum pyproject.toml | cut -c1-16)"
if [ ! -f "$STAMP" ] || [ "$(cat "$STAMP")" != "$WANT" ]; then
    echo "[setup] creating $VENV on top of $DEPS"
    rm -rf "$VENV"
    "$DEPS/bin/python" -m venv --without-pip "$VENV" 2>/dev/null || "$PY" -m venv --without-pip "$VENV"
    SITE="$("$VENV/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
    DEPS_SITE="$("$DEPS/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
    echo "$DEPS_SITE" > "$SITE/oimnet-deps.pth"
    # Editable install of this clone (console scripts oimnet-train, oimnet-evaluate).
    "$VENV/bin/python" -m pip install -q --no-deps --no-build-isolation -e . > "$VENV/install.log" 2>&1 \
        || { cat "$VENV/install.log" >&2; exit 1; }
    # Tools of the deps env (ray, mlflow CLIs) on the clone's PATH too.
    for tool in ray mlflow pytest; do
        [ -e "$VENV/bin/$tool" ] || printf '#!/bin/sh\nexec "%s/bin/python" -c "import sys; from importlib.metadata import entry_points as e; ep=[x for x in e(group=\\"console_scripts\\") if x.name==\\"%s\\"][0]; sys.argv[0]=\\"%s\\"; sys.exit(ep.load()())" "$@"\n' "$VENV" "$tool" "$tool" > "$VENV/bin/$tool"
        chmod +x "$VENV/bin/$tool"
    done
    echo "$WANT" > "$STAMP"
fi
