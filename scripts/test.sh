#!/usr/bin/env bash
# The README's test command: set up (idempotent), then run the whole suite on the CPU, by default with one pytest
# worker more than the usable cores: the tests wait part of the time on the Python processes they start and on
# the disk, and the extra worker fills those gaps (TEST_WORKERS=N sets the count, 1 runs one process). Each test
# file stays on one worker, so its module fixtures are built once.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
VENV="${VENV:-$PWD/.venv}"
CORES="$(env -u OMP_NUM_THREADS -u OMP_THREAD_LIMIT nproc)"      # the affinity's cores
WORKERS="${TEST_WORKERS:-$(( (CORES < 8 ? CORES : 8) + 1 ))}"    # at most 9: each worker holds torch and models
exec "$VENV/bin/python" -m pytest -q -n "$WORKERS" --dist loadfile --no-loadscope-reorder "$@"
