#!/usr/bin/env bash
# Two medbook builds side by side in one session: both serve one fresh PostgreSQL database, and
# medbook-bench runs a scenario against each in alternating rounds (A B, B A, A B, …), so that
# the host's drift hits both alike. Prints each round's requests/s and, per request, the context
# switches and the CPU time (user + system) of the medbook process (all its threads), and the
# load generator's p99 latency, then the mean and median of each build (the median of the p99s).
# The CPU time per request moves less with the host than req/s.
# Two 8-round means within ~4 % of each other are not a difference: an A/A run (one binary in
# both slots) differs that much alone.
# This is how a change is judged (BENCHMARKS.md): comparing two bench/run.sh runs compares
# hosts as much as code.
#
# With --sqlite each build serves its own SQLite file instead (one file would make the two
# builds' writers queue for one lock).
#
# With --split, PostgreSQL runs on the last core and everything else on the others, as in
# bench/run.sh's split placement (needs root; the affinity is restored on exit).
#
# To compare two configurations of one build, pass two wrapper scripts, each setting its
# variable and exec'ing the binary (exec keeps the pid, which the figures are read from).
#
#   usage: bench/ab.sh [--scenario status] [--clients 64] [--rounds 8] [--duration 3] [--sqlite]
#                      [--split] [--idempotency-keys] BIN_A BIN_B
#   e.g.:  git stash; cargo build --release; cp target/release/medbook /tmp/medbook-before
#          git stash pop; cargo build --release
#          bench/ab.sh /tmp/medbook-before target/release/medbook
#          for n in 4 8; do printf '#!/bin/sh\nMEDBOOK_POOL_SIZE=%s exec target/release/medbook\n' $n > /tmp/pool-$n; done
#          chmod +x /tmp/pool-4 /tmp/pool-8; bench/ab.sh --split --scenario status --clients 16 /tmp/pool-4 /tmp/pool-8
#   env:   MEDBOOK_BENCH_PG_URL (admin URL, default postgres://postgres@127.0.0.1:5432/postgres)
set -euo pipefail
cd "$(dirname "$0")/.."
scenario=status clients=64 rounds=8 duration=3 sqlite= split= extra=()
while [ $# -gt 2 ]; do
  case $1 in
    --sqlite) sqlite=1; shift ;;
    --split) split=1; shift ;;
    --idempotency-keys) extra+=(--idempotency-keys); shift ;;
    --scenario) scenario=$2; shift 2 ;;
    --clients) clients=$2; shift 2 ;;
    --rounds) rounds=$2; shift 2 ;;
    --duration) duration=$2; shift 2 ;;
    *) echo "unknown option $1" >&2; exit 2 ;;
  esac
