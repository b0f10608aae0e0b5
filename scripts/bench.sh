#!/usr/bin/env bash
# Run the benchmarks: SQLite, and PostgreSQL at SESSIONMETA_BENCH_POSTGRES_URL (default:
# the local server's `test` database; only smbench_* tables are touched). Sets up .venv on
# first use. Extra arguments go to benchmarks/run.py, e.g. `--quick` or `--scale 10000,100000`.
set -euo pipefail
cd "$(dirname "$0")/.."
SESSIONMETA_EXTRAS="${SESSIONMETA_EXTRAS:-postgres,bench}"
source scripts/_venv.sh
exec "$venv/bin/python" benchmarks/run.py "$@"
