#!/usr/bin/env bash
# Side-by-side download benchmark: Palaver's media listener (sealed objects
# and processed, encrypted-at-rest objects) against lighttpd, with the same
# wrk cases from static-bench.sh, alternating servers case by case.
#
#   STATIC_BENCH=/path/to/static-bench.sh ./scripts/media-bench.sh
#
# Env: STATIC_BENCH (default ../shared/bench/static-bench.sh), DURATION (10),
# CONNS (64), ROUNDS (1), CASES (all six), S3 (0; 1 adds a second Palaver
# whose media store keeps its blobs in a Garage node started by
# scripts/garage.sh: rows sealed-s3 and proc-s3, with Garage's own CPU per
# request and per GB appended). Everything listens on 127.0.0.1
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

# Starts Palaver with default settings (and the environment given) on free
# ports as instance NAME; sets pid_NAME, media_NAME and auth_NAME.
start_palaver() {
  local name=$1 pport aport mport; shift
  pport=$(free_port); aport=$(free_port); mport=$(free_port)
  env RUST_LOG=warn PALAVER__SERVE__TURN=false "$@" "$bin/palaver" serve --data-dir "$tmp/data-$name" --listen "127.0.0.1:$pport" \
    --admin-listen "127.0.0.1:$aport" --media-listen "127.0.0.1:$mport" >"$tmp/$name.out" 2>"$tmp/$name.err" &
  pids+=("$!"); printf -v "pid_$name" %s "$!"
  for _ in $(seq 100); do grep -q "media listening" "$tmp/$name.out" 2>/dev/null && break; sleep 0.1; done
  grep -q "media listening" "$tmp/$name.out" || { echo "palaver ($name) did not start:" >&2; cat "$tmp/$name.err" >&2; exit 1; }
  "$bin/palaver-cli" --server "ws://127.0.0.1:$pport/v1/ws" --state "$tmp/cli-$name.json" \
    register --phone +4915112345678 --admin "http://127.0.0.1:$aport" >/dev/null
  printf -v "auth_$name" %s "$(python3 -c 'import json,sys; r=json.load(open(sys.argv[1]))["registration"]; print("Bearer %s:%s" % (r["device"], r["credential"]))' "$tmp/cli-$name.json")"
  printf -v "media_$name" %s "http://127.0.0.1:$mport"
}
start_palaver local
ppid=$pid_local
if [ "${S3:-0}" = 1 ]; then
  export GARAGE_DIR="$tmp/garage" GARAGE_S3_PORT GARAGE_RPC_PORT
  GARAGE_S3_PORT=$(free_port); GARAGE_RPC_PORT=$(free_port)
  scripts/garage.sh start
  gpid=$(cat "$GARAGE_DIR/garage.pid"); pids+=("$gpid")
  mapfile -t s3env < <(scripts/garage.sh env | sed 's/^export //; s/'"'"'//g')
  start_palaver s3 "${s3env[@]}"
fi

# Uploads each file as KIND (sealed|processed) to INSTANCE with tus and
# prints "NAME PATH_URL".
upload() {
  local kind=$1 f id media auth
  media=$(eval echo "\$media_$2"); auth=$(eval echo "\$auth_$2")
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
upload sealed local >"$tmp/sealed.urls"
upload processed local >"$tmp/processed.urls"
kinds="sealed processed"
if [ "${S3:-0}" = 1 ]; then
  upload sealed s3 >"$tmp/sealed-s3.urls"
  upload processed s3 >"$tmp/proc-s3.urls"
  kinds="sealed processed sealed-s3 proc-s3"
fi

# CPU ticks (user + system) of a process.
ticks() { sed 's/^.*) //' "/proc/$1/stat" | awk '{print $12 + $13}'; }

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
    for kind in $kinds; do
      base=$(awk -v f="$f" '$1==f{print $2}' "$tmp/$kind.urls")
      s4k=$(awk '$1=="s4k.bin"{print $2}' "$tmp/$kind.urls")
      etag=$(curl -sI "$s4k" | tr -d '\r' | awk -F': ' 'tolower($1)=="etag"{print $2}')
      case $kind in
        *-s3)
          g0=$(ticks "$gpid")
          line=$(run "$kind" "$pid_s3" "$base" "$etag" "$c")
          g1=$(ticks "$gpid")
          # Garage's CPU for the same requests (from wrk's request and byte counts).
          echo "$line" | awk -v t=$((g1 - g0)) -v hz="$(getconf CLK_TCK)" '{
            n = 0; per = 0
            for (i = 2; i < NF; i++) { if ($i == "reqs") n = $(i + 1); if ($i == "B/req") per = $(i - 1) }
            b = per * n
            us = t / hz * 1e6
            printf "%s garage_cpu_us/req %.1f garage_cpu_ms/GB %.0f\n", $0, (n > 0 ? us / n : 0), (b > 0 ? us / 1000 / (b / 1e9) : 0)
          }'
          ;;
        *) run "$kind" "$ppid" "$base" "$etag" "$c" ;;
      esac
    done
  done
done
