#!/usr/bin/env bash
# Builds palaver (release) and runs `palaver serve` on 127.0.0.1:8080 with
# its data in ./palaver-data, with the web client (scripts/web.sh builds
# it) at http://127.0.0.1:8080/. Extra arguments go to `palaver serve`:
#
#   ./scripts/run.sh --listen 127.0.0.1:9000 --data-dir /var/lib/palaver
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh

ensure_build_tools
scripts/web.sh
step "building palaver (release)"
cargo build --release --locked -p palaver-server -p palaver-client
step "starting palaver serve (Ctrl-C stops it)"
exec "$CARGO_TARGET_DIR/release/palaver" serve "$@"
