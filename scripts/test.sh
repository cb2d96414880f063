#!/usr/bin/env bash
# The whole test suite: formatting, lints, unit and conformance tests, the
# independent check of the conformance expectations with DuckDB, and the
# Kafka and PostgreSQL end-to-end tests against a real broker and a real
# PostgreSQL server (started here, stopped after).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/env.sh
velostream_prerequisites

echo "== cargo fmt --check"
cargo fmt --all -- --check

echo "== cargo clippy"
cargo clippy --workspace --all-targets --quiet -- -D warnings

echo "== import cycles between modules"
python3 scripts/module_cycles.py

echo "== conformance expectations checked against DuckDB"
if ! python3 -c "import duckdb, yaml" >/dev/null 2>&1; then
    python3 -m pip install --quiet --disable-pip-version-check duckdb pyyaml \
        || python3 -m pip install --quiet --disable-pip-version-check --break-system-packages duckdb pyyaml
fi
python3 tests/conformance/verify_with_duckdb.py tests/conformance

echo "== Kafka broker and PostgreSQL for the end-to-end tests"
# what this script starts is stopped however the run ends
EXTERNAL_KAFKA="${KAFKA_BROKERS:-}"
EXTERNAL_POSTGRES="${VELOSTREAM_TEST_POSTGRES:-}"
stop_services() {
    [ -n "$EXTERNAL_KAFKA" ] || env -u KAFKA_BROKERS scripts/kafka-broker.sh stop || true
    scripts/txn-broker.sh stop >/dev/null || true
    [ -n "$EXTERNAL_POSTGRES" ] || env -u VELOSTREAM_TEST_POSTGRES scripts/postgres.sh stop || true
}
trap stop_services EXIT
scripts/kafka-broker.sh start
KAFKA_BROKERS="$(scripts/kafka-broker.sh address)"
export KAFKA_BROKERS
scripts/postgres.sh start
VELOSTREAM_TEST_POSTGRES="$(scripts/postgres.sh url)"
export VELOSTREAM_TEST_POSTGRES
if [ -z "$EXTERNAL_POSTGRES" ]; then
    # the local server's TLS certificate comes from a CA made at its start
    VELOSTREAM_TEST_POSTGRES_CA="$(env -u VELOSTREAM_TEST_POSTGRES scripts/postgres.sh ca)"
    export VELOSTREAM_TEST_POSTGRES_CA
fi

echo "== tests"
# the fuzz targets run on their own below, with their counts shown
if cargo nextest --version >/dev/null 2>&1; then
    cargo nextest run --workspace --no-fail-fast -E 'not binary(fuzz)'
else
    cargo test --workspace --no-fail-fast -- --skip fuzz_
fi

# TLS to PostgreSQL needs the CA of the server's certificate: known for the
# server started here, or given in VELOSTREAM_TEST_POSTGRES_CA.
# Runs the ignored test $2 of the velostream test binary $1.
run_ignored() {
    if cargo nextest --version >/dev/null 2>&1; then
        cargo nextest run -p velostream --test "$1" --run-ignored ignored-only -E "test($2)"
    else
        cargo test -p velostream --test "$1" -- --ignored "$2"
    fi
}

TLS_TEST='a_database_reached_over_tls_verifies_its_certificate'
if [ -n "${VELOSTREAM_TEST_POSTGRES_CA:-}" ]; then
    echo "== PostgreSQL over TLS"
    run_ignored postgres "$TLS_TEST"
else
    echo "== skipped: $TLS_TEST needs the CA certificate of the PostgreSQL server's TLS;"
    echo "   set VELOSTREAM_TEST_POSTGRES_CA (the server started by this script has one)"
fi

# Exactly-once into Kafka can only be observed on a broker that hides
# uncommitted transactions from read_committed readers; the everyday test
# broker does not, so that test runs against the transactional test broker
# (scripts/txn-broker.sh), or against the cluster given in KAFKA_BROKERS.
EO_TEST='killed_five_times_exactly_once_into_kafka_each_result_arrives_once'
if [ -n "$EXTERNAL_KAFKA" ]; then
    echo "== exactly-once into Kafka against $EXTERNAL_KAFKA"
    run_ignored crash_recovery "$EO_TEST"
