#!/usr/bin/env bash
# A streaming hot standby of the local PostgreSQL, for the read-replica tests and benchmark.
#
#   scripts/pg-replica.sh start    # clone the primary (pg_basebackup -R), start, wait for it
#   scripts/pg-replica.sh status   # running or not; exit 0 when it streams, 3 when it is down
#   scripts/pg-replica.sh stop     # stop the standby this script started, remove its copy
#
# The standby is a throwaway copy: it lives in a data directory of its own
# ($SESSIONMETA_REPLICA_DIR, default /tmp/sessionmeta-pg-replica), marked as this script's,
# and listens on 127.0.0.1:$SESSIONMETA_REPLICA_PORT (default 5433). `stop` stops only the
# server of that directory and deletes the directory; `start` clones afresh. Both may run
# any number of times.
#
# The primary (127.0.0.1:${SESSIONMETA_PRIMARY_PORT:-5432}, user postgres) must allow
# replication connections: when it refuses them for want of a pg_hba.conf line, `start`
# appends `host replication all 127.0.0.1/32 trust` to the primary's pg_hba.conf (once) and
# reloads it. wal_level and max_wal_senders need a restart of the primary to change: when
# they do not allow a standby, `start` says so and stops.
#
# pg_basebackup and postgres refuse to run as root: run as root, the script runs them as
# the postgres user.
set -euo pipefail

PRIMARY_HOST=127.0.0.1
PRIMARY_PORT=${SESSIONMETA_PRIMARY_PORT:-5432}
PORT=${SESSIONMETA_REPLICA_PORT:-5433}
DIR=${SESSIONMETA_REPLICA_DIR:-/tmp/sessionmeta-pg-replica}
MARKER="$DIR/SESSIONMETA_REPLICA"
LOG="$DIR/server.log"
WAIT_SECONDS=${SESSIONMETA_REPLICA_WAIT:-180}
HBA_LINE="host replication all 127.0.0.1/32 trust"

find_bin() {
    if [ -n "${PG_BIN:-}" ]; then
        echo "$PG_BIN"
    elif [ -x /usr/lib/postgresql/15/bin/pg_ctl ]; then
        echo /usr/lib/postgresql/15/bin
    else
        dirname "$(command -v pg_ctl)"
    fi
}
BIN=$(find_bin)

say() { echo "pg-replica: $*"; }
die() { echo "pg-replica: $*" >&2; exit 1; }

# Run a PostgreSQL program as the postgres user when we are root (they refuse root).
as_pg() {
    if [ "$(id -u)" = 0 ]; then
        runuser -u postgres -- "$@"
    else
        "$@"
    fi
}

primary_sql() {
    psql -X -q -At -h "$PRIMARY_HOST" -p "$PRIMARY_PORT" -U postgres -d postgres -c "$1"
}

standby_sql() {
    psql -X -q -At -h 127.0.0.1 -p "$PORT" -U postgres -d postgres -c "$1" 2>/dev/null
}

ours() { [ -f "$MARKER" ]; }

running() { ours && as_pg "$BIN/pg_ctl" status -D "$DIR" >/dev/null 2>&1; }

streaming() {
    [ "$(standby_sql "SELECT pg_is_in_recovery()")" = t ] \
        && [ "$(standby_sql "SELECT status FROM pg_stat_wal_receiver")" = streaming ]
}

# The primary must be able to serve a standby: settings that need its restart are reported;
# the pg_hba.conf line that lets 127.0.0.1 replicate is added and loaded.
prepare_primary() {
    pg_isready -q -h "$PRIMARY_HOST" -p "$PRIMARY_PORT" \
        || die "the primary at $PRIMARY_HOST:$PRIMARY_PORT does not answer"
    local wal_level senders
    wal_level=$(primary_sql "SHOW wal_level")
    senders=$(primary_sql "SHOW max_wal_senders")
    if [ "$wal_level" = minimal ] || [ "$senders" -lt 2 ]; then
        die "the primary has wal_level=$wal_level and max_wal_senders=$senders; a standby" \
            "needs wal_level=replica and max_wal_senders of 2 or more (set them in" \
            "postgresql.conf and restart the primary)"
    fi
    if can_replicate; then
        return
    fi
    local hba
    hba=$(primary_sql "SHOW hba_file")
    if ! grep -qxF "$HBA_LINE" "$hba"; then
        [ -w "$hba" ] || die "the primary refuses replication from 127.0.0.1, and $hba is" \
            "not writable here: add the line '$HBA_LINE' to it and reload the primary"
        say "adding '$HBA_LINE' to $hba and reloading the primary"
        printf '%s\n' "# Added by sessionmeta's scripts/pg-replica.sh: a local standby." \
            "$HBA_LINE" >>"$hba"
    fi
    primary_sql "SELECT pg_reload_conf()" >/dev/null
    for _ in $(seq 1 20); do
        can_replicate && return
        sleep 0.5
    done
    die "the primary still refuses replication connections from 127.0.0.1 (see $hba)"
}

