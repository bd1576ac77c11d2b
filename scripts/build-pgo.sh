#!/usr/bin/env bash
# A profile-guided (PGO) release build of medbook, for production: an instrumented release
# build serves a training load (medbook-bench's scenarios, on SQLite and on PostgreSQL), and
# the release build is made again with the profile it wrote. The binary goes to
# target/pgo/medbook; `cargo build --release` stays the plain build. Measured against it with
# bench/ab.sh: BENCHMARKS.md, "What changed", round after run BD.
#
# The profile is made fresh on every run and never committed: it belongs to one version of
# the code and one LLVM version. Merging it needs llvm-profdata of rustc's own LLVM major
# version (`rustc -vV`): the script looks for llvm-profdata-N, /usr/lib/llvm-N/bin/llvm-profdata
# and rustup's llvm-tools, and installs Debian's llvm-N with apt-get when none is there.
# Without a reachable PostgreSQL (MEDBOOK_BENCH_PG_URL) it trains on SQLite alone and says so.
#
#   usage: scripts/build-pgo.sh [--smoke]   (--smoke: one second per training scenario; CI)
#   env:   MEDBOOK_BENCH_PG_URL (admin URL, default postgres://postgres@127.0.0.1:5432/postgres)
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=4
case ${1:-} in
  --smoke) seconds=1 ;;
  "") ;;
  *) echo "usage: scripts/build-pgo.sh [--smoke]" >&2; exit 2 ;;
esac
pg_admin=${MEDBOOK_BENCH_PG_URL:-postgres://postgres@127.0.0.1:5432/postgres}
out=$PWD/target/pgo

llvm_major=$(rustc -vV | sed -n 's/^LLVM version: \([0-9]*\).*/\1/p')
[ -n "$llvm_major" ] || { echo "cannot read rustc's LLVM version from rustc -vV" >&2; exit 1; }
find_profdata() {
  local c
  for c in "llvm-profdata-$llvm_major" "/usr/lib/llvm-$llvm_major/bin/llvm-profdata" \
    "$(rustc --print sysroot)/lib/rustlib/$(rustc -vV | sed -n 's/^host: //p')/bin/llvm-profdata"; do
    if command -v "$c" >/dev/null 2>&1; then echo "$c"; return 0; fi
  done
  return 1
}
if ! profdata=$(find_profdata); then
  echo "installing llvm-$llvm_major (llvm-profdata for rustc's LLVM $llvm_major)"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "llvm-$llvm_major" >/dev/null
  profdata=$(find_profdata) || { echo "no llvm-profdata for LLVM $llvm_major" >&2; exit 1; }
fi

rm -rf "$out"; mkdir -p "$out/profraw"
# Each build has its own target directory: RUSTFLAGS change every crate's build, and
# target/release is left as it was.
echo "== instrumented build"
RUSTFLAGS="-Cprofile-generate=$out/profraw" CARGO_TARGET_DIR=target/pgo-generate \
  cargo build --release --quiet -p medbook --bin medbook
# The load generator itself is not measured here, so its debug build will do.
cargo build --quiet -p medbook-bench
bench=target/debug/medbook-bench

export MEDBOOK_ADMIN_EMAIL=admin@medbook.local MEDBOOK_ADMIN_PASSWORD=admin-password RUST_LOG=warn
pid=""
stop() { [ -z "$pid" ] || kill -TERM "$pid" 2>/dev/null || true; }
trap stop EXIT
train() { # database_url
  local url scenario clients
  url=$(DATABASE_URL=$1 MEDBOOK_BIN=target/pgo-generate/release/medbook \
    scripts/start-server.sh "$out/server.pid" "$out/server.log")
  pid=$(cat "$out/server.pid")
  # The request paths production runs, roughly in the proportions of bench/run.sh.
  for run in "spread 1" "spread 4" "spread 16" "status 4" "status 16" "read 4" "contended 16" "mixed 16"; do
    read -r scenario clients <<<"$run"
    $bench --url "$url" --scenario "$scenario" --clients "$clients" --duration "$seconds" \
      --warmup 0 --no-verify --quiet > "$out/train-$scenario-$clients.out"
  done
  # The profile is written when the process exits: stop it as SIGTERM does in production.
  kill -TERM "$pid"
  while kill -0 "$pid" 2>/dev/null; do sleep 0.1; done
  pid=""
}
echo "== training on SQLite"
train "$out/train.db"
if psql "$pg_admin" -qc "DROP DATABASE IF EXISTS medbook_pgo WITH (FORCE)" -c "CREATE DATABASE medbook_pgo" 2>/dev/null; then
  echo "== training on PostgreSQL"
  train "${pg_admin%/*}/medbook_pgo"
  psql "$pg_admin" -qc "DROP DATABASE IF EXISTS medbook_pgo WITH (FORCE)"
else
  echo "PostgreSQL unreachable at $pg_admin: the profile covers SQLite only" >&2
fi

"$profdata" merge -o "$out/medbook.profdata" "$out/profraw"
functions=$("$profdata" show "$out/medbook.profdata" | sed -n 's/^Total functions: //p')
echo "profile: $functions functions"
[ "${functions:-0}" -gt 0 ] || { echo "the training wrote an empty profile" >&2; exit 1; }

echo "== optimized build"
RUSTFLAGS="-Cprofile-use=$out/medbook.profdata" CARGO_TARGET_DIR=target/pgo-use \
  cargo build --release --quiet -p medbook --bin medbook
cp target/pgo-use/release/medbook "$out/medbook"
# It starts (migrations run on a new database), listens and answers.
url=$(DATABASE_URL="$out/check.db" MEDBOOK_BIN=$out/medbook scripts/start-server.sh "$out/server.pid" "$out/server.log")
pid=$(cat "$out/server.pid")
curl -fsS "$url/readyz" > /dev/null
echo "built $out/medbook"
