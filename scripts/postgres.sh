#!/usr/bin/env bash
# A throwaway PostgreSQL for the tests: a fresh cluster in a temporary
# directory, listening on 127.0.0.1 only, on a free port, with a random
# password, tuned for speed over durability (fsync off: test data only;
# commits still write the WAL, so a test can find what was stored on disk).
#
#   eval "$(scripts/postgres.sh start)"   # exports PALAVER_TEST_POSTGRES_URL
#                                         # and PALAVER_TEST_POSTGRES_DIR
#   scripts/postgres.sh stop "$PALAVER_TEST_POSTGRES_DIR"
#   PALAVER_PG_DURABLE=1 scripts/postgres.sh start   # fsync on (benchmarks)
#
# PostgreSQL refuses to run as root: as root, the server runs as the
# `postgres` user that Debian's package creates.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh

pg_bin() {
  local dir
  dir=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)
  [ -n "$dir" ] && [ -x "$dir/pg_ctl" ] || return 1
  echo "$dir"
}

as_pg() {
  if [ "$(id -u)" -eq 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

start() {
  pg_bin >/dev/null || apt_install postgresql
  local bin dir port password tries
  bin=$(pg_bin)
  # PALAVER_PG_DURABLE=1 (benchmarks): keep PostgreSQL's fsync on commit.
  local durability="-c fsync=off -c full_page_writes=off"
  [ "${PALAVER_PG_DURABLE:-0}" = 1 ] && durability=""
  dir=$(mktemp -d "${TMPDIR:-/tmp}/palaver-pg.XXXXXX")
  [ "$(id -u)" -eq 0 ] && chown postgres "$dir"
  password=$(head -c 18 /dev/urandom | od -An -tx1 | tr -d ' \n')
  printf '%s\n' "$password" | as_pg tee "$dir/pwfile" >/dev/null
  as_pg "$bin/initdb" -D "$dir/data" -U palaver --pwfile="$dir/pwfile" \
    --auth=scram-sha-256 --no-sync --no-instructions -E UTF8 --locale=C >"$dir/initdb.log" 2>&1 \
    || { cat "$dir/initdb.log" >&2; exit 1; }
  rm -f "$dir/pwfile"
  for tries in 1 2 3 4 5 6 7 8; do
    port=$((20000 + RANDOM % 30000))
    if as_pg "$bin/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w -t 30 start -o \
      "-c listen_addresses=127.0.0.1 -p $port -c unix_socket_directories=$dir \
       $durability \
       -c max_connections=400 -c shared_buffers=64MB" >/dev/null 2>&1; then
      echo "export PALAVER_TEST_POSTGRES_URL='postgres://palaver:$password@127.0.0.1:$port/postgres'"
      echo "export PALAVER_TEST_POSTGRES_DIR='$dir'"
      step "PostgreSQL listening on 127.0.0.1:$port (data in $dir)"
      return 0
    fi
  done
  cat "$dir/server.log" >&2
  echo "PostgreSQL did not start" >&2
  exit 1
}

stop() {
  local dir=${1:?usage: scripts/postgres.sh stop DIR}
  case "$dir" in *palaver-pg.*) ;; *) echo "not a test cluster: $dir" >&2; exit 1 ;; esac
  if [ -d "$dir/data" ]; then
    as_pg "$(pg_bin)/pg_ctl" -D "$dir/data" -m immediate stop >/dev/null 2>&1 || true
  fi
  rm -rf "$dir"
}

case "${1:-}" in
  start) start ;;
  stop) stop "${2:-}" ;;
  *) echo "usage: $0 start | stop DIR" >&2; exit 2 ;;
esac
