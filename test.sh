#!/usr/bin/env bash
# Set up and run the whole test suite: lint, types, then pytest (extra arguments go to pytest).
# Tests start real nats-server processes on free ports on 127.0.0.1 with temporary stores.
set -euo pipefail
cd "$(dirname "$0")"
./setup.sh --test
tests/setup-system.sh   # sshd binary and the sortie-test user for tests/ssh (needs root)
.venv/bin/ruff check .
.venv/bin/mypy
.venv/bin/lint-imports --no-cache   # the floors: pyproject.toml [tool.importlinter]
exec .venv/bin/python -m pytest -p no:cacheprovider "$@"
