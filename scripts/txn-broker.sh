#!/usr/bin/env bash
# Builds, starts and stops the transactional Kafka-protocol test broker:
# crabka-broker, whose transactions and read_committed isolation behave as
# Apache Kafka's (the everyday test broker shows aborted records to
# read_committed readers, so exactly-once into Kafka is tested on this one).
#
#   scripts/txn-broker.sh start    build it if needed (cached), start it empty
#   scripts/txn-broker.sh stop     stop the broker started by `start`
#   scripts/txn-broker.sh address  print the bootstrap address to use
#
# The broker's build and start scripts come from the directory named by
# VELOSTREAM_TXN_BROKER_TOOLS (default: the first of ../shared/tools/txn-broker
# next to this checkout and /work/shared/tools/txn-broker that exists). The
# binary is cached in /var/tmp/txn-broker-target; its data lives in
# /var/tmp/velostream-txn-broker (wiped at every start). The port is
# ${VELOSTREAM_TEST_TXN_KAFKA_PORT:-19192}; its controller listens on
# 127.0.0.1:9093 (fixed), so one runs at a time.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
PORT="${VELOSTREAM_TEST_TXN_KAFKA_PORT:-19192}"
DATA_DIR=/var/tmp/velostream-txn-broker
PID_FILE="${TMPDIR:-/tmp}/velostream-txn-broker.pid"

tools_dir() {
    local d
    for d in "${VELOSTREAM_TXN_BROKER_TOOLS:-}" "$here/../../shared/tools/txn-broker" \
        /work/shared/tools/txn-broker; do
        if [ -n "$d" ] && [ -x "$d/build.sh" ] && [ -x "$d/start.sh" ]; then
            (cd "$d" && pwd)
            return 0
        fi
    done
    echo "error: no transactional broker scripts found; set VELOSTREAM_TXN_BROKER_TOOLS" \
        "to the directory holding its build.sh and start.sh" >&2
    return 1
}

cmd_start() {
    local tools bin pid
    if [ -f "$PID_FILE" ] && kill -0 "$(cat "$PID_FILE")" 2>/dev/null; then
        echo "transactional broker already running on 127.0.0.1:$PORT (pid $(cat "$PID_FILE"))"
        return 0
    fi
    tools=$(tools_dir)
    if [ ! -x /var/tmp/txn-broker-target/debug/crabka-broker ]; then
        echo "building the transactional broker (once; cached in /var/tmp/txn-broker-target) ..." >&2
    fi
    bin=$("$tools/build.sh" /var/tmp/txn-broker-target)
    rm -rf "$DATA_DIR"
    pid=$("$tools/start.sh" "$bin" "$PORT" "$DATA_DIR")
    echo "$pid" >"$PID_FILE"
    if ! kill -0 "$pid" 2>/dev/null; then
        echo "error: the transactional broker exited while starting; its log:" >&2
        tail -n 30 "$DATA_DIR/broker.log" >&2 || true
        return 1
    fi
    echo "transactional broker running on 127.0.0.1:$PORT (pid $pid, log $DATA_DIR/broker.log)"
}

cmd_stop() {
    [ -f "$PID_FILE" ] || return 0
    local pid
    pid=$(cat "$PID_FILE")
    if kill -0 "$pid" 2>/dev/null; then
        kill "$pid" 2>/dev/null || true
        for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        kill -9 "$pid" 2>/dev/null || true
    fi
    rm -f "$PID_FILE"
    echo "transactional broker stopped"
}

case "${1:-}" in
    start) cmd_start ;;
    stop) cmd_stop ;;
    address) echo "127.0.0.1:$PORT" ;;
    *) echo "usage: $0 start|stop|address" >&2; exit 2 ;;
esac
