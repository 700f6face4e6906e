#!/usr/bin/env bash
# Runs a signaling benchmark end to end: builds release binaries, starts
# `palaver serve` on loopback with bench/signaling-bench.toml, runs a load
# generator, and stops everything (also on Ctrl-C or error).
#
#   bench/run-signaling-bench.sh idle [idle-conns flags...]
#   bench/run-signaling-bench.sh throughput [msg-throughput flags...]
#   bench/run-signaling-bench.sh fanout [group-fanout flags...]
#
# Environment:
#   CARGO_TARGET_DIR  build directory (default: target)
#   DATA_DIR          server data dir, reused across runs so registrations
#                     are cached (default: /tmp/palaver-bench-<mode>)
#   DURABILITY        full | normal (throughput; default full)
#   BACKEND           sqlite | postgres (fanout; postgres starts a fresh
#                     server with scripts/postgres.sh, fsync on)
#   SKIP_BUILD=1      use the binaries already built
#
# The idle mode needs root: it raises fs.nr_open and fs.file-max (restored on
# exit) and `ulimit -n` for the server and the generator. It registers the
# devices first (cached in $DATA_DIR/idle-creds.txt), then restarts the
# server so that the baseline RSS is that of a fresh process.
set -euo pipefail

mode=${1:-}
shift || true
case "$mode" in
idle | throughput | fanout) ;;
*)
    echo "usage: $0 idle|throughput|fanout [generator flags...]" >&2
    exit 2
    ;;
esac

root=$(cd "$(dirname "$0")/.." && pwd)
target=${CARGO_TARGET_DIR:-$root/target}
data=${DATA_DIR:-/tmp/palaver-bench-$mode}
config=$root/bench/signaling-bench.toml
server_bin=$target/release/palaver
main=127.0.0.1:28480 # must match signaling-bench.toml
admin=127.0.0.1:29490
mkdir -p "$data"

if [[ "${SKIP_BUILD:-0}" != 1 ]]; then
    (cd "$root" && CARGO_TARGET_DIR=$target cargo build --release -p palaver-server -p palaver-bench)
fi

server_pid=
saved_sysctls=()
cleanup() {
    stop_server
    for kv in "${saved_sysctls[@]}"; do
        sysctl -q -w "$kv" >/dev/null || echo "could not restore $kv" >&2
    done
}
trap cleanup EXIT
trap 'exit 130' INT TERM

set_sysctl() { # key value: raise a kernel limit, remembering the old value
    local old
    old=$(sysctl -n "$1")
    if [[ "$old" != "$2" ]]; then
        saved_sysctls+=("$1=$old")
        sysctl -q -w "$1=$2"
    fi
}

start_server() {
    local log=$data/server.log
    # Another process on our ports would answer the health check instead.
    if ss -Hltn "( sport = :${main##*:} or sport = :${admin##*:} )" | grep -q .; then
        echo "port ${main##*:} or ${admin##*:} is already in use; stop that process" \
            "or change the ports in $config" >&2
        exit 1
    fi
    "$server_bin" --config "$config" serve --data-dir "$data" >"$log" 2>&1 &
    server_pid=$!
    for _ in $(seq 1 100); do
        if ! kill -0 "$server_pid" 2>/dev/null; then
            cat "$log" >&2
            exit 1
        fi
        if grep -q "admin listening" "$log" && curl -fs "http://$admin/healthz" >/dev/null 2>&1; then
            echo "server pid $server_pid started (log $log)" >&2
            return 0
        fi
        sleep 0.1
    done
    echo "server did not become healthy" >&2
    exit 1
}

stop_server() {
    if [[ -n "$server_pid" ]] && kill -0 "$server_pid" 2>/dev/null; then
        kill -TERM "$server_pid"
        for _ in $(seq 1 300); do
            kill -0 "$server_pid" 2>/dev/null || break
            sleep 0.1
        done
        kill -0 "$server_pid" 2>/dev/null && kill -KILL "$server_pid"
        wait "$server_pid" 2>/dev/null || true
    fi
    server_pid=
}

echo "machine: $(nproc) cores, $(free -g | awk '/Mem:/ {print $2}') GiB, kernel $(uname -r)" >&2

if [[ "$mode" == idle ]]; then
    # 1M server sockets + 1M client sockets: one process each needs more
    # than the default 1,048,576 descriptors.
    set_sysctl fs.nr_open 1200000
    if (($(sysctl -n fs.file-max) < 3000000)); then
        set_sysctl fs.file-max 3000000
    fi
    if ! ulimit -n 1150000 2>/dev/null; then
        # Raising the hard limit needs CAP_SYS_RESOURCE (missing in some
        # containers): then the connection count is capped near it, and
        # idle-conns lowers its steps to fit.
        echo "warning: cannot raise the open-files limit to 1150000;" \
            "using the hard limit $(ulimit -Hn)" >&2
        ulimit -n "$(ulimit -Hn)"
    fi
    cache=$data/idle-creds.txt
    start_server
    "$target/release/idle-conns" --cache "$cache" --register-only "$@"
    stop_server
    start_server
    sleep 2
    "$target/release/idle-conns" --cache "$cache" --server-pid "$server_pid" "$@"
elif [[ "$mode" == fanout ]]; then
    export PALAVER__STORAGE__DURABILITY=${DURABILITY:-full}
    label="sqlite, $PALAVER__STORAGE__DURABILITY"
    if [[ "${BACKEND:-sqlite}" == postgres ]]; then
        # A fresh PostgreSQL with fsync on, like SQLite's durability=full.
        eval "$(PALAVER_PG_DURABLE=1 "$root/scripts/postgres.sh" start)"
        pg_dir=$PALAVER_TEST_POSTGRES_DIR
        trap 'cleanup; "$root/scripts/postgres.sh" stop "$pg_dir"' EXIT
        export PALAVER__STORAGE__BACKEND=postgres
        export PALAVER__STORAGE__POSTGRES_URL=$PALAVER_TEST_POSTGRES_URL
        label="postgres, fsync on"
        rm -f "$data/fanout-creds.txt" # the accounts live in that database
    fi
    ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"
    start_server
    "$target/release/group-fanout" --cache "$data/fanout-creds.txt" --server-pid "$server_pid" \
        --label "$label" "$@"
else
    export PALAVER__STORAGE__DURABILITY=${DURABILITY:-full}
    echo "durability: $PALAVER__STORAGE__DURABILITY" >&2
    ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"
    start_server
    "$target/release/msg-throughput" --cache "$data/throughput-creds.txt" --server-pid "$server_pid" \
        --label "$PALAVER__STORAGE__DURABILITY" "$@"
fi
