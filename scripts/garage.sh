#!/usr/bin/env bash
# Garage (an S3-compatible object store) for the S3 media-store tests.
#
#   ./scripts/garage.sh install   # build the pinned Garage once into $GARAGE_ROOT (~10 min of CPU)
#   ./scripts/garage.sh path      # print the binary the tests use
#   ./scripts/garage.sh start     # a single node on 127.0.0.1 for manual use, fresh bucket
#   ./scripts/garage.sh env       # the AWS_* / PALAVER__MEDIA__* variables for that node
#   ./scripts/garage.sh stop
#
# The end-to-end tests do not need `start`: each test starts its own node in a
# temporary directory on free loopback ports (tests/src/garage.rs) with the
# binary `path` prints, or $PALAVER_GARAGE_BIN. Everything listens on 127.0.0.1.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh

GARAGE_VERSION=2.5.0
GARAGE_ROOT="${GARAGE_ROOT:-$HOME/.cache/palaver/garage-$GARAGE_VERSION}"
GARAGE_BIN="$GARAGE_ROOT/bin/garage"
DIR="${GARAGE_DIR:-${TMPDIR:-/tmp}/palaver-garage}"
S3_PORT="${GARAGE_S3_PORT:-3900}"
RPC_PORT="${GARAGE_RPC_PORT:-3901}"
BUCKET=palaver-media
REGION=garage
# Loopback-only credentials for a throwaway node. Garage wants a key id of the
# form GK + 24 hex digits and a secret of 64 hex digits.
KEY_ID=GK0123456789abcdef01234567
SECRET=0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef

install() {
  if [ -x "$GARAGE_BIN" ] && "$GARAGE_BIN" --version 2>/dev/null | grep -q "$GARAGE_VERSION"; then
    return 0
  fi
  # Debian's libsodium and zstd: the bundled builds cost a third more CPU.
  apt_install pkg-config libsodium-dev libzstd-dev
  step "building Garage $GARAGE_VERSION into $GARAGE_ROOT (once, about 10 minutes)"
  # Its own target dir: the workspace's must not be disturbed by an unrelated lock file.
  CARGO_TARGET_DIR="$GARAGE_ROOT/build" cargo install garage --version "$GARAGE_VERSION" --locked \
    --no-default-features --features lmdb,system-libs --root "$GARAGE_ROOT"
  rm -rf "$GARAGE_ROOT/build"
}

healthy() {
  # A signed HEAD on the bucket answers 200 once the layout, the key and the bucket exist.
  curl -fsS -o /dev/null -I --max-time 2 -H 'x-amz-content-sha256: UNSIGNED-PAYLOAD' \
    --aws-sigv4 "aws:amz:$REGION:s3" --user "$KEY_ID:$SECRET" \
    "http://127.0.0.1:$S3_PORT/$BUCKET" 2>/dev/null
}

start() {
  install
  stop
  rm -rf "$DIR"
  mkdir -p "$DIR"
  cat >"$DIR/garage.toml" <<EOF
metadata_dir = "$DIR/meta"
data_dir = "$DIR/data"
db_engine = "lmdb"
replication_factor = 1
metadata_fsync = false
data_fsync = false
rpc_bind_addr = "127.0.0.1:$RPC_PORT"
rpc_public_addr = "127.0.0.1:$RPC_PORT"
rpc_secret = "$(od -An -tx1 -N32 /dev/urandom | tr -d ' \n')"

[s3_api]
s3_region = "$REGION"
api_bind_addr = "127.0.0.1:$S3_PORT"
EOF
  chmod 600 "$DIR/garage.toml"
  GARAGE_DEFAULT_ACCESS_KEY="$KEY_ID" GARAGE_DEFAULT_SECRET_KEY="$SECRET" \
    GARAGE_DEFAULT_BUCKET="$BUCKET" RUST_LOG="${RUST_LOG:-garage=warn}" \
    nohup "$GARAGE_BIN" -c "$DIR/garage.toml" server --single-node --default-bucket \
    >"$DIR/garage.log" 2>&1 </dev/null &
  echo $! >"$DIR/garage.pid"
  for _ in $(seq 1 300); do
    if healthy; then
      echo "garage up on 127.0.0.1:$S3_PORT; variables: $0 env" >&2
      return 0
    fi
    kill -0 "$(cat "$DIR/garage.pid")" 2>/dev/null || break
    sleep 0.1 # polling interval of the health check, not a synchronisation
  done
  echo "garage did not come up; its log:" >&2
  tail -n 30 "$DIR/garage.log" >&2
  return 1
}

stop() {
  [ -f "$DIR/garage.pid" ] || return 0
  local pid
  pid=$(cat "$DIR/garage.pid")
  if kill -0 "$pid" 2>/dev/null; then
    kill "$pid"
    while kill -0 "$pid" 2>/dev/null; do sleep 0.1; done
  fi
  rm -f "$DIR/garage.pid"
}

env_vars() {
  cat <<EOF
export PALAVER__MEDIA__STORAGE=s3
export PALAVER__MEDIA__S3__ENDPOINT=http://127.0.0.1:$S3_PORT
export PALAVER__MEDIA__S3__REGION=$REGION
export PALAVER__MEDIA__S3__BUCKET=$BUCKET
export PALAVER__MEDIA__S3__PATH_STYLE=true
export PALAVER__MEDIA__S3__ACCESS_KEY_ID=$KEY_ID
export PALAVER__MEDIA__S3__SECRET_ACCESS_KEY='"$SECRET"'
EOF
}

case "${1:-}" in
  install) install ;;
  path) echo "$GARAGE_BIN" ;;
  start) start ;;
  stop) stop ;;
  env) env_vars ;;
  *)
    echo "usage: $0 install|path|start|stop|env" >&2
    exit 2
    ;;
esac
