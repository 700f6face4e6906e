# Shared by the scripts: one persistent target directory outside the clone
# (so CI and later runs reuse builds) and idempotent installers.

export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/palaver/target}"
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"

step() { printf '\n==> %s\n' "$*" >&2; }

as_root() {
  if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi
}

apt_updated=0
apt_install() {
  local missing=()
  for pkg in "$@"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  step "installing Debian packages: ${missing[*]}"
  if [ "$apt_updated" -eq 0 ]; then as_root apt-get update -qq; apt_updated=1; fi
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"
}

ensure_build_tools() {
  command -v cargo >/dev/null || { echo "Rust is required: https://rustup.rs" >&2; exit 1; }
  # SQLite is compiled from source (bundled) and needs a C compiler.
  command -v cc >/dev/null || apt_install gcc libc6-dev
  # The transcoder links Debian's FFmpeg 5.1 libraries (ffmpeg-sys-next
  # runs bindgen, hence clang) and libjpeg-turbo's TurboJPEG library; its
  # tests make media with the ffmpeg CLI.
  apt_install pkg-config clang libclang-dev libavcodec-dev libavformat-dev libavutil-dev \
    libavfilter-dev libswscale-dev libswresample-dev libopus-dev libturbojpeg0-dev ffmpeg
  rustup component list --installed 2>/dev/null | grep -q '^rustfmt' || rustup component add rustfmt
  rustup component list --installed 2>/dev/null | grep -q '^clippy' || rustup component add clippy
}

ensure_nextest() {
  command -v cargo-nextest >/dev/null && return 0
  step "installing cargo-nextest"
  cargo install --locked cargo-nextest
}

# Node.js and npm (Debian's, 18 or newer) build the web client and drive
# the browser tests; an installed newer Node is used as it is.
ensure_node() {
  command -v node >/dev/null && command -v npm >/dev/null && return 0
  apt_install nodejs npm
}

# Headless Chromium (Debian's, never a downloaded one) and playwright-core
# for the browser tests in tests/browser.
ensure_browser_tools() {
  ensure_node
  apt_install chromium
  # interop/webrtc-peer encodes its VP8 and Opus test media with the ffmpeg CLI.
  apt_install ffmpeg
  local dir
  for dir in tests/browser turn/tests/browser; do
    if [ ! -d "$dir/node_modules/playwright-core" ] || [ "$dir/package-lock.json" -nt "$dir/node_modules/.package-lock.json" ]; then
      step "installing browser test drivers (npm ci in $dir)"
      (cd "$dir" && npm ci --no-audit --no-fund --loglevel=error)
    fi
  done
}

# coturn's turnutils_uclient and turnutils_peer drive the TURN interop tests.
# The package's own server is not wanted: it would hold port 3478.
ensure_turn_tools() {
  if ! command -v turnutils_uclient >/dev/null; then
    apt_install coturn
    if command -v systemctl >/dev/null && [ -d /run/systemd/system ]; then
      as_root systemctl disable --now coturn >/dev/null 2>&1 || true
    fi
  fi
}

# Garage, the S3-compatible server of the media store's S3 tests (built once
# into ~/.cache/palaver, about 10 minutes of CPU), and curl, with which the
# tests look into its bucket.
ensure_garage() {
  command -v curl >/dev/null || apt_install curl
  scripts/garage.sh install
}

# The TLS tests drive curl; the Web Push tests check what palaver-push
# builds with Python's `cryptography` (an implementation nobody here wrote).
ensure_tls_push_tools() {
  command -v curl >/dev/null || apt_install curl
  apt_install python3 python3-cryptography
}
