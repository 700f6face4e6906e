#!/usr/bin/env bash
# A throwaway Redis for the tests: 127.0.0.1 only, a free port, a random
# password, no persistence, state in a temporary directory.
#
#   eval "$(scripts/redis.sh start)"   # exports PALAVER_TEST_REDIS_URL
#                                      # and PALAVER_TEST_REDIS_DIR
#   scripts/redis.sh stop "$PALAVER_TEST_REDIS_DIR"
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh

start() {
  command -v redis-server >/dev/null || apt_install redis-server
  local dir port password tries
  dir=$(mktemp -d "${TMPDIR:-/tmp}/palaver-redis.XXXXXX")
  password=$(head -c 18 /dev/urandom | od -An -tx1 | tr -d ' \n')
  # The password goes in a config file, not on the command line (ps).
  printf 'requirepass %s\n' "$password" >"$dir/redis.conf"
  chmod 600 "$dir/redis.conf"
  for tries in 1 2 3 4 5 6 7 8; do
    port=$((20000 + RANDOM % 30000))
    redis-server "$dir/redis.conf" --bind 127.0.0.1 --port "$port" --dir "$dir" \
      --save '' --appendonly no --daemonize yes --pidfile "$dir/redis.pid" \
      --logfile "$dir/redis.log" >/dev/null 2>&1 || continue
    for _ in $(seq 1 100); do
      if REDISCLI_AUTH="$password" redis-cli -h 127.0.0.1 -p "$port" ping 2>/dev/null | grep -q PONG; then
        echo "export PALAVER_TEST_REDIS_URL='redis://:$password@127.0.0.1:$port/'"
        echo "export PALAVER_TEST_REDIS_DIR='$dir'"
        step "Redis listening on 127.0.0.1:$port (state in $dir)"
        return 0
      fi
      [ -f "$dir/redis.pid" ] && kill -0 "$(cat "$dir/redis.pid")" 2>/dev/null || break
      sleep 0.05
    done
  done
  cat "$dir/redis.log" >&2 || true
  echo "Redis did not start" >&2
  exit 1
}

stop() {
  local dir=${1:?usage: scripts/redis.sh stop DIR}
  case "$dir" in *palaver-redis.*) ;; *) echo "not a test Redis: $dir" >&2; exit 1 ;; esac
  if [ -f "$dir/redis.pid" ]; then
    kill "$(cat "$dir/redis.pid")" 2>/dev/null || true
  fi
  rm -rf "$dir"
}

case "${1:-}" in
  start) start ;;
  stop) stop "${2:-}" ;;
  *) echo "usage: $0 start | stop DIR" >&2; exit 2 ;;
esac
