#!/usr/bin/env bash
# Validates the generated OpenAPI document with openapi-spec-validator.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/python-tools.sh
cargo build --quiet --bin medbook
mkdir -p target
target/debug/medbook openapi > target/openapi.json
.venv/bin/openapi-spec-validator target/openapi.json
