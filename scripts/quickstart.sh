#!/usr/bin/env bash
# Run the quickstart example on an embedded SQLite file. Sets up .venv on first use.
set -euo pipefail
cd "$(dirname "$0")/.."
SESSIONMETA_EXTRAS="${SESSIONMETA_EXTRAS:-postgres,mysql,agents}"
source scripts/_venv.sh
exec "$venv/bin/python" examples/quickstart.py "$@"
