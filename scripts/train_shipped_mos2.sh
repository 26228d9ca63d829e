#!/usr/bin/env bash
# Simulate a modest unsupported-MoS2 data set, train the shipped `mos2` network and export it
# to models/mos2.onnx + models/mos2.json. Sized for about 25 minutes on a 2-core CPU:
#   ~4 min   simulate 320 training + 48 validation flakes (256 px at 0.105 A/px, abTEM, 2 workers)
#   ~17 min  train the "medium" U-Net (depth 3, 16 base filters) on 128 px crops, fresh
#            Table-1 microscope parameters every epoch (stops cleanly at TRAIN_MINUTES)
#   ~1 min   export (ONNX, dynamic size, parity check) + evaluation on the validation set
# Every step resumes if interrupted: run the same command again (after a finished run that
# trains TRAIN_MINUTES more; delete $WORK/run to start training afresh).
#
#   scripts/train_shipped_mos2.sh                      # defaults below
#   TRAIN_MINUTES=60 N_TRAIN=1000 scripts/train_shipped_mos2.sh   # a better model, longer
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${EXITWAVE_VENV:-.venv}
WORK=${WORK:-data/shipped_mos2}          # data sets and the training run (not committed)
MODELS_DIR=${MODELS_DIR:-models}
N_TRAIN=${N_TRAIN:-320}
N_VAL=${N_VAL:-48}
SIZE=${SIZE:-256}
CROP=${CROP:-128}
PRESET=${PRESET:-medium}
TRAIN_MINUTES=${TRAIN_MINUTES:-17}
WORKERS=${WORKERS:-2}
export TF_CPP_MIN_LOG_LEVEL=2 KERAS_BACKEND=tensorflow PYTHONHASHSEED=0
T="$VENV/bin/exitwave-train"
mkdir -p "$WORK" "$MODELS_DIR"
start=$(date +%s)

echo ">> simulating $N_TRAIN + $N_VAL MoS2 flakes ($SIZE px) into $WORK"
"$T" simulate --dataset mos2 --n "$N_TRAIN" --size "$SIZE" --seed 0 --workers "$WORKERS" \
    --out "$WORK/train.zarr" --no-progress
"$T" simulate --dataset mos2 --n "$N_VAL" --size "$SIZE" --seed 1 --workers "$WORKERS" \
    --out "$WORK/val.zarr" --no-progress
echo ">> simulated in $(( $(date +%s) - start )) s"

echo ">> training ($PRESET, at most $TRAIN_MINUTES min)"
set +e
"$T" train --train "$WORK/train.zarr" --val "$WORK/val.zarr" --out "$WORK/run" \
    --preset "$PRESET" --epochs 500 --batch-size 8 --crop "$CROP" --optimizer adam --lr 1e-3 \
    --workers "$WORKERS" --val-samples 24 --seed 0 --max-minutes "$TRAIN_MINUTES"
rc=$?
set -e
# 75: stopped by --max-minutes before the last epoch (the normal end here); the best checkpoint
# by validation loss is exported
if [ "$rc" -ne 0 ] && [ "$rc" -ne 75 ]; then exit "$rc"; fi

echo ">> exporting to $MODELS_DIR/mos2.onnx"
"$T" export "$WORK/run" --name mos2 --out "$MODELS_DIR" --which best \
    --description "unsupported MoS2 nanoflakes, 50 keV, 0.105 A/px, 3-image focal series (Table 1 ranges); CPU-trained demo network (scripts/train_shipped_mos2.sh)" \
    --evaluate "$WORK/val.zarr"
echo ">> done in $(( $(date +%s) - start )) s: $MODELS_DIR/mos2.onnx, $MODELS_DIR/mos2.json;" \
     "evaluation plots in $WORK/run/evaluation_mos2/, learning curve in $WORK/run/learning_curve.png"
