#!/usr/bin/env bash
# medbook beside its ceiling, in one run on one machine.
#
# SQLite: medbook `spread` beside the same booking transaction in a tight in-process loop
# through diesel (`medbook-bench inproc`); at one client, the HTTP bound (`ping`, `ping-db`:
# what a request costs before any work of its own); RSS and start-up time. PostgreSQL (twice:
# cores shared, then PostgreSQL on its own core): a fresh database; for each client count, medbook
# (release build) under medbook-bench and the same SQL transaction under pgbench
# (bench/pgbench/*.sql), for booking (`spread`) and the optimistic update (`status`); then
# `contended`, `hot-doctor` and `mixed` (bookings and updates of the same doctors at once) at
# 64 clients, the invariant, RSS and start-up time.
# `spread` and `status` are also run against `medbook-bench floor-server`: the same SQL as
# booking.sql and status.sql behind the same HTTP server, pool and thread hand-off, and
# nothing else — the stack's own floor.
# Each cell alternates medbook and its ceiling (and the floor) for --rounds rounds of
# --duration seconds (A B A B), so that the machine's drift hits all alike; the report
# averages the rounds, lists the cells where one contender's rounds differ by more than 25 %
# (their mean hides it), then checks every cell (no 5xx, no transport error, no retries
# exhausted, no failed pgbench transaction, the invariant held) and exits 1 if one failed.
# `--smoke` runs every step once, briefly, on debug builds (1 and 4 clients, 1 s per cell, its
# own output folder and databases, dropped afterwards): CI runs it so that a change that
# breaks the bench, a pgbench script or the report is caught when it is made. Its figures
# mean nothing.
#
#   usage: bench/run.sh [--duration SECS] [--warmup SECS] [--rounds N] [--clients "1 4 16 64"]
#          bench/run.sh --smoke
#   env:   MEDBOOK_BENCH_PG_URL (admin URL, default postgres://postgres@127.0.0.1:5432/postgres)
set -euo pipefail
cd "$(dirname "$0")/.."
duration=5 warmup=2 rounds=2 clients="1 4 16 64" smoke=""
while [ $# -gt 0 ]; do
  case $1 in
    --smoke) smoke=1 duration=1 warmup=0 rounds=1 clients="1 4"; shift ;;
    --duration) duration=$2; shift 2 ;;
    --warmup) warmup=$2; shift 2 ;;
    --clients) clients=$2; shift 2 ;;
    --rounds) rounds=$2; shift 2 ;;
    *) echo "unknown option $1" >&2; exit 2 ;;
  esac
