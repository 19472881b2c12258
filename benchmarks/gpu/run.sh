#!/usr/bin/env bash
# The GPU run: one run on a GPU machine that trains on FFCV data end to end and fills BENCHMARKS.md
# (benchmarks/gpu/README.md says how to run it and bring its figures back).
#
#   bash benchmarks/gpu/prepare.sh           # once, on a machine with network: .gpu_bundle/ (cp312 ffcv wheel,
#                                            # fastargs, Debian libs) for a GPU machine without network
#   bash benchmarks/gpu/run.sh               # on the GPU machine, with .gpu_bundle/ in the repository (~8 min)
#   bash benchmarks/gpu/run.sh --dry-run     # on the CPU with tiny sizes (tests/test_gpu_run.py, in CI)
#
# Stages, one after another, each under its own timeout and all within --budget seconds (default 450; a
# stage that no longer fits is skipped, and 25 s stay reserved for the report):
#   setup    unpack the bundled Debian packages (dpkg -x) and wheels (pip --target) over the machine's torch
#   data     versions, GPU and a check that ffcv loads; then a CIFAR-sized synthetic .beton: 50,000 random
#            32x32 images through ffcv_amcl.data.write (write_datasets' ArrayDataset path)
#   profile  python -m ffcv_amcl.profile on rn_configs/rn18_cifar10_simclr_amcl.yaml, 16 loader workers
#   epoch:*  2 epochs of that config (bf16, channels_last), the second timed: AMCL on/off x eager/compiled;
#            epoch:amcl-syncs counts the host syncs of 40 training steps (CUDA sync debug mode)
#   tests    pytest -m gpu
#   report   python -m benchmarks.report --device cuda: the GPU-run section of BENCHMARKS.md from the JSON
# Everything lands in $OUT (or --out DIR): gpu_run.json (rewritten after every stage, so a later failure keeps
# what was measured), run.log (this whole output) and BENCHMARKS.md; the summary table is printed last.
set -u -o pipefail
cd "$(dirname "$0")/../.."
REPO="$PWD"

DRY=0
OUTDIR="${OUT:-$REPO/bench_out/gpu}"
BUNDLE="$REPO/.gpu_bundle"
BUDGET=450
PY=""
usage="usage: bash benchmarks/gpu/run.sh [--dry-run] [--out DIR] [--bundle DIR | --no-bundle] [--budget SECONDS] [--python PY]"
while [ $# -gt 0 ]; do
    case "$1" in
        --dry-run) DRY=1 ;;
        --out) OUTDIR="${2:?--out needs a folder}"; shift ;;
        --bundle) BUNDLE="${2:?--bundle needs a folder}"; shift ;;
        --no-bundle) BUNDLE="" ;;                 # the interpreter has ffcv and fastargs already
        --budget) BUDGET="${2:?--budget needs seconds}"; shift ;;
        --python) PY="${2:?--python needs an interpreter}"; shift ;;
        -h|--help) echo "$usage"; exit 0 ;;
        *) echo "error: unknown argument '$1' ($usage)" >&2; exit 2 ;;
    esac
    shift
done
case "$BUDGET" in ''|*[!0-9]*) echo "error: --budget '$BUDGET' is not a whole number of seconds" >&2; exit 2 ;; esac

mkdir -p "$OUTDIR" || { echo "error: cannot create the output folder $OUTDIR" >&2; exit 2; }
OUTDIR="$(cd "$OUTDIR" && pwd)"
JSON="$OUTDIR/gpu_run.json"
rm -f "$JSON"
SCRATCH="$(mktemp -d "${TMPDIR:-/tmp}/gpu_run.XXXXXX")"
exec > >(tee "$OUTDIR/run.log") 2>&1
TEE_PID=$!
# On exit: let tee write the last lines into run.log, then drop the scratch folder.
trap 'exec >&- 2>&-; wait "$TEE_PID" 2>/dev/null; rm -rf "$SCRATCH"' EXIT
export PYTHONUNBUFFERED=1

if [ "$DRY" = 1 ]; then
    # Same stages on the CPU, tiny: 32 images, 1 loader worker, batch 16 of 8 px views, 1+1 profiled steps.
    PY="${PY:-$( [ -x "$REPO/.venv/bin/python" ] && echo "$REPO/.venv/bin/python" || echo python3)}"
    DEVICE=cpu IMAGES=32 WORKERS=1 PSTEPS=1 PWARM=1
    SIZE_ARGS=(--training.batch_size=16 --data.image_size=8)
    export FFCV_AMCL_COMPILE_BACKEND="${FFCV_AMCL_COMPILE_BACKEND:-eager}"   # dynamo tracing only: seconds
    export OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}"
