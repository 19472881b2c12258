#!/usr/bin/env bash
# Prepare, on a machine with network, the bundle the GPU run (benchmarks/gpu/run.sh) installs on a GPU machine
# without network (benchmarks/gpu/README.md).
#
#     bash benchmarks/gpu/prepare.sh            # -> .gpu_bundle/ (ignored by git), its size printed last
#
# The GPU machine has Python 3.12 with torch 2.11 (cu130), numba, numpy, opencv-python-headless, pillow,
# tqdm, pyyaml, scikit-learn, pytest, but no ffcv, no fastargs and no network. This script puts into
# .gpu_bundle/ (override with GPU_BUNDLE=DIR):
#   whl/  a cp312 wheel of ffcv 1.0.2 built here with python3.12 (ffcv's setup.py needs numpy and pkgconfig
#         at build time and declares neither: no build isolation, as in scripts/setup.sh), fastargs 1.2.0 and
#         terminaltables (fastargs imports it);
#   deb/  the Debian packages of every shared library ffcv's extension links at run time (libturbojpeg, the
#         OpenCV libraries and what they pull in), found with ldd on the built extension and dpkg -S, minus
#         the C/C++ runtime and zlib that every Linux image has. run.sh unpacks them with dpkg -x and puts
#         them on LD_LIBRARY_PATH.
# Needs: python3.12 (on PATH or through pyenv; PY312=... overrides), the Debian build packages of
# scripts/setup.sh (pkg-config libturbojpeg0-dev libopencv-dev), apt-get, and network for pip and apt.
set -euo pipefail
cd "$(dirname "$0")/../.."
DEST="${GPU_BUNDLE:-$PWD/.gpu_bundle}"
FFCV_VERSION=1.0.2
# What every device image has already: the C and C++ runtimes and zlib. Everything else ldd finds travels.
BASE_PACKAGES="libc6 libstdc++6 libgcc-s1 zlib1g"

say() { echo "prepare: $*"; }
die() { echo "prepare: error: $*" >&2; exit 1; }

find_python312() {
    local c v
    for c in "${PY312:-}" python3.12; do
        [ -n "$c" ] && "$c" -c 'import sys; assert sys.version_info[:2] == (3, 12)' 2>/dev/null && {
            command -v "$c"; return 0; }
    done
    if command -v pyenv >/dev/null 2>&1; then
        v="$(pyenv versions --bare 2>/dev/null | grep -E '^3\.12(\.[0-9]+)?$' | sort -V | tail -1 || true)"
        [ -n "$v" ] && [ -x "$(pyenv root)/versions/$v/bin/python3.12" ] && {
            echo "$(pyenv root)/versions/$v/bin/python3.12"; return 0; }
    fi
    return 1
}

# The Debian package owning a library file; with merged /usr a file is registered under /lib or /usr/lib.
owner() {
    local real path
    real="$(readlink -f "$1")"
    for path in "$1" "$real" "${real#/usr}" "/usr$1" "$(dirname "$1")/$(basename "$real")"; do
        dpkg -S "$path" 2>/dev/null | head -1 | cut -d: -f1 | grep . && return 0
    done
    return 1
}

PY312="$(find_python312)" || die "python3.12 not found: install it (pyenv install 3.12) or set PY312=/path/to/python3.12"
for tool in pkg-config apt-get dpkg ldd; do
    command -v "$tool" >/dev/null || die "$tool not found: run this on a Debian/Ubuntu machine (see scripts/setup.sh)"
done
pkg-config --exists libturbojpeg opencv4 \
    || die "ffcv builds against libturbojpeg and OpenCV: apt-get install pkg-config libturbojpeg0-dev libopencv-dev"

WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT
rm -rf "$DEST.new"
mkdir -p "$DEST.new/whl" "$DEST.new/deb"

say "building the ffcv $FFCV_VERSION wheel with $PY312 ($("$PY312" --version 2>&1))"
"$PY312" -m venv "$WORK/build"
BPY="$WORK/build/bin/python"
"$BPY" -m pip install -q --disable-pip-version-check setuptools wheel numpy pkgconfig
"$BPY" -m pip wheel -q --disable-pip-version-check --no-deps --no-build-isolation --no-binary ffcv \
    -w "$DEST.new/whl" "ffcv==$FFCV_VERSION"
