#!/usr/bin/env bash
# Where the CPU of a load run goes: starts COMMAND (a medbook-bench or pgbench run), and over
# seconds FROM..FROM+SECS of it reads the CPU time used by the machine, by the medbook server
# (pid in PIDFILE, optional), by COMMAND itself and by all PostgreSQL server processes, from
# /proc. Prints them in CPU-seconds and, given the request count, in microseconds per request.
#
#   usage: bench/cpu-split.sh [--pidfile PIDFILE] [--from 4] [--secs 6] -- COMMAND...
#   e.g.:  bench/cpu-split.sh --pidfile target/server.pid -- \
#            target/release/medbook-bench --url http://127.0.0.1:8080 --scenario status \
#            --clients 16 --duration 10 --warmup 2 --quiet
set -euo pipefail
pidfile="" from=4 secs=6
while [ $# -gt 0 ]; do
  case $1 in
    --pidfile) pidfile=$2; shift 2 ;;
    --from) from=$2; shift 2 ;;
    --secs) secs=$2; shift 2 ;;
    --) shift; break ;;
    *) echo "unknown option $1" >&2; exit 2 ;;
  esac
done
hz=$(getconf CLK_TCK)
busy() { awk '/^cpu / {print $2+$3+$4+$7+$8}' /proc/stat; }
pidcpu() { awk '{print $14+$15}' "/proc/$1/stat" 2>/dev/null || echo 0; }
# Backends come and go (pgbench's end with it), so sum over the processes alive at both reads.
pgcpu() { local s=0 p; for p in $(pgrep -u postgres); do s=$((s + $(pidcpu "$p"))); done; echo $s; }
server=0; [ -n "$pidfile" ] && server=$(cat "$pidfile")
"$@" > "${TMPDIR:-/tmp}/cpu-split.out" 2>&1 & cmd=$!
sleep "$from"
b0=$(busy) s0=$(pidcpu "$server") c0=$(pidcpu "$cmd") p0=$(pgcpu)
sleep "$secs"
b1=$(busy) s1=$(pidcpu "$server") c1=$(pidcpu "$cmd") p1=$(pgcpu)
wait "$cmd" || true
cat "${TMPDIR:-/tmp}/cpu-split.out"
awk -v hz="$hz" -v secs="$secs" -v b=$((b1 - b0)) -v s=$((s1 - s0)) -v c=$((c1 - c0)) -v p=$((p1 - p0)) 'BEGIN {
  printf "CPU over %d s: machine %.2f s, medbook %.2f s, load generator %.2f s, PostgreSQL %.2f s\n", secs, b/hz, s/hz, c/hz, p/hz }'
