#!/usr/bin/env bash
# Builds, runs and tests the Velostream container image (the Dockerfile) with
# podman.
#
#   scripts/image.sh build [--binary PATH | --release]
#       the image velostream:local from a built binary (the Dockerfile's
#       `prebuilt` target): $CARGO_TARGET_DIR/debug/velostream by default,
#       release/velostream with --release
#   scripts/image.sh build --full     (also: scripts/image.sh full)
#       the whole multi-stage build: compiles the release binary in the image
#       (about 50 minutes on 2 cores)
#   scripts/image.sh run [ARG ...]
#       the service in the foreground (Ctrl-C drains and stops it), with
#       config/guide mounted at /etc/velostream and production.yaml as its
#       configuration; ARGs replace `--config /etc/velostream/production.yaml`
#   scripts/image.sh test
#       builds the image unless it is newer than the binary and the
#       Dockerfile, starts it against the test Kafka broker, checks /health,
#       /ready and /metrics from the host, deploys an application through
#       the API, checks its output, the user the service runs as and the
#       health check, then stops and removes the container
#
# podman, runc and curl are installed with apt-get when missing (and
# debootstrap when the local base is needed); podman build does the builds,
# so buildah itself is not needed.
#
# Base images: the Dockerfile's defaults (docker.io/library/debian:bookworm-slim
# and docker.io/library/rust:1.94-bookworm) when they are present or a
# registry answers; otherwise local stand-ins: a Debian bookworm made with
# `debootstrap --variant=minbase` from the mirror apt uses (cached in
# $VELOSTREAM_IMAGE_BASE_DIR, default /var/tmp/velostream-image-base) and,
# for --full, Rust on it (deploy/containers/rust-base.Containerfile).
# RUNTIME_IMAGE and RUST_IMAGE name others.
#
# Kafka: without KAFKA_BROKERS, run and test start a test broker
# (scripts/kafka-broker.sh on 127.0.0.1:${VELOSTREAM_IMAGE_KAFKA_PORT:-19093},
# its pid and log in /var/tmp/velostream-image-broker) when it is not
# running, stop it again at the end, and point the service at it with
# security_protocol PLAINTEXT (production.yaml asks for SASL_SSL); with
# KAFKA_BROKERS set, they pass it on instead. `run` also passes
# KAFKA_USERNAME, KAFKA_PASSWORD, DB_* and VELOSTREAM__* variables (the
# configuration's environment overrides, docs/configuration.md) as they are.
#
# The container uses the host's network: the test broker listens on
# 127.0.0.1 and advertises that address, and the service's ports 8080 and
# 9090 are the host's (they must be free).
#
# Podman settings come from deploy/containers/containers.conf (runc, ulimits)
# unless CONTAINERS_CONF names another file.
#
# Other settings: VELOSTREAM_IMAGE (velostream:local), DEBIAN_MIRROR.
set -Eeuo pipefail
cd "$(dirname "$0")/.."
ROOT="$PWD"
source scripts/env.sh

IMAGE="${VELOSTREAM_IMAGE:-velostream:local}"
BASE_DIR="${VELOSTREAM_IMAGE_BASE_DIR:-/var/tmp/velostream-image-base}"
PUBLIC_RUNTIME_IMAGE=docker.io/library/debian:bookworm-slim
PUBLIC_RUST_IMAGE=docker.io/library/rust:1.94-bookworm
LOCAL_RUNTIME_IMAGE=localhost/velostream-base:bookworm
LOCAL_RUST_IMAGE=localhost/velostream-rust-base:1.94-bookworm
SUITE=bookworm
RUN_CONTAINER=velostream
TEST_CONTAINER=velostream-image-test
CONFIG_ARGS=(--config /etc/velostream/production.yaml)
BROKER_PORT="${VELOSTREAM_IMAGE_KAFKA_PORT:-19093}"
BROKER_DIR=/var/tmp/velostream-image-broker
BUILD_LOG=/var/tmp/velostream-image-build.log
export CONTAINERS_CONF="${CONTAINERS_CONF:-$ROOT/deploy/containers/containers.conf}"

START=$(date +%s)
BASE_SECONDS=0
BUILD_SECONDS=0
CLEANUP_CONTAINER=""
CLEANUP_DIRS=()
STARTED_BROKER=""

usage() {
    sed -n '2,/^set -Eeuo/p' "$0" | sed -e '$d' -e 's/^# \{0,1\}//' >&2
    exit 2
}

step() {
    printf '[%4ss] == %s\n' "$(($(date +%s) - START))" "$*"
}

info() {
    printf '         %s\n' "$*"
}

die() {
    echo "error: $*" >&2
    exit 1
}

on_error() {
    echo "error: '$1' failed (exit status $2, line $3 of scripts/image.sh)" >&2
}
trap 'on_error "$BASH_COMMAND" "$?" "$LINENO"' ERR

