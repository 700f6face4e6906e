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
# The web client, for tests/tests/browser_web.rs.
scripts/web.sh

# docker-compose.yml parses and resolves (Debian's docker-compose v1, no engine).
scripts/compose-check.sh
ensure_tls_push_tools

step "cargo fmt --check"
cargo fmt --all -- --check

step "cargo clippy"
cargo clippy --workspace --all-targets --locked -- -D warnings

# PostgreSQL and Redis for the store tests on PostgreSQL, the second pass
# below and the multi-node test; both stop when this script exits.
eval "$(scripts/postgres.sh start)"
eval "$(scripts/redis.sh start)"
trap 'scripts/postgres.sh stop "$PALAVER_TEST_POSTGRES_DIR"; scripts/redis.sh stop "$PALAVER_TEST_REDIS_DIR"' EXIT

# The end-to-end tests in tests/ start the `palaver` binary, which
# `cargo nextest` does not build (only test targets): build it first.
step "cargo build (the palaver binary for the end-to-end tests)"
cargo build --workspace --bins --locked

step "cargo nextest"
status=0
cargo nextest run --workspace --locked --no-fail-fast "$@" || status=$?

# The end-to-end tests of the messaging features again, on PostgreSQL.
if [ $# -eq 0 ]; then
  step "cargo nextest: messaging end to end on PostgreSQL"
  # --workspace, as above, so that features resolve the same way and nothing
  # is compiled again.
  PALAVER_TEST_BACKEND=postgres cargo nextest run --workspace --locked --no-fail-fast \
    -E 'package(palaver-tests) & (binary(chat) | binary(chats) | binary(groups) | binary(e2e_keys) | binary(blocking) | binary(lifecycle) | binary(crash) | binary(bad_input) | binary(push))' \
    || status=$?
fi
exit $status
