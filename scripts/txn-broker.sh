#!/usr/bin/env bash
# Builds, starts and stops the transactional Kafka-protocol test broker:
# crabka-broker, whose transactions and read_committed isolation behave as
# Apache Kafka's (the everyday test broker shows aborted records to
# read_committed readers, so exactly-once into Kafka is tested on this one).
# The same broker, secured, serves the tests of the guide's SASL_SSL settings.
#
#   scripts/txn-broker.sh start             build it if needed (cached), start it
#                                           empty with a plaintext listener
#   scripts/txn-broker.sh start --sasl-ssl  start it secured instead: a SASL_SSL
#                                           listener (TLS from a test CA, SCRAM-SHA-512)
#   scripts/txn-broker.sh stop              stop the broker started by `start`
#   scripts/txn-broker.sh address           print the bootstrap address to use
#   scripts/txn-broker.sh ca|username|password
#                                           the secured broker's CA certificate (a
#                                           path) and its user's credentials
#
# The broker's build and start scripts come from the directory named by
# VELOSTREAM_TXN_BROKER_TOOLS (default: the first of ../shared/tools/txn-broker
# next to this checkout and /work/shared/tools/txn-broker that exists). The
# binary is cached in /var/tmp/txn-broker-target; its data lives in
# /var/tmp/velostream-txn-broker (wiped at every start). The port is
# ${VELOSTREAM_TEST_TXN_KAFKA_PORT:-19192}; its controller listens on
# 127.0.0.1:9093 (fixed), so one runs at a time.
#
# Secured: clients connect to 127.0.0.1:${VELOSTREAM_TEST_SECURE_KAFKA_PORT:-19194} with
# security.protocol=SASL_SSL, sasl.mechanisms=SCRAM-SHA-512 and ssl.ca.location
# set to the path `ca` prints; the broker's certificate names localhost and
# 127.0.0.1. This broker cannot read PLAIN credentials from its
# configuration, so its user is a SCRAM user, made through a plaintext admin
# listener on the next port that only this script uses (a broker without
# users cannot authenticate the first one over SASL). The broker's metadata
# names only the SASL_SSL listener, so clients that bootstrap there stay on
# it. The password is new at every start.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
PORT="${VELOSTREAM_TEST_TXN_KAFKA_PORT:-19192}"
SECURE_PORT="${VELOSTREAM_TEST_SECURE_KAFKA_PORT:-19194}"
ADMIN_PORT=$((SECURE_PORT + 1))
SECURE_USER=velostream
DATA_DIR=/var/tmp/velostream-txn-broker
PID_FILE="${TMPDIR:-/tmp}/velostream-txn-broker.pid"
# present while the broker that runs is the secured one
SECURE_MARK="$DATA_DIR/secured"

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

running() {
    [ -f "$PID_FILE" ] && kill -0 "$(cat "$PID_FILE")" 2>/dev/null
}

wait_for_port() {
    local port=$1 pid=$2
    for _ in $(seq 100); do
        (echo >"/dev/tcp/127.0.0.1/$port") 2>/dev/null && return 0
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    echo "error: the broker does not listen on 127.0.0.1:$port; its log:" >&2
    tail -n 30 "$DATA_DIR/broker.log" >&2 || true
    return 1
}

