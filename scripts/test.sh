#!/usr/bin/env bash
# The README's test command: set up (idempotent), then run the whole suite on the CPU.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
VENV="${VENV:-$PWD/.venv}"
exec "$VENV/bin/python" -m pytest -q "$@"
