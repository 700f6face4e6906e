#!/usr/bin/env bash
# Creates the secret files docker-compose.yml mounts (deploy/secrets/),
# random values, mode 0640, group 10001 (the `palaver` user of the image):
# Palaver refuses world-readable secret files. Existing files are kept.
#
#   sudo deploy/make-secrets.sh
set -euo pipefail
cd "$(dirname "$0")/secrets"
umask 027
rnd() { head -c "${1:-32}" /dev/urandom | od -An -tx1 | tr -d ' \n'; }
put() { [ -s "$1" ] || printf '%s' "$2" >"$1"; }
put redis_password "$(rnd 24)"
put postgres_password "$(rnd 24)"
put redis_url "redis://:$(cat redis_password)@redis:6379/"
put postgres_url "postgres://palaver:$(cat postgres_password)@postgres:5432/palaver"
put admin_token "$(rnd 32)"
put turn_secret "$(rnd 32)"
put sfu_token_secret "$(rnd 32)"
put media_capability_secret "$(rnd 32)"
put media_master_keys "k1:$(rnd 32)"
put garage_rpc_secret "$(rnd 32)"
put s3_secret_key "$(rnd 32)"
# Garage imports this key and creates the bucket on its first start.
[ -s garage.env ] || printf 'GARAGE_DEFAULT_ACCESS_KEY=GK0123456789abcdef01234567\nGARAGE_DEFAULT_SECRET_KEY=%s\nGARAGE_DEFAULT_BUCKET=palaver-media\n' "$(cat s3_secret_key)" >garage.env
chmod 0640 ./*
chgrp 10001 ./* 2>/dev/null || echo "run as root to give group 10001 (the image's palaver user) read access" >&2
