#!/usr/bin/env bash
# Installs what is needed, builds velostream and runs the example application
# on its bundled data: large trades go to examples/trades/output/, per-symbol
# totals are printed.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/env.sh
velostream_prerequisites
cargo build -p velostream
"$CARGO_TARGET_DIR/debug/velostream" run examples/trades/large_trades.sql
echo "--- examples/trades/output/large_trades.jsonl (first 5 rows)"
head -n 5 examples/trades/output/large_trades.jsonl
