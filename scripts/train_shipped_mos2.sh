#!/usr/bin/env bash
# The `mos2` network's recipe, kept under the name its model card gives: it now lives with the
# other networks' recipes in scripts/train_models.sh (800 + 200 MoS2 flakes, preset medium,
# 40 minutes; N_TRAIN, N_VAL, TRAIN_MINUTES, PRESET, WORKERS, MODELS_DIR change it).
exec "$(dirname "$0")/train_models.sh" mos2