can_replicate() {
    psql -X -q -At "host=$PRIMARY_HOST port=$PRIMARY_PORT user=postgres replication=true" \
        -c "IDENTIFY_SYSTEM" >/dev/null 2>&1
}

# The settings a hot standby must have at least as high as its primary's.
standby_settings() {
    local name value
    for name in max_connections max_worker_processes max_wal_senders \
        max_prepared_transactions max_locks_per_transaction; do
        value=$(primary_sql "SELECT setting FROM pg_settings WHERE name = '$name'")
        echo "$name = $value"
    done
}

remove_copy() {
    # Only a directory this script made (it carries the marker) is ever deleted.
    if ours; then
        rm -rf "$DIR"
    fi
}

start() {
    if running; then
        if streaming; then
            say "already running on 127.0.0.1:$PORT ($DIR)"
            return
        fi
    elif ours; then
        say "removing a stopped copy in $DIR"
        remove_copy
    fi
    if [ -e "$DIR" ] && [ -n "$(ls -A "$DIR" 2>/dev/null)" ] && ! ours; then
        die "$DIR exists and is not this script's standby; set SESSIONMETA_REPLICA_DIR"
    fi
    if ! running; then
        if pg_isready -q -h 127.0.0.1 -p "$PORT"; then
            die "something else listens on 127.0.0.1:$PORT; set SESSIONMETA_REPLICA_PORT"
        fi
        prepare_primary
        say "cloning the primary at $PRIMARY_HOST:$PRIMARY_PORT into $DIR"
        mkdir -p "$DIR"
        if [ "$(id -u)" = 0 ]; then
            chown postgres:postgres "$DIR"
        fi
        chmod 700 "$DIR"
        # -R: standby.signal and primary_conninfo; -X stream: the WAL of the copy comes
        # with it; -c fast: no wait for a spread checkpoint; --no-sync: a throwaway copy.
        as_pg "$BIN/pg_basebackup" -h "$PRIMARY_HOST" -p "$PRIMARY_PORT" -U postgres \
            -D "$DIR" -R -X stream -c fast --no-sync --no-password
        as_pg touch "$MARKER"
        # Debian keeps the configuration in /etc: the copy needs its own.
        as_pg tee "$DIR/postgresql.conf" >/dev/null <<EOF
# Written by sessionmeta's scripts/pg-replica.sh: a hot standby of $PRIMARY_HOST:$PRIMARY_PORT.
port = $PORT
listen_addresses = '127.0.0.1'
unix_socket_directories = '$DIR'
hot_standby = on
# The primary's vacuum waits for the standby's queries instead of cancelling them.
hot_standby_feedback = on
$(standby_settings)
EOF
        printf '%s\n' "local all all trust" "host all all 127.0.0.1/32 trust" \
            | as_pg tee "$DIR/pg_hba.conf" >/dev/null
        as_pg touch "$DIR/pg_ident.conf"
        say "starting the standby on 127.0.0.1:$PORT"
        # 9>&-: the server must not inherit (and hold) the lock of this script's runs.
        as_pg "$BIN/pg_ctl" start -D "$DIR" -l "$LOG" -w -t "$WAIT_SECONDS" >/dev/null 9>&- \
            || { tail -n 20 "$LOG" >&2; die "the standby did not start (log: $LOG)"; }
    fi
    for _ in $(seq 1 "$((WAIT_SECONDS * 2))"); do
        if streaming; then
            say "streaming from $PRIMARY_HOST:$PRIMARY_PORT on 127.0.0.1:$PORT"
            return
        fi
        sleep 0.5
    done
    tail -n 20 "$LOG" >&2
    die "the standby on 127.0.0.1:$PORT is not streaming after $WAIT_SECONDS s (log: $LOG)"
}

stop() {
    if running; then
        say "stopping the standby on 127.0.0.1:$PORT"
        as_pg "$BIN/pg_ctl" stop -D "$DIR" -m fast -w >/dev/null
    fi
    if ours; then
        remove_copy
        say "removed $DIR"
    else
        say "not running"
    fi
}

status() {
    if ! running; then
        say "not running (no standby of this script's in $DIR)"
        return 3
    fi
    local recovery receiver delay
    recovery=$(standby_sql "SELECT pg_is_in_recovery()") || recovery="?"
    receiver=$(standby_sql "SELECT status FROM pg_stat_wal_receiver") || receiver="?"
    delay=$(standby_sql "SELECT coalesce(round(extract(epoch FROM now() -
        pg_last_xact_replay_timestamp())::numeric, 3)::text, 'none yet')") || delay="?"
    say "running on 127.0.0.1:$PORT ($DIR): in recovery: $recovery, WAL receiver:" \
        "${receiver:-none}, last replayed transaction ${delay} s ago"
    [ "$recovery" = t ] && [ "$receiver" = streaming ]
}

command=${1:-}
case "$command" in
    start | stop)
        # One start or stop at a time: two would clone into the same directory.
        exec 9>"${DIR%/}.lock"
        flock 9
        "$command"
        ;;
    status) status ;;
    *)
        echo "usage: $0 start|stop|status" >&2
        exit 2
        ;;
esac
