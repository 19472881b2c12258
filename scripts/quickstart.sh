#!/usr/bin/env bash
# The README's main command: set up, convert the embedded digits set to .beton, then the stages below.
# Everything lands in $WORK (default runs/quickstart); finished steps are skipped on a re-run. Flags given to
# the script go to the trainer after the config's, e.g. `bash scripts/quickstart.sh --training.epochs=10`.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
VENV="${VENV:-$PWD/.venv}"
PY="$VENV/bin/python"
WORK="${WORK:-runs/quickstart}"
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-2}"
mkdir -p "$WORK"

# --- 1. data: scikit-learn's digits (bundled, no download) as 32x32 RGB .beton files
for split in train test; do
    beton="$WORK/digits_$split.beton"
    if [ -f "$beton" ] && "$PY" -m ffcv_amcl.data.beton "$beton" >/dev/null 2>&1; then
        echo "quickstart: $beton already there (checked)"
    else
        "$PY" write_datasets.py --cfg.dataset=digits --cfg.split="$split" --cfg.write_path="$beton" \
            --cfg.write_mode=raw --cfg.num_workers=2 | grep '^wrote '  # keep the images/s line, skip the flag table
    fi
done
TRAIN_BETON="$WORK/digits_train.beton"
TEST_BETON="$WORK/digits_test.beton"
"$PY" - "$TRAIN_BETON" "$TEST_BETON" <<'PY'
import sys
from ffcv_amcl.data.meta import read_meta
for path in sys.argv[1:]:
    m = read_meta(path)
    print(f"quickstart: {path}: {m['dataset']} {m['split']}, {m['num_samples']} images, "
          f"{m['num_classes']} classes, mean {[round(x, 1) for x in m['mean']]}, std {[round(x, 1) for x in m['std']]}")
PY

# --- 2. train and evaluate (added with the trainer; uses $TRAIN_BETON, $TEST_BETON, $WORK)
# SimCLR-AMCL on the CPU (rn_configs/digits_quickstart.yaml); a re-run resumes or skips the finished run.
"$PY" -m ffcv_amcl.train --config-file rn_configs/digits_quickstart.yaml \
    --data.train_dataset="$TRAIN_BETON" --data.val_dataset="$TEST_BETON" \
    --logging.folder="$WORK/train" --training.resume=auto "$@"
# What the run's records say: kNN before and after, the online probe, AMCL's temperature health, the speed.
"$PY" -m ffcv_amcl.monitoring.summary "$WORK/train" | sed 's/^/quickstart: /'
# Linear probe on the frozen backbone of the final checkpoint (features computed once).
CKPT="$(ls "$WORK"/train/ckpt_e*_s*.pt | sort | tail -n 1)"
"$PY" -m ffcv_amcl.eval --checkpoint="$CKPT" --data.train_dataset="$TRAIN_BETON" \
    --data.val_dataset="$TEST_BETON" --eval.linear_epochs=100 --output="$WORK/eval.json" | sed 's/^/quickstart: /'
