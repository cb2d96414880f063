#!/usr/bin/env bash
# Starts and stops a throwaway PostgreSQL server for Velostream's database
# tests: Debian's postgresql package, a fresh cluster in a temporary
# directory, a `velostream` role with a password (scram-sha-256 over TCP)
# and `max_prepared_transactions` set, which exactly-once sinks need.
#
#   scripts/postgres.sh start    create the cluster if needed and start it
#   scripts/postgres.sh stop     stop it and remove its directory
#   scripts/postgres.sh status   tell whether it is running
#   scripts/postgres.sh url      print the connection URL the tests use
#
# When VELOSTREAM_TEST_POSTGRES is set, the tests use that server instead
# and start and stop do nothing. The port is
# ${VELOSTREAM_TEST_POSTGRES_PORT:-15432}; the cluster lives in
# ${TMPDIR:-/tmp}/velostream-postgres.
set -euo pipefail

PORT="${VELOSTREAM_TEST_POSTGRES_PORT:-15432}"
HOST=127.0.0.1
RUN_DIR="${TMPDIR:-/tmp}"
RUN_DIR="${RUN_DIR%/}"
DATA_DIR="$RUN_DIR/velostream-postgres"
LOG_FILE="$RUN_DIR/velostream-postgres.log"
USER_NAME=velostream
PASSWORD=velostream-test
DATABASE=velostream

usage() {
    echo "usage: $0 start|stop|status|url" >&2
    exit 2
}

# The directory holding initdb, pg_ctl and postgres (newest version installed).
pg_bin() {
    local dir
    dir="$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1 || true)"
    if [ -z "$dir" ] && command -v pg_ctl >/dev/null 2>&1; then
        dir="$(dirname "$(command -v pg_ctl)")"
    fi
    if [ -z "$dir" ] || [ ! -x "$dir/pg_ctl" ]; then
        if command -v apt-get >/dev/null 2>&1; then
            echo "installing postgresql ..." >&2
            apt-get update -qq >&2 && apt-get install -y -qq postgresql >&2
            dir="$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1 || true)"
        fi
    fi
    if [ -z "$dir" ] || [ ! -x "$dir/pg_ctl" ]; then
        echo "error: PostgreSQL is not installed (apt-get install postgresql)" >&2
        return 1
    fi
    printf '%s\n' "$dir"
}

# PostgreSQL refuses to run as root: run its tools as the postgres user then.
as_owner() {
    if [ "$(id -u)" -eq 0 ]; then
        runuser -u postgres -- "$@"
    else
        "$@"
    fi
}

port_open() {
    (exec 3<>"/dev/tcp/$HOST/$PORT") 2>/dev/null
}

is_running() {
    local bin
    [ -f "$DATA_DIR/postmaster.pid" ] || return 1
    bin="$(pg_bin)" || return 1
    as_owner "$bin/pg_ctl" -D "$DATA_DIR" status >/dev/null 2>&1
}

cmd_start() {
    local bin
    if is_running; then
        echo "postgresql already running on $HOST:$PORT"
        return 0
    fi
    if port_open; then
        echo "error: $HOST:$PORT is already in use by another program;" \
            "set VELOSTREAM_TEST_POSTGRES_PORT to a free port" >&2
        return 1
    fi
    bin="$(pg_bin)"
    rm -rf "$DATA_DIR"
    mkdir -p "$DATA_DIR"
    [ "$(id -u)" -ne 0 ] || chown postgres: "$DATA_DIR"
    local pwfile
    pwfile="$(mktemp)"
    printf '%s\n' "$PASSWORD" >"$pwfile"
    chmod 644 "$pwfile"
    as_owner "$bin/initdb" -D "$DATA_DIR" -U "$USER_NAME" --pwfile="$pwfile" \
        --auth-local=trust --auth-host=scram-sha-256 -E UTF8 --no-locale >"$LOG_FILE" 2>&1 \
        || { rm -f "$pwfile"; echo "error: initdb failed:" >&2; tail -n 20 "$LOG_FILE" >&2; return 1; }
    rm -f "$pwfile"
    touch "$LOG_FILE"
    [ "$(id -u)" -ne 0 ] || chown postgres: "$LOG_FILE"
    as_owner "$bin/pg_ctl" -D "$DATA_DIR" -l "$LOG_FILE" -w -t 30 \
        -o "-p $PORT -k $DATA_DIR -c listen_addresses=$HOST -c max_prepared_transactions=16 -c fsync=off" \
        start >/dev/null \
        || { echo "error: postgresql did not start:" >&2; tail -n 20 "$LOG_FILE" >&2; return 1; }
    as_owner "$bin/psql" -h "$DATA_DIR" -p "$PORT" -U "$USER_NAME" -d postgres -q \
        -c "CREATE DATABASE $DATABASE" >/dev/null
    echo "postgresql on $HOST:$PORT (database $DATABASE, user $USER_NAME)"
}

cmd_stop() {
    local bin
    if is_running; then
        bin="$(pg_bin)"
        as_owner "$bin/pg_ctl" -D "$DATA_DIR" -m fast -w -t 30 stop >/dev/null || true
        echo "postgresql stopped"
    else
        echo "postgresql is not running"
    fi
    rm -rf "$DATA_DIR"
}

cmd_status() {
    if is_running; then
        echo "postgresql running on $HOST:$PORT"
    else
        echo "postgresql is not running"
        return 1
    fi
}

[ $# -eq 1 ] || usage
case "$1" in
    url)
        if [ -n "${VELOSTREAM_TEST_POSTGRES:-}" ]; then
            echo "$VELOSTREAM_TEST_POSTGRES"
        else
            echo "postgresql://$USER_NAME:$PASSWORD@$HOST:$PORT/$DATABASE"
        fi
        ;;
    start | stop | status)
        if [ -n "${VELOSTREAM_TEST_POSTGRES:-}" ]; then
            echo "postgresql: using VELOSTREAM_TEST_POSTGRES; nothing to $1"
            exit 0
        fi
        "cmd_$1"
        ;;
    *) usage ;;
esac
