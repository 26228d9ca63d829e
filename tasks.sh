#!/usr/bin/env bash
# One entry point for set-up and the project's jobs. Every task first makes sure the virtual
# environment exists and matches pyproject.toml / constraints.txt (a fresh clone installs it).
#
#   ./tasks.sh demo    reconstruct the bundled sample focal series with a shipped model (headless)
#   ./tasks.sh test    run the test suite (Qt offscreen, no GPU needed)
#   ./tasks.sh setup   only install
set -euo pipefail
cd "$(dirname "$0")"
VENV=${EXITWAVE_VENV:-.venv}
PY=${PYTHON:-python3}

setup() {
    local stamp="$VENV/.installed"
    if [ ! -x "$VENV/bin/python" ] || [ pyproject.toml -nt "$stamp" ] || [ constraints.txt -nt "$stamp" ]; then
        echo ">> installing into $VENV (first run takes a few minutes)"
        "$PY" -m venv "$VENV"
        "$VENV/bin/python" -m pip install -q --upgrade pip
        "$VENV/bin/python" -m pip install -q -c constraints.txt -e ".[training,testing]"
        touch "$stamp"
    fi
}

task=${1:-help}
shift || true
case "$task" in
    setup) setup ;;
    demo)
        setup
        "$VENV/bin/napari-exitwave" reconstruct sample --model mos2 --out out/demo "$@"
        ;;
    test)
        setup
        export QT_QPA_PLATFORM=offscreen KERAS_BACKEND=${KERAS_BACKEND:-tensorflow} \
               TF_CPP_MIN_LOG_LEVEL=2 PYTHONHASHSEED=0
        "$VENV/bin/python" -m pytest "$@"
        ;;
    *) sed -n 2,9p "$0"; exit 2 ;;
esac
