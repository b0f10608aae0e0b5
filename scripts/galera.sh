#!/usr/bin/env bash
# A 3-node MariaDB Galera cluster on 127.0.0.1, for the Galera tests and benchmark.
#
#   scripts/galera.sh start    start every node that is down; wait for wsrep_cluster_size=3
#   scripts/galera.sh stop     stop the nodes this script started (node 1 last)
#   scripts/galera.sh status   one line per node; exit status 0 only when all 3 are synced
#
# Both start and stop are idempotent. With no node running, start bootstraps the cluster
# (--wsrep-new-cluster) from the node the last stop left safe to bootstrap, then joins the
# others (state transfer by rsync); with some running, it starts the missing ones, which
# rejoin and catch up. Data stays in $SESSIONMETA_GALERA_DIR (default
# /tmp/sessionmeta-galera) across stop and start; remove that directory for a fresh cluster.
#
# Node n (1-3) listens for SQL on 127.0.0.1:$((3310+n)) (root, no password, database
# `test`), and uses 4567+10(n-1) for group communication, +1 for incremental state
# transfer (IST) and +2 for full state transfer (SST). The base ports move with
# SESSIONMETA_GALERA_SQL_PORT (3311) and SESSIONMETA_GALERA_PORT (4567).
#
# Only processes recorded in this directory's pid files, running mariadbd with this
# directory's configuration, are ever signalled. Needs mariadb-server, galera-4 and rsync;
# run as root, the servers run as the user mysql (SESSIONMETA_GALERA_USER).
set -euo pipefail

dir=${SESSIONMETA_GALERA_DIR:-/tmp/sessionmeta-galera}
sql_base=${SESSIONMETA_GALERA_SQL_PORT:-3311}
gcomm_base=${SESSIONMETA_GALERA_PORT:-4567}
wait_seconds=${SESSIONMETA_GALERA_WAIT:-120}
# The account mariadbd runs as: as root, `mysql` (rsync's state-transfer daemon, started by
# mariadbd, drops root for `nobody` and could not write a root-owned datadir).
if ((EUID == 0)); then
    run_as=${SESSIONMETA_GALERA_USER:-mysql}
else
    run_as=$(id -un)
fi
nodes=(1 2 3)

provider=/usr/lib/galera/libgalera_smm.so
if [[ ! -e $provider ]]; then
    provider=$(dpkg -L galera-4 2>/dev/null | grep -m1 'libgalera_smm\.so$' || true)
fi
mariadbd=$(command -v mariadbd || echo /usr/sbin/mariadbd)

say() { echo "galera: $*" >&2; }
die() { say "$*"; exit 1; }

node_dir() { echo "$dir/node$1"; }
sql_port() { echo $((sql_base + $1 - 1)); }
gcomm_port() { echo $((gcomm_base + 10 * ($1 - 1))); }
cluster_address() {
    local n addresses=()
    for n in "${nodes[@]}"; do addresses+=("127.0.0.1:$(gcomm_port "$n")"); done
    local IFS=,
    echo "gcomm://${addresses[*]}"
}

write_config() {
    local n=$1 d gcomm
    d=$(node_dir "$n")
    gcomm=$(gcomm_port "$n")
    # Replaced on every start, so a changed script applies to an existing cluster.
    cat >"$d/my.cnf" <<EOF
[mysqld]
user = $run_as
datadir = $d/data
socket = $d/mysqld.sock
pid-file = $d/mariadbd.pid
log-error = $d/error.log
port = $(sql_port "$n")
bind-address = 127.0.0.1
skip-name-resolve
character-set-server = utf8mb4
collation-server = utf8mb4_general_ci
# Small enough for three servers on one host.
innodb_buffer_pool_size = 64M
innodb_log_file_size = 32M
max_connections = 300
# What Galera requires.
binlog_format = ROW
default_storage_engine = InnoDB
innodb_autoinc_lock_mode = 2
# A commit is durable on the other nodes once certified; the local log is written at
# each commit and flushed once a second, as Galera deployments usually run.
innodb_flush_log_at_trx_commit = 2
wsrep_on = ON
wsrep_provider = $provider
wsrep_cluster_name = sessionmeta
wsrep_cluster_address = $(cluster_address)
wsrep_node_name = node$n
wsrep_node_address = 127.0.0.1:$gcomm
wsrep_sst_method = rsync
wsrep_sst_receive_address = 127.0.0.1:$((gcomm + 2))
# A killed node is declared gone after 3-6 s instead of 5-15 s: writes on the others
# wait for that. Still far above one host's scheduling hiccups.
wsrep_provider_options = "gmcast.listen_addr=tcp://127.0.0.1:$gcomm;ist.recv_addr=127.0.0.1:$((gcomm + 1));gcache.size=64M;evs.suspect_timeout=PT3S;evs.inactive_timeout=PT6S;evs.install_timeout=PT6S"

[client]
socket = $d/mysqld.sock
user = root
EOF
}

