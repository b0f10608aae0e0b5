#!/usr/bin/env bash
# Run the benchmarks: SQLite, PostgreSQL at SESSIONMETA_BENCH_POSTGRES_URL and MariaDB/MySQL at
# SESSIONMETA_BENCH_MYSQL_URL (default: the local servers' `test` database; only smbench_*
# tables are touched). Sets up .venv on first use. Extra arguments go to benchmarks/run.py,
# e.g. `--quick` or `--scale 10000,100000`.
set -euo pipefail
cd "$(dirname "$0")/.."
# agents: the Agents SDK session that the peers table times per turn; the bench dependency
# group (pyproject.toml): the charts and the peers.
SESSIONMETA_EXTRAS="${SESSIONMETA_EXTRAS:-postgres,mysql,agents}"
SESSIONMETA_GROUPS="${SESSIONMETA_GROUPS-bench}"
source scripts/_venv.sh
"$venv/bin/python" benchmarks/run.py "$@"
# Then the table of peers (benchmarks/peers.py), with --quick, --backends, --postgres-url
# and --out as given above. Google ADK runs from a venv of its own, benchmarks/.venv-peers.
bash benchmarks/peers_venv.sh
exec "$venv/bin/python" benchmarks/peers.py --from-bench "$@"
