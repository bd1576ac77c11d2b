#!/usr/bin/env bash
# Where the CPU of a load run goes: starts COMMAND (a medbook-bench or pgbench run), and over
# seconds FROM..FROM+SECS of it reads the CPU time used by the machine, by the medbook server
# (pid in PIDFILE, optional), by COMMAND itself and by all PostgreSQL server processes, from
# /proc. Prints them in CPU-seconds over the window as it was (SECS plus the time one set of
# reads takes, which on a loaded machine is a sizeable part of a second: the window runs from
# the middle of the first set of reads to the middle of the second) and, where COMMAND
# printed its rate (medbook-bench's "= N req/s", pgbench's "tps = N"), in microseconds per
# request: the window's CPU divided by that rate × the window (the rate is the whole run's,
# so keep the window inside its steady part).
# With --db URL it also reads PostgreSQL's WAL counters (`pg_stat_wal`: records written and
# flushes, `wal_sync`) before COMMAND starts and 1.5 s after it ends, and divides them by the
# requests or transactions COMMAND counted ("N requests", "processed: N"): how many commits
# shared each flush. Not over the window: PostgreSQL's processes report these counters about
# once a second, which over a few seconds moved them by up to 30 %. So they include what
# COMMAND did beyond its count: give medbook-bench `--warmup 0` (its set-up, the users and
# appointments it makes first, is still in them: a few hundred requests).
#
#   usage: bench/cpu-split.sh [--pidfile PIDFILE] [--db URL] [--from 4] [--secs 6] -- COMMAND...
#   e.g.:  bench/cpu-split.sh --pidfile target/server.pid -- \
#            target/release/medbook-bench --url http://127.0.0.1:8080 --scenario status \
#            --clients 16 --duration 10 --warmup 2 --quiet
set -euo pipefail
pidfile="" db="" from=4 secs=6
while [ $# -gt 0 ]; do
  case $1 in
    --pidfile) pidfile=$2; shift 2 ;;
    --db) db=$2; shift 2 ;;
    --from) from=$2; shift 2 ;;
    --secs) secs=$2; shift 2 ;;
    --) shift; break ;;
    *) echo "unknown option $1" >&2; exit 2 ;;
  esac
done
hz=$(getconf CLK_TCK)
busy() { awk '/^cpu / {print $2+$3+$4+$7+$8}' /proc/stat; }
pidcpu() { awk '{print $14+$15}' "/proc/$1/stat" 2>/dev/null || echo 0; }
# Backends come and go (pgbench's end with it): each read sums over the processes alive then, so
# one that starts inside the window counts whole and one that ends inside it loses its share;
# keep the window away from either end of COMMAND.
pgcpu() { local f=() p; for p in $(pgrep -u postgres); do f+=("/proc/$p/stat"); done; awk '{s += $14 + $15} END {print s + 0}' "${f[@]}" 2>/dev/null || echo 0; }
wal() { if [ -n "$db" ]; then psql "$db" -qtAF' ' -c "SELECT wal_records, wal_sync FROM pg_stat_wal"; else echo 0 0; fi; }
server=0
if [ -n "$pidfile" ]; then
  server=$(cat "$pidfile")
  # An empty or odd pid file would read /proc//stat, which is /proc/stat.
  [[ $server =~ ^[0-9]+$ ]] || { echo "no pid in $pidfile" >&2; exit 2; }
fi
out="${TMPDIR:-/tmp}/cpu-split.out"
read -r r0 f0 < <(wal)
"$@" > "$out" 2>&1 & cmd=$!
sleep "$from"
t0=$(date +%s%N); b0=$(busy) s0=$(pidcpu "$server") c0=$(pidcpu "$cmd") p0=$(pgcpu); t0e=$(date +%s%N)
sleep "$secs"
t1=$(date +%s%N); b1=$(busy) s1=$(pidcpu "$server") c1=$(pidcpu "$cmd") p1=$(pgcpu); t1e=$(date +%s%N)
wait "$cmd" || true
[ -z "$db" ] || sleep 1.5
read -r r1 f1 < <(wal)
cat "$out"
rate=$(grep -oE '= [0-9.]+ req/s|^tps = [0-9.]+' "$out" | grep -oE '[0-9.]+' | head -n1 || true)
count=$(grep -oE '[0-9]+ requests in|processed: [0-9]+' "$out" | grep -oE '[0-9]+' | head -n1 || true)
awk -v hz="$hz" -v secs="$(( (t1 + t1e - t0 - t0e) / 2000 ))e-6" -v b=$((b1 - b0)) -v s=$((s1 - s0)) -v c=$((c1 - c0)) -v p=$((p1 - p0)) \
  -v rate="${rate:-0}" -v count="${count:-0}" -v db="$db" -v r=$((r1 - r0)) -v f=$((f1 - f0)) 'BEGIN {
  printf "CPU over %.2f s: machine %.2f s, medbook %.2f s, load generator %.2f s, PostgreSQL %.2f s\n", secs, b/hz, s/hz, c/hz, p/hz
  if (rate > 0) {
    n = rate * secs
    printf "per request (%.0f/s): machine %.0f µs, medbook %.0f µs, load generator %.0f µs, PostgreSQL %.0f µs", rate, b/hz/n*1e6, s/hz/n*1e6, c/hz/n*1e6, p/hz/n*1e6
    if (db != "" && count > 0) printf "; over the whole run (%d): WAL records %.2f, WAL flushes %.3f", count, r/count, f/count
    printf "\n"
  } }'
