#!/usr/bin/env bash
# What TLS costs on the media listener: Palaver's HTTPS listener
# (media.tls_listen: pread + rustls encryption) against lighttpd 1.4 with
# mod_openssl, and Palaver plain (sendfile) against Palaver HTTPS (the TLS
# tax), with the same files, the same wrk cases from static-bench.sh and
# the same self-signed ECDSA P-256 certificate; servers alternate case by
# case in one run.
#
#   ./scripts/media-tls-bench.sh
#
# Env: STATIC_BENCH (default ../shared/bench/static-bench.sh), DURATION (10),
# CONNS (64), ROUNDS (2), CASES ("get-4k get-1m get-50m").
# wrk keeps its connections open (keep-alive): the handshake happens once
# per connection, so the numbers are the cost of the record layer, not of
# handshakes. Everything listens on 127.0.0.1 and lives in a temporary
# directory; every server is stopped at the end.
# Output: static-bench.sh lines prefixed with the server; compare
# srv_cpu_us/req (small files) and srv_cpu_ms/GB (large files) between
# rows of the same case.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh

STATIC_BENCH=${STATIC_BENCH:-../shared/bench/static-bench.sh}
[ -x "$STATIC_BENCH" ] || { echo "static-bench.sh not found: set STATIC_BENCH" >&2; exit 2; }
apt_install lighttpd lighttpd-mod-openssl wrk curl openssl
export DURATION=${DURATION:-10} CONNS=${CONNS:-64}
ROUNDS=${ROUNDS:-2}
CASES=${CASES:-"get-4k get-1m get-50m"}

step "building the release binaries"
cargo build --release --locked -p palaver-server -p palaver-client
bin="$CARGO_TARGET_DIR/release"

tmp=$(mktemp -d /tmp/palaver-tls-bench.XXXXXX)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$tmp"; }
trap cleanup EXIT

"$STATIC_BENCH" gen "$tmp/files" >&2
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 \
  -subj /CN=localhost -addext "subjectAltName=DNS:localhost,IP:127.0.0.1" \
  -keyout "$tmp/key.pem" -out "$tmp/cert.pem" 2>/dev/null

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# lighttpd 1.4 as Debian ships it: plain on one port, TLS (mod_openssl,
# its default TLS 1.2+ suites) on another, no access log.
lport=$(free_port); ltport=$(free_port)
cat >"$tmp/lighttpd.conf" <<EOF
server.modules += ( "mod_openssl" )
server.document-root = "$tmp/files"
server.bind = "127.0.0.1"
server.port = $lport
server.errorlog = "$tmp/lighttpd.err"
server.max-connections = 4096
mimetype.assign = ( ".bin" => "application/octet-stream" )
\$SERVER["socket"] == "127.0.0.1:$ltport" {
  ssl.engine = "enable"
  ssl.pemfile = "$tmp/cert.pem"
  ssl.privkey = "$tmp/key.pem"
}
EOF
lighttpd -D -f "$tmp/lighttpd.conf" &
lpid=$!; pids+=("$lpid")

pport=$(free_port); aport=$(free_port); mport=$(free_port); tport=$(free_port)
# Starts Palaver on the fixed ports with extra config $1 (the data
# directory persists between starts); sets ppid.
start_palaver() {
  printf '%s' "$1" >"$tmp/palaver.toml"
  env RUST_LOG=warn PALAVER__SERVE__TURN=false "$bin/palaver" --config "$tmp/palaver.toml" serve \
    --data-dir "$tmp/data" --listen "127.0.0.1:$pport" --admin-listen "127.0.0.1:$aport" \
    --media-listen "127.0.0.1:$mport" >"$tmp/palaver.out" 2>"$tmp/palaver.err" &
  ppid=$!; pids+=("$ppid")
  for _ in $(seq 100); do grep -q "admin listening" "$tmp/palaver.out" 2>/dev/null && break; sleep 0.1; done
  grep -q "admin listening" "$tmp/palaver.out" || { echo "palaver did not start:" >&2; cat "$tmp/palaver.err" >&2; exit 1; }
}

# Phase 1, without TLS: register a device (palaver-cli speaks ws://) and
# upload the files as sealed objects; keep each capability path.
start_palaver "[media]
max_single_upload_bytes = 67108864
"
"$bin/palaver-cli" --server "ws://127.0.0.1:$pport/v1/ws" --state "$tmp/cli.json" \
  register --phone +4915112345678 --admin "http://127.0.0.1:$aport" >/dev/null
auth=$(python3 -c 'import json,sys; r=json.load(open(sys.argv[1]))["registration"]; print("Bearer %s:%s" % (r["device"], r["credential"]))' "$tmp/cli.json")
media="http://127.0.0.1:$mport"
for f in "$tmp"/files/*.bin; do
  sha=$(sha256sum "$f" | cut -d' ' -f1)
  curl -sf -X PUT -H "Authorization: $auth" --data-binary "@$f" "$media/v1/media/sealed/$sha" >/dev/null
  path=$(curl -sf -X POST -H "Authorization: $auth" "$media/v1/media/$sha/link" |
    python3 -c 'import json,sys,urllib.parse as u; p=u.urlsplit(json.load(sys.stdin)["path_url"]); print(p.path + ("?" + p.query if p.query else ""))')
  echo "$(basename "$f") $path"
done >"$tmp/paths"
kill "$ppid"; wait "$ppid" 2>/dev/null || true

# Phase 2: the same data directory with [tls] and media.tls_listen.
start_palaver "[tls]
cert_file = \"$tmp/cert.pem\"
key_file = \"$tmp/key.pem\"
[media]
tls_listen = \"127.0.0.1:$tport\"
"

file_of() { case $1 in get-4k|cond-304) echo s4k.bin ;; get-100k) echo s100k.bin ;; get-1m) echo s1m.bin ;; *) echo s50m.bin ;; esac; }

run() { # NAME PID URL CASE
  RESULT_PREFIX=$(printf '%-14s ' "$1") SERVER_PIDS=$2 PREFLIGHT=0 CASES=$4 \
    "$STATIC_BENCH" run "$3" 2>/dev/null
}

echo "# $(date -u +%FT%TZ) duration=${DURATION}s conns=$CONNS load=$(cut -d' ' -f1-3 /proc/loadavg) $(lighttpd -v 2>&1 | head -1)"
for round in $(seq "$ROUNDS"); do
  for c in $CASES; do
    p=$(awk -v f="$(file_of "$c")" '$1==f{print $2}' "$tmp/paths")
    # static-bench.sh fetches BASE/<file name>: the capability path takes
    # an optional name as its last segment.
    base=$p
    order=("lighttpd-tls" "palaver-tls" "palaver-plain" "lighttpd-plain")
    (( round % 2 == 0 )) && order=("palaver-tls" "lighttpd-tls" "lighttpd-plain" "palaver-plain")
    for who in "${order[@]}"; do
      case $who in
        lighttpd-tls) run "$who" "$lpid" "https://127.0.0.1:$ltport" "$c" ;;
        lighttpd-plain) run "$who" "$lpid" "http://127.0.0.1:$lport" "$c" ;;
        palaver-tls) run "$who" "$ppid" "https://127.0.0.1:$tport$base" "$c" ;;
        palaver-plain) run "$who" "$ppid" "http://127.0.0.1:$mport$base" "$c" ;;
      esac
    done
  done
  echo "# round $round done, load=$(cut -d' ' -f1-3 /proc/loadavg)"
done