else
    scripts/txn-broker.sh start
    echo "== exactly-once into Kafka against the transactional test broker"
    KAFKA_BROKERS="$(scripts/txn-broker.sh address)" run_ignored crash_recovery "$EO_TEST"
    # a broker that never reports a partition's end: tables still load
    echo "== Kafka tables against the transactional test broker"
    if cargo nextest --version >/dev/null 2>&1; then
        KAFKA_BROKERS="$(scripts/txn-broker.sh address)" \
            cargo nextest run -p velostream --test kafka -E 'test(table)'
    else
        KAFKA_BROKERS="$(scripts/txn-broker.sh address)" cargo test -p velostream --test kafka table
    fi
    scripts/txn-broker.sh stop
fi

# The guide's SASL_SSL settings against a broker that enforces TLS and SASL
# (the same test broker, secured: its own CA, a SCRAM-SHA-512 user), or the
# one VELOSTREAM_TEST_SECURE_KAFKA and its _CA, _USERNAME and _PASSWORD name.
SECURED_TEST='the_guide_sasl_ssl_settings_reach_a_secured_broker_and_keep_the_service_ready'
if [ -n "${VELOSTREAM_TEST_SECURE_KAFKA:-}" ]; then
    echo "== the guide's SASL_SSL settings against $VELOSTREAM_TEST_SECURE_KAFKA"
    run_ignored secured_kafka "$SECURED_TEST"
else
    scripts/txn-broker.sh start --sasl-ssl
    echo "== the guide's SASL_SSL settings against the secured test broker"
    VELOSTREAM_TEST_SECURE_KAFKA="$(scripts/txn-broker.sh address)" \
        VELOSTREAM_TEST_SECURE_KAFKA_CA="$(scripts/txn-broker.sh ca)" \
        VELOSTREAM_TEST_SECURE_KAFKA_USERNAME="$(scripts/txn-broker.sh username)" \
        VELOSTREAM_TEST_SECURE_KAFKA_PASSWORD="$(scripts/txn-broker.sh password)" \
        run_ignored secured_kafka "$SECURED_TEST"
    scripts/txn-broker.sh stop
fi

# Every fuzz target for a bounded time with the fixed seed (scripts/fuzz.sh
# runs one for longer); each prints the inputs it tried and its panics.
echo "== fuzz targets (${VELOSTREAM_FUZZ_SECONDS:-10} s each)"
export VELOSTREAM_FUZZ_SECONDS="${VELOSTREAM_FUZZ_SECONDS:-10}"
if cargo nextest --version >/dev/null 2>&1; then
    cargo nextest run -p velostream --test fuzz --no-capture
else
    cargo test -p velostream --test fuzz -- --nocapture
fi

# Random queries over random data run by Velostream and by DuckDB, compared
# row for row (scripts/sqlfuzz.py runs other seeds and longer); a fixed seed
# and count, so a run here tests the same queries every time.
SQLFUZZ_SEED="${VELOSTREAM_SQLFUZZ_SEED:-1}"
SQLFUZZ_QUERIES="${VELOSTREAM_SQLFUZZ_QUERIES:-400}"
echo "== differential SQL testing against DuckDB (seed $SQLFUZZ_SEED, $SQLFUZZ_QUERIES queries)"
cargo build --quiet -p velostream --bin velostream
python3 scripts/sqlfuzz.py --seed "$SQLFUZZ_SEED" --queries "$SQLFUZZ_QUERIES" \
    --time-limit 300 --binary "$CARGO_TARGET_DIR/debug/velostream"

echo "== Kubernetes manifests checked against the binary"
python3 scripts/check_manifests.py "$CARGO_TARGET_DIR/debug/velostream"

echo "== Prometheus rules and Grafana dashboard checked against the binary"
python3 scripts/check_monitoring.py "$CARGO_TARGET_DIR/debug/velostream"

# The container image from the binary just built: served, processing
# against a test broker of its own (plaintext, where the guide's
# production.yaml asks for SASL_SSL), running as uid 1000 (scripts/image.sh).
echo "== container image"
env -u KAFKA_BROKERS scripts/image.sh test