cleanup() {
    local status=$?
    trap - ERR
    if [ -n "$CLEANUP_CONTAINER" ] && podman container exists "$CLEANUP_CONTAINER" 2>/dev/null; then
        if [ "$status" -ne 0 ]; then
            echo "--- last lines of the container's log ($CLEANUP_CONTAINER):" >&2
            podman logs "$CLEANUP_CONTAINER" 2>&1 | tail -n 40 >&2 || true
        fi
        podman rm -f -t 5 "$CLEANUP_CONTAINER" >/dev/null 2>&1 || true
        echo "removed the container $CLEANUP_CONTAINER" >&2
    fi
    local dir
    for dir in "${CLEANUP_DIRS[@]}"; do
        rm -rf "$dir"
    done
    if [ -n "$STARTED_BROKER" ]; then
        broker stop >&2 || true
    fi
    if [ "$status" -ne 0 ]; then
        echo "FAILED after $(($(date +%s) - START))s" >&2
    fi
}
trap cleanup EXIT

# Seconds since the epoch at which a file was last modified.
mtime() {
    stat -c %Y "$1"
}

# --- tools -------------------------------------------------------------------

# Installs the Debian packages named whose command is missing ("command:package").
install_missing() {
    local wanted missing=()
    for wanted in "$@"; do
        command -v "${wanted%%:*}" >/dev/null 2>&1 || missing+=("${wanted#*:}")
    done
    [ ${#missing[@]} -eq 0 ] && return 0
    command -v apt-get >/dev/null 2>&1 \
        || die "missing ${missing[*]}: install them (this script installs them only with apt-get)"
    [ "$(id -u)" -eq 0 ] || die "missing ${missing[*]}: run 'sudo apt-get install -y ${missing[*]}'"
    step "installing ${missing[*]} (apt-get)"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
}

need_tools() {
    install_missing podman:podman runc:runc curl:curl python3:python3
}

# --- base images ---------------------------------------------------------------

# True when something answers HTTPS at the registry (any HTTP status).
registry_reachable() {
    local host="$1" code
    code="$(curl -s -o /dev/null -m 5 -w '%{http_code}' "https://$host/v2/" 2>/dev/null || true)"
    [ -n "$code" ] && [ "$code" != 000 ]
}

# The registry host of an image reference (docker.io for short names).
registry_of() {
    local first="${1%%/*}"
    case "$first" in
        *.* | *:* | localhost) [ "$first" = docker.io ] && echo registry-1.docker.io || echo "$first" ;;
        *) echo registry-1.docker.io ;;
    esac
}

# The URI of the Debian archive apt is configured with (deb822 or one-line
# sources), for debootstrap; DEBIAN_MIRROR wins.
debian_mirror() {
    local uri=""
    if [ -n "${DEBIAN_MIRROR:-}" ]; then
        echo "$DEBIAN_MIRROR"
        return
    fi
    if compgen -G '/etc/apt/sources.list.d/*.sources' >/dev/null; then
        uri="$(awk 'tolower($1) == "uris:" { for (i = 2; i <= NF; i++) if ($i !~ /security/) { print $i; exit } }' \
            /etc/apt/sources.list.d/*.sources)"
    fi
    if [ -z "$uri" ] && [ -f /etc/apt/sources.list ]; then
        uri="$(awk '$1 == "deb" && $0 !~ /security/ { for (i = 2; i <= NF; i++) if ($i ~ /^[a-z]+:\/\//) { print $i; exit } }' \
            /etc/apt/sources.list)"
    fi
    echo "${uri:-http://deb.debian.org/debian}"
}

# The security archive apt is configured with, for the base's sources.
debian_security_mirror() {
    local uri=""
    if compgen -G '/etc/apt/sources.list.d/*.sources' >/dev/null; then
        uri="$(awk 'tolower($1) == "uris:" { for (i = 2; i <= NF; i++) if ($i ~ /security/) { print $i; exit } }' \
            /etc/apt/sources.list.d/*.sources)"
    fi
    echo "${uri:-http://deb.debian.org/debian-security}"
}

