#!/usr/bin/env bash
# Side-by-side download benchmark: Palaver's media listener (sealed objects
# and processed, encrypted-at-rest objects) against lighttpd, with the same
# wrk cases from static-bench.sh, alternating servers case by case.
#
#   STATIC_BENCH=/path/to/static-bench.sh ./scripts/media-bench.sh
#
# Env: STATIC_BENCH (default ../shared/bench/static-bench.sh), DURATION (10),
# CONNS (64), ROUNDS (1), CASES (all six). Everything listens on 127.0.0.1
# and lives in a temporary directory; every server is stopped at the end.
# Needs: lighttpd, wrk, curl, python3 (apt-get install lighttpd wrk curl).
# Output: static-bench.sh lines prefixed with the server name; compare
# srv_cpu_us/req and srv_cpu_ms/GB between rows of the same case.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh

STATIC_BENCH=${STATIC_BENCH:-../shared/bench/static-bench.sh}
[ -x "$STATIC_BENCH" ] || { echo "static-bench.sh not found: set STATIC_BENCH" >&2; exit 2; }
apt_install lighttpd wrk curl
export DURATION=${DURATION:-10} CONNS=${CONNS:-64}
ROUNDS=${ROUNDS:-1}
CASES=${CASES:-"get-4k get-100k get-1m get-50m range-1m-of-50m cond-304"}

step "building the release binaries"
cargo build --release --locked -p palaver-server -p palaver-client
bin="$CARGO_TARGET_DIR/release"

tmp=$(mktemp -d /tmp/palaver-media-bench.XXXXXX)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$tmp"; }
trap cleanup EXIT

"$STATIC_BENCH" gen "$tmp/files" >&2

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# lighttpd 1.4 as Debian ships it: sendfile (the default backend), no access log.
lport=$(free_port)
cat >"$tmp/lighttpd.conf" <<EOF
server.document-root = "$tmp/files"
server.bind = "127.0.0.1"
server.port = $lport
server.errorlog = "$tmp/lighttpd.err"
server.max-connections = 4096
mimetype.assign = ( ".bin" => "application/octet-stream" )
EOF
lighttpd -D -f "$tmp/lighttpd.conf" &
lpid=$!; pids+=("$lpid")

# Palaver with default settings on free ports.
pport=$(free_port); aport=$(free_port); mport=$(free_port)
RUST_LOG=warn "$bin/palaver" serve --data-dir "$tmp/data" --listen "127.0.0.1:$pport" \
  --admin-listen "127.0.0.1:$aport" --media-listen "127.0.0.1:$mport" >"$tmp/palaver.out" 2>"$tmp/palaver.err" &
ppid=$!; pids+=("$ppid")
for _ in $(seq 100); do grep -q "media listening" "$tmp/palaver.out" 2>/dev/null && break; sleep 0.1; done

"$bin/palaver-cli" --server "ws://127.0.0.1:$pport/v1/ws" --state "$tmp/cli.json" \
  register --phone +4915112345678 --admin "http://127.0.0.1:$aport" >/dev/null
auth=$(python3 -c 'import json,sys; r=json.load(open(sys.argv[1]))["registration"]; print("Bearer %s:%s" % (r["device"], r["credential"]))' "$tmp/cli.json")
media="http://127.0.0.1:$mport"

# Uploads each file as KIND (sealed|processed) with tus and prints "NAME PATH_URL".
upload() {
  local kind=$1 f id
  for f in "$tmp"/files/*.bin; do
    id=$(python3 - "$f" "$media" "$auth" "$kind" <<'EOF'
import base64, hashlib, sys, urllib.request
path, media, auth, kind = sys.argv[1:]
data = open(path, "rb").read()
b64 = lambda s: base64.b64encode(s.encode()).decode()
meta = "kind %s,content-type %s,sha256 %s" % (b64(kind), b64("application/octet-stream"), b64(hashlib.sha256(data).hexdigest()))
h = {"Authorization": auth, "Tus-Resumable": "1.0.0"}
def req(method, url, headers, body=None):
    return urllib.request.urlopen(urllib.request.Request(url, data=body, method=method, headers=headers))
loc = req("POST", media + "/v1/uploads", {**h, "Upload-Length": str(len(data)), "Upload-Metadata": meta}).headers["Location"]
off = 0
while off < len(data):
    r = req("PATCH", media + loc, {**h, "Upload-Offset": str(off), "Content-Type": "application/offset+octet-stream"}, data[off:off + (8 << 20)])
    off = int(r.headers["Upload-Offset"])
print(r.headers["Palaver-Media-Id"])
EOF
)
    echo "$(basename "$f") $(curl -sf -X POST -H "Authorization: $auth" "$media/v1/media/$id/link" | python3 -c 'import json,sys; print(json.load(sys.stdin)["path_url"])')"
  done
}
upload sealed >"$tmp/sealed.urls"
upload processed >"$tmp/processed.urls"

file_of() { case $1 in get-4k|cond-304) echo s4k.bin ;; get-100k) echo s100k.bin ;; get-1m) echo s1m.bin ;; *) echo s50m.bin ;; esac; }

run() { # NAME PID BASE ETAG CASE
  RESULT_PREFIX=$(printf '%-10s ' "$1") SERVER_PIDS=$2 PREFLIGHT=0 ETAG=$4 CASES=$5 \
    "$STATIC_BENCH" run "$3" 2>/dev/null
}

echo "# $(date -u +%FT%TZ) duration=${DURATION}s conns=$CONNS load=$(cut -d' ' -f1-3 /proc/loadavg)"
for _ in $(seq "$ROUNDS"); do
  for c in $CASES; do
    f=$(file_of "$c")
    letag=$(curl -sI "http://127.0.0.1:$lport/s4k.bin" | tr -d '\r' | awk -F': ' 'tolower($1)=="etag"{print $2}')
    run lighttpd "$lpid" "http://127.0.0.1:$lport" "$letag" "$c"
    for kind in sealed processed; do
      base=$(awk -v f="$f" '$1==f{print $2}' "$tmp/$kind.urls")
      s4k=$(awk '$1=="s4k.bin"{print $2}' "$tmp/$kind.urls")
      etag=$(curl -sI "$s4k" | tr -d '\r' | awk -F': ' 'tolower($1)=="etag"{print $2}')
      run "$kind" "$ppid" "$base" "$etag" "$c"
    done
  done
done
