//! The deployment guide's configuration documents load as written; bad
//! keys and values fail naming the file, the key and the expected form.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use velostream_server::config::schema::{ClientAuth, LogFormat, LogOutput, StateBackend};
use velostream_server::config::{load, Environment};

fn guide(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../config/guide")
        .join(name)
}

fn env(pairs: &[(&str, &str)]) -> Environment {
    Environment(
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect::<BTreeMap<_, _>>(),
    )
}

#[test]
fn the_guide_documents_load_merged() {
    let files: Vec<PathBuf> = [
        "production.yaml",
        "optimized-config.yaml",
        "logging-config.yaml",
        "tls-config.yaml",
        "multi-region-config.yaml",
    ]
    .iter()
    .map(|f| guide(f))
    .collect();
    let c = load(&files, &env(&[])).unwrap();
    let v = &c.velostream;
    assert_eq!(v.environment.as_deref(), Some("production"));
    assert_eq!(
        v.kafka["bootstrap_servers"].as_text(),
        "kafka1:9092,kafka2:9092,kafka3:9092"
    );
    assert_eq!(v.kafka["linger_ms"].as_text(), "100");
    assert_eq!(v.processing.parallelism, Some(16));
    assert_eq!(
        v.processing.checkpoint_interval.unwrap().0,
        Duration::from_secs(60)
    );
    assert_eq!(v.processing.state_backend, StateBackend::Rocksdb);
    assert_eq!(
        v.timeouts.query_timeout.unwrap().0,
        Duration::from_secs(300)
    );
    assert_eq!(v.monitoring.metrics_port, 9090);
    assert_eq!(v.monitoring.health_check_port, 8080);
    assert_eq!(c.performance.batch_size, Some(100_000));
    assert_eq!(
        c.performance.batch_timeout.unwrap().0,
        Duration::from_millis(200)
    );
    let logging = c.logging.unwrap();
    assert_eq!(logging.format, LogFormat::Json);
    assert!(matches!(
        &logging.outputs[1],
        LogOutput::File { rotation: Some(r), .. } if r.max_backups == Some(10)
            && r.max_size.unwrap().0 == 100_000_000
            && r.max_age.unwrap().0 == Duration::from_secs(7 * 86_400)
    ));
    let tls = c.security.unwrap().tls.unwrap();
    assert_eq!(tls.client_auth, ClientAuth::Required);
    assert_eq!(tls.ciphers.len(), 2);
    assert_eq!(c.regions.unwrap().primary.name, "us-east-1");
}

#[test]
fn later_files_and_the_environment_override() {
    let dir = tempfile::tempdir().unwrap();
    let local = dir.path().join("local.yaml");
    std::fs::write(
        &local,
        "velostream:\n  monitoring:\n    metrics_port: ${METRICS_PORT:-9191}\n    health_check_port: ${HEALTH_PORT}\n",
    )
    .unwrap();
    let c = load(
        &[guide("production.yaml"), local.clone()],
        &env(&[
            ("HEALTH_PORT", "18080"),
            ("KAFKA_BROKERS", "localhost:19092"),
            ("DB_HOST", "db.local"),
            ("DB_PORT", "6432"),
            ("DB_NAME", "sales"),
            ("VELOSTREAM__PERFORMANCE__BATCH_SIZE", "5000"),
        ]),
    )
    .unwrap();
    assert_eq!(c.velostream.monitoring.metrics_port, 9191);
    assert_eq!(c.velostream.monitoring.health_check_port, 18080);
    // the first file's other keys survive the merge
    assert_eq!(c.velostream.processing.parallelism, Some(16));
    assert_eq!(
        c.velostream.kafka["bootstrap_servers"].as_text(),
        "localhost:19092"
    );
    let database = c.velostream.database.unwrap();
    assert_eq!(
        (
            database.host.as_deref(),
            database.port,
            database.name.as_deref()
        ),
        (Some("db.local"), Some(6432), Some("sales"))
    );
    let err = load(
        &[guide("production.yaml")],
        &env(&[("DB_HOST", "db.local"), ("DB_PORT", "five")]),
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("port") && err.contains("five"), "{err}");
    assert_eq!(c.performance.batch_size, Some(5000));

    let err = load(&[local], &env(&[])).unwrap_err().to_string();
    assert!(
        err.contains("local.yaml") && err.contains("HEALTH_PORT"),
        "{err}"
    );
}

#[test]
fn unknown_keys_and_bad_values_name_file_key_and_form() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.yaml");
    let cases = [
        (
            "velostream:\n  processing:\n    paralelism: 4\n",
            "velostream.processing",
            "paralelism",
        ),
        (
            "velostream:\n  timeouts:\n    operation_timeout: soon\n",
            "velostream.timeouts.operation_timeout",
            "30s",
        ),
        (
            "velostream:\n  processing:\n    state_backend: cassandra\n",
            "velostream.processing.state_backend",
            "rocksdb",
        ),
        (
            "logging:\n  outputs:\n    - type: pigeon\n",
            "logging.outputs",
            "console",
        ),
        (
            "velostream:\n  database:\n    sslmode: verify-everything\n",
            "velostream.database.sslmode",
            "verify-full",
        ),
        (
            "velostream:\n  database:\n    host: db\n    sslrootcert: /ca.pem\n",
            "velostream.database.sslrootcert",
            "sslmode",
        ),
        ("nonsense: 1\n", "nonsense", "velostream"),
    ];
    for (text, key, form) in cases {
        std::fs::write(&bad, text).unwrap();
        let err = load(std::slice::from_ref(&bad), &env(&[]))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("bad.yaml") && err.contains(key) && err.contains(form),
            "{text}: {err}"
        );
    }
}

#[test]
fn a_file_may_leave_out_keys_another_file_provides() {
    let dir = tempfile::tempdir().unwrap();
    let local = dir.path().join("local.yaml");
    // only switches TLS off; the certificate keys come from tls-config.yaml
    std::fs::write(&local, "security:\n  tls:\n    enabled: false\n").unwrap();
    let c = load(&[guide("tls-config.yaml"), local.clone()], &env(&[])).unwrap();
    assert!(!c.security.unwrap().tls.unwrap().enabled);
    // alone it misses them, and the error says which file and key
    let err = load(&[local], &env(&[])).unwrap_err().to_string();
    assert!(
        err.contains("local.yaml") && err.contains("security.tls") && err.contains("cert_file"),
        "{err}"
    );
    // an empty variable falls back to its default
    let with_var = dir.path().join("var.yaml");
    std::fs::write(&with_var, "velostream:\n  environment: ${STAGE:-dev}\n").unwrap();
    let c = load(&[with_var], &env(&[("STAGE", "")])).unwrap();
    assert_eq!(c.velostream.environment.as_deref(), Some("dev"));
}

#[test]
fn the_database_section_takes_libpq_tls_settings() {
    use velostream_server::config::schema::DatabaseSslMode;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("db.yaml");
    std::fs::write(
        &file,
        "velostream:\n  database:\n    host: db\n    sslmode: verify-full\n    sslrootcert: /etc/velostream/tls/db-ca.pem\n",
    )
    .unwrap();
    let c = load(&[file], &env(&[])).unwrap();
    let db = c.velostream.database.unwrap();
    assert_eq!(db.sslmode, Some(DatabaseSslMode::VerifyFull));
    assert!(db.sslmode.unwrap().uses_tls());
    assert!(!DatabaseSslMode::Prefer.uses_tls());
    assert_eq!(
        db.sslrootcert.as_deref(),
        Some(std::path::Path::new("/etc/velostream/tls/db-ca.pem"))
    );
}
