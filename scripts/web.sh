#!/usr/bin/env bash
# Builds the browser client (web/) into web/dist, which `palaver serve`
# serves at / (docs/web.md). Runs `npm ci` only when package-lock.json is
# newer than the installed modules, and the build only when a source file
# is newer than web/dist/index.html.
#
#   ./scripts/web.sh           # build if needed
#   ./scripts/web.sh --force   # always rebuild
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh

ensure_node
cd web
if [ ! -d node_modules ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
  step "installing the web client's packages (npm ci in web/)"
  npm ci --no-audit --no-fund --loglevel=error
fi
if [ "${1:-}" = "--force" ] || [ ! -f dist/index.html ] \
  || [ -n "$(find src index.html package-lock.json vite.config.ts tsconfig.json -newer dist/index.html -print -quit)" ]; then
  step "building the web client (npm run build in web/)"
  npm run build --silent
fi
