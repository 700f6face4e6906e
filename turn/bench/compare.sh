#!/usr/bin/env bash
# Side-by-side TURN benchmark: coturn 4.6.1 (Debian) and palaver-turn's
# bench-server (release build), driven by ../shared/bench/turn-bench.sh with
# the same turnutils_uclient load, alternating A, B, A, B in one run.
# Usage: turn/bench/compare.sh [BENCH_SCRIPT] [PROFILES] [MODES] [TRANSPORTS]
# Loopback only; every process it starts is stopped by PID on exit.
set -u
BENCH=${1:-../shared/bench/turn-bench.sh}
PROFILES=${2:-"voice load stress"}
MODES=${3:-"channel send"}
TRANSPORTS=${4:-"udp"}
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
BIN=${CARGO_TARGET_DIR:-$ROOT/target}/release/examples/bench-server
[ -x "$BIN" ] || { echo "build first: cargo build --release -p palaver-turn --example bench-server"; exit 2; }
command -v turnserver >/dev/null || { echo "install coturn"; exit 2; }
COTURN_PORT=3578; PALAVER_PORT=3678; PEER_PORT=3680
LOG=$(mktemp -d /tmp/turn-compare.XXXXXX)
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null; wait "$p" 2>/dev/null; done; }
trap cleanup EXIT

turnserver -n --no-cli --listening-ip=127.0.0.1 --listening-port=$COTURN_PORT \
  --relay-ip=127.0.0.1 --allow-loopback-peers --lt-cred-mech --user=bench:benchpw \
  --realm=palaver --no-tls --no-dtls --max-allocate-lifetime=60 \
  --min-port=49152 --max-port=57000 --log-file="$LOG/coturn.log" --simple-log \
  --pidfile="$LOG/coturn.pid" >"$LOG/coturn.out" 2>&1 &
COTURN_PID=$!; PIDS+=("$COTURN_PID")
TURN_LISTEN=127.0.0.1:$PALAVER_PORT TURN_USER=bench TURN_PASSWORD=benchpw \
  TURN_RFC5766_CHANNELS=1 TURN_MAX_LIFETIME=60 TURN_PORT_MIN=57001 \
  "$BIN" >"$LOG/palaver.log" 2>&1 &
PALAVER_PID=$!; PIDS+=("$PALAVER_PID")
turnutils_peer -L 127.0.0.1 -p $PEER_PORT >"$LOG/peer.log" 2>&1 &
PIDS+=("$!")
for _ in $(seq 50); do
  ss -Hlun | grep -q ":$COTURN_PORT " && ss -Hlun | grep -q ":$PALAVER_PORT " && ss -Hlun | grep -q ":$PEER_PORT " && break
  sleep 0.1
done
echo "coturn $(turnserver --version 2>/dev/null | head -1) pid $COTURN_PID; palaver-turn pid $PALAVER_PID; logs in $LOG"
for profile in $PROFILES; do
  for mode in $MODES; do
    for transport in $TRANSPORTS; do
      for server in coturn palaver; do
        if [ $server = coturn ]; then port=$COTURN_PORT; pid=$COTURN_PID; else port=$PALAVER_PORT; pid=$PALAVER_PID; fi
        bash "$BENCH" -P $port -u bench -w benchpw -r $PEER_PORT --start-peer no \
          --profile "$profile" --mode "$mode" --transport "$transport" \
          --server-pid "$pid" --label "$server"
      done
    done
  done
done
