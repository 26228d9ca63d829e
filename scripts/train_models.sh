#!/usr/bin/env bash
# Simulate, train, export and evaluate the networks shipped in models/, one recipe per network.
#
#   scripts/train_models.sh mos2-graphene-a            # one network
#   scripts/train_models.sh all                        # every recipe, in order
#   scripts/train_models.sh estimator                  # the aberration estimator (models/aberrations.*)
#   PRESET=paper TRAIN_MINUTES=600 scripts/train_models.sh 2d     # paper scale (GPU)
#
# Each step resumes: rerunning a command continues an interrupted simulation (finished samples
# are kept) or training run (exact resume from its last epoch; exit status 75 = stopped by the
# time budget, the normal end here). Data sets and runs live in data/ (not committed); the
# ONNX file and its card go to $MODELS_DIR, the card carrying the validation figures of
# `exitwave-train evaluate` on the whole validation set (seed 1, never seen in training).
#
# The recipes below are what made the files in models/ on the 2-core development VM (CPU only,
# see docs/models.md); on the GPU machine set PRESET=paper, larger N_TRAIN and TRAIN_MINUTES,
# and KERAS_BACKEND=torch.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${EXITWAVE_VENV:-.venv}
MODELS_DIR=${MODELS_DIR:-models}
PRESET=${PRESET:-medium}
WORKERS=${WORKERS:-2}
export TF_CPP_MIN_LOG_LEVEL=2 KERAS_BACKEND=${KERAS_BACKEND:-tensorflow} PYTHONHASHSEED=0
T="$VENV/bin/exitwave-train"
CPU_NOTE="CPU-trained on 2 cores (preset $PRESET), far below paper quality; to be retrained on a GPU"