pid_of() {
    # The pid of node $1's mariadbd when it runs with this directory's config, else nothing.
    local file pid
    file="$(node_dir "$1")/launched.pid"
    [[ -s $file ]] || return 0
    pid=$(<"$file")
    [[ $pid =~ ^[0-9]+$ ]] || return 0
    if tr '\0' ' ' 2>/dev/null <"/proc/$pid/cmdline" | grep -qF -- "--defaults-file=$(node_dir "$1")/my.cnf"; then
        echo "$pid"
    fi
}

client() {
    local n=$1; shift
    mariadb --defaults-file="$(node_dir "$n")/my.cnf" --connect-timeout=2 -N -B "$@"
}

wsrep_status() {
    # "<state> <cluster size>" of node $1, or nothing when it does not answer.
    client "$1" -e "SELECT MAX(IF(VARIABLE_NAME='WSREP_LOCAL_STATE_COMMENT', VARIABLE_VALUE, NULL)),
        MAX(IF(VARIABLE_NAME='WSREP_CLUSTER_SIZE', VARIABLE_VALUE, NULL))
        FROM information_schema.GLOBAL_STATUS
        WHERE VARIABLE_NAME IN ('WSREP_LOCAL_STATE_COMMENT', 'WSREP_CLUSTER_SIZE')" 2>/dev/null || true
}

synced() {
    # Whether node $1 is synced (in a cluster of $2 nodes, when given).
    local status
    status=$(wsrep_status "$1")
    [[ $status == "Synced"$'\t'"${2:-}"* ]]
}

initialize() {
    local d
    d=$(node_dir 1)
    say "initializing $d/data"
    mariadb-install-db --no-defaults --user="$run_as" --datadir="$d/data" \
        --auth-root-authentication-method=socket --skip-test-db >"$d/install.log" 2>&1 \
        || die "mariadb-install-db failed; see $d/install.log"
}

launch() {
    local n=$1 d
    shift
    d=$(node_dir "$n")
    write_config "$n"
    : >>"$d/error.log"
    if ((EUID == 0)); then chown -R "$run_as:" "$d"; fi
    # Its own session, so a signal to the caller's process group does not reach it.
    setsid "$mariadbd" --defaults-file="$d/my.cnf" "$@" </dev/null >>"$d/error.log" 2>&1 &
    echo $! >"$d/launched.pid"
    say "node$n starting (pid $!, port $(sql_port "$n"))${*:+ $*}"
}

safe_to_bootstrap() {
    grep -q '^safe_to_bootstrap: *1' "$(node_dir "$1")/data/grastate.dat" 2>/dev/null
}

seqno() {
    sed -n 's/^seqno: *\(-\{0,1\}[0-9]*\).*/\1/p' "$(node_dir "$1")/data/grastate.dat" 2>/dev/null \
        | head -n1
}

bootstrap_node() {
    # The node whose state is the newest: the one a clean stop marked safe to bootstrap,
    # else the highest committed seqno, else node 1.
    local n best=1 best_seqno=-2 s
    for n in "${nodes[@]}"; do
        if safe_to_bootstrap "$n"; then echo "$n"; return; fi
    done
    for n in "${nodes[@]}"; do
        s=$(seqno "$n")
        if [[ -n $s ]] && ((s > best_seqno)); then best=$n; best_seqno=$s; fi
    done
    echo "$best"
}

wait_until() {
    # wait_until <what> <command...>: poll every 0.5 s, give up after $wait_seconds.
    local what=$1 deadline=$((SECONDS + wait_seconds))
    shift
    until "$@"; do
        if ((SECONDS >= deadline)); then
            die "$what: not within ${wait_seconds} s (logs: $dir/node*/error.log)"
        fi
        sleep 0.5
    done
}

