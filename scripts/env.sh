# Shared settings for the project's scripts (sourced, not run).
# A persistent target directory keeps DataFusion's build between runs.
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/var/tmp/velostream-target}"
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"

# Installs what building and testing need, when missing.
velostream_prerequisites() {
    if ! command -v cargo >/dev/null 2>&1; then
        echo "error: cargo is not installed; install Rust from your distribution or rustup" >&2
        return 1
    fi
    local missing=()
    command -v cc >/dev/null 2>&1 || missing+=(build-essential)
    # librdkafka and its vendored OpenSSL are built from source
    command -v make >/dev/null 2>&1 || missing+=(make)
    command -v perl >/dev/null 2>&1 || missing+=(perl)
    command -v python3 >/dev/null 2>&1 || missing+=(python3 python3-pip)
    # checkpoints link the system RocksDB; its Rust bindings are generated with libclang
    # the Kubernetes manifests are rendered (kubectl kustomize) and checked
    # against the binary with certificates made by openssl
    command -v kubectl >/dev/null 2>&1 || missing+=(kubernetes-client)
    command -v openssl >/dev/null 2>&1 || missing+=(openssl)
    # the monitoring files (deploy/prometheus, deploy/grafana) are checked
    # with promtool and a real Prometheus
    command -v promtool >/dev/null 2>&1 || missing+=(prometheus)
    if command -v dpkg >/dev/null 2>&1; then
        dpkg -s librocksdb-dev >/dev/null 2>&1 || missing+=(librocksdb-dev)
        dpkg -s libclang-dev >/dev/null 2>&1 || missing+=(libclang-dev)
    fi
    if [ ${#missing[@]} -gt 0 ]; then
        echo "installing ${missing[*]} ..." >&2
        apt-get update -qq && apt-get install -y -qq "${missing[@]}"
    fi
}
