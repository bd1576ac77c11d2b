#!/usr/bin/env bash
# Checks the migrations with the real diesel CLI: on a fresh PostgreSQL database and a fresh
# SQLite file, `migration run` and `migration redo --all` (every down migration works), and
# `print-schema` for PostgreSQL equals src/schema.rs. The SQLite set must define the same
# tables and columns.
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v diesel >/dev/null; then
  echo "installing diesel_cli"
  cargo install diesel_cli --version 2.3.4 --no-default-features --features postgres,sqlite --locked
fi
diesel --version
mkdir -p target
pg_admin=${MEDBOOK_TEST_PG_URL:-postgres://postgres@127.0.0.1:5432/postgres}
db=medbook_schema_check
psql "$pg_admin" -qc "DROP DATABASE IF EXISTS $db WITH (FORCE)" -c "CREATE DATABASE $db"
url="${pg_admin%/*}/$db"

echo "== PostgreSQL: migration run, redo --all, print-schema"
diesel migration run --database-url "$url" --locked-schema
diesel migration redo --all --database-url "$url" --locked-schema
diesel print-schema --database-url "$url" > target/schema-postgres.rs
diff -u src/schema.rs target/schema-postgres.rs
psql "$pg_admin" -qc "DROP DATABASE $db WITH (FORCE)"

echo "== SQLite: migration run, redo --all, print-schema"
rm -f target/schema-check.db
diesel --config-file scripts/diesel-sqlite.toml migration run --database-url target/schema-check.db
diesel --config-file scripts/diesel-sqlite.toml migration redo --all --database-url target/schema-check.db
diesel print-schema --database-url target/schema-check.db > target/schema-sqlite.rs
python3 scripts/compare_schemas.py src/schema.rs target/schema-sqlite.rs
echo "schema check passed"