done
pg_admin=${MEDBOOK_BENCH_PG_URL:-postgres://postgres@127.0.0.1:5432/postgres}
if [ -n "$smoke" ]; then
  out=target/bench-smoke build=debug db_prefix=medbook_smoke
  cargo build --quiet -p medbook -p medbook-bench
else
  out=target/bench-run build=release db_prefix=medbook_bench
  cargo build --release --quiet -p medbook -p medbook-bench
fi
rm -rf "$out"; mkdir -p "$out"
export MEDBOOK_BIN=target/$build/medbook
export MEDBOOK_ADMIN_EMAIL=admin@medbook.local MEDBOOK_ADMIN_PASSWORD=admin-password RUST_LOG=warn
bench=target/$build/medbook-bench
max_clients=$(echo "$clients" | tr ' ' '\n' | sort -n | tail -n1)
# `contended` and `hot-doctor` run at this many clients (64; the smoke: its largest count).
crowd=$(( smoke ? max_clients : 64 ))

stop() {
  local f
  for f in server floor; do
    kill -TERM "$(cat "$out/$f.pid" 2>/dev/null)" 2>/dev/null || true
    wait "$(cat "$out/$f.pid" 2>/dev/null)" 2>/dev/null || true
  done
  rm -f "$out/floor.pid"
}
# The floor server (see above) on DATABASE_URL, placed like medbook; prints its base URL.
start_floor() { # log
  $app $bench floor-server --database-url "$DATABASE_URL" --listen 127.0.0.1:0 > "$1" 2>&1 &
  echo $! > "$out/floor.pid"
  for _ in $(seq 1 100); do
    grep -o 'http://[0-9.:]*' "$1" && return 0
    sleep 0.1
  done
  cat "$1" >&2; exit 1
}
app=""
# Start-up on the existing database (DATABASE_URL): from exec to listening.
startup_ms() { # name
  local start_ns; start_ns=$(date +%s%N)
  scripts/start-server.sh "$out/server.pid" "$out/server-$1-restart.log" >/dev/null
  echo "$1_startup_ms $(( ($(date +%s%N) - start_ns) / 1000000 ))" >> "$out/facts.txt"
  stop
}
rss_kib() { awk '/VmHWM/ {print $2}' "/proc/$(cat "$out/server.pid")/status"; }

# Placements. shared: the load generator, medbook, pgbench and PostgreSQL share every core.
# split: PostgreSQL (every process of the server, and the backends it forks later) on the last
# core, the load generator, medbook and pgbench on the others: the shape of a database on its
# own host, where medbook's CPU does not come out of the database's. Needs the right to change
# the PostgreSQL server's CPU affinity (root); the affinity is restored on exit.
cpus=$(nproc)
all_cpus="0-$(( cpus - 1 ))" db_cpu=$(( cpus - 1 )) app_cpus="0-$(( cpus > 1 ? cpus - 2 : 0 ))"
pin_postgres() { local pid; for pid in $(pgrep -u postgres); do taskset -a -p -c "$1" "$pid" >/dev/null 2>&1 || return 1; done; }
drop_databases() {
  local p
  for p in split shared; do psql "$pg_admin" -qc "DROP DATABASE IF EXISTS ${db_prefix}_$p WITH (FORCE)" || true; done
}
trap 'stop; pin_postgres "$all_cpus" || true; [ -z "$smoke" ] || drop_databases' EXIT

pgbench_run() { # name clients script extra-vars...
  local name=$1 c=$2 script=$3; shift 3
  local j=$(( c < 2 ? 1 : 2 ))
  (cd "$out" && $app pgbench -n -M prepared -f "../../bench/pgbench/$script" -c "$c" -j "$j" -T "$duration" "$@" -l --log-prefix "$name" "$DATABASE_URL" > "$name.txt" 2>&1) || { cat "$out/$name.txt"; exit 1; }
  cat "$out/$name".* > "$out/$name.log" 2>/dev/null || true
}

# Before each cell: PostgreSQL writes out what the cells before it left in its buffers, so
# that a checkpoint (every 5 minutes or 1 GB of WAL by default) does not land in the middle of
# one cell's rounds; it also restarts the checkpoint timer.
checkpoint() { psql "$pg_admin" -qc CHECKPOINT; }

# A fresh database and medbook on it, users for pgbench, then spread/status beside pgbench.
pg_scenarios() { # placement
  local p=$1 db="${db_prefix}_$1" c
  psql "$pg_admin" -qc "DROP DATABASE IF EXISTS $db WITH (FORCE)" -c "CREATE DATABASE $db"
  export DATABASE_URL="${pg_admin%/*}/$db"
  base=$($app scripts/start-server.sh "$out/server.pid" "$out/server-$p.log")
  floor=$(start_floor "$out/floor-$p.log")
  # Users for pgbench, made directly (ids contiguous): 50 doctors, one patient per client.
  read -r doctor_lo doctor_hi < <(psql "$DATABASE_URL" -qtAF' ' -c "WITH d AS (INSERT INTO users (name, email, email_key, password_hash, role, created_at, updated_at) SELECT 'pgbench doctor', 'pgb-d' || g || '@example.com', 'pgb-d' || g || '@example.com', '-', 'doctor', now(), now() FROM generate_series(1, 50) g RETURNING id) SELECT min(id), max(id) FROM d")
  read -r patient_lo < <(psql "$DATABASE_URL" -qtA -c "WITH p AS (INSERT INTO users (name, email, email_key, password_hash, role, created_at, updated_at) SELECT 'pgbench patient', 'pgb-p' || g || '@example.com', 'pgb-p' || g || '@example.com', '-', 'patient', now(), now() FROM generate_series(1, $max_clients) g RETURNING id) SELECT min(id) FROM p")
  tomorrow=$(date -u -d 'tomorrow 00:00' +%s)
  for c in $clients; do
    echo "-- $p, $c clients"
    checkpoint
    for r in $(seq "$rounds"); do
      $app $bench --url "$base" --scenario spread --clients "$c" --duration "$duration" --warmup "$warmup" --no-verify --quiet --json "$out/$p-pg-spread-$c-r$r.json" > "$out/$p-pg-spread-$c-r$r.out"; head -n1 "$out/$p-pg-spread-$c-r$r.out"
      $app $bench --url "$base" --target-url "$floor" --scenario spread --clients "$c" --duration "$duration" --warmup "$warmup" --no-verify --quiet --json "$out/$p-floor-spread-$c-r$r.json" > "$out/$p-floor-spread-$c-r$r.out"; head -n1 "$out/$p-floor-spread-$c-r$r.out"
      pgbench_run "$p-pgb-booking-$c-r$r" "$c" booking.sql -D doctor_lo="$doctor_lo" -D doctor_hi="$doctor_hi" -D patient_lo="$patient_lo" -D base="$tomorrow" -D active1=pending -D active2=confirmed -D active3=in_progress
    done
    checkpoint
    for r in $(seq "$rounds"); do
      $app $bench --url "$base" --scenario status --clients "$c" --duration "$duration" --warmup "$warmup" --quiet --json "$out/$p-pg-status-$c-r$r.json" > "$out/$p-pg-status-$c-r$r.out"; head -n1 "$out/$p-pg-status-$c-r$r.out"
      $app $bench --url "$base" --target-url "$floor" --scenario status --clients "$c" --duration "$duration" --warmup "$warmup" --quiet --json "$out/$p-floor-status-$c-r$r.json" > "$out/$p-floor-status-$c-r$r.out"; head -n1 "$out/$p-floor-status-$c-r$r.out"
      read -r appt_lo appt_hi < <(psql "$DATABASE_URL" -qtAF' ' -c "SELECT min(id), max(id) FROM (SELECT id FROM appointments ORDER BY id DESC LIMIT 400) s")
      pgbench_run "$p-pgb-status-$c-r$r" "$c" status.sql -D appt_lo="$appt_lo" -D appt_hi="$appt_hi"
    done
  done
}

echo "== SQLite"
rm -f "$out"/sqlite.db*
export DATABASE_URL="$out/sqlite.db"
base=$(scripts/start-server.sh "$out/server.pid" "$out/server-sqlite.log")
for c in $clients; do
  for r in $(seq "$rounds"); do
    $bench --url "$base" --scenario spread --clients "$c" --duration "$duration" --warmup "$warmup" --no-verify --quiet --json "$out/sqlite-spread-$c-r$r.json" > "$out/sqlite-spread-$c-r$r.out"; head -n1 "$out/sqlite-spread-$c-r$r.out"
    rm -f "$out"/inproc.db*
    $bench inproc --database-url "$out/inproc.db" --duration "$duration" --json "$out/sqlite-inproc-$c-r$r.json" > "$out/sqlite-inproc-$c-r$r.out"; head -n1 "$out/sqlite-inproc-$c-r$r.out"
  done
done
# The HTTP bound at one client: what a request costs before any work of its own, with no
# database (`ping`) and with the hand-off to a blocking thread and one statement (`ping-db`);
# and the in-process transaction on a thread that sleeps 250 µs before each one, about as long
# as a one-client server's database thread sleeps between requests.
for r in $(seq "$rounds"); do
  for s in ping ping-db; do
    $bench --url "$base" --scenario "$s" --clients 1 --duration "$duration" --warmup "$warmup" --no-verify --quiet --json "$out/sqlite-$s-1-r$r.json" > "$out/sqlite-$s-1-r$r.out"; head -n1 "$out/sqlite-$s-1-r$r.out"
  done
  rm -f "$out"/inproc.db*
  $bench inproc --database-url "$out/inproc.db" --duration "$duration" --pause-us 250 --json "$out/sqlite-inproc-paused-1-r$r.json" > "$out/sqlite-inproc-paused-1-r$r.out"; head -n1 "$out/sqlite-inproc-paused-1-r$r.out"
done
echo "sqlite_rss_kib $(rss_kib)" >> "$out/facts.txt"
stop
startup_ms sqlite

placements=shared
if [ "$cpus" -gt 1 ] && pin_postgres "$all_cpus"; then placements="shared split"; else echo "(split placement skipped: cannot set PostgreSQL's CPU affinity)"; fi
echo "$placements" > "$out/placements.txt"
if [[ $placements == *split* ]]; then
  echo "== PostgreSQL, split: PostgreSQL on CPU $db_cpu, the rest on CPU $app_cpus"
  pin_postgres "$db_cpu"
  app="taskset -c $app_cpus"
  pg_scenarios split
  stop; app=""
  pin_postgres "$all_cpus"
fi

echo "== PostgreSQL, shared"
app=""
pg_scenarios shared
$bench --url "$base" --scenario contended --clients "$crowd" --duration "$((duration * rounds))" --warmup "$warmup" --quiet --json "$out/shared-pg-contended.json" > "$out/shared-pg-contended.out"; head -n2 "$out/shared-pg-contended.out"
$bench --url "$base" --scenario hot-doctor --clients "$crowd" --duration "$((duration * rounds))" --warmup "$warmup" --quiet --json "$out/shared-pg-hot-doctor.json" > "$out/shared-pg-hot-doctor.out"; head -n2 "$out/shared-pg-hot-doctor.out"
$bench --url "$base" --scenario mixed --clients "$crowd" --duration "$((duration * rounds))" --warmup "$warmup" --quiet --json "$out/shared-pg-mixed.json" > "$out/shared-pg-mixed.out"; head -n2 "$out/shared-pg-mixed.out"
$bench --url "$base" --scenario spread --clients "$crowd" --duration "$(( smoke ? 1 : 3 ))" --warmup "$(( smoke ? 0 : 1 ))" --quiet --json "$out/shared-pg-verify.json" > "$out/shared-pg-verify.out"; tail -n2 "$out/shared-pg-verify.out"
echo "pg_rss_kib $(rss_kib)" >> "$out/facts.txt"
if [ -n "$smoke" ]; then
  # bench/cpu-split.sh is not part of a run; the smoke checks that it still reads and prints.
  bench/cpu-split.sh --pidfile "$out/server.pid" --db "$DATABASE_URL" --from 1 --secs 1 -- \
    $bench --url "$base" --scenario status --clients 2 --duration 3 --warmup 0 --quiet > "$out/cpu-split.out"
  grep -q 'per request .*WAL flushes' "$out/cpu-split.out" || { echo "bench/cpu-split.sh printed no per-request figures" >&2; cat "$out/cpu-split.out" >&2; exit 1; }
  tail -n1 "$out/cpu-split.out"
fi
stop
startup_ms pg

python3 bench/report.py "$out" "$clients" "$rounds"
