#!/usr/bin/env bash
# Create .venv/ with Sortie and its dependencies (idempotent).
#   ./setup.sh          what running Sortie needs
#   ./setup.sh --test   plus what the test suite needs
set -euo pipefail
cd "$(dirname "$0")"

PY=${PYTHON:-python3}
if ! "$PY" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
    echo "setup: Sortie needs Python 3.11 or newer; '$PY' is $("$PY" --version 2>&1 || echo missing)." >&2
    echo "setup: install one, or point PYTHON at it: PYTHON=/usr/bin/python3.12 ./setup.sh" >&2
    exit 2
fi

if [ ! -x .venv/bin/python ]; then
    if ! "$PY" -m venv .venv 2>/dev/null; then
        # Debian splits venv support into its own package.
        if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
            apt-get update -qq && apt-get install -y -qq python3-venv >/dev/null
            rm -rf .venv && "$PY" -m venv .venv
        else
            echo "setup: '$PY -m venv' failed: install your distribution's python3-venv package" >&2
            exit 2
        fi
    fi
fi

# uv installs exactly what uv.lock pins (`uv lock` updates it: see the README). It is bootstrapped
# with pip once; `uv sync` then keeps it at the locked version like everything else.
if [ ! -x .venv/bin/uv ]; then
    .venv/bin/python -m pip install -q --disable-pip-version-check uv
fi
export UV_PROJECT_ENVIRONMENT="$PWD/.venv"
# Compiled bytecode, as pip writes at install: without it every `sortie` command compiles its
# imports again where .pyc files cannot be written (PYTHONDONTWRITEBYTECODE, a read-only
# install): about 0.4 s of a 0.7 s `sortie run list`.
export UV_COMPILE_BYTECODE=1
if [ "${1:-}" = "--test" ]; then
    # exactly the locked set, test tools included (anything else in the venv is removed)
    .venv/bin/uv sync -q --frozen --extra test
else
    # the locked runtime set; test tools already installed stay
    .venv/bin/uv sync -q --frozen --inexact
fi
# ... and Sortie's own modules (installed editable, so uv leaves them; a stale one is only
# compiled again in memory)
.venv/bin/python -m compileall -q sortie >/dev/null
echo "setup: .venv ready ($(.venv/bin/python --version), sortie at .venv/bin/sortie)"