# Makes the local Debian base: debootstrap (minbase) into a directory, slimmed
# as Debian's slim images are, packed as a tarball in $BASE_DIR (kept) and
# imported into podman.
make_local_base() {
    local tarball="$BASE_DIR/debian-$SUITE-minbase.tar" began
    if podman image exists "$LOCAL_RUNTIME_IMAGE"; then
        info "local base $LOCAL_RUNTIME_IMAGE: present"
        return
    fi
    began=$(date +%s)
    if [ ! -s "$tarball" ]; then
        install_missing debootstrap:debootstrap
        if [ ! -f /usr/share/keyrings/debian-archive-keyring.gpg ]; then
            install_missing debian-archive-keyring:debian-archive-keyring
        fi
        [ "$(id -u)" -eq 0 ] || die "debootstrap needs root to make the local base"
        local mirror security rootfs
        mirror="$(debian_mirror)"
        security="$(debian_security_mirror)"
        rootfs="$BASE_DIR/rootfs.partial"
        step "local base: debootstrap --variant=minbase $SUITE from $mirror"
        mkdir -p "$BASE_DIR"
        rm -rf "$rootfs"
        CLEANUP_DIRS+=("$rootfs")
        debootstrap --variant=minbase "$SUITE" "$rootfs" "$mirror" >"$BASE_DIR/debootstrap.log" 2>&1 \
            || die "debootstrap failed; see $BASE_DIR/debootstrap.log"
        # apt in the image uses the same archives as this host
        rm -f "$rootfs/etc/apt/sources.list"
        cat >"$rootfs/etc/apt/sources.list.d/debian.sources" <<EOF
Types: deb
URIs: $mirror
Suites: $SUITE $SUITE-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: $security
Suites: $SUITE-security
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
EOF
        # no documentation, manual pages or translations; no package cache
        cat >"$rootfs/etc/dpkg/dpkg.cfg.d/slim" <<'EOF'
path-exclude /usr/share/doc/*
path-include /usr/share/doc/*/copyright
path-exclude /usr/share/man/*
path-exclude /usr/share/info/*
path-exclude /usr/share/locale/*
path-exclude /usr/share/lintian/*
EOF
        cat >"$rootfs/etc/apt/apt.conf.d/slim" <<'EOF'
APT::Install-Recommends "false";
Binary::apt::APT::Keep-Downloaded-Packages "false";
EOF
        find "$rootfs/usr/share/doc" -mindepth 1 -not -name copyright -not -type d -delete
        find "$rootfs/usr/share/doc" -mindepth 1 -type d -empty -delete
        rm -rf "$rootfs"/usr/share/man/* "$rootfs"/usr/share/info/* "$rootfs"/usr/share/locale/*
        rm -rf "$rootfs"/var/cache/apt/*.bin "$rootfs"/var/cache/apt/archives/*.deb \
            "$rootfs"/var/lib/apt/lists/* "$rootfs"/var/log/* "$rootfs"/tmp/*
        # the container runtime provides these
        rm -f "$rootfs/etc/resolv.conf" "$rootfs/etc/hostname"
        tar --numeric-owner -C "$rootfs" -cf "$tarball.partial" .
        mv "$tarball.partial" "$tarball"
        rm -rf "$rootfs"
        info "cached $tarball ($(du -h "$tarball" | cut -f1))"
    else
        step "local base: importing the cached $tarball"
    fi
    podman import --quiet --change 'CMD ["/bin/bash"]' \
        --message "debootstrap --variant=minbase $SUITE" "$tarball" "$LOCAL_RUNTIME_IMAGE" >/dev/null
    BASE_SECONDS=$((BASE_SECONDS + $(date +%s) - began))
    info "local base $LOCAL_RUNTIME_IMAGE made in $(($(date +%s) - began))s"
}

# Makes the local Rust base on the local Debian base
# (deploy/containers/rust-base.Containerfile), trusting the certificate
# authorities this host added to its own trust store.
make_local_rust_base() {
    if podman image exists "$LOCAL_RUST_IMAGE"; then
        info "local Rust base $LOCAL_RUST_IMAGE: present"
        return
    fi
    local context began
    began=$(date +%s)
    step "local Rust base: $LOCAL_RUST_IMAGE (rustup, Rust 1.94.0)"
    context="$(mktemp -d /var/tmp/velostream-rust-base.XXXXXX)"
    CLEANUP_DIRS+=("$context")
    mkdir "$context/ca-certificates"
    if [ -d /usr/local/share/ca-certificates ]; then
        find /usr/local/share/ca-certificates -name '*.crt' -type f -exec cp {} "$context/ca-certificates/" \;
    fi
    info "host certificate authorities added: $(find "$context/ca-certificates" -name '*.crt' | wc -l)"
    podman_build --build-arg BASE_IMAGE="$LOCAL_RUNTIME_IMAGE" \
        -f "$ROOT/deploy/containers/rust-base.Containerfile" -t "$LOCAL_RUST_IMAGE" "$context" \
        || die "the local Rust base did not build (log: $BUILD_LOG)"
    rm -rf "$context"
    BASE_SECONDS=$((BASE_SECONDS + $(date +%s) - began))
    info "local Rust base made in $(($(date +%s) - began))s"
}

# podman build with its output in $BUILD_LOG: the steps are shown, and the
# end of the log when the build fails.
podman_build() {
    local status=0
    podman build "$@" >"$BUILD_LOG" 2>&1 || status=$?
    grep -E '^(\[[0-9]+/[0-9]+\] )?STEP [0-9]+/[0-9]+:' "$BUILD_LOG" | cut -c1-110 | sed 's/^/         | /' || true
    if [ "$status" -ne 0 ]; then
        echo "--- the end of $BUILD_LOG:" >&2
        tail -n 40 "$BUILD_LOG" >&2
        return 1
    fi
}

# Sets RUNTIME_IMAGE (and, with "rust", RUST_IMAGE) to images podman can use.
choose_bases() {
    local which
    for which in runtime ${1:-}; do
        local var public local_image
        if [ "$which" = runtime ]; then
            var=RUNTIME_IMAGE public="$PUBLIC_RUNTIME_IMAGE" local_image="$LOCAL_RUNTIME_IMAGE"
        else
            var=RUST_IMAGE public="$PUBLIC_RUST_IMAGE" local_image="$LOCAL_RUST_IMAGE"
        fi
        if [ -n "${!var:-}" ]; then
            info "$var=${!var} (given)"
        elif podman image exists "$public" || registry_reachable "$(registry_of "$public")"; then
            printf -v "$var" '%s' "$public"
            info "$var=$public"
        else
            info "no registry answers for $public: using the local $local_image"
            make_local_base
            if [ "$which" = rust ]; then
                make_local_rust_base
            fi
            printf -v "$var" '%s' "$local_image"
        fi
    done
}

# --- build ---------------------------------------------------------------------

BINARY=""
FULL=""

parse_build_args() {
    BINARY="${VELOSTREAM_BINARY:-$CARGO_TARGET_DIR/debug/velostream}"
    while [ $# -gt 0 ]; do
        case "$1" in
            --full) FULL=1 ;;
            --release) BINARY="$CARGO_TARGET_DIR/release/velostream" ;;
            --binary)
                [ $# -ge 2 ] || die "--binary needs a path"
                BINARY="$2"
                shift
                ;;
            *) die "unknown argument to build: $1 (see scripts/image.sh --help)" ;;
        esac
        shift
    done
}

# Removes the image $IMAGE named before a build (when the build replaced it
# and no container uses it).
drop_replaced() {
    local old="$1"
    if [ -n "$old" ] && [ "$old" != "$(podman image inspect --format '{{.Id}}' "$IMAGE")" ]; then
        podman rmi "$old" >/dev/null 2>&1 || true
    fi
}

show_image() {
    local size
    size="$(podman image inspect --format '{{.Size}}' "$IMAGE")"
    info "image $IMAGE: $(podman image inspect --format '{{.Id}}' "$IMAGE" | cut -c1-12)," \
        "$((size / 1000000)) MB ($size bytes)"
}

build_prebuilt() {
    [ -f "$BINARY" ] || die "no binary at $BINARY: build it first (cargo build -p velostream)," \
        "or give --binary PATH"
    [ -x "$BINARY" ] || die "$BINARY is not executable"
    step "base image"
    choose_bases
    local context began old
    began=$(date +%s)
    old="$(podman image inspect --format '{{.Id}}' "$IMAGE" 2>/dev/null || true)"
    step "image $IMAGE: the prebuilt target with $BINARY ($(du -h "$BINARY" | cut -f1))"
    # a context of its own: the binary (a copy, so a concurrent cargo build
    # cannot change it half way) and nothing else
    context="$(mktemp -d /var/tmp/velostream-image-context.XXXXXX)"
    CLEANUP_DIRS+=("$context")
    cp "$BINARY" "$context/velostream"
    podman_build --format docker --target prebuilt \
        --build-arg RUNTIME_IMAGE="$RUNTIME_IMAGE" --build-arg BINARY=velostream \
        -f "$ROOT/Dockerfile" -t "$IMAGE" "$context" \
        || die "podman build failed (log: $BUILD_LOG)"
    rm -rf "$context"
    drop_replaced "$old"
    show_image
    BUILD_SECONDS=$(($(date +%s) - began))
    info "built in ${BUILD_SECONDS}s"
}

build_full() {
    step "base images"
    choose_bases rust
    local began old
    began=$(date +%s)
    old="$(podman image inspect --format '{{.Id}}' "$IMAGE" 2>/dev/null || true)"
    step "image $IMAGE: the whole build (release binary compiled in $RUST_IMAGE)"
    info "log: $BUILD_LOG"
    podman_build --format docker \
        --build-arg RUNTIME_IMAGE="$RUNTIME_IMAGE" --build-arg RUST_IMAGE="$RUST_IMAGE" \
        -f "$ROOT/Dockerfile" -t "$IMAGE" "$ROOT" \
        || die "podman build failed (log: $BUILD_LOG)"
    drop_replaced "$old"
    show_image
    BUILD_SECONDS=$(($(date +%s) - began))
    info "built in ${BUILD_SECONDS}s"
}

cmd_build() {
    parse_build_args "$@"
    need_tools
    if [ -n "$FULL" ]; then
        build_full
    else
        build_prebuilt
    fi
}

# --- run -----------------------------------------------------------------------

# The test broker of the image (scripts/kafka-broker.sh with a port and pid
# directory of its own, so that test runs which start and stop the default
# one do not pull it away), started unless KAFKA_BROKERS names a cluster.
broker() {
    TMPDIR="$BROKER_DIR" VELOSTREAM_TEST_KAFKA_PORT="$BROKER_PORT" env -u KAFKA_BROKERS \
        scripts/kafka-broker.sh "$@"
}

ensure_broker() {
    if [ -n "${KAFKA_BROKERS:-}" ]; then
        info "Kafka: KAFKA_BROKERS=$KAFKA_BROKERS"
        return
    fi
    mkdir -p "$BROKER_DIR"
    if ! broker status >/dev/null 2>&1; then
        step "starting a test Kafka broker on 127.0.0.1:$BROKER_PORT (stopped again at the end)"
        broker start | sed 's/^/         /'
        STARTED_BROKER=1
    fi
    info "Kafka: the test broker at $(broker address)"
}

# The -e options that point the container at the Kafka cluster.
KAFKA_ENV=()
kafka_env() {
    if [ -n "${KAFKA_BROKERS:-}" ]; then
        KAFKA_ENV=(-e KAFKA_BROKERS)
    else
        KAFKA_ENV=(-e "KAFKA_BROKERS=$(broker address)"
            -e VELOSTREAM__VELOSTREAM__KAFKA__SECURITY_PROTOCOL=PLAINTEXT)
    fi
}

port_in_use() {
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

check_ports_free() {
    local port
    for port in 8080 9090; do
        ! port_in_use "$port" \
            || die "port $port is in use on this host; the container shares the host's network and needs 8080 and 9090"
    done
}

cmd_run() {
    need_tools
    podman image exists "$IMAGE" || die "no image $IMAGE: run 'scripts/image.sh build' first"
    check_ports_free
    ensure_broker
    kafka_env
    # the caller's settings, after (and so over) the test broker's
    local passed=() name
    for name in $(compgen -e | grep -E '^(KAFKA_USERNAME|KAFKA_PASSWORD|DB_(HOST|USER|PASSWORD|PORT|NAME)|VELOSTREAM__.+)$' || true); do
        passed+=(-e "$name")
    done
    local args=("$@")
    [ ${#args[@]} -gt 0 ] || args=("${CONFIG_ARGS[@]}")
    # podman schedules HEALTHCHECKs with systemd timers; without systemd it
    # only complains, so the container runs without one
    local health=()
    if [ ! -d /run/systemd/system ]; then
        health=(--no-healthcheck)
        info "no systemd to schedule the image's HEALTHCHECK: the container runs without it"
    fi
    step "podman run $IMAGE ${args[*]} (host network; Ctrl-C stops it)"
    podman rm -f "$RUN_CONTAINER" >/dev/null 2>&1 || true
    podman run --rm --name "$RUN_CONTAINER" --network host "${health[@]}" \
        -v "$ROOT/config/guide:/etc/velostream:ro" \
        "${KAFKA_ENV[@]}" "${passed[@]}" "$IMAGE" "${args[@]}"
}

# --- test ----------------------------------------------------------------------

TMP=""
TOKEN=""

# GET or POST a URL; the body goes to $TMP/body, the status code to stdout.
http() {
    local method="$1" url="$2"
    shift 2
    local code
    code="$(curl -s -m 10 -o "$TMP/body" -w '%{http_code}' -X "$method" "$@" "$url")" || true
    echo "${code:-000}"
}

# Fails unless the last response had the status and (when given) exactly the body.
expect() {
    local what="$1" code="$2" want_code="$3" want_body="${4:-}"
    [ "$code" = "$want_code" ] \
        || die "$what answered HTTP $code, expected $want_code: $(head -c 500 "$TMP/body")"
    if [ -n "$want_body" ] && [ "$(cat "$TMP/body")" != "$want_body" ]; then
        die "$what answered $(head -c 500 "$TMP/body"), expected $want_body"
    fi
    if [ "$(head -c 1 "$TMP/body")" = "{" ]; then
        info "$what: $code $(head -c 200 "$TMP/body")"
    else
        info "$what: $code ($(wc -c <"$TMP/body") bytes)"
    fi
}

# Prints a field of the JSON document in $TMP/body (a Python expression on `d`).
json() {
    python3 -c 'import json, sys; d = json.load(open(sys.argv[1])); v = eval(sys.argv[2]); print(v if isinstance(v, str) else json.dumps(v))' \
        "$TMP/body" "$1"
}

# Shows what podman printed, except its complaints that no systemd runs here
# to time health checks (the test runs the check itself).
quiet_systemd_notes() {
    if [ -z "${2:-}" ] && grep -q 'unable to get systemd connection' "$1"; then
        info "(podman: no systemd on this host to schedule the HEALTHCHECK; it is run by hand below)"
    fi
    grep -v 'unable to get systemd connection' "$1" | sed 's/^/         /' >&2 || true
}

container_running() {
    [ "$(podman inspect --format '{{.State.Running}}' "$TEST_CONTAINER" 2>/dev/null)" = true ]
}

# True when the image exists and was made after the binary and the Dockerfile.
image_fresh() {
    local created
    podman image exists "$IMAGE" || return 1
    created="$(podman image inspect --format '{{.Created.Unix}}' "$IMAGE")"
    [ "$created" -gt "$(mtime "$BINARY")" ] && [ "$created" -gt "$(mtime "$ROOT/Dockerfile")" ]
}

write_test_files() {
    TMP="$(mktemp -d /var/tmp/velostream-image-test.XXXXXX)"
    CLEANUP_DIRS+=("$TMP")
    mkdir "$TMP/mount"
    # a token with the admin role: POST /jobs needs it (docs/security.md)
    TOKEN="$(python3 -c 'import secrets; print(secrets.token_hex(32))')"
    printf -- '- name: image-test\n  role: admin\n  sha256: %s\n' \
        "$(printf %s "$TOKEN" | sha256sum | cut -d' ' -f1)" >"$TMP/mount/tokens.yaml"
    cat >"$TMP/mount/trades.jsonl" <<'EOF'
{"symbol": "ACME", "price": 10.50, "quantity": 100, "ts": "2026-01-01T09:00:05Z"}
{"symbol": "BOLT", "price": 20.00, "quantity": 10, "ts": "2026-01-01T09:00:20Z"}
{"symbol": "ACME", "price": 11.00, "quantity": 50, "ts": "2026-01-01T09:00:40Z"}
{"symbol": "CORE", "price": 5.25, "quantity": 200, "ts": "2026-01-01T09:00:59Z"}
{"symbol": "BOLT", "price": 19.50, "quantity": 30, "ts": "2026-01-01T09:01:10Z"}
{"symbol": "ACME", "price": 10.75, "quantity": 20, "ts": "2026-01-01T09:01:30Z"}
{"symbol": "CORE", "price": 5.50, "quantity": 100, "ts": "2026-01-01T09:01:45Z"}
{"symbol": "BOLT", "price": 21.00, "quantity": 5, "ts": "2026-01-01T09:01:59Z"}
EOF
    # what the application writes, one `key<TAB>value` line per window and symbol
    printf '%s\t%s\n' \
        ACME '{"symbol":"ACME","minute_end":"2026-01-01T09:01:00","trades":2,"volume":150,"notional":1600.00}' \
        ACME '{"symbol":"ACME","minute_end":"2026-01-01T09:02:00","trades":1,"volume":20,"notional":215.00}' \
        BOLT '{"symbol":"BOLT","minute_end":"2026-01-01T09:01:00","trades":1,"volume":10,"notional":200.00}' \
        BOLT '{"symbol":"BOLT","minute_end":"2026-01-01T09:02:00","trades":2,"volume":35,"notional":690.00}' \
        CORE '{"symbol":"CORE","minute_end":"2026-01-01T09:01:00","trades":1,"volume":200,"notional":1050.00}' \
        CORE '{"symbol":"CORE","minute_end":"2026-01-01T09:02:00","trades":1,"volume":100,"notional":550.00}' \
        | sort >"$TMP/expected"
    chmod 0755 "$TMP/mount"
    chmod 0644 "$TMP/mount"/*
}

# The application: per-minute totals of a bounded Kafka topic into another.
app_sql() {
    local input="$1" output="$2"
    cat <<EOF
-- @name: minute_totals
CREATE STREAM trades (
    symbol VARCHAR,
    price DECIMAL(12, 2),
    quantity BIGINT,
    ts TIMESTAMP
) WITH (
    'trades.type' = 'kafka_source',
    'trades.topic' = '$input',
    'trades.bounded' = 'true',
    'trades.event.time.field' = 'ts'
);

CREATE STREAM minute_totals AS
SELECT symbol PRIMARY KEY,
       _window_end AS minute_end,
       COUNT(*) AS trades,
       SUM(quantity) AS volume,
       SUM(price * quantity) AS notional
FROM trades
GROUP BY symbol
WINDOW TUMBLING(ts, 1m)
EMIT FINAL
WITH (
    'minute_totals.type' = 'kafka_sink',
    'minute_totals.topic' = '$output'
);
EOF
}

cmd_test() {
    parse_build_args "$@"
    [ -z "$FULL" ] || die "test takes no --full: run 'scripts/image.sh full' first, then test"
    local t0 t_test code
    need_tools

    step "image"
    if image_fresh; then
        info "$IMAGE is newer than $BINARY and the Dockerfile: not rebuilt"
    else
        build_prebuilt
    fi
    t0=$(date +%s)

    step "image metadata"
    local meta
    meta="$(podman image inspect --format \
        'user={{.Config.User}} entrypoint={{.Config.Entrypoint}} cmd={{.Config.Cmd}} ports={{range $p, $v := .Config.ExposedPorts}}{{$p}} {{end}}' \
        "$IMAGE")"
    info "$meta"
    [[ "$meta" == *"user=1000:1000 entrypoint=[velostream] cmd=[--config /etc/velostream/config.yaml]"* ]] \
        || die "unexpected image configuration: $meta"
    [[ "$meta" == *8080/tcp* && "$meta" == *9090/tcp* ]] || die "the image does not expose 8080 and 9090: $meta"
    [ -n "$(podman image inspect --format '{{.HealthCheck}}' "$IMAGE" 2>/dev/null | grep -v '<nil>' || true)" ] \
        || die "the image has no HEALTHCHECK (built without --format docker?)"

    step "Kafka"
    check_ports_free
    ensure_broker
    kafka_env
    write_test_files

    step "starting the container $TEST_CONTAINER (config/guide at /etc/velostream, ${CONFIG_ARGS[*]})"
    podman rm -f "$TEST_CONTAINER" >/dev/null 2>&1 || true
    CLEANUP_CONTAINER="$TEST_CONTAINER"
    if ! podman run --detach --name "$TEST_CONTAINER" --network host \
        -v "$ROOT/config/guide:/etc/velostream:ro" \
        -v "$TMP/mount:/etc/velostream-test:ro" \
        "${KAFKA_ENV[@]}" \
        -e VELOSTREAM__SECURITY__AUTH__MODE=token \
        -e VELOSTREAM__SECURITY__AUTH__TOKENS_FILE=/etc/velostream-test/tokens.yaml \
        "$IMAGE" "${CONFIG_ARGS[@]}" >/dev/null 2>"$TMP/run.err"; then
        cat "$TMP/run.err" >&2
        die "podman run failed"
    fi
    quiet_systemd_notes "$TMP/run.err"

    step "waiting for GET /health"
    local waited=0
    while true; do
        container_running || die "the container exited (status $(podman inspect --format '{{.State.ExitCode}}' "$TEST_CONTAINER"))"
        code="$(http GET http://127.0.0.1:8080/health)"
        [ "$code" = 200 ] && break
        [ "$waited" -lt 60 ] || die "GET /health did not answer 200 within 30s (last: $code)"
        sleep 0.5
        waited=$((waited + 1))
    done
    expect "GET /health" "$code" 200 '{"status":"ok","environment":"production"}'

    step "GET /ready and /metrics before any application"
    code="$(http GET http://127.0.0.1:8080/ready)"
    expect "GET /ready" "$code" 503 '{"ready":false,"reason":"no application is running"}'
    code="$(http GET http://127.0.0.1:9090/metrics)"
    expect "GET /metrics" "$code" 200
    grep -q '^velostream_ready 0$' "$TMP/body" || die "/metrics has no 'velostream_ready 0'"
    info "/metrics: $(grep -c '^# TYPE' "$TMP/body") metric families, velostream_ready 0"

    local suffix input output
    suffix="$(date +%s)-$$"
    input="image-test-trades-$suffix"
    output="image-test-totals-$suffix"
    step "producing 8 trades to $input (velostream produce in the container)"
    if ! podman exec "$TEST_CONTAINER" velostream produce --topic "$input" --key-field symbol \
        /etc/velostream-test/trades.jsonl 2>&1 | sed 's/^/         /'; then
        die "velostream produce failed"
    fi

    step "deploying the application minute_totals (POST /jobs)"
    app_sql "$input" "$output" >"$TMP/app.sql"
    python3 -c 'import json, sys; print(json.dumps({"name": "minute_totals", "sql": open(sys.argv[1]).read()}))' \
        "$TMP/app.sql" >"$TMP/request.json"
    code="$(http POST http://127.0.0.1:8080/jobs -H "Authorization: Bearer $TOKEN" \
        -H 'Content-Type: application/json' --data-binary "@$TMP/request.json")"
    expect "POST /jobs" "$code" 201

    step "waiting for the application to finish (GET /jobs/minute_totals)"
    local state="" waited=0
    while true; do
        code="$(http GET http://127.0.0.1:8080/jobs/minute_totals -H "Authorization: Bearer $TOKEN")"
        [ "$code" = 200 ] || die "GET /jobs/minute_totals answered HTTP $code: $(head -c 500 "$TMP/body")"
        state="$(json 'd["status"]["state"]')"
        case "$state" in
            finished) break ;;
            failed | breaker_open | stopped)
                die "the application is $state: $(json 'd["status"].get("error", "")')" ;;
        esac
        [ "$waited" -lt 120 ] || die "the application is still $state after 60s"
        sleep 0.5
        waited=$((waited + 1))
    done
    local counts
    counts="$(json '" ".join("%s in=%s out=%s" % (j["name"], j["records_in"], j["records_out"]) for j in d["jobs"])')"
    info "state finished; job $counts"
    [ "$counts" = "minute_totals in=8 out=6" ] || die "unexpected job counters: $counts (expected in=8 out=6)"
    # production.yaml: checkpoints with the RocksDB backend, in the state directory
    local checkpoint
    checkpoint="$(json 'd["jobs"][0]["last_checkpoint"]')"
    [ "$checkpoint" != null ] || die "the job took no checkpoint (production.yaml: rocksdb, every 60s, and at the end)"
    info "last checkpoint: $checkpoint"
    podman exec "$TEST_CONTAINER" velostream state list --state-dir /var/lib/velostream/state \
        >"$TMP/state" 2>&1 || die "velostream state list failed: $(cat "$TMP/state")"
    sed 's/^/         /' "$TMP/state"
    grep -q 'rocksdb backend' "$TMP/state" || die "no RocksDB checkpoint in the state directory"

    step "GET /ready and /metrics with the application"
    waited=0
    while true; do
        code="$(http GET http://127.0.0.1:8080/ready)"
        [ "$code" = 200 ] && break
        # the Kafka probe runs every 10s
        [ "$waited" -lt 30 ] || break
        sleep 1
        waited=$((waited + 1))
    done
    expect "GET /ready" "$code" 200 '{"ready":true,"applications":1}'
    code="$(http GET http://127.0.0.1:9090/metrics)"
    expect "GET /metrics" "$code" 200
    local metric
    for metric in 'velostream_records_processed_total{job="minute_totals"} 8' 'velostream_ready 1' \
        'kafka_broker_availability 1'; do
        grep -qF -x "$metric" "$TMP/body" || die "/metrics has no line '$metric'"
        info "/metrics: $metric"
    done

    step "reading $output (velostream consume in the container)"
    podman exec "$TEST_CONTAINER" velostream consume --topic "$output" --keys --idle-secs 3 \
        >"$TMP/consumed" 2>"$TMP/consume.err" \
        || die "velostream consume failed: $(cat "$TMP/consume.err")"
    info "$(cat "$TMP/consume.err")"
    sort "$TMP/consumed" >"$TMP/actual"
    if ! diff -u "$TMP/expected" "$TMP/actual" >"$TMP/diff"; then
        cat "$TMP/diff" >&2
        die "the output of minute_totals differs from the expected rows (- expected, + read)"
    fi
    sed 's/^/         /' "$TMP/actual"
    info "the 6 rows are as expected"

    step "the service's user"
    local top hpid ids
    top="$(podman top "$TEST_CONTAINER" user group hpid pid args)"
    printf '%s\n' "$top" | sed 's/^/         /'
    printf '%s\n' "$top" | awk 'NR > 1 { if ($1 != "velostream" || $2 != "velostream") bad = 1 } END { exit bad }' \
        || die "a process of the container does not run as velostream:velostream"
    # the ids as the host's kernel sees them, and as the container sees them
    for hpid in $(printf '%s\n' "$top" | awk 'NR > 1 { print $3 }'); do
        ids="$(awk '/^(Uid|Gid):/ { print $1, $2, $3, $4, $5 }' "/proc/$hpid/status" | tr '\n' ' ')"
        info "host /proc/$hpid/status: $ids"
        [ "$ids" = "Uid: 1000 1000 1000 1000 Gid: 1000 1000 1000 1000 " ] \
            || die "host pid $hpid does not run as 1000:1000: $ids"
    done
    ids="$(podman exec "$TEST_CONTAINER" awk '/^(Uid|Gid):/ { print $1, $2, $3, $4, $5 }' /proc/1/status | tr '\n' ' ')"
    info "container /proc/1/status: $ids"
    [ "$ids" = "Uid: 1000 1000 1000 1000 Gid: 1000 1000 1000 1000 " ] || die "pid 1 does not run as 1000:1000: $ids"
    local owner
    owner="$(podman exec "$TEST_CONTAINER" stat -c '%U:%G %a %n' /var/lib/velostream/state \
        /var/lib/velostream/state/applications/minute_totals.sql)"
    printf '%s\n' "$owner" | sed 's/^/         /'
    [ "$(printf '%s\n' "$owner" | grep -c '^velostream:velostream ')" = 2 ] \
        || die "the state directory is not the service user's"

    step "the image's health check (podman healthcheck run)"
    info "HEALTHCHECK $(podman image inspect --format '{{.HealthCheck.Test}} every {{.HealthCheck.Interval}}' "$IMAGE")"
    local health
    health="$(podman healthcheck run "$TEST_CONTAINER" 2>&1)" \
        || die "the HEALTHCHECK failed ($health): $(podman exec "$TEST_CONTAINER" velostream health 2>&1 | tr '\n' ' ')"
    info "podman healthcheck run: ${health:-healthy}"
    podman exec "$TEST_CONTAINER" velostream health 2>&1 | sed 's/^/         /'

    step "stopping the container (SIGTERM: the service drains)"
    podman stop -t 45 "$TEST_CONTAINER" >/dev/null 2>"$TMP/stop.err" || { cat "$TMP/stop.err" >&2; die "podman stop failed"; }
    quiet_systemd_notes "$TMP/stop.err" quietly
    local exit_code
    exit_code="$(podman inspect --format '{{.State.ExitCode}}' "$TEST_CONTAINER")"
    podman logs "$TEST_CONTAINER" 2>&1 | grep -q 'velostream service: stopped cleanly' \
        || die "the service did not log 'stopped cleanly' (exit status $exit_code)"
    [ "$exit_code" = 0 ] || die "the service exited with status $exit_code"
    info "exit status 0: $(podman logs "$TEST_CONTAINER" 2>&1 | tail -1)"
    podman rm "$TEST_CONTAINER" >/dev/null 2>"$TMP/rm.err" || { cat "$TMP/rm.err" >&2; die "podman rm failed"; }
    CLEANUP_CONTAINER=""
    info "removed the container $TEST_CONTAINER"
    if [ -n "$STARTED_BROKER" ]; then
        broker stop | sed 's/^/         /'
        STARTED_BROKER=""
    fi
    t_test=$(($(date +%s) - t0))

    step "passed: base images ${BASE_SECONDS}s, image build ${BUILD_SECONDS}s, test ${t_test}s;" \
        "$(($(date +%s) - START))s in all"
}

# --- main ----------------------------------------------------------------------

[ $# -ge 1 ] || usage
command="$1"
shift
case "$command" in
    build) cmd_build "$@" ;;
    full) cmd_build --full "$@" ;;
    run) cmd_run "$@" ;;
    test) cmd_test "$@" ;;
    -h | --help | help) usage ;;
    *) usage ;;
esac
