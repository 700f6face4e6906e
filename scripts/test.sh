#!/usr/bin/env bash
# Installs whatever the tests need and is missing, then runs every test:
# formatting, lints, unit, property and end-to-end tests.
#
#   ./scripts/test.sh            # everything
#   ./scripts/test.sh -E 'package(palaver-tests)'   # extra args go to cargo nextest
#
# Servers started by tests listen on 127.0.0.1 only and live in temporary
# directories that are removed afterwards.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh

ensure_build_tools
ensure_nextest
ensure_browser_tools
ensure_turn_tools
ensure_garage

step "cargo fmt --check"
cargo fmt --all -- --check

step "cargo clippy"
cargo clippy --workspace --all-targets --locked -- -D warnings

step "cargo nextest"
cargo nextest run --workspace --locked --no-fail-fast "$@"
