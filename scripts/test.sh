#!/usr/bin/env bash
# Run the whole test suite (SQLite always; PostgreSQL and MariaDB/MySQL when they answer).
# Sets up .venv on first use. Extra arguments go to pytest, e.g. `-m "not mysql"`.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/_venv.sh
exec "$venv/bin/python" -m pytest "$@"
