#!/usr/bin/env bash
# medbook's peak memory under the mix that raises it most: a large SQLite database read through
# every pooled connection while registrations hash passwords. Run on demand (CI runs --smoke).
#
#  1. medbook on a fresh SQLite file; `spread` at 64 clients fills it with appointments.
#  2. Bursts: 8 medbook-bench runs at once, each creating its 50 doctors and registering its 16
#     patients (argon2), booking for a second, then checking the invariant, which reads every
#     appointment through the API (so every pooled connection reads the whole table).
#  3. Prints medbook's resident size after the fill and after each burst, and the peak (VmHWM).
# `--smoke` runs every step once, briefly (a 2-second fill, one burst), on debug builds in its
# own folder: CI runs it so that a change that breaks the script is caught when it is made.
# Its figures mean nothing.
#
#   usage: bench/rss-burst.sh [--fill SECS] [--bursts N] [BIN]   (BIN: default target/release/medbook)
#          bench/rss-burst.sh --smoke
set -euo pipefail
cd "$(dirname "$0")/.."
fill=30 bursts=2 profile=release out=target/bench-rss
while [ $# -gt 0 ]; do
  case $1 in
    --fill) fill=$2; shift 2 ;;
    --bursts) bursts=$2; shift 2 ;;
    --smoke) fill=2 bursts=1 profile=debug out=target/bench-rss-smoke; shift ;;
    -*) echo "unknown option $1" >&2; exit 2 ;;
    *) break ;;
  esac
done
build=(cargo build --quiet); [ "$profile" = debug ] || build+=(--release)
bin=${1:-target/$profile/medbook}
rm -rf "$out"; mkdir -p "$out"
if [ $# -eq 0 ]; then "${build[@]}" -p medbook -p medbook-bench; else "${build[@]}" -p medbook-bench; fi
bench=target/$profile/medbook-bench
export MEDBOOK_ADMIN_EMAIL=admin@medbook.local MEDBOOK_ADMIN_PASSWORD=admin-password RUST_LOG=warn
url=$(DATABASE_URL=$out/rss.db MEDBOOK_BIN=$bin scripts/start-server.sh "$out/server.pid" "$out/server.log")
pid=$(cat "$out/server.pid")
trap 'kill -TERM "$pid" 2>/dev/null || true' EXIT
kib() { awk -v k="$1" '$1 == k":" { print $2 }' "/proc/$pid/status"; }
mib() { awk -v k="$1" 'BEGIN { printf "%.1f", k / 1024 }'; }
# SQLite's own heap, from /metrics (empty for a build without that gauge).
sqlite_heap() {
  curl -s "$url/metrics" | awk '$1 == "medbook_sqlite_memory_bytes" { printf ", SQLite heap %.1f MiB", $2 / 1048576 }'
}

$bench --url "$url" --scenario spread --clients 64 --duration "$fill" --warmup 0 --no-verify --quiet \
  > "$out/fill.txt"
appointments=$(sqlite3 "$out/rss.db" 'SELECT count(*) FROM appointments' 2>/dev/null || echo '?')
echo "filled: $appointments appointments, $(du -m "$out/rss.db" | cut -f1) MB; resident $(mib "$(kib VmRSS)") MiB, peak so far $(mib "$(kib VmHWM)") MiB$(sqlite_heap)"
for b in $(seq 1 "$bursts"); do
  runs=()
  for i in $(seq 1 8); do
    $bench --url "$url" --scenario spread --clients 16 --duration 1 --warmup 0 --quiet \
      > "$out/burst-$b-$i.txt" 2>&1 &
    runs+=($!)
  done
  for run in "${runs[@]}"; do
    wait "$run" || { echo "a burst run failed (see $out/burst-$b-*.txt)" >&2; exit 1; }
  done
  grep -q 'invariant: no overlapping' "$out/burst-$b-1.txt" || { echo "burst $b checked no invariant" >&2; exit 1; }
  echo "burst $b: resident $(mib "$(kib VmRSS)") MiB, peak so far $(mib "$(kib VmHWM)") MiB$(sqlite_heap)"
done
echo "peak RSS (VmHWM): $(mib "$(kib VmHWM)") MiB ($(kib VmHWM) KiB)"
