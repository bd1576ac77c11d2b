#!/usr/bin/env bash
# medbook beside its ceiling, in one run on one machine.
#
# PostgreSQL: a fresh database; for each client count, medbook (release build) under
# medbook-bench and the same SQL transaction under pgbench (bench/pgbench/*.sql), for booking
# (`spread`) and the optimistic update (`status`); then `contended` at 64 clients, RSS and
# start-up time. SQLite: medbook `spread` beside the same booking transaction in a tight
# in-process loop through diesel (`medbook-bench inproc`).
#
#   usage: bench/run.sh [--duration SECS] [--warmup SECS] [--clients "1 4 16 64"]
#   env:   MEDBOOK_BENCH_PG_URL (admin URL, default postgres://postgres@127.0.0.1:5432/postgres)
set -euo pipefail
cd "$(dirname "$0")/.."
duration=10 warmup=2 clients="1 4 16 64"
while [ $# -gt 0 ]; do
  case $1 in
    --duration) duration=$2; shift 2 ;;
    --warmup) warmup=$2; shift 2 ;;
    --clients) clients=$2; shift 2 ;;
    *) echo "unknown option $1" >&2; exit 2 ;;
  esac
done
pg_admin=${MEDBOOK_BENCH_PG_URL:-postgres://postgres@127.0.0.1:5432/postgres}
out=target/bench-run
rm -rf "$out"; mkdir -p "$out"
cargo build --release --quiet -p medbook -p medbook-bench
export MEDBOOK_BIN=target/release/medbook
export MEDBOOK_ADMIN_EMAIL=admin@medbook.local MEDBOOK_ADMIN_PASSWORD=admin-password RUST_LOG=warn
bench=target/release/medbook-bench
max_clients=$(echo "$clients" | tr ' ' '\n' | sort -n | tail -n1)

stop() { kill -TERM "$(cat "$out/server.pid")" 2>/dev/null || true; wait "$(cat "$out/server.pid")" 2>/dev/null || true; }
trap stop EXIT
rss_kib() { awk '/VmHWM/ {print $2}' "/proc/$(cat "$out/server.pid")/status"; }

echo "== PostgreSQL"
db=medbook_bench_run
psql "$pg_admin" -qc "DROP DATABASE IF EXISTS $db WITH (FORCE)" -c "CREATE DATABASE $db"
export DATABASE_URL="${pg_admin%/*}/$db"
base=$(scripts/start-server.sh "$out/server.pid" "$out/server.log")
# Users for pgbench, made directly (ids contiguous): 50 doctors, one patient per client.
read -r doctor_lo doctor_hi < <(psql "$DATABASE_URL" -qtAF' ' -c "WITH d AS (INSERT INTO users (name, email, password_hash, role, created_at, updated_at) SELECT 'pgbench doctor', 'pgb-d' || g || '@example.com', '-', 'doctor', now(), now() FROM generate_series(1, 50) g RETURNING id) SELECT min(id), max(id) FROM d")
read -r patient_lo < <(psql "$DATABASE_URL" -qtA -c "WITH p AS (INSERT INTO users (name, email, password_hash, role, created_at, updated_at) SELECT 'pgbench patient', 'pgb-p' || g || '@example.com', '-', 'patient', now(), now() FROM generate_series(1, $max_clients) g RETURNING id) SELECT min(id) FROM p")
tomorrow=$(date -u -d 'tomorrow 00:00' +%s)

pgbench_run() { # name clients script extra-vars...
  local name=$1 c=$2 script=$3; shift 3
  local j=$(( c < 2 ? 1 : 2 ))
  (cd "$out" && pgbench -n -M prepared -f "../../bench/pgbench/$script" -c "$c" -j "$j" -T "$duration" "$@" -l --log-prefix "$name" "$DATABASE_URL" > "$name.txt" 2>&1) || { cat "$out/$name.txt"; exit 1; }
  cat "$out/$name".* > "$out/$name.log" 2>/dev/null || true
}

for c in $clients; do
  echo "-- $c clients"
  $bench --url "$base" --scenario spread --clients "$c" --duration "$duration" --warmup "$warmup" --no-verify --quiet --json "$out/pg-spread-$c.json" > "$out/pg-spread-$c.out"; head -n2 "$out/pg-spread-$c.out"
  pgbench_run "pgb-booking-$c" "$c" booking.sql -D doctor_lo="$doctor_lo" -D doctor_hi="$doctor_hi" -D patient_lo="$patient_lo" -D base="$tomorrow"
  $bench --url "$base" --scenario status --clients "$c" --duration "$duration" --warmup "$warmup" --quiet --json "$out/pg-status-$c.json" > "$out/pg-status-$c.out"; head -n2 "$out/pg-status-$c.out"
  read -r appt_lo appt_hi < <(psql "$DATABASE_URL" -qtAF' ' -c "SELECT min(id), max(id) FROM (SELECT id FROM appointments ORDER BY id DESC LIMIT 400) s")
  pgbench_run "pgb-status-$c" "$c" status.sql -D appt_lo="$appt_lo" -D appt_hi="$appt_hi"
done
$bench --url "$base" --scenario contended --clients 64 --duration "$duration" --warmup "$warmup" --quiet --json "$out/pg-contended-64.json" > "$out/pg-contended-64.out"; head -n2 "$out/pg-contended-64.out"
$bench --url "$base" --scenario hot-doctor --clients 64 --duration "$duration" --warmup "$warmup" --quiet --json "$out/pg-hot-doctor-64.json" > "$out/pg-hot-doctor-64.out"; head -n2 "$out/pg-hot-doctor-64.out"
$bench --url "$base" --scenario spread --clients 64 --duration 3 --warmup 1 --quiet --json "$out/pg-verify.json" > "$out/pg-verify.out"; tail -n2 "$out/pg-verify.out"
echo "pg_rss_kib $(rss_kib)" >> "$out/facts.txt"
stop
# Start-up on the existing database: from exec to listening.
start_ns=$(date +%s%N)
scripts/start-server.sh "$out/server.pid" "$out/server-restart.log" >/dev/null
echo "pg_startup_ms $(( ($(date +%s%N) - start_ns) / 1000000 ))" >> "$out/facts.txt"
stop

echo "== SQLite"
rm -f "$out"/sqlite.db*
export DATABASE_URL="$out/sqlite.db"
base=$(scripts/start-server.sh "$out/server.pid" "$out/server-sqlite.log")
for c in $clients; do
  $bench --url "$base" --scenario spread --clients "$c" --duration "$duration" --warmup "$warmup" --no-verify --quiet --json "$out/sqlite-spread-$c.json" > "$out/sqlite-spread-$c.out"; head -n1 "$out/sqlite-spread-$c.out"
done
echo "sqlite_rss_kib $(rss_kib)" >> "$out/facts.txt"
stop
start_ns=$(date +%s%N)
scripts/start-server.sh "$out/server.pid" "$out/server-sqlite-restart.log" >/dev/null
echo "sqlite_startup_ms $(( ($(date +%s%N) - start_ns) / 1000000 ))" >> "$out/facts.txt"
stop
rm -f "$out"/inproc.db*
$bench inproc --database-url "$out/inproc.db" --duration "$duration" --json "$out/sqlite-inproc.json" > "$out/sqlite-inproc.out"; head -n2 "$out/sqlite-inproc.out"

python3 bench/report.py "$out" "$clients"
