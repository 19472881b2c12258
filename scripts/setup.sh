#!/usr/bin/env bash
# Idempotent set-up: Debian libraries ffcv compiles against, a venv, the project in editable mode.
# Fast when everything is already there. VENV overrides the venv location (default: .venv in the repo).
set -euo pipefail
cd "$(dirname "$0")/.."
VENV="${VENV:-$PWD/.venv}"

need=()
for pkg in pkg-config libturbojpeg0-dev libopencv-dev; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || need+=("$pkg")
done
if [ ${#need[@]} -gt 0 ]; then
    echo "setup: installing Debian packages: ${need[*]}"
    SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need[@]}" >/dev/null
fi

if [ ! -x "$VENV/bin/python" ]; then
    echo "setup: creating virtual environment $VENV"
    python3.11 -m venv "$VENV" 2>/dev/null || python3 -m venv "$VENV"
fi
PY="$VENV/bin/python"

# Re-install only when the project's metadata changed since the last successful install.
stamp="$VENV/.ffcv_amcl_installed"
want="$(sha256sum pyproject.toml | cut -d' ' -f1)"
# The packages are looked up, not imported: importing ffcv costs seconds (numba compiles its typed dict). A built
# ffcv whose system libraries went missing passes this check and fails at its first import; rerun with the stamp
# removed to reinstall.
installed='import glob, importlib.util as u, os, sys
ffcv = u.find_spec("ffcv")
built = ffcv and glob.glob(os.path.join(os.path.dirname(ffcv.origin), "_libffcv*.so"))
sys.exit(not (built and u.find_spec("ffcv_amcl")))'
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ] || ! "$PY" -c "$installed" 2>/dev/null; then
    echo "setup: installing the project and its dependencies into $VENV (first time: several minutes)"
    "$PY" -m pip install -q --upgrade pip setuptools wheel
    # ffcv's setup.py needs numpy and pkgconfig at build time and declares neither: build it without isolation.
    "$PY" -m pip install -q numpy pkgconfig
    "$PY" -m pip install -q --no-build-isolation "ffcv==1.0.2"
    "$PY" -m pip install -q -e ".[dev]"
    echo "$want" > "$stamp"
fi
echo "setup: ready ($VENV)"
