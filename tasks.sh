#!/usr/bin/env bash
# One entry point for set-up and the project's jobs. Every task first makes sure the virtual
# environment exists and matches pyproject.toml / constraints.txt (a fresh clone installs it).
#
#   ./tasks.sh demo    reconstruct the bundled sample focal series with a shipped model (headless)
#   ./tasks.sh test    run the test suite (under Xvfb when it can, else Qt offscreen; no GPU needed)
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

# Run a command under a virtual X server (Mesa's software OpenGL) so that the real-viewer tests
# (tests/test_qt_real_viewer.py, in a process of their own on that display) can draw image
# layers; installs Xvfb when root with apt-get. The rest of the suite stays on Qt offscreen
# with no DISPLAY (TensorFlow and Mesa's llvmpipe crash in one process, and with DISPLAY set even
# offscreen Qt loads Mesa), so the display goes in EXITWAVE_XVFB_DISPLAY. Without Xvfb those
# tests skip (or fail in CI) with their reason.
with_display() {
    if ! command -v xvfb-run >/dev/null && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
        echo ">> installing xvfb for the real-viewer tests"
        { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
            xvfb libxcb-icccm4 libxcb-keysyms1 libxcb-xinerama0; } >/dev/null 2>&1 \
            || echo ">> could not install xvfb: Qt runs offscreen, the real-viewer tests skip"
    fi
    if command -v xvfb-run >/dev/null; then
        xvfb-run -a -s "-screen 0 1280x1024x24" \
            bash -c 'EXITWAVE_XVFB_DISPLAY=$DISPLAY exec env -u DISPLAY "$@"' with_display "$@"
    else
        "$@"
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
        with_display "$VENV/bin/python" -m pytest "$@"
        ;;
    *) sed -n 2,9p "$0"; exit 2 ;;
esac
