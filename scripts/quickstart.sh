#!/usr/bin/env bash
# The README's main command: set up, convert the embedded digits set to .beton, then the stages below.
# Everything lands in $WORK (default runs/quickstart); finished steps are skipped on a re-run.
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
    if [ -f "$beton" ] && [ -f "$beton.json" ]; then
        echo "quickstart: $beton already there"
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
    --logging.folder="$WORK/train" --training.resume=auto
"$PY" - "$WORK/train/metrics.jsonl" <<'PY'
import json, sys
rows = [json.loads(line) for line in open(sys.argv[1])]
first, last = rows[0], [r for r in rows if "knn_top1" in r][-1]
speeds = [r["images_per_s"] for r in rows if r.get("images_per_s")]
print(f"quickstart: kNN top-1 before training (epoch 0, untrained network): {first['knn_top1']:.2f}%")
print(f"quickstart: kNN top-1 after {last['epoch']} epochs: {last['knn_top1']:.2f}% "
      f"({last['knn_top1'] - first['knn_top1']:+.2f} points)")
if "online_linear_top1" in rows[-1]:
    print(f"quickstart: online linear probe top-1 after {rows[-1]['epoch']} epochs: {rows[-1]['online_linear_top1']:.2f}%")
end = rows[-1]
heads = sorted({int(k.rsplit("head", 1)[1]) for k in end if k.startswith("tau_pos_p50_head")})
for c in heads:   # AMCL's temperature health in the last epoch: adapting, or stuck at a bound?
    at = lambda kind: end[f"tau_{kind}_at_min_head{c}"] + end[f"tau_{kind}_at_max_head{c}"]
    rho = end.get(f"rank_corr_s_tau_head{c}")
    print(f"quickstart: head {c} temperatures: tau+ median {end[f'tau_pos_p50_head{c}']:.3f} "
          f"[p10 {end[f'tau_pos_p10_head{c}']:.3f}, p90 {end[f'tau_pos_p90_head{c}']:.3f}], negatives' median "
          f"{end[f'tau_neg_p50_head{c}']:.3f}; at a bound: {at('pos'):.1%} of tau+, {at('neg'):.1%} of tau-; "
          f"rank corr(s+, tau+) {'n/a' if rho is None else f'{rho:+.2f}'}")
if speeds:
    print(f"quickstart: training speed: {sum(speeds) / len(speeds):.0f} images/s (mean over {len(speeds)} epochs, "
          f"two views per image)")
PY
# Linear probe on the frozen backbone of the final checkpoint (features computed once).
CKPT="$(ls "$WORK"/train/ckpt_e*_s*.pt | sort | tail -n 1)"
"$PY" -m ffcv_amcl.eval --checkpoint="$CKPT" --data.train_dataset="$TRAIN_BETON" \
    --data.val_dataset="$TEST_BETON" --eval.linear_epochs=100 --output="$WORK/eval.json" | sed 's/^/quickstart: /'
