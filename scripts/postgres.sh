#!/usr/bin/env bash
# Starts and stops a throwaway PostgreSQL server for Velostream's database
# tests: Debian's postgresql package, a fresh cluster in a temporary
# directory, a `velostream` role with a password (scram-sha-256 over TCP),
# `max_prepared_transactions` set (exactly-once sinks need it), and TLS
# with a server certificate from a throwaway CA (for sslmode=require tests).
#
#   scripts/postgres.sh start    create the cluster if needed and start it
#   scripts/postgres.sh stop     stop it and remove its directory
#   scripts/postgres.sh status   tell whether it is running
#   scripts/postgres.sh url      print the connection URL the tests use
#   scripts/postgres.sh ca       print the path of the CA certificate of its TLS
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
CA_FILE="$RUN_DIR/velostream-postgres-ca.crt"
USER_NAME=velostream
PASSWORD=velostream-test
DATABASE=velostream

usage() {
    echo "usage: $0 start|stop|status|url|ca" >&2
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
    make_certificates
    touch "$LOG_FILE"
    [ "$(id -u)" -ne 0 ] || chown postgres: "$LOG_FILE"
    as_owner "$bin/pg_ctl" -D "$DATA_DIR" -l "$LOG_FILE" -w -t 30 \
        -o "-p $PORT -k $DATA_DIR -c listen_addresses=$HOST -c max_prepared_transactions=16 -c fsync=off -c ssl=on -c ssl_cert_file=server.crt -c ssl_key_file=server.key" \
        start >/dev/null \
        || { echo "error: postgresql did not start:" >&2; tail -n 20 "$LOG_FILE" >&2; return 1; }
    as_owner "$bin/psql" -h "$DATA_DIR" -p "$PORT" -U "$USER_NAME" -d postgres -q \
        -c "CREATE DATABASE $DATABASE" >/dev/null
    echo "postgresql on $HOST:$PORT (database $DATABASE, user $USER_NAME)"
}

# A CA and a server certificate it signed (for 127.0.0.1 and localhost),
# placed in the data directory; the CA certificate is copied to $CA_FILE.
make_certificates() {
    local work
    if ! command -v openssl >/dev/null 2>&1 && command -v apt-get >/dev/null 2>&1; then
        apt-get install -y -qq openssl >&2
    fi
    work="$(mktemp -d)"
    openssl req -x509 -newkey rsa:2048 -nodes -days 7 -subj "/CN=velostream test CA" \
        -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" \
        -keyout "$work/ca.key" -out "$work/ca.crt" 2>/dev/null
    openssl req -newkey rsa:2048 -nodes -subj "/CN=$HOST" \
        -keyout "$work/server.key" -out "$work/server.csr" 2>/dev/null
    printf 'subjectAltName=IP:%s,DNS:localhost\nbasicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\n' "$HOST" >"$work/ext"
    openssl x509 -req -in "$work/server.csr" -CA "$work/ca.crt" -CAkey "$work/ca.key" \
        -CAcreateserial -days 7 -extfile "$work/ext" -out "$work/server.crt" 2>/dev/null
    cp "$work/server.crt" "$work/server.key" "$DATA_DIR/"
    chmod 600 "$DATA_DIR/server.key"
    [ "$(id -u)" -ne 0 ] || chown postgres: "$DATA_DIR/server.crt" "$DATA_DIR/server.key"
    cp "$work/ca.crt" "$CA_FILE"
    chmod 644 "$CA_FILE"
    rm -rf "$work"
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
    rm -f "$CA_FILE"
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
    ca)
        if [ -n "${VELOSTREAM_TEST_POSTGRES:-}" ]; then
            echo "postgresql: VELOSTREAM_TEST_POSTGRES names the server; its CA is not known here" >&2
            exit 1
        fi
        echo "$CA_FILE"
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