else
    PY="${PY:-python3}"
    DEVICE=cuda IMAGES=50000 WORKERS=16 PSTEPS=30 PWARM=5
    SIZE_ARGS=()
fi
CONFIG=rn_configs/rn18_cifar10_simclr_amcl.yaml
BETON="$SCRATCH/synthetic_cifar_train.beton"
RESERVE=25
FAILED=0

banner() { printf '\n======== %s  [%d s of %d s used] ========\n' "$*" "$SECONDS" "$BUDGET"; }
record() { "$PY" -m benchmarks.gpu.stages stage --json "$JSON" "$@" || echo "run.sh: could not record stage $2"; }

# stage NAME MAX_S MIN_S CMD...: run CMD under a timeout of MAX_S, clipped to what the budget has left;
# skip it when less than MIN_S is left. Returns CMD's exit status (125 when skipped).
stage() {
    local name="$1" max="$2" min="$3"; shift 3
    local left=$((BUDGET - SECONDS - RESERVE))
    local limit=$((max < left ? max : left))
    banner "$name"
    if [ "$limit" -lt "$min" ]; then
        echo "run.sh: $name skipped: $left s of the budget left, it needs at least $min s"
        record --name "$name" --rc 125 --seconds 0 --limit 0 --status skipped
        FAILED=1
        return 125
    fi
    local t0=$SECONDS rc
    timeout --kill-after=15 "$limit" "$@"
    rc=$?
    [ "$rc" = 0 ] || { FAILED=1; echo "run.sh: $name exited with $rc$( [ "$rc" = 124 ] && echo " (timed out after $limit s)")"; }
    record --name "$name" --rc "$rc" --seconds "$((SECONDS - t0))" --limit "$limit"
    return "$rc"
}

