#!/usr/bin/env bash
# Make benchmarks/.venv-peers, the venv of Google ADK for benchmarks/peers.py, once and
# again when requirements-peers.txt changes. It is apart from .venv because google-adk
# pins OpenTelemetry and websockets below what .venv's extras install (see
# requirements-peers.txt). PYTHON picks the interpreter (default: python3).
set -euo pipefail
cd "$(dirname "$0")"
venv=.venv-peers
python="${PYTHON:-python3}"
stamp="$venv/.peers-installed"
if [ ! -x "$venv/bin/python" ]; then
    "$python" -m venv "$venv"
fi
# Not part of the repository, wherever it is made.
echo '*' > "$venv/.gitignore"
if [ ! -f "$stamp" ] || [ requirements-peers.txt -nt "$stamp" ]; then
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check -r requirements-peers.txt
    touch "$stamp"
fi
