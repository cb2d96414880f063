#!/usr/bin/env bash
# Runs one fuzz target of crates/velostream/tests/fuzz.rs for a while:
#
#   scripts/fuzz.sh TARGET SECONDS [SEED]
#
# TARGET is sql, json, csv, config or api. A crash leaves its input in
# $CARGO_TARGET_DIR/fuzz-crashes/ and fails; every crash found becomes a
# regression test (or a seed in tests/fuzz/corpus/TARGET/).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/env.sh
case "${1:-}" in
    sql|json|csv|config|api) ;;
    *) echo "usage: $0 sql|json|csv|config|api SECONDS [SEED]" >&2; exit 2 ;;
esac
declare -A test_of=([sql]=fuzz_sql [json]=fuzz_json_decoder [csv]=fuzz_csv_decoder [config]=fuzz_configuration [api]=fuzz_api_bodies)
export VELOSTREAM_FUZZ_SECONDS="${2:-60}"
[ -n "${3:-}" ] && export VELOSTREAM_FUZZ_SEED="$3"
if cargo nextest --version >/dev/null 2>&1; then
    cargo nextest run -p velostream --test fuzz --no-capture -E "test(=${test_of[$1]})"
else
    cargo test -p velostream --test fuzz -- --exact "${test_of[$1]}" --nocapture
fi
