#!/usr/bin/env bash
# Call setup benchmark (issue 5): accept -> first decoded remote frame,
# through palaver serve (release build) and without any server, direct and
# relay-only through the embedded TURN server. Loopback only; stops by itself.
#
#   bench/call-setup/run.sh [CALLS]      (default 20)
set -euo pipefail
cd "$(dirname "$0")/../.."
source scripts/lib.sh
ensure_build_tools
ensure_browser_tools
calls="${1:-20}"

cargo build --release --locked -p palaver-server -p palaver-client
bin="$CARGO_TARGET_DIR/release"
work=$(mktemp -d)
trap 'kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; rm -rf "$work"' EXIT

cat > "$work/palaver.toml" <<'TOML'
[log]
level = "warn"
[signaling.rate_limits.call_offers_per_device]
burst = 1000
per_minute = 60000.0
[turn]
listen_udp = "127.0.0.1:0"
listen_tcp = "127.0.0.1:0"
peer_allow = ["127.0.0.0/8"]
# The no-server runs reuse one device's TURN credentials for both pages.
max_allocations_per_user = 1000
TOML
"$bin/palaver" --config "$work/palaver.toml" serve --data-dir "$work/data" \
  --listen 127.0.0.1:0 --admin-listen 127.0.0.1:0 > "$work/out" 2> "$work/err" &
pid=$!
for _ in $(seq 100); do grep -q "admin listening" "$work/out" 2>/dev/null && break; sleep 0.1; done
main=$(awk '/main listening/ {print $NF}' "$work/out")
admin=$(awk '/admin listening/ {print $NF}' "$work/out")

reg() { "$bin/palaver-cli" --server "ws://$main/v1/ws" --state "$work/$1.json" register --phone "$2" --admin "http://$admin" >/dev/null; }
reg caller +4915100000001
reg callee +4915100000002
spec() {
  node -e '
    const fs = require("fs");
    const a = JSON.parse(fs.readFileSync(process.argv[1])).registration;
    const b = JSON.parse(fs.readFileSync(process.argv[2])).registration;
    console.log(JSON.stringify({ wsUrl: process.argv[3], calls: +process.argv[4], relayOnly: process.argv[5] === "1",
      caller: { device: a.device, credential: a.credential },
      callee: { account: b.account, device: b.device, credential: b.credential } }));
  ' "$work/caller.json" "$work/callee.json" "ws://$main/v1/ws" "$calls" "$1"
}
echo "direct (host candidates):"
node bench/call-setup/call-setup.mjs "$(spec 0)"
echo "relay only (embedded TURN):"
node bench/call-setup/call-setup.mjs "$(spec 1)"
