#!/usr/bin/env bash
# Runs the SFU load generator against `palaver serve` on loopback: builds
# release binaries, starts the server with bench/sfu-bench.toml, runs
# `sfu-load` (one JSON line of results), stops the server (also on error).
#
#   bench/run-sfu-bench.sh --publishers 10 --subscribers 100 --media audio
#   bench/run-sfu-bench.sh --publishers 8 --subscribers 8 --media video
#
# Environment: CARGO_TARGET_DIR, SKIP_BUILD=1, PROFILE (release|debug).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
target=${CARGO_TARGET_DIR:-$root/target}
profile=${PROFILE:-release}
flag=--release
[[ "$profile" == debug ]] && flag=
if [[ "${SKIP_BUILD:-0}" != 1 ]]; then
    (cd "$root" && cargo build $flag -p palaver-server -p palaver-bench --bin palaver --bin sfu-load)
fi
data=$(mktemp -d /tmp/palaver-sfu-bench.XXXXXX)
out=$data/stdout
server_pid=
cleanup() {
    [[ -n "$server_pid" ]] && kill "$server_pid" 2>/dev/null && wait "$server_pid" 2>/dev/null
    rm -rf "$data"
}
trap cleanup EXIT
"$target/$profile/palaver" --config "$root/bench/sfu-bench.toml" serve --data-dir "$data/d" >"$out" 2>"$data/stderr" &
server_pid=$!
for _ in $(seq 100); do
    grep -q "main listening on" "$out" 2>/dev/null && break
    sleep 0.1
done
main=$(grep "main listening on" "$out" | awk '{print $NF}')
[[ -n "$main" ]] || { cat "$data/stderr" >&2; exit 1; }
"$target/$profile/sfu-load" --join-url "http://$main" --secret-file "$data/d/sfu.secret" \
    --sfu-pid "$server_pid" "$@"
