#!/usr/bin/env bash
# The two commands of the README:
#   ./run.sh demo    open napari with the bundled demo scan, checkpoint and the DISYRE widget
#   ./run.sh test    run the test suite
# Both create ./.venv on first use (CPU build of torch from the local wheel cache or PyPI, then this
# package with its test extras) and reuse it afterwards. Set DISYRE_VENV to use another environment.
set -euo pipefail
cd "$(dirname "$0")"

venv="${DISYRE_VENV:-.venv}"
stamp="$venv/.napari-disyre-installed"
python="${PYTHON:-python3}"

install() {
    [ -x "$venv/bin/python" ] || "$python" -m venv "$venv"
    "$venv/bin/python" -m pip install --quiet --upgrade pip
    # The CPU build: an unpinned torch would pull gigabytes of CUDA wheels.
    "$venv/bin/python" -m pip install --quiet torch==2.13.0
    "$venv/bin/python" -m pip install --quiet -e ".[testing]"
    sha1sum pyproject.toml > "$stamp"
}

if [ ! -f "$stamp" ] || ! sha1sum --check --status "$stamp"; then
    echo "Setting up $venv (first run only)..." >&2
    install
fi

command="${1:-}"
shift || true
case "$command" in
    demo)
        exec "$venv/bin/napari-disyre" demo "$@"
        ;;
    test)
        # Widget tests run offscreen; the screenshot test needs a display with OpenGL, so use a
        # virtual one when there is no real display and xvfb-run is installed.
        if [ -z "${DISPLAY:-}" ] && command -v xvfb-run > /dev/null; then
            exec xvfb-run -a env QT_QPA_PLATFORM=xcb "$venv/bin/python" -m pytest "$@"
        fi
        exec "$venv/bin/python" -m pytest "$@"
        ;;
    *)
        echo "usage: ./run.sh demo [--help] | ./run.sh test [pytest options]" >&2
        exit 2
        ;;
esac