setup() {
    # Debian packages of ffcv's run-time libraries -> $SCRATCH/root; wheels -> $SCRATCH/site.
    local deb n=0
    for deb in "$BUNDLE"/deb/*.deb; do
        [ -e "$deb" ] || { echo "run.sh: no .deb files in $BUNDLE/deb: run bash benchmarks/gpu/prepare.sh first"; return 1; }
        dpkg -x "$deb" "$SCRATCH/root" || return 1
        n=$((n + 1))
    done
    "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --disable-pip-version-check \
        --target "$SCRATCH/site" "$BUNDLE"/whl/*.whl || return 1
    # ffcv imports distutils, which Python 3.12 no longer has: setuptools' copy stands in when needed.
    if ! PYTHONPATH="$SCRATCH/site" "$PY" -c "import distutils.log" 2>/dev/null; then
        local sd
        sd="$("$PY" -c 'import os, setuptools; print(os.path.join(os.path.dirname(setuptools.__file__), "_distutils"))')" \
            && ln -s "$sd" "$SCRATCH/site/distutils" || return 1
        echo "run.sh: distutils from $sd"
    fi
    echo "run.sh: unpacked $n Debian packages and $(ls "$BUNDLE"/whl/*.whl | wc -l) wheels"
    # Every folder holding a library (Debian keeps BLAS and LAPACK in blas/ and lapack/).
    find "$SCRATCH/root" -name 'lib*.so*' -printf '%h\n' | sort -u | paste -sd: > "$SCRATCH/ld_path"
    LD_LIBRARY_PATH="$(cat "$SCRATCH/ld_path")" ldd "$SCRATCH"/site/ffcv/_libffcv*.so > "$SCRATCH/ldd.txt"
    sed 's/^/  /' "$SCRATCH/ldd.txt"
    ! grep -q "not found" "$SCRATCH/ldd.txt" || { echo "run.sh: ffcv's extension misses libraries (above)"; return 1; }
}

# The timed-epoch runs: 2 epochs of the config, the second timed; benchmarks.gpu.stages adds model.amcl and training.compile.
TRAIN=(--config-file "$CONFIG" --data.train_dataset="$BETON" --data.val_dataset= --data.num_workers="$WORKERS"
       --training.epochs=2 --training.checkpoint_every=0 --training.resume=none --eval.knn_every=0
       --training.device="$DEVICE" "${SIZE_ARGS[@]}")

banner "GPU run$( [ "$DRY" = 1 ] && echo ' (dry run on the CPU)'): python $PY, output $OUTDIR, budget $BUDGET s"
if [ "$DRY" = 0 ] && [ -z "$BUNDLE" ]; then
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>&1 || true
    "$PY" -c "import ffcv.loader, fastargs" \
        || { echo "error: $PY cannot import ffcv and fastargs: install them, or build a bundle (bash benchmarks/gpu/prepare.sh) and drop --no-bundle"; exit 2; }
elif [ "$DRY" = 0 ]; then
    [ -d "$BUNDLE" ] || { echo "error: $BUNDLE not found: run bash benchmarks/gpu/prepare.sh on a machine with network and copy .gpu_bundle here"; exit 2; }
    echo "bundle: $(du -sh "$BUNDLE" | cut -f1) in $BUNDLE"
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>&1 || true
    export -f setup                          # timeout runs programs: the function runs in a child bash
    export SCRATCH BUNDLE PY
    stage setup 90 20 bash -c setup || { echo "run.sh: setup failed: nothing else can run"; exit 1; }
    export PYTHONPATH="$SCRATCH/site${PYTHONPATH:+:$PYTHONPATH}"    # the bundled wheels
    export LD_LIBRARY_PATH="$(cat "$SCRATCH/ld_path")${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
fi

DRY_FLAG=()
[ "$DRY" = 1 ] && DRY_FLAG=(--dry-run)
if stage data 150 15 "$PY" -m benchmarks.gpu.stages data --json "$JSON" --device "$DEVICE" "${DRY_FLAG[@]}" \
        --beton "$BETON" --images "$IMAGES" --workers "$WORKERS"; then
    stage profile 150 30 "$PY" -m ffcv_amcl.profile --config-file "$CONFIG" --data.train_dataset="$BETON" \
        --data.val_dataset= --data.num_workers="$WORKERS" --training.device="$DEVICE" "${SIZE_ARGS[@]}" \
        --logging.folder="$SCRATCH/profile" --profile.steps="$PSTEPS" --profile.warmup="$PWARM" \
        --profile.json="$SCRATCH/profile.json" \
        && "$PY" -m benchmarks.gpu.stages add --json "$JSON" --key profile --file "$SCRATCH/profile.json"
    # Eager first (the headline figures), then compiled (its compilation falls in epoch 1). On the GPU each
    # variant is its own process and stage; the dry run trains all four in one process (each process spends
    # seconds importing ffcv, which would dominate a dry run).
    if [ "$DRY" = 1 ]; then
        stage epochs 240 40 "$PY" -m benchmarks.gpu.stages epoch --json "$JSON" --folder "$SCRATCH/train" \
            --name amcl-eager --name base-eager --name amcl-compiled --name base-compiled --name amcl-syncs \
            -- "${TRAIN[@]}"
    else
        for spec in "amcl-eager 120" "base-eager 120" "amcl-compiled 180" "amcl-syncs 60" "base-compiled 180"; do
            read -r name limit <<< "$spec"
            stage "epoch:$name" "$limit" 40 "$PY" -m benchmarks.gpu.stages epoch --json "$JSON" \
                --folder "$SCRATCH/train" --name "$name" -- "${TRAIN[@]}"
        done
    fi
fi

# Only the files that hold gpu-marked tests: collecting the whole suite costs more than running these. The dry
# run leaves them out: on the CPU every one of them skips, and CI collects them with the suite anyway.
mapfile -t GPU_TESTS < <(grep -rlE "mark\.gpu" tests --include='test_*.py' | sort)
if [ "$DRY" = 1 ]; then
    banner "tests"
    echo "run.sh: tests left out of the dry run (gpu-marked: ${GPU_TESTS[*]})"
elif [ "${#GPU_TESTS[@]}" -gt 0 ]; then
    stage tests 150 30 "$PY" -m pytest -m gpu -q -p no:cacheprovider --junitxml="$SCRATCH/junit.xml" "${GPU_TESTS[@]}"
    "$PY" -m benchmarks.gpu.stages tests --json "$JSON" --junit "$SCRATCH/junit.xml" --rc "$?"
fi

RESERVE=0
cp BENCHMARKS.md "$OUTDIR/BENCHMARKS.md"
stage report 60 5 "$PY" -m benchmarks.report --device cuda --gpu-run "$JSON" --out "$OUTDIR/BENCHMARKS.md"

banner "summary"
"$PY" -m benchmarks.gpu.stages summary "$JSON"
echo "files: $(cd "$OUTDIR" && ls | tr '\n' ' ')"
exit "$FAILED"