# recipe NAME -> data tag, simulate options, train seed, crop, minutes, description
recipe() {
    case "$1" in
    mos2)  # the demo network (trained first, with scripts/train_shipped_mos2.sh's settings)
        TAG=mos2; SIM="--dataset mos2"; NT=${N_TRAIN:-1000}; NV=${N_VAL:-200}; SEED=0; CROP=128
        MIN=${TRAIN_MINUTES:-130}; FROM=mos2-graphene-a  # the first run started from its weights
        DESC="unsupported MoS2 nanoflakes, 50 keV, 0.105 A/px, 3 images (Table 1 ranges)" ;;
    mos2-2img|mos2-4img)  # 2- and 4-image series (users' stacks): finetuned from mos2's weights
        TAG=mos2; SIM="--dataset mos2"; NT=${N_TRAIN:-1000}; NV=${N_VAL:-200}; CROP=128
        NI=${1#mos2-}; NI=${NI%img}; SEED=$((NI + 1)); MIN=${TRAIN_MINUTES:-95}; FROM=mos2; LR=3e-4
        DESC="unsupported MoS2 nanoflakes, 50 keV, 0.105 A/px, $NI images 10 nm in total (Table 1 ranges, blur in px); finetuned from mos2 (finetune --n-images $NI)" ;;
    mos2-graphene-a|mos2-graphene-b)  # two independent networks (own initialisation and data order)
        TAG=mosg; SIM="--dataset mos2-graphene"; NT=${N_TRAIN:-600}; NV=${N_VAL:-150}; CROP=128
        SEED=$([ "$1" = mos2-graphene-a ] && echo 0 || echo 1); MIN=${TRAIN_MINUTES:-20}
        DESC="MoS2 nanoflakes on graphene, 50 keV, 0.105 A/px, 3 images; independent network ${1##*-} of 2 (tick both for the uncertainty layer)"
        if [ "$1" = mos2-graphene-a ]; then  # 2026-12-03: finetuned from mos2 (b: from scratch)
            # 45 epochs; 2026-12-04: + 55 epochs cosine 1e-3 from its own weights (0.039 -> 0.032),
            # then a run of 80 cosine epochs from 5e-4, stopped at 60 by --max-minutes (-> 0.031);
            # `train --init-from` continues that run's last 20 epochs
            FROM=mos2; EPOCHS=80; LR=5e-4; SCHED="--schedule cosine"; MIN=${TRAIN_MINUTES:-113}
            DESC="$DESC; finetuned from mos2 (45 epochs, cosine 1e-3), then 55 epochs cosine 1e-3 and 60 epochs cosine 5e-4 from its own weights"
        else  # 2026-12-04: its own from-scratch weights (19 epochs) + 14 epochs cosine 1e-3,
            # so that it stays independent of a (which starts from mos2): 0.054 -> 0.046
            EPOCHS=14; SCHED="--schedule cosine"; MIN=${TRAIN_MINUTES:-85}
            DESC="$DESC; from scratch (19 epochs), then 14 epochs cosine 1e-3 from its own weights"
        fi ;;
    2d)  # the built-in 2D prototypes, split 2:1 by element set (a user's C2DB: add --db c2db.db)
        TAG=2d; SIM="--dataset 2d"; NT=${N_TRAIN:-500}; NV=${N_VAL:-120}; SEED=0; CROP=128
        MIN=${TRAIN_MINUTES:-20}
        DESC="2D materials (built-in prototypes, element sets unseen in validation), 50 keV, 0.105 A/px, 3 images"
        # 2026-12-03: finetuned from mos2 (0.046 -> 0.026 imag RMSE on 2d-val)
        FROM=mos2; EPOCHS=35; SCHED="--schedule cosine"; MIN=${TRAIN_MINUTES:-48}
        DESC="$DESC; finetuned from mos2 (35 epochs, cosine 1e-3)" ;;
    mos2-graphene-022)  # the paper's experimental pixel size; a 28 A field like the others
        TAG=mosg22; SIM="--dataset mos2-graphene --sampling 0.22 --size 128"; NT=${N_TRAIN:-500}
        NV=${N_VAL:-120}; SEED=0; CROP=0; MIN=${TRAIN_MINUTES:-20}
        EXTRA="--sampling-jitter 0.215 0.235"  # the paper's pixel-size range around 0.22
        DESC="MoS2 nanoflakes on graphene at 0.22 A/px (the paper's experimental case), 50 keV, 3 images"
        # 2026-12-04: finetuned from mos2 (0.066 -> 0.041 imag RMSE on mosg22-val)
        FROM=mos2; EPOCHS=40; SCHED="--schedule cosine"; MIN=${TRAIN_MINUTES:-60}
        DESC="$DESC; finetuned from mos2 (40 epochs, cosine 1e-3)" ;;
    *) echo "unknown network '$1' (mos2, mos2-2img, mos2-4img, mos2-graphene-a, mos2-graphene-b, 2d, mos2-graphene-022, all)" >&2
       exit 2 ;;
    esac
}

# the training (seed 0) and validation (seed 1) sets of the recipe last read by `recipe`
simulate_data() {
    local split_train="" split_val=""
    if [ "$TAG" = 2d ]; then split_train="--split train"; split_val="--split validation"; fi
    mkdir -p data
    # shellcheck disable=SC2086
    "$T" simulate $SIM $split_train --n "$NT" --seed 0 --workers "$WORKERS" \
        --out "data/$TAG-train.zarr" --no-progress
    # shellcheck disable=SC2086
    "$T" simulate $SIM $split_val --n "$NV" --seed 1 --workers "$WORKERS" \
        --out "data/$TAG-val.zarr" --no-progress
}

