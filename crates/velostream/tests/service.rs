//! The service end to end: started with the deployment guide's
//! configuration documents (ports and paths adjusted), every endpoint and
//! status code, the guide's metric names, deploying and stopping a job
//! through the API, holding and resuming, and a clean drain on SIGTERM.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

mod postgres_support;
mod service_support;
use service_support::{
    call, free_port, request, start, start_with, wait_for, wait_for_metric, Service, TestCa,
};

fn guide(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../config/guide")
        .join(name)
}

#[test]
fn the_service_of_the_guide() {
    let dir = tempfile::tempdir().unwrap();
    let (health, metrics) = (free_port(), free_port());
    // a slow, endless source: a file read line by line is bounded, so the
    // application reads a fifo-like growing file through a self-referencing job
    let data = dir.path().join("trades.jsonl");
    let lines: String = (0..2000)
        .map(|i| format!("{{\"symbol\": \"S{}\", \"qty\": {i}}}\n", i % 7))
        .collect();
    std::fs::write(&data, lines).unwrap();
    let app = dir.path().join("totals.sql");
    std::fs::write(
        &app,
        format!(
            "CREATE STREAM totals AS SELECT symbol, SUM(qty) AS q FROM trades GROUP BY symbol
             WITH ('trades.type' = 'file_source', 'trades.path' = '{}', 'totals.type' = 'null');",
            data.display()
        ),
    )
    .unwrap();
    let brokers = std::env::var("KAFKA_BROKERS").expect(
        "KAFKA_BROKERS must name a broker: run scripts/test.sh, or scripts/kafka-broker.sh start",
    );
    // the guide's regions, with the test's broker and database as the
    // primary region's endpoints (the secondary stays unreachable)
    let db = postgres_support::server();
    // deploying through the API takes an admin: one token, configured by its digest
    let tokens = dir.path().join("tokens.yaml");
    std::fs::write(
        &tokens,
        format!(
            "- name: guide-admin\n  role: admin\n  sha256: {}\n",
            velostream_server::auth::tokens::digest_hex("guide-admin-token")
        ),
    )
    .unwrap();
    let api = |method: &str, path: &str, body: &str| {
        let a = call(
            health,
            method,
            path,
            &[("Authorization", "Bearer guide-admin-token")],
            body,
        );
        (a.status, a.body)
    };
    let local = dir.path().join("local.yaml");
    std::fs::write(
        &local,
        format!(
            "velostream:\n  kafka:\n    security_protocol: PLAINTEXT\n    bootstrap_servers: {brokers}\n  timeouts:\n    connection_timeout: 3s\n  monitoring:\n    bind_address: 127.0.0.1\n    health_check_port: {health}\n    metrics_port: {metrics}\n  database:\n    user: {}\n    name: {}\n  state_dir: {}\n  applications:\n    - name: totals\n      path: {}\nsecurity:\n  tls:\n    enabled: false\n    cert_file: none\n    key_file: none\n  auth:\n    mode: token\n    tokens_file: {}\nlogging:\n  outputs:\n    - type: console\nregions:\n  primary:\n    endpoints:\n      kafka: {brokers}\n      database: \"{}\"\n",
            db.user,
            db.name,
            dir.path().join("state").display(),
            app.display(),
            tokens.display(),
            db.endpoint(),
        ),
    )
    .unwrap();
    let configs: Vec<PathBuf> = [
        "production.yaml",
        "optimized-config.yaml",
        "logging-config.yaml",
        "tls-config.yaml",
        "multi-region-config.yaml",
    ]
    .iter()
    .map(|f| guide(f))
    .chain([local])
    .collect();
    let mut service = start_with(&configs, dir.path(), &[("DB_PASSWORD", &db.password)]);

    assert_eq!(
        wait_for(health, "/health", 200, Duration::from_secs(30)),
        r#"{"status":"ok","environment":"production"}"#
    );
    // the first probe of both dependencies (the primary region's Kafka
    // cluster and database) has answered: the service is ready
    wait_for_metric(
        metrics,
        "kafka_broker_availability 1",
        Duration::from_secs(30),
    );
    // the bounded application finishes; the service stays up and ready
    wait_for(health, "/ready", 200, Duration::from_secs(30));
    // readiness is about dependencies, not the job: wait for it to finish
    let deadline = Instant::now() + Duration::from_secs(30);
    let body = loop {
        let (code, body) = api("GET", "/jobs", "");
        assert_eq!(code, 200);
        let finished =
            body.contains(r#""records_in":2000"#) && body.contains(r#""last_checkpoint":{"id":"#);
        if finished || Instant::now() > deadline {
            break body;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(
        body.contains(r#""name":"totals""#) && body.contains(r#""records_in":2000"#),
        "{body}"
    );
    let (code, _) = api("GET", "/jobs/nothing", "");
    assert_eq!(code, 404);
    // processing.checkpoint_interval and state_backend: rocksdb of the
    // guide: the finished job left a RocksDB checkpoint in the state directory
    assert!(body.contains(r#""last_checkpoint":{"id":"#), "{body}");
    // the service keeps a job's state under jobs/<application>/<statement>
    let checkpoints = dir.path().join("state/jobs/totals/totals/checkpoints");
    let newest = std::fs::read_dir(&checkpoints)
        .unwrap()
        .map(|e| e.unwrap().path())
        .max()
        .expect("a checkpoint");
    let manifest = std::fs::read_to_string(newest.join("manifest.json")).unwrap();
    assert!(manifest.contains(r#""backend": "rocksdb""#), "{manifest}");
    assert!(newest.join("rocksdb/CURRENT").exists());

    // deploy a second application through the API, then stop it
    let sql = format!(
        "CREATE STREAM copy AS SELECT symbol FROM trades WITH ('trades.type' = 'file_source', 'trades.path' = '{}', 'copy.type' = 'null');",
        data.display()
    );
    let (code, body) = api(
        "POST",
        "/jobs",
        &serde_json::json!({"name": "copy", "sql": sql}).to_string(),
    );
    assert_eq!(code, 201, "{body}");
    let (code, _) = api("POST", "/jobs", r#"{"name": "bad name!", "sql": ""}"#);
    assert_eq!(code, 400);
    let deadline = Instant::now() + Duration::from_secs(30);
    while !api("GET", "/jobs/copy", "")
        .1
        .contains(r#""records_in":2000"#)
    {
        assert!(
            Instant::now() < deadline,
            "the deployed application never ran"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let (code, body) = api("DELETE", "/jobs/copy", "");
    assert_eq!(code, 200, "{body}");

    // hold and resume
    let (code, body) = api("POST", "/checkpoint", "");
    assert_eq!(code, 200, "{body}");
    let (code, body) = request(health, "GET", "/ready", "");
    assert_eq!(code, 503);
    assert!(body.contains("held"), "{body}");
    let (code, _) = api("POST", "/resume", "");
    assert_eq!(code, 200);
    wait_for(health, "/ready", 200, Duration::from_secs(5));

    // every metric of the guide
    let (code, text) = request(metrics, "GET", "/metrics", "");
    assert_eq!(code, 200);
    for name in [
        "velostream_records_processed_total",
        "velostream_bytes_processed_total",
        "velostream_events_per_second",
        "velostream_processing_latency_ms",
        "velostream_e2e_latency_ms",
        "velostream_checkpoint_duration_ms",
        "velostream_errors_total",
        "velostream_retries_total",
        "velostream_circuit_breaker_trips",
        "process_cpu_seconds_total",
        "process_resident_memory_bytes",
        "go_memstats_heap_inuse_bytes",
        "kafka_consumer_lag",
        "kafka_producer_record_send_rate",
        "kafka_broker_availability",
    ] {
        assert!(
            text.contains(&format!("# TYPE {name}")),
            "{name} missing:\n{text}"
        );
    }
    assert!(
        text.contains(r#"velostream_records_processed_total{job="totals"} 2000"#),
        "{text}"
    );
    assert!(
        text.contains("velostream_processing_latency_ms_bucket"),
        "latency is a histogram"
    );
    assert!(
        text.lines().any(|l| l == "kafka_broker_availability 1"),
        "the test broker answers:\n{text}"
    );

    // the guide's health-check script
    let probe = Command::new(env!("CARGO_BIN_EXE_velostream"))
        .args(["health", "--url"])
        .arg(format!("http://127.0.0.1:{health}/health"))
        .arg("--metrics-url")
        .arg(format!("http://127.0.0.1:{metrics}/metrics"))
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&probe.stdout);
    assert!(probe.status.success(), "{said}");
    assert!(
        said.contains("PASS Velostream is healthy") && said.contains("PASS Metrics is healthy"),
        "{said}"
    );

    // SIGTERM: a clean drain and exit 0
    let pid = service.0.id().to_string();
    assert!(Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap()
        .success());
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(s) = service.0.try_wait().unwrap() {
            break s;
        }
        assert!(Instant::now() < deadline, "no exit after SIGTERM");
        std::thread::sleep(Duration::from_millis(50));
    };
    let log = std::fs::read_to_string(dir.path().join("service.log")).unwrap();
    assert!(status.success(), "exit {status}: {log}");
    assert!(
        log.contains("SIGTERM; draining") && log.contains("stopped cleanly"),
        "{log}"
    );
}

/// A CA, a server certificate for 127.0.0.1 and a client certificate, as PEM files in `dir`.
fn certificates(dir: &Path) -> (PathBuf, PathBuf, PathBuf, PathBuf, PathBuf) {
    let ca = TestCa::new(dir);
    let (client, client_key) = ca.client("", "ops-client");
    (
        ca.ca_file,
        ca.server_cert,
        ca.server_key,
        client,
        client_key,
    )
}

/// GET `path` over TLS, with or without a client certificate.
fn tls_get(
    port: u16,
    path: &str,
    ca: &Path,
    client: Option<(&Path, &Path)>,
) -> Result<String, String> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_file_iter(ca).unwrap() {
        roots.add(c.unwrap()).unwrap();
    }
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots);
    let config = match client {
        Some((cert, key)) => builder
            .with_client_auth_cert(
                CertificateDer::pem_file_iter(cert)
                    .unwrap()
                    .map(|c| c.unwrap())
                    .collect(),
                PrivateKeyDer::from_pem_file(key).unwrap(),
            )
            .unwrap(),
        None => builder.with_no_client_auth(),
    };
    let conn = rustls::ClientConnection::new(
        std::sync::Arc::new(config),
        ServerName::try_from("127.0.0.1").unwrap(),
    )
    .unwrap();
    let tcp = TcpStream::connect(("127.0.0.1", port)).map_err(|e| e.to_string())?;
    tcp.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut tls = rustls::StreamOwned::new(conn, tcp);
    write!(
        tls,
        "GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
    )
    .map_err(|e| e.to_string())?;
    let mut response = String::new();
    tls.read_to_string(&mut response)
        .map_err(|e| e.to_string())?;
    Ok(response)
}

#[test]
fn mutual_tls_refuses_clients_without_a_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let (ca, cert, key, client_cert, client_key) = certificates(dir.path());
    let (health, metrics) = (free_port(), free_port());
    let config = dir.path().join("tls.yaml");
    std::fs::write(
        &config,
        format!(
            "velostream:\n  monitoring:\n    bind_address: 127.0.0.1\n    health_check_port: {health}\n    metrics_port: {metrics}\n  state_dir: {}\nsecurity:\n  tls:\n    enabled: true\n    cert_file: {}\n    key_file: {}\n    ca_file: {}\n    client_auth: required\n    min_version: TLS1.2\n    ciphers:\n      - TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384\n      - TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384\n",
            dir.path().join("state").display(),
            cert.display(),
            key.display(),
            ca.display()
        ),
    )
    .unwrap();
    let _service = start(&[config], dir.path());
    let deadline = Instant::now() + Duration::from_secs(30);
    let ok = loop {
        match tls_get(health, "/health", &ca, Some((&client_cert, &client_key))) {
            Ok(r) => break r,
            Err(e) => {
                assert!(Instant::now() < deadline, "no TLS answer: {e}");
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    };
    assert!(
        ok.starts_with("HTTP/1.1 200") && ok.contains(r#"{"status":"ok"}"#),
        "{ok}"
    );
    // a client that connects and never says anything delays nobody
    let _stalled = TcpStream::connect(("127.0.0.1", health)).unwrap();
    let started = Instant::now();
    let again = tls_get(health, "/health", &ca, Some((&client_cert, &client_key))).unwrap();
    assert!(again.starts_with("HTTP/1.1 200"), "{again}");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "a stalled handshake held up the port"
    );
    let scraped = tls_get(metrics, "/metrics", &ca, Some((&client_cert, &client_key))).unwrap();
    assert!(
        scraped.contains("# TYPE process_cpu_seconds_total counter"),
        "{scraped}"
    );

    let refused = tls_get(health, "/health", &ca, None);
    assert!(
        refused.as_ref().map_or(true, |r| !r.contains("200 OK")),
        "a client without a certificate got through: {refused:?}"
    );
    // plain HTTP is not served either
    let (plain, _) = std::panic::catch_unwind(|| request(health, "GET", "/health", ""))
        .unwrap_or((0, String::new()));
    assert_ne!(plain, 200);
}

#[test]
fn unusable_certificate_files_fail_at_start_with_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("tls.yaml");
    std::fs::write(
        &config,
        "security:\n  tls:\n    enabled: true\n    cert_file: /nonexistent/server.crt\n    key_file: /nonexistent/server.key\n",
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_velostream"))
        .arg("--config")
        .arg(&config)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("security.tls.cert_file") && stderr.contains("/nonexistent/server.crt"),
        "{stderr}"
    );
}

#[test]
fn the_pre_production_checks_report_one_line_each() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("check.yaml");
    let brokers = std::env::var("KAFKA_BROKERS").unwrap_or_else(|_| "127.0.0.1:1".into());
    std::fs::write(
        &config,
        format!(
            "velostream:\n  kafka:\n    bootstrap_servers: {brokers}\n  timeouts:\n    connection_timeout: 3s\n  state_dir: {}\n  database:\n    host: 127.0.0.1\n    port: 1\nlogging:\n  outputs:\n    - type: file\n      path: {}\n",
            dir.path().join("state").display(),
            dir.path().join("logs/app.log").display()
        ),
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_velostream"))
        .args(["check", "--config"])
        .arg(&config)
        .env_remove("KAFKA_BROKERS")
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(
        said.contains("PASS configuration: 1 file(s) valid"),
        "{said}"
    );
    if std::env::var("KAFKA_BROKERS").is_ok() {
        assert!(
            said.contains(&format!("PASS kafka: {brokers} reachable")),
            "{said}"
        );
    }
    assert!(
        said.contains("FAIL database: cannot connect to PostgreSQL at 127.0.0.1:1: "),
        "{said}"
    );
    assert!(
        said.contains("PASS state directory") && said.contains("PASS log directory"),
        "{said}"
    );
    assert!(
        said.contains("file descriptors:") && said.contains("processes:"),
        "{said}"
    );
    assert_eq!(
        out.status.code(),
        Some(1),
        "a failed check fails the command: {said}"
    );
}

/// Starts the service with `dependencies` (YAML under `velostream:`) and
/// waits until `/ready` answers 503 with `reason`; returns the metrics port.
fn ready_reason(dir: &Path, dependencies: &str, reason: &str) -> (Service, u16) {
    let (health, metrics) = (free_port(), free_port());
    let app = dir.join("idle.sql");
    std::fs::write(&app, "CREATE STREAM out AS SELECT a FROM src WITH ('src.type' = 'file_source', 'src.path' = 'src.jsonl', 'out.type' = 'null');").unwrap();
    std::fs::write(dir.join("src.jsonl"), "{\"a\": 1}\n").unwrap();
    let config = dir.join("down.yaml");
    std::fs::write(
        &config,
        format!(
            "velostream:\n{dependencies}  timeouts:\n    connection_timeout: 1s\n  monitoring:\n    bind_address: 127.0.0.1\n    health_check_port: {health}\n    metrics_port: {metrics}\n  state_dir: {}\n  applications:\n    - {}\n",
            dir.join("state").display(),
            app.display()
        ),
    )
    .unwrap();
    let service = start(&[config], dir);
    let mut body = wait_for(health, "/ready", 503, Duration::from_secs(30));
    let deadline = Instant::now() + Duration::from_secs(30);
    while !body.contains(reason) {
        assert!(Instant::now() < deadline, "{body}");
        std::thread::sleep(Duration::from_millis(200));
        body = request(health, "GET", "/ready", "").1;
    }
    (service, metrics)
}

#[test]
fn ready_names_an_unreachable_kafka_cluster() {
    let dir = tempfile::tempdir().unwrap();
    let (_service, metrics) = ready_reason(
        dir.path(),
        "  kafka:\n    bootstrap_servers: 127.0.0.1:1\n",
        "kafka: 127.0.0.1:1 not reachable",
    );
    let (_, text) = request(metrics, "GET", "/metrics", "");
    assert!(
        text.lines().any(|l| l == "kafka_broker_availability 0"),
        "{text}"
    );
}

#[test]
fn ready_names_an_unreachable_database() {
    let dir = tempfile::tempdir().unwrap();
    ready_reason(
        dir.path(),
        "  database:\n    host: 127.0.0.1\n    port: 1\n    user: app\n    password: s3cret-pw\n",
        "database: cannot connect to PostgreSQL at app@127.0.0.1:1/app",
    );
    let log = std::fs::read_to_string(dir.path().join("service.log")).unwrap();
    assert!(!log.contains("s3cret-pw"), "{log}");
}

#[test]
fn active_passive_regions_fail_over_to_the_secondary_cluster() {
    use velostream_connectors::kafka::admin;
    let brokers = std::env::var("KAFKA_BROKERS").expect(
        "KAFKA_BROKERS must name a broker: run scripts/test.sh, or scripts/kafka-broker.sh start",
    );
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    let topic = format!("failover-{nanos}");
    admin::create_topic(&admin::plain_client(&brokers), &topic, 1).unwrap();
    let mut producer = rdkafka::ClientConfig::new();
    producer.set("bootstrap.servers", &brokers);
    let payloads: Vec<String> = (0..100).map(|i| format!("{{\"id\": {i}}}")).collect();
    admin::produce(
        &producer,
        &topic,
        payloads.iter().map(|p| (None, p.as_bytes(), None)),
    )
    .unwrap();

    let dir = tempfile::tempdir().unwrap();
    let (health, metrics) = (free_port(), free_port());
    let app = dir.path().join("copy.sql");
    std::fs::write(
        &app,
        format!(
            "CREATE STREAM events (id BIGINT) WITH ('events.type' = 'kafka_source', 'events.topic' = '{topic}',
                'events.group.id' = 'failover-{nanos}', 'events.bounded' = 'true');
             CREATE STREAM copied AS SELECT id FROM events WITH ('copied.type' = 'null');"
        ),
    )
    .unwrap();
    let config = dir.path().join("regions.yaml");
    std::fs::write(
        &config,
        format!(
            "velostream:\n  timeouts:\n    connection_timeout: 1s\n  monitoring:\n    bind_address: 127.0.0.1\n    health_check_port: {health}\n    metrics_port: {metrics}\n  state_dir: {}\n  applications:\n    - {}\nregions:\n  primary:\n    name: east\n    endpoints:\n      kafka: 127.0.0.1:1\n  secondary:\n    name: west\n    endpoints:\n      kafka: {brokers}\n  failover:\n    strategy: active-passive\n    health_check_interval: 1s\n    failover_threshold: 2\n",
            dir.path().join("state").display(),
            app.display()
        ),
    )
    .unwrap();
    let _service = start(&[config], dir.path());
    wait_for(health, "/health", 200, Duration::from_secs(30));
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let (_, body) = request(health, "GET", "/jobs/copy", "");
        if body.contains(r#""records_in":100"#) && body.contains(r#""state":"finished""#) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "never read through the secondary: {body}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    wait_for(health, "/ready", 200, Duration::from_secs(10));
    let (_, text) = request(metrics, "GET", "/metrics", "");
    assert!(
        text.lines().any(|l| l == "kafka_broker_availability 1"),
        "{text}"
    );
    let log = std::fs::read_to_string(dir.path().join("service.log")).unwrap();
    assert!(log.contains("failing over to region west"), "{log}");
}

#[test]
fn an_ad_hoc_query_ends_after_the_query_timeout() {
    let dir = tempfile::tempdir().unwrap();
    let (health, metrics) = (free_port(), free_port());
    let app = dir.path().join("peek.sql");
    // an endless source, paced: only the timeout ends this query
    std::fs::write(
        &app,
        "SELECT auction, price FROM bid WITH ('bid.type' = 'nexmark', 'bid.throttle' = 'true', 'bid.rate' = '1000');",
    )
    .unwrap();
    let config = dir.path().join("timeout.yaml");
    std::fs::write(
        &config,
        format!(
            "velostream:\n  timeouts:\n    query_timeout: 1s\n  monitoring:\n    bind_address: 127.0.0.1\n    health_check_port: {health}\n    metrics_port: {metrics}\n  state_dir: {}\n  applications:\n    - {}\n",
            dir.path().join("state").display(),
            app.display()
        ),
    )
    .unwrap();
    let _service = start(&[config], dir.path());
    wait_for(health, "/health", 200, Duration::from_secs(30));
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (_, body) = request(health, "GET", "/jobs/peek", "");
        if body.contains(r#""state":"finished""#) {
            assert!(
                !body.contains(r#""records_in":0"#),
                "it ran before it was stopped: {body}"
            );
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the query was not stopped: {body}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let log = std::fs::read_to_string(dir.path().join("service.log")).unwrap();
    assert!(
        log.contains("stopped after 1s (timeouts.query_timeout)"),
        "{log}"
    );
}