# The secured broker: certificates, its broker.toml (the SASL_SSL and admin
# listeners), the SCRAM user. Prints the broker's pid.
start_secured() {
    local bin=$1 tls="$DATA_DIR/tls" pid password
    mkdir -p "$tls"
    python3 - "$DATA_DIR" "$here" <<'PY'
import json, sys, uuid
sys.path.insert(0, sys.argv[2])
from test_certificates import make_certificates
json.dump({"cluster_id": str(uuid.uuid4()), "directory_id": str(uuid.uuid4()), "version": 1},
          open(sys.argv[1] + "/meta.properties.json", "w"))
make_certificates(sys.argv[1] + "/tls")
PY
    cat >"$DATA_DIR/broker.toml" <<TOML
broker_id = 0
log_dir = "$DATA_DIR"
inter_broker_listener_name = "secure"

[[listeners]]
name = "secure"
bind_addr = "127.0.0.1:$SECURE_PORT"
advertised = "127.0.0.1:$SECURE_PORT"
protocol = "SaslSsl"
tls_config = { cert_path = "$tls/server.crt", key_path = "$tls/server.key", client_auth = "Disabled" }
sasl_config = { enabled_mechanisms = ["SCRAM-SHA-512"] }

[[listeners]]
name = "admin"
bind_addr = "127.0.0.1:$ADMIN_PORT"
advertised = "127.0.0.1:$ADMIN_PORT"
protocol = "Plaintext"
TOML
    RUST_LOG=warn "$bin" --config-file "$DATA_DIR/broker.toml" --metrics-listen-addr none \
        >"$DATA_DIR/broker.log" 2>&1 &
    pid=$!
    if ! wait_for_port "$ADMIN_PORT" "$pid"; then
        kill "$pid" 2>/dev/null || true
        return 1
    fi
    password=$(python3 -c 'import secrets; print(secrets.token_urlsafe(18))')
    (umask 077 && echo "$password" >"$DATA_DIR/password")
    if ! python3 "$here/kafka_scram_user.py" "127.0.0.1:$ADMIN_PORT" "$SECURE_USER" "$password" >&2 \
        || ! wait_for_port "$SECURE_PORT" "$pid"; then
        kill "$pid" 2>/dev/null || true
        return 1
    fi
    touch "$SECURE_MARK"
    echo "$pid"
}

cmd_start() {
    local tools bin pid secured="" address="127.0.0.1:$PORT" kind=plaintext
    case "${1:-}" in
        "") ;;
        --sasl-ssl) secured=1; address="127.0.0.1:$SECURE_PORT"; kind="SASL_SSL, SCRAM-SHA-512" ;;
        *) echo "usage: $0 start [--sasl-ssl]" >&2; exit 2 ;;
    esac
    if running; then
        local now=""
        [ -f "$SECURE_MARK" ] && now=1
        if [ "$now" = "$secured" ]; then
            echo "transactional broker already running on $address ($kind; pid $(cat "$PID_FILE"))"
            return 0
        fi
        echo "error: the transactional broker already runs the other way (pid $(cat "$PID_FILE"));" \
            "stop it first: its controller port is fixed, so one runs at a time" >&2
        return 1
    fi
    tools=$(tools_dir)
    if [ ! -x /var/tmp/txn-broker-target/debug/crabka-broker ]; then
        echo "building the transactional broker (once; cached in /var/tmp/txn-broker-target) ..." >&2
    fi
    bin=$("$tools/build.sh" /var/tmp/txn-broker-target)
    rm -rf "$DATA_DIR"
    if [ -n "$secured" ]; then
        pid=$(start_secured "$bin")
    else
        pid=$("$tools/start.sh" "$bin" "$PORT" "$DATA_DIR")
    fi
    echo "$pid" >"$PID_FILE"
    if ! kill -0 "$pid" 2>/dev/null; then
        echo "error: the transactional broker exited while starting; its log:" >&2
        tail -n 30 "$DATA_DIR/broker.log" >&2 || true
        return 1
    fi
    echo "transactional broker running on $address ($kind; pid $pid, log $DATA_DIR/broker.log)"
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
    rm -f "$PID_FILE" "$SECURE_MARK"
    echo "transactional broker stopped"
}

# Fails unless the broker that runs is the secured one.
require_secured() {
    if ! running || [ ! -f "$SECURE_MARK" ]; then
        echo "error: no secured broker runs; start one with: $0 start --sasl-ssl" >&2
        exit 1
    fi
}

case "${1:-}" in
    start) cmd_start "${2:-}" ;;
    stop) cmd_stop ;;
    address)
        if running && [ -f "$SECURE_MARK" ]; then
            echo "127.0.0.1:$SECURE_PORT"
        else
            echo "127.0.0.1:$PORT"
        fi
        ;;
    ca) require_secured; echo "$DATA_DIR/tls/ca.crt" ;;
    username) require_secured; echo "$SECURE_USER" ;;
    password) require_secured; cat "$DATA_DIR/password" ;;
    *) echo "usage: $0 start [--sasl-ssl]|stop|address|ca|username|password" >&2; exit 2 ;;
esac
