#!/usr/bin/env bash
# A throwaway PostgreSQL sized for a million sessions, for benchmarks/write_growth.py.
#
#   bash benchmarks/pg_sized.sh start    # initdb, start on 127.0.0.1:5434, wait for it
#   bash benchmarks/pg_sized.sh stop     # stop it and delete its data directory
#
# The shared development server runs with PostgreSQL's defaults of 128 MB of
# shared_buffers and autovacuum off: at 1,000,000 sessions the indexes no longer fit and
# every write reads pages from outside the buffers. This one is configured as a server
# meant to hold those tables would be (shared_buffers that hold the indexes, autovacuum
# on, checkpoints spaced so that each page's full-page image is not written again every
# few minutes), so that what write latency still does as the tables grow is the store's.
#
#   python benchmarks/write_growth.py --backends postgres \
#       --postgres-url postgresql+asyncpg://postgres@127.0.0.1:5434/postgres
#
# Its data directory is $SESSIONMETA_SIZED_DIR (default /tmp/sessionmeta-pg-sized), its
# port $SESSIONMETA_SIZED_PORT (default 5434). initdb and postgres refuse root: as root,
# the script runs them as the postgres user.
set -euo pipefail

PORT=${SESSIONMETA_SIZED_PORT:-5434}
DIR=${SESSIONMETA_SIZED_DIR:-/tmp/sessionmeta-pg-sized}
if [ -x /usr/lib/postgresql/15/bin/pg_ctl ]; then
    BIN=/usr/lib/postgresql/15/bin
else
    BIN=$(dirname "$(command -v pg_ctl)")
fi

as_pg() {
    if [ "$(id -u)" = 0 ]; then
        runuser -u postgres -- "$@"
    else
        "$@"
    fi
}

case "${1:-}" in
start)
    if [ ! -f "$DIR/PG_VERSION" ]; then
        mkdir -p "$DIR"
        if [ "$(id -u)" = 0 ]; then chown postgres "$DIR"; fi
        as_pg "$BIN/initdb" -D "$DIR" -U postgres --auth=trust >/dev/null
        cat >>"$DIR/postgresql.conf" <<EOF
listen_addresses = '127.0.0.1'
port = $PORT
unix_socket_directories = '$DIR'
shared_buffers = 4GB
effective_cache_size = 12GB
maintenance_work_mem = 512MB
autovacuum = on
max_wal_size = 16GB
checkpoint_timeout = 30min
EOF
    fi
    as_pg "$BIN/pg_ctl" -D "$DIR" -l "$DIR/server.log" -w start >/dev/null
    echo "pg-sized: running on 127.0.0.1:$PORT ($DIR)"
    ;;
stop)
    if [ -f "$DIR/postmaster.pid" ]; then
        as_pg "$BIN/pg_ctl" -D "$DIR" -m fast -w stop >/dev/null
    fi
    rm -rf "$DIR"
    echo "pg-sized: stopped"
    ;;
*)
    echo "usage: $0 start|stop" >&2
    exit 2
    ;;
esac
