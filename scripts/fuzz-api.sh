#!/usr/bin/env bash
# Fuzzes the API from its own OpenAPI document with schemathesis (pinned in
# requirements-ci.txt): no 5xx, every documented response matches its schema, and a method a
# path does not have is 405 with `Allow` (schemathesis's unsupported_method). Each backend
# gets a fresh database with real users, appointments, a prescription and a rating to aim at
# (scripts/fuzz-seed.py), and is fuzzed as a doctor, as a patient and as the admin; then its
# /metrics is read with a strict OpenMetrics parser (scripts/check-metrics.py).
#   usage: scripts/fuzz-api.sh [sqlite|postgres]...   (default: both)
#   MEDBOOK_FUZZ_EXAMPLES: examples per operation (default 20)
set -euo pipefail
cd "$(dirname "$0")/.."
backends=("$@")
[ ${#backends[@]} -gt 0 ] || backends=(sqlite postgres)
scripts/python-tools.sh
cargo build --quiet --bin medbook
mkdir -p target/fuzz
pg_admin=${MEDBOOK_TEST_PG_URL:-postgres://postgres@127.0.0.1:5432/postgres}
# The access log (info of actix's logger) is on: the 5xx check below reads it.
export MEDBOOK_ADMIN_EMAIL=admin@medbook.local MEDBOOK_ADMIN_PASSWORD=admin-password \
  RUST_LOG=warn,actix_web::middleware::logger=info

for backend in "${backends[@]}"; do
  echo "== schemathesis on $backend"
  case $backend in
    sqlite) rm -f target/fuzz/medbook.db*; export DATABASE_URL=target/fuzz/medbook.db ;;
    postgres)
      psql "$pg_admin" -qc "DROP DATABASE IF EXISTS medbook_fuzz WITH (FORCE)" -c "CREATE DATABASE medbook_fuzz"
      export DATABASE_URL="${pg_admin%/*}/medbook_fuzz" ;;
    *) echo "unknown backend $backend" >&2; exit 2 ;;
  esac
  base=$(scripts/start-server.sh target/fuzz/server.pid "target/fuzz/server-$backend.log")
  admin_token=$(curl -sf "$base/api/v1/auth/login" -H 'Content-Type: application/json' \
    -d "{\"email\":\"$MEDBOOK_ADMIN_EMAIL\",\"password\":\"$MEDBOOK_ADMIN_PASSWORD\"}" |
    python3 -c 'import json,sys; print(json.load(sys.stdin)["token"])')
  # Real ids and booking times for the fuzzer (see scripts/fuzz-seed.py), and the tokens of
  # the doctor and the patient it created.
  config=target/fuzz/schemathesis-$backend.toml tokens=target/fuzz/tokens-$backend
  python3 scripts/fuzz-seed.py "$base" "$admin_token" "$config" "$tokens"
  status=0
  # As each role in turn; the admin last, since it may deactivate the others.
  for role in doctor patient admin; do
    if [ "$role" = admin ]; then token=$admin_token; else token=$(awk -v r="$role" '$1 == r { print $2 }' "$tokens"); fi
    echo "-- as the $role"
    # Logout is left out: it would revoke the token the run authenticates with.
    .venv/bin/schemathesis --config-file "$config" run "$base/api/v1/openapi.json" \
      -H "Authorization: Bearer $token" \
      --checks not_a_server_error,response_schema_conformance,unsupported_method \
      --max-examples "${MEDBOOK_FUZZ_EXAMPLES:-20}" --seed 20261128 --workers 1 \
      --generation-database none --exclude-path /api/v1/auth/logout \
      --report junit --report-dir "target/fuzz/report-$backend-$role" || status=$?
  done
  # After the fuzzing, /metrics holds a series for every route, method and status it saw.
  .venv/bin/python scripts/check-metrics.py "$base" || { echo "/metrics is not well-formed on $backend" >&2; status=1; }
  kill -TERM "$(cat target/fuzz/server.pid)"
  wait "$(cat target/fuzz/server.pid)" 2>/dev/null || true
  log=target/fuzz/server-$backend.log
  if grep -E '"[A-Z]+ [^"]*" 5[0-9][0-9] ' "$log"; then
    echo "the server answered 5xx during fuzzing" >&2; status=1
  fi
  # The checks above read the access log: without it (a RUST_LOG that hides it) they pass
  # vacuously. And the coverage phase sent methods the paths do not have (unsupported_method).
  answered=$(grep -cE '"[A-Z]+ [^"]*" [0-9]{3} ' "$log" || true)
  not_allowed=$(grep -cE '"[A-Z]+ [^"]*" 405 ' "$log" || true)
  echo "access log: $answered requests, $not_allowed answered 405"
  if [ "$answered" -lt 1000 ] || [ "$not_allowed" -lt 1 ]; then
    echo "the access log of $backend lacks the fuzzer's requests" >&2; status=1
  fi
  [ "$status" -eq 0 ] || { echo "schemathesis failed on $backend" >&2; exit "$status"; }
done
