#!/usr/bin/env bash
# A throwaway database server sized for a million sessions, for benchmarks/write_growth.py.
#
#   bash benchmarks/sized_server.sh postgres start   # initdb, start on 127.0.0.1:5434
#   bash benchmarks/sized_server.sh mariadb start    # install, start on 127.0.0.1:3307
#   bash benchmarks/sized_server.sh postgres stop    # stop it and delete its data directory
#
# The shared development servers run with their defaults: PostgreSQL's 128 MB of
# shared_buffers (and autovacuum off), MariaDB's 128 MB InnoDB buffer pool. At 1,000,000
# sessions the indexes no longer fit, and every write reads pages from disk. These are
# configured as servers meant to hold those tables would be: caches that hold the
# indexes, autovacuum on, checkpoints (redo logs) large enough that a page is not
# written whole again every few minutes; commits stay durable. Then what write latency
# still does as the tables grow is the store's:
#
#   python benchmarks/write_growth.py --backends postgres --load set_many \
#       --postgres-url postgresql+asyncpg://postgres@127.0.0.1:5434/postgres
#   python benchmarks/write_growth.py --backends mysql \
#       --mysql-url mysql+aiomysql://root@127.0.0.1:3307/test
#
# Data directories: /tmp/sessionmeta-sized-postgres and /tmp/sessionmeta-sized-mariadb.
# initdb, postgres and mariadbd refuse root or want their own account: as root, the
# script runs them as the postgres and mysql users.
set -euo pipefail

BACKEND=${1:-}
ACTION=${2:-}
DIR=/tmp/sessionmeta-sized-$BACKEND

run_as() {
    local user=$1
    shift
    if [ "$(id -u)" = 0 ]; then
        runuser -u "$user" -- "$@"
    else
        "$@"
    fi
}

postgres_bin() {
    if [ -x /usr/lib/postgresql/15/bin/pg_ctl ]; then
        echo /usr/lib/postgresql/15/bin
    else
        dirname "$(command -v pg_ctl)"
    fi
}

start_postgres() {
    local bin
    bin=$(postgres_bin)
    if [ ! -f "$DIR/PG_VERSION" ]; then
        mkdir -p "$DIR"
        if [ "$(id -u)" = 0 ]; then chown postgres "$DIR"; fi
        run_as postgres "$bin/initdb" -D "$DIR" -U postgres --auth=trust >/dev/null
        cat >>"$DIR/postgresql.conf" <<EOF
listen_addresses = '127.0.0.1'
port = 5434
unix_socket_directories = '$DIR'
shared_buffers = 4GB
effective_cache_size = 12GB
maintenance_work_mem = 512MB
autovacuum = on
max_wal_size = 16GB
checkpoint_timeout = 30min
EOF
    fi
    run_as postgres "$bin/pg_ctl" -D "$DIR" -l "$DIR/server.log" -w start >/dev/null
    echo "sized postgres: running on 127.0.0.1:5434 ($DIR)"
}

stop_postgres() {
    if [ -f "$DIR/postmaster.pid" ]; then
        run_as postgres "$(postgres_bin)/pg_ctl" -D "$DIR" -m fast -w stop >/dev/null
    fi
    rm -rf "$DIR"
    echo "sized postgres: stopped"
}

start_mariadb() {
    local mariadbd
    mariadbd=$(command -v mariadbd || echo /usr/sbin/mariadbd)
    if [ ! -d "$DIR/data" ]; then
        mkdir -p "$DIR"
        cat >"$DIR/my.cnf" <<EOF
[mysqld]
user = mysql
datadir = $DIR/data
socket = $DIR/mysqld.sock
pid-file = $DIR/mariadbd.pid
log-error = $DIR/error.log
port = 3307
bind-address = 127.0.0.1
character-set-server = utf8mb4
collation-server = utf8mb4_general_ci
innodb_buffer_pool_size = 4G
innodb_log_file_size = 2G
EOF
        if [ "$(id -u)" = 0 ]; then chown -R mysql: "$DIR"; fi
        mariadb-install-db --defaults-file="$DIR/my.cnf" --auth-root-authentication-method=normal \
            --skip-test-db >"$DIR/install.log" 2>&1
    fi
    setsid "$mariadbd" --defaults-file="$DIR/my.cnf" </dev/null >>"$DIR/error.log" 2>&1 &
    for _ in $(seq 1 60); do
        if mysql --protocol=tcp -h 127.0.0.1 -P 3307 -u root -e "CREATE DATABASE IF NOT EXISTS test" \
            2>/dev/null; then
            echo "sized mariadb: running on 127.0.0.1:3307 ($DIR)"
            return 0
        fi
        sleep 1
    done
    echo "sized mariadb: did not start; see $DIR/error.log" >&2
    return 1
}

stop_mariadb() {
    if [ -f "$DIR/mariadbd.pid" ]; then
        local pid
        pid=$(cat "$DIR/mariadbd.pid")
        kill "$pid" 2>/dev/null || true
        while kill -0 "$pid" 2>/dev/null; do sleep 0.5; done
    fi
    rm -rf "$DIR"
    echo "sized mariadb: stopped"
}

case "$BACKEND $ACTION" in
"postgres start") start_postgres ;;
"postgres stop") stop_postgres ;;
"mariadb start") start_mariadb ;;
"mariadb stop") stop_mariadb ;;
*)
    echo "usage: $0 postgres|mariadb start|stop" >&2
    exit 2
    ;;
esac