train_one() {
    local name=$1 start
    start=$(date +%s)
    EXTRA=""; FROM=""; NI=""; LR=1e-3; EPOCHS=500; SCHED=""
    recipe "$name"
    # continue the shipped checkpoint when the run folder is not here (a fresh machine); a
    # network with none starts from its recipe's FROM network (transfer), else from scratch
    local cmd=train
    if [ -f "$MODELS_DIR/checkpoints/$name.keras" ]; then
        EXTRA="$EXTRA --init-from $MODELS_DIR/checkpoints/$name.keras"
    elif [ -n "${FROM:-}" ] && [ ! -f "data/runs/$name/state.json" ]; then
        cmd=finetune
        EXTRA="$EXTRA --from $MODELS_DIR/checkpoints/$FROM.keras${NI:+ --n-images $NI}"
    fi
    mkdir -p "$MODELS_DIR"
    echo ">> [$name] simulating $NT + $NV samples ($SIM)"
    simulate_data
    echo ">> [$name] training ($PRESET, seed $SEED, at most $MIN min)"
    set +e
    # shellcheck disable=SC2086
    local only_train="--preset $PRESET --val-samples 24 --snapshot-every 4"
    [ "$cmd" = finetune ] && only_train=""
    # shellcheck disable=SC2086
    "$T" $cmd --train "data/$TAG-train.zarr" --val "data/$TAG-val.zarr" --out "data/runs/$name" \
        --epochs "$EPOCHS" --batch-size 8 --crop "$CROP" --optimizer adam --lr "$LR" $SCHED \
        --drift 1 $EXTRA --workers "$WORKERS" --seed "$SEED" --max-minutes "$MIN" \
        $only_train --quiet
    local rc=$?
    set -e
    if [ "$rc" -ne 0 ] && [ "$rc" -ne 75 ]; then exit "$rc"; fi
    echo ">> [$name] exporting to $MODELS_DIR/$name.onnx, evaluating on data/$TAG-val.zarr"
    "$T" export "data/runs/$name" --name "$name" --out "$MODELS_DIR" --which best \
        --description "$DESC; $CPU_NOTE (scripts/train_models.sh $name)" \
        --evaluate "data/$TAG-val.zarr"
    # the checkpoint a later session resumes from (train --init-from models/checkpoints/NAME.keras)
    "$T" ship "data/runs/$name" --name "$name" --out "$MODELS_DIR/checkpoints"
    echo ">> [$name] done in $(( $(date +%s) - start )) s"
}

if [ $# -ne 1 ]; then
    sed -n '2,16p' "$0" | sed 's/^# \{0,1\}//'
    exit 2
fi
estimator() {  # the aberration estimator (napari_exitwave.estimate), on the MoS2 data sets
    # continue the shipped checkpoint on a fresh machine (the run folder is not committed)
    if [ ! -f data/runs/estimator/state.json ] && [ -f "$MODELS_DIR/checkpoints/aberrations.keras" ]; then
        mkdir -p data/runs/estimator
        cp "$MODELS_DIR/checkpoints/aberrations.keras" data/runs/estimator/last.keras
        cp "$MODELS_DIR/checkpoints/aberrations.keras" data/runs/estimator/best.keras
        cp "$MODELS_DIR/checkpoints/aberrations.state.json" data/runs/estimator/state.json
    fi
    local net
    for net in mos2 mos2-graphene-a; do  # their data sets: data/mos2-*.zarr, data/mosg-*.zarr
        recipe "$net"
        simulate_data
    done
    "$T" estimator --train data/mos2-train.zarr data/mosg-train.zarr \
        --val data/mos2-val.zarr data/mosg-val.zarr --out data/runs/estimator \
        --max-minutes "${TRAIN_MINUTES:-50}" --steps 50 --batch-size 16 --workers "$WORKERS" \
        --export aberrations --models "$MODELS_DIR"
    "$T" ship data/runs/estimator --name aberrations --out "$MODELS_DIR/checkpoints"
}

if [ "$1" = estimator ]; then
    estimator
elif [ "$1" = all ]; then
    for n in mos2 mos2-graphene-a mos2-graphene-b 2d mos2-graphene-022 mos2-2img mos2-4img; do
        train_one "$n"
    done
else
    train_one "$1"
fi
