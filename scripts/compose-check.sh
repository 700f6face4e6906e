#!/usr/bin/env bash
# Validates docker-compose.yml without a container engine: Debian's
# docker-compose (v1) parses and resolves the file (`config`), against a
# throwaway copy of deploy/ with freshly generated secrets; then each

# the role configs are parsed by the `deploy_configs_parse` unit test.
#
#   scripts/compose-check.sh
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh

command -v docker-compose >/dev/null || apt_install docker-compose
tmp=$(mktemp -d "${TMPDIR:-/tmp}/palaver-compose.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
cp docker-compose.yml Dockerfile "$tmp/"
mkdir -p "$tmp/deploy/secrets"
cp deploy/*.toml deploy/*.cfg deploy/make-secrets.sh "$tmp/deploy/"
"$tmp/deploy/make-secrets.sh" 2>/dev/null
step "docker-compose config"
(cd "$tmp" && docker-compose -f docker-compose.yml config -q)
services=$(cd "$tmp" && docker-compose -f docker-compose.yml config --services | sort | tr '\n' ' ')
want="garage lb media postgres redis sfu-1 sfu-2 signaling-1 signaling-2 transcoder-1 transcoder-2 turn "
if [ "$services" != "$want" ]; then
  echo "unexpected services: $services" >&2
  exit 1
fi
step "docker-compose.yml is valid ($services)"