done
[ $# -eq 2 ] || { echo "usage: bench/ab.sh [options] BIN_A BIN_B" >&2; exit 2; }
bins=("$1" "$2")
pg_admin=${MEDBOOK_BENCH_PG_URL:-postgres://postgres@127.0.0.1:5432/postgres}
out=target/bench-ab
rm -rf "$out"; mkdir -p "$out"
cargo build --release --quiet -p medbook-bench
bench=target/release/medbook-bench
db=medbook_bench_ab
if [ -z "$sqlite" ]; then
  psql "$pg_admin" -qc "DROP DATABASE IF EXISTS $db WITH (FORCE)" -c "CREATE DATABASE $db" 2>/dev/null
fi
database_url() { if [ -n "$sqlite" ]; then echo "$out/ab-$1.db"; else echo "${pg_admin%/*}/$db"; fi; }
export MEDBOOK_ADMIN_EMAIL=admin@medbook.local MEDBOOK_ADMIN_PASSWORD=admin-password RUST_LOG=warn
cpus=$(nproc)
pin_postgres() { local pid; for pid in $(pgrep -u postgres); do taskset -a -p -c "$1" "$pid" >/dev/null 2>&1 || return 1; done; }
stop() {
  local i
  for i in 0 1; do kill -TERM "$(cat "$out/server-$i.pid" 2>/dev/null)" 2>/dev/null || true; done
  [ -n "$sqlite" ] || psql "$pg_admin" -qc "DROP DATABASE IF EXISTS $db WITH (FORCE)" 2>/dev/null || true
  [ -z "$split" ] || pin_postgres "0-$(( cpus - 1 ))" || true
}
trap stop EXIT
# The servers and the load generator run under `app` (the split placement's other cores).
app=()
if [ -n "$split" ]; then
  [ "$cpus" -gt 1 ] || { echo "--split needs two cores or more" >&2; exit 2; }
  pin_postgres "$(( cpus - 1 ))" || { echo "--split: cannot set PostgreSQL's CPU affinity (root?)" >&2; exit 1; }
  app=(taskset -c "0-$(( cpus - 2 ))")
  echo "split: PostgreSQL on CPU $(( cpus - 1 )), the servers and the load generator on CPU 0-$(( cpus - 2 ))"
fi
urls=()
for i in 0 1; do
  urls[i]=$(DATABASE_URL=$(database_url "$i") MEDBOOK_BIN=${bins[i]} "${app[@]}" scripts/start-server.sh "$out/server-$i.pid" "$out/server-$i.log")
  # Appointments for `status` to update, made by the same build.
  "${app[@]}" $bench --url "${urls[i]}" --scenario spread --clients 4 --duration 2 --warmup 0 --no-verify --quiet > /dev/null
done
switches() { cat /proc/"$1"/task/*/status 2>/dev/null | awk '/ctxt_switches/ {s += $2} END {print s}'; }
# User + system CPU time of the process (all its threads), in clock ticks.
cpu_ticks() { awk '{print $14 + $15}' /proc/"$1"/stat; }
hz=$(getconf CLK_TCK)
# Round 0 warms both builds up and is not counted: the first round after set-up runs cold
# (an A/A run, one binary in both slots, SQLite `spread` at one client: 1627 req/s in that round,
# 1973–2431 in the rest), and A always went first, so counting it biased every mean against A.
for r in $(seq 0 "$rounds"); do
  order="0 1"; [ $((r % 2)) -eq 0 ] && order="1 0"
  for i in $order; do
    pid=$(cat "$out/server-$i.pid")
    # Measured: `duration` seconds after set-up (the clients' logins, argon2 hashes that would
    # swamp the CPU figure) and one second of warm-up, in a run one second longer than that.
    rm -f "$out/started"
    "${app[@]}" $bench --url "${urls[i]}" --scenario "$scenario" --clients "$clients" --duration $((duration + 1)) --warmup 1 "${extra[@]}" \
      --no-verify --quiet --started-file "$out/started" > "$out/round.out" &
    load=$!
    while [ ! -e "$out/started" ]; do kill -0 "$load" || exit 1; sleep 0.05; done
    sleep 1
    s0=$(switches "$pid") c0=$(cpu_ticks "$pid") t0=$(date +%s%N)
    sleep "$duration"
    s1=$(switches "$pid") c1=$(cpu_ticks "$pid") t1=$(date +%s%N)
    wait "$load"
    rate=$(grep -o '= [0-9]* req/s' "$out/round.out" | grep -o '[0-9]*')
    p99=$(grep -o 'p99 [0-9.]*' "$out/round.out" | grep -o '[0-9.]*$')
    awk -v who="${bins[i]}" -v i="$i" -v r="$r" -v rate="$rate" -v p99="$p99" -v s=$((s1 - s0)) -v c=$((c1 - c0)) -v hz="$hz" -v ns=$((t1 - t0)) 'BEGIN {
      n = rate * ns / 1e9
      printf "%s round %d: %s: %d req/s, per request %.2f context switches, %.0f us CPU, p99 %s ms\n", (i ? "B" : "A"), r, who, rate, s / n, c / hz * 1e6 / n, p99 }' > "$out/round.txt"
    if [ "$r" -eq 0 ]; then sed 's/^/(warm-up, not counted) /' "$out/round.txt"; else tee -a "$out/rounds.txt" < "$out/round.txt"; fi
  done
done
for who in A B; do
  grep "^$who " "$out/rounds.txt" | awk -v who="$who" '{ n++; rate[n] = $(NF - 12); cs += $(NF - 8); cpu += $(NF - 5); p99[n] = $(NF - 1); sum += rate[n] } END {
    asort(rate); asort(p99)
    median = n % 2 ? rate[(n + 1) / 2] : (rate[n / 2] + rate[n / 2 + 1]) / 2
    p99_median = n % 2 ? p99[(n + 1) / 2] : (p99[n / 2] + p99[n / 2 + 1]) / 2
    printf "%s: mean %.0f req/s, median %.0f; per request %.2f context switches, %.0f us CPU of medbook; median p99 %.1f ms (%d rounds)\n", who, sum / n, median, cs / n, cpu / n, p99_median, n }'
done