say "fetching fastargs and terminaltables (pure Python)"
"$BPY" -m pip wheel -q --disable-pip-version-check --no-deps -w "$DEST.new/whl" fastargs==1.2.0 terminaltables

# The run-time libraries of the extension, as the dynamic loader resolves them here.
mkdir -p "$WORK/ffcv"
"$BPY" -m zipfile -e "$DEST.new/whl"/ffcv-"$FFCV_VERSION"-cp312-*.whl "$WORK/ffcv"
SO="$(ls "$WORK"/ffcv/ffcv/_libffcv*.so)"
ldd "$SO" > "$WORK/ldd.txt"
if grep -q "not found" "$WORK/ldd.txt"; then
    cat "$WORK/ldd.txt" >&2
    die "the extension misses libraries here: apt-get install libturbojpeg0-dev libopencv-dev"
fi
packages=()
while read -r lib; do
    pkg="$(owner "$lib")" || die "no Debian package owns $lib"
    case " $BASE_PACKAGES " in *" $pkg "*) continue ;; esac
    packages+=("$pkg=$(dpkg-query -W -f='${Version}' "$pkg")")
done < <(awk '$2 == "=>" && $3 ~ /^\// {print $3}' "$WORK/ldd.txt")
mapfile -t packages < <(printf '%s\n' "${packages[@]}" | sort -u)
say "downloading ${#packages[@]} Debian packages: ${packages[*]}"
(cd "$DEST.new/deb" && apt-get download -q "${packages[@]}" >/dev/null) \
    || die "apt-get download failed (run apt-get update first if the package lists are stale)"

# Check: with only the unpacked packages on LD_LIBRARY_PATH, every bundled library resolves inside them.
for deb in "$DEST.new"/deb/*.deb; do dpkg -x "$deb" "$WORK/root"; done
# Every folder holding a library (Debian keeps BLAS and LAPACK in blas/ and lapack/ for its alternatives).
LIBS="$(find "$WORK/root" -name 'lib*.so*' -printf '%h\n' | sort -u | paste -sd:)"
LD_LIBRARY_PATH="$LIBS" ldd "$SO" > "$WORK/ldd-bundled.txt"
missing=0
while read -r lib; do
    pkg="$(owner "$lib")"
    case " $BASE_PACKAGES " in *" $pkg "*) continue ;; esac
    name="$(basename "$lib")"
    if ! grep -E "^\s*$name => $WORK/root/" "$WORK/ldd-bundled.txt" >/dev/null; then
        echo "prepare: $name does not resolve to the unpacked packages" >&2
        missing=1
    fi
done < <(awk '$2 == "=>" && $3 ~ /^\// {print $3}' "$WORK/ldd.txt")
[ "$missing" = 0 ] || die "the bundled packages do not cover the extension's libraries"
# And the extension loads under python3.12 with them (ffcv's package __init__ needs torch, so load the
# extension module alone).
LD_LIBRARY_PATH="$LIBS" "$PY312" - "$SO" <<'EOF'
import importlib.util, sys
spec = importlib.util.spec_from_file_location("_libffcv", sys.argv[1])
importlib.util.module_from_spec(spec)
print("prepare: the ffcv extension loads under Python %d.%d with the bundled libraries" % sys.version_info[:2])
EOF

rm -rf "$DEST"
mv "$DEST.new" "$DEST"
echo "prepare: bundle $DEST"
(cd "$DEST" && ls -l whl deb | grep -v '^total')
size_kib="$(du -sk "$DEST" | cut -f1)"
echo "prepare: size $((size_kib / 1024)) MiB ($size_kib KiB)"
# About 7 MiB is expected; far more means ldd pulled in libraries every image has (see BASE_PACKAGES).
[ "$size_kib" -lt $((48 * 1024)) ] || die "$DEST is over 48 MiB: check the packages listed above against BASE_PACKAGES"
