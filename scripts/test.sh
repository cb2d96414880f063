#!/usr/bin/env bash
# The whole test suite: formatting, lints, unit and conformance tests, and
# the independent check of the conformance expectations with DuckDB.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/env.sh
velostream_prerequisites

echo "== cargo fmt --check"
cargo fmt --all -- --check

echo "== cargo clippy"
cargo clippy --workspace --all-targets --quiet -- -D warnings

echo "== conformance expectations checked against DuckDB"
if ! python3 -c "import duckdb, yaml" >/dev/null 2>&1; then
    python3 -m pip install --quiet --disable-pip-version-check duckdb pyyaml \
        || python3 -m pip install --quiet --disable-pip-version-check --break-system-packages duckdb pyyaml
fi
python3 tests/conformance/verify_with_duckdb.py tests/conformance

echo "== tests"
if cargo nextest --version >/dev/null 2>&1; then
    cargo nextest run --workspace --no-fail-fast
else
    cargo test --workspace --no-fail-fast
fi