running_and_answering() {
    [[ -n $(pid_of "$1") ]] || die "node$1 exited (see $(node_dir "$1")/error.log)"
    synced "$1"
}

all_synced() {
    local n
    for n in "${nodes[@]}"; do
        [[ -n $(pid_of "$n") ]] || die "node$n exited (see $(node_dir "$n")/error.log)"
    done
    for n in "${nodes[@]}"; do
        synced "$n" 3 || return 1
    done
}

start() {
    local started=$SECONDS n down=() first
    [[ -n $provider && -e $provider ]] || die "no Galera provider (install galera-4)"
    command -v rsync >/dev/null || die "rsync is needed for state transfer"
    mkdir -p "$dir"
    for n in "${nodes[@]}"; do
        mkdir -p "$(node_dir "$n")/data"
        [[ -n $(pid_of "$n") ]] || down+=("$n")
    done
    if ((${#down[@]} == 0)) && all_synced; then
        say "already running"
        return 0
    fi
    if ((${#down[@]} == ${#nodes[@]})); then
        [[ -n $(compgen -G "$dir/node[123]/data/mysql") ]] || initialize
        first=$(bootstrap_node)
        if [[ -e "$(node_dir "$first")/data/grastate.dat" ]] && ! safe_to_bootstrap "$first"; then
            # No clean stop recorded (the nodes were killed): take the newest state that
            # grastate.dat records (node 1's when none records one).
            say "node$first was not stopped cleanly; bootstrapping from it anyway"
            sed -i 's/^safe_to_bootstrap: *0/safe_to_bootstrap: 1/' "$(node_dir "$first")/data/grastate.dat"
        fi
        launch "$first" --wsrep-new-cluster
        wait_until "node$first bootstrap" running_and_answering "$first"
    fi
    for n in "${down[@]}"; do
        [[ -n $(pid_of "$n") ]] || launch "$n"
    done
    wait_until "wsrep_cluster_size=3 on every node" all_synced
    # Over TCP from 127.0.0.1 (name resolution is off, so root@localhost does not match).
    client "$(first_up)" -e "CREATE USER IF NOT EXISTS root@'127.0.0.1';
        GRANT ALL PRIVILEGES ON *.* TO root@'127.0.0.1' WITH GRANT OPTION;
        CREATE DATABASE IF NOT EXISTS test;"
    say "3 nodes synced on ports $(sql_port 1)-$(sql_port 3) in $((SECONDS - started)) s"
}

first_up() {
    local n
    for n in "${nodes[@]}"; do
        if [[ -n $(pid_of "$n") ]]; then echo "$n"; return; fi
    done
}

stop_node() {
    local n=$1 pid
    pid=$(pid_of "$n")
    [[ -n $pid ]] || return 0
    say "stopping node$n (pid $pid)"
    kill -TERM "$pid" 2>/dev/null || return 0
    local deadline=$((SECONDS + wait_seconds))
    while kill -0 "$pid" 2>/dev/null; do
        if ((SECONDS >= deadline)); then
            say "node$n did not stop within ${wait_seconds} s; killing it"
            kill -KILL "$pid" 2>/dev/null || true
        fi
        sleep 0.2
    done
    rm -f "$(node_dir "$n")/launched.pid"
}

stop() {
    local n
    if [[ -z $(first_up) ]]; then
        say "not running"
        return 0
    fi
    # Node 1 last: the last node to leave is the one marked safe to bootstrap.
    for n in 3 2 1; do stop_node "$n"; done
}

status() {
    local n pid state all=0
    for n in "${nodes[@]}"; do
        pid=$(pid_of "$n")
        if [[ -z $pid ]]; then
            echo "node$n down (port $(sql_port "$n"))"
            all=1
            continue
        fi
        state=$(wsrep_status "$n")
        echo "node$n pid $pid port $(sql_port "$n") ${state:-not answering}" | tr '\t' ' ' \
            | sed 's/ \([0-9]*\)$/, cluster size \1/'
        synced "$n" 3 || all=1
    done
    return $all
}

case ${1:-} in
    start) start ;;
    stop) stop ;;
    status) status ;;
    *)
        echo "usage: $0 start|stop|status" >&2
        exit 2
        ;;
esac
