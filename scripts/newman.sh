#!/usr/bin/env bash
# Runs the Postman collection with newman against a fresh medbook on each backend.
#   usage: scripts/newman.sh [sqlite|postgres]...   (default: both)
set -euo pipefail
cd "$(dirname "$0")/.."
backends=("$@")
[ ${#backends[@]} -gt 0 ] || backends=(sqlite postgres)

[ -x node_modules/.bin/newman ] || npm ci --no-audit --no-fund
cargo build --quiet --bin medbook
mkdir -p target/newman
pg_admin=${MEDBOOK_TEST_PG_URL:-postgres://postgres@127.0.0.1:5432/postgres}

for backend in "${backends[@]}"; do
  echo "== newman on $backend"
  case $backend in
    sqlite)
      rm -f target/newman/medbook.db*
      export DATABASE_URL=target/newman/medbook.db ;;
    postgres)
      psql "$pg_admin" -qc "DROP DATABASE IF EXISTS medbook_newman WITH (FORCE)" -c "CREATE DATABASE medbook_newman"
      export DATABASE_URL="${pg_admin%/*}/medbook_newman" ;;
    *) echo "unknown backend $backend" >&2; exit 2 ;;
  esac
  export MEDBOOK_ADMIN_EMAIL=admin@medbook.local MEDBOOK_ADMIN_PASSWORD=admin-password
  base=$(scripts/start-server.sh target/newman/server.pid "target/newman/server-$backend.log")
  status=0
  node_modules/.bin/newman run postman/medbook.postman_collection.json \
    -e postman/medbook.postman_environment.json --env-var "baseUrl=$base" \
    --reporters cli,json --reporter-json-export "target/newman/report-$backend.json" || status=$?
  kill -TERM "$(cat target/newman/server.pid)"
  wait "$(cat target/newman/server.pid)" 2>/dev/null || true
  [ "$status" -eq 0 ] || { echo "newman failed on $backend" >&2; exit "$status"; }
done
