#!/usr/bin/env bash
# Dashboard test in headless Chromium: installs Debian's chromium and playwright-core if
# missing, starts a fresh medbook, runs tests/browser/dashboard.mjs, keeps the screenshot in
# artifacts/dashboard.png. The same run checks CORS in the browser: medbook listens on
# 127.0.0.1:PORT and allows the origin http://localhost:PORT, which is another origin for the
# browser (another host) on the same server.
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v chromium >/dev/null; then
  echo "installing chromium"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium
fi
[ -d node_modules/playwright-core ] || npm ci --no-audit --no-fund
cargo build --quiet --bin medbook
mkdir -p target/browser artifacts
rm -f target/browser/medbook.db*
export DATABASE_URL=target/browser/medbook.db
export MEDBOOK_ADMIN_EMAIL=admin@medbook.local MEDBOOK_ADMIN_PASSWORD=admin-password
port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
export MEDBOOK_CORS_ORIGINS=http://localhost:$port
base=$(scripts/start-server.sh target/browser/server.pid target/browser/server.log "127.0.0.1:$port")
status=0
node tests/browser/dashboard.mjs "$base" "$MEDBOOK_ADMIN_EMAIL" "$MEDBOOK_ADMIN_PASSWORD" artifacts/dashboard.png || status=$?
kill -TERM "$(cat target/browser/server.pid)"
wait "$(cat target/browser/server.pid)" 2>/dev/null || true
exit "$status"
