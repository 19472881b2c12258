#!/usr/bin/env bash
# The README's test command: set up (idempotent), then run the whole suite on the CPU, one pytest worker per core
# by default (TEST_WORKERS=1 runs it in one process); each test file stays on one worker, so its module fixtures
# are built once.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
VENV="${VENV:-$PWD/.venv}"
exec "$VENV/bin/python" -m pytest -q -n "${TEST_WORKERS:-2}" --dist loadfile --no-loadscope-reorder "$@"
