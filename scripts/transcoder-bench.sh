#!/usr/bin/env bash
# The transcoder side by side with the ffmpeg CLI (same settings) and
# vipsthumbnail: a 720p clip transcoded like a job (H.264 + AAC MP4,
# poster, thumbnail, preview), a video thumbnail, and a 12-megapixel JPEG
# to a 320 px thumbnail. Prints wall and CPU (user + system) seconds per
# run and the medians. Results: docs/benchmarks.md, "Transcoder".
#
#   scripts/transcoder-bench.sh            # RUNS=5 by default
#   CASES="jthumb_vips jthumb_palaver" scripts/transcoder-bench.sh
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh
ensure_build_tools
apt_install libvips-tools

RUNS="${RUNS:-5}"
step "building transcode-run (release)"
cargo build --release --locked -p palaver-bench --bin transcode-run
BIN="$CARGO_TARGET_DIR/release/transcode-run"

W="$(mktemp -d)"
trap 'rm -rf "$W"' EXIT
step "generating inputs in $W"
# A camera-like clip: 5 s of 720p30 with noise (hard to encode) and a tone.
ffmpeg -hide_banner -loglevel error -y -f lavfi -i testsrc2=size=1280x720:rate=30:duration=5 \
  -f lavfi -i sine=frequency=440:sample_rate=44100:duration=5 \
  -vf noise=alls=20:allf=t -c:v libx264 -preset ultrafast -pix_fmt yuv420p -c:a aac -ac 2 "$W/clip.mp4"
# A 12-megapixel photo.
ffmpeg -hide_banner -loglevel error -y -f lavfi -i testsrc2=size=4000x3000:rate=1 \
  -vf noise=alls=10:allf=t -frames:v 1 -q:v 2 "$W/photo.jpg"
mkdir -p "$W/p"
for i in 0 1 2 3 4 5 6 7 8 9; do cp "$W/photo.jpg" "$W/p/photo$i.jpg"; done

# once NAME CMD...: one run, appending "wall cpu" to $W/NAME.times
once() {
  local name="$1"; shift
  rm -rf "$W/out"; mkdir -p "$W/out"
  local t
  t="$( { TIMEFORMAT='%R %U %S'; time "$@" >/dev/null 2>&1; } 2>&1 )"
  echo "$t" | awk '{ printf "%.3f %.3f\n", $1, $2 + $3 }' >> "$W/$name.times"
}

median() { sort -n | awk '{ a[NR] = $1 } END { print a[int((NR + 1) / 2)] }'; }

report() {
  local name="$1"
  local wall cpu
  wall="$(awk '{ print $1 }' "$W/$name.times" | median)"
  cpu="$(awk '{ print $2 }' "$W/$name.times" | median)"
  printf '| %s | %s | %s |\n' "$name" "$wall" "$cpu"
}

FF=(ffmpeg -hide_banner -loglevel error -y -nostdin)

# The job's video outputs with the CLI: the same encoder settings, poster,
# thumbnail and preview from the first frame.
video_cli() {
  "${FF[@]}" -i "$W/clip.mp4" -filter_complex \
    "[0:v]scale=1280:720:flags=bicubic,setsar=1,format=yuv420p,split=2[v][s];[s]trim=end_frame=1,split=3[p][t][q];[t]scale=320:180:flags=bicubic[t2];[q]scale=24:14:flags=bicubic[q2]" \
    -map '[v]' -map 0:a -c:v libx264 -preset veryfast -crf 23 -maxrate 2500000 -bufsize 5000000 \
    -c:a aac -b:a 128k -movflags +faststart "$W/out/video.mp4" \
    -map '[p]' -frames:v 1 -q:v 4 "$W/out/poster.jpg" \
    -map '[t2]' -frames:v 1 -q:v 4 "$W/out/thumb.jpg" \
    -map '[q2]' -frames:v 1 -q:v 10 "$W/out/preview.jpg"
}
video_palaver() { "$BIN" job video "$W/clip.mp4" "$W/out"; }
vthumb_cli() { "${FF[@]}" -i "$W/clip.mp4" -frames:v 1 -vf scale=320:180:flags=bicubic -q:v 4 "$W/out/t.jpg"; }
vthumb_palaver() { "$BIN" thumb "$W/clip.mp4" "$W/out/t.jpg" 320; }
jthumb_cli() { "${FF[@]}" -i "$W/photo.jpg" -vf scale=320:240:flags=bicubic -q:v 4 "$W/out/t.jpg"; }
jthumb_cli_lowres() { "${FF[@]}" -lowres 3 -i "$W/photo.jpg" -vf scale=320:240:flags=bicubic -q:v 4 "$W/out/t.jpg"; }
jthumb_vips() { vipsthumbnail "$W/photo.jpg" -s 320 -o "$W/out/t.jpg[Q=85]"; }
jthumb_palaver() { "$BIN" thumb "$W/photo.jpg" "$W/out/t.jpg" 320; }
# Ten photos in one process: start-up (Debian's FFmpeg loads 160+ shared
# libraries) paid once.
jthumb10_vips() { vipsthumbnail -s 320 -o "$W/out/%s.jpg[Q=85]" "$W"/p/*.jpg; }
jthumb10_palaver() { "$BIN" thumbs 320 "$W/out" "$W"/p/*.jpg; }
# The image job's outputs with the CLI (it does not apply EXIF orientation).
image_cli() {
  "${FF[@]}" -i "$W/photo.jpg" -filter_complex \
    "[0:v]split=3[a][b][c];[a]scale=1600:1200:flags=bicubic[i];[b]scale=320:240:flags=bicubic[t];[c]scale=24:18:flags=bicubic[q]" \
    -map '[i]' -q:v 4 "$W/out/image.jpg" -map '[t]' -q:v 4 "$W/out/thumb.jpg" -map '[q]' -q:v 10 "$W/out/preview.jpg"
}
image_palaver() { "$BIN" job image "$W/photo.jpg" "$W/out"; }

# CASES="jthumb_vips jthumb_palaver" runs a subset.
ALL="video_cli video_palaver vthumb_cli vthumb_palaver jthumb_cli jthumb_cli_lowres jthumb_vips"
ALL+=" jthumb_palaver jthumb10_vips jthumb10_palaver image_cli image_palaver"
read -ra CASES <<< "${CASES:-$ALL}"
for c in "${CASES[@]}"; do : > "$W/$c.times"; done
# Rounds: every case once per round, so load changes hit all of them.
for r in $(seq "$RUNS"); do
  step "round $r of $RUNS"
  for c in "${CASES[@]}"; do once "$c" "$c"; done
done

echo
echo "medians of $RUNS runs, seconds (CPU = user + system); load average: $(cut -d' ' -f1-3 /proc/loadavg)"
echo '| case | wall | CPU |'
echo '| --- | --- | --- |'
for c in "${CASES[@]}"; do report "$c"; done
