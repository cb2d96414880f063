//! The deployment guide's Kafka security settings (`SASL_SSL` with
//! credentials from `KAFKA_USERNAME`/`KAFKA_PASSWORD`) against a broker
//! that enforces them: TLS from a private CA and SASL/SCRAM. Every Kafka
//! client the product opens is exercised through them: the service's
//! `/ready` probe and `kafka_broker_availability`, an application's source
//! and sink, `velostream check`, `produce`, `consume` and `offsets export`.
//!
//! Ignored by default: it needs a secured broker. scripts/test.sh starts
//! one (`scripts/txn-broker.sh start --sasl-ssl`) and passes it in
//! `VELOSTREAM_TEST_SECURE_KAFKA` (bootstrap address),
//! `VELOSTREAM_TEST_SECURE_KAFKA_CA` (the CA of its certificate) and
//! `VELOSTREAM_TEST_SECURE_KAFKA_USERNAME`/`_PASSWORD` (a SCRAM-SHA-512 user).

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

mod service_support;
use service_support::{free_port, request, start_with, wait_for, wait_for_metric};

/// The secured broker the suite was given.
struct SecuredBroker {
    address: String,
    ca: String,
    username: String,
    password: String,
}

impl SecuredBroker {
    fn from_env() -> Self {
        let var = |name: &str| {
            std::env::var(name).unwrap_or_else(|_| {
                panic!("{name} is not set: run scripts/test.sh, or scripts/txn-broker.sh start --sasl-ssl and set the VELOSTREAM_TEST_SECURE_KAFKA* variables")
            })
        };
        Self {
            address: var("VELOSTREAM_TEST_SECURE_KAFKA"),
            ca: var("VELOSTREAM_TEST_SECURE_KAFKA_CA"),
            username: var("VELOSTREAM_TEST_SECURE_KAFKA_USERNAME"),
            password: var("VELOSTREAM_TEST_SECURE_KAFKA_PASSWORD"),
        }
    }

    /// The `velostream.kafka` keys that differ from the guide's
    /// production.yaml for this broker: its address and CA, and two
    /// limits of the test broker: SCRAM instead of PLAIN (it takes PLAIN
    /// users from no file; librdkafka gets the mechanism and the same
    /// username and password settings either way), and lz4 instead of
    /// snappy (it reads only xerial-framed snappy, and librdkafka sends
    /// raw snappy blocks, which Apache Kafka accepts).
    fn kafka_yaml(&self) -> String {
        format!(
            "  kafka:\n    bootstrap_servers: {}\n    sasl_mechanism: SCRAM-SHA-512\n    ssl.ca.location: {}\n    compression_type: lz4\n",
            self.address, self.ca
        )
    }
}

fn guide(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../config/guide")
        .join(name)
}

fn velostream() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_velostream"));
    cmd.env_remove("KAFKA_BROKERS")
        .env_remove("KAFKA_USERNAME")
        .env_remove("KAFKA_PASSWORD");
    cmd
}

fn text(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr)
}

/// Ten trades per symbol, all in the first minute of 2026-01-05.
fn trades() -> (String, Vec<(String, i64, i64)>) {
    let mut lines = String::new();
    let mut totals = Vec::new();
    for (s, symbol) in ["AAPL", "MSFT", "NVDA"].iter().enumerate() {
        let mut volume = 0;
        for i in 0..10i64 {
            let quantity = (s as i64 + 1) * 10 + i;
            volume += quantity;
            lines.push_str(&format!(
                "{{\"symbol\": \"{symbol}\", \"price\": \"10.50\", \"quantity\": {quantity}, \"ts\": \"2026-01-05T09:00:{:02}Z\"}}\n",
                s * 10 + i as usize
            ));
        }
        totals.push((symbol.to_string(), 10, volume));
    }
    (lines, totals)
}

#[test]
#[ignore = "needs a SASL_SSL broker: scripts/test.sh starts one"]
fn the_guide_sasl_ssl_settings_reach_a_secured_broker_and_keep_the_service_ready() {
    let broker = SecuredBroker::from_env();
    let dir = tempfile::tempdir().unwrap();
    let credentials = [
        ("KAFKA_USERNAME", broker.username.as_str()),
        ("KAFKA_PASSWORD", broker.password.as_str()),
    ];
    let wrong = [
        ("KAFKA_USERNAME", broker.username.as_str()),
        ("KAFKA_PASSWORD", "not-the-password"),
    ];
    let run_id = std::process::id();
    let (input, output, group) = (
        format!("secured_trades_{run_id}"),
        format!("secured_totals_{run_id}"),
        format!("secured-totals-{run_id}"),
    );

    // the tools read the same configuration: production.yaml's SASL_SSL
    // and the broker's keys
    let client = dir.path().join("client.yaml");
    std::fs::write(&client, format!("velostream:\n{}", broker.kafka_yaml())).unwrap();
    let tool = |args: &[&str], env: &[(&str, &str)]| {
        velostream()
            .args(args)
            .arg("--config")
            .arg(guide("production.yaml"))
            .arg("--config")
            .arg(&client)
            .envs(env.iter().copied())
            .output()
            .unwrap()
    };
    let (lines, totals) = trades();
    let data = dir.path().join("trades.jsonl");
    std::fs::write(&data, &lines).unwrap();
    let produced = tool(
        &[
            "produce",
            "--topic",
            &input,
            "--partitions",
            "2",
            "--key-field",
            "symbol",
            data.to_str().unwrap(),
        ],
        &credentials,
    );
    assert!(produced.status.success(), "{}", text(&produced));
    assert!(
        text(&produced).contains("produced 30 messages"),
        "{}",
        text(&produced)
    );
    // the output topic exists before the job writes (as in production:
    // this broker creates no topic on a producer's request)
    let empty = dir.path().join("empty.jsonl");
    std::fs::write(&empty, "").unwrap();
    let created = tool(
        &["produce", "--topic", &output, empty.to_str().unwrap()],
        &credentials,
    );
    assert!(created.status.success(), "{}", text(&created));

    // the service: the guide's production.yaml, with the broker's keys,
    // local ports and an application reading and writing over SASL_SSL
    let app = dir.path().join("totals.sql");
    std::fs::write(
        &app,
        format!(
            "CREATE STREAM trades (symbol VARCHAR, price DECIMAL(12, 2), quantity BIGINT, ts TIMESTAMP)
             WITH ('trades.type' = 'kafka_source', 'trades.topic' = '{input}', 'trades.bounded' = 'true',
                   'trades.group.id' = '{group}', 'trades.event.time.field' = 'ts');
             CREATE STREAM totals AS
             SELECT symbol PRIMARY KEY, COUNT(*) AS trades, SUM(quantity) AS volume
             FROM trades GROUP BY symbol WINDOW TUMBLING(ts, 1m) EMIT FINAL
             WITH ('totals.type' = 'kafka_sink', 'totals.topic' = '{output}');"
        ),
    )
    .unwrap();
    // an application without Kafka, for the service that cannot log in
    // (a service without applications is never ready)
    let idle = dir.path().join("idle.sql");
    std::fs::write(&idle, format!("CREATE STREAM out AS SELECT symbol FROM src WITH ('src.type' = 'file_source', 'src.path' = '{}', 'out.type' = 'null');", data.display())).unwrap();
    let service_config = |name: &str, health: u16, metrics: u16, app: &Path| {
        let path = dir.path().join(name);
        let applications = format!("  applications:\n    - path: {}\n", app.display());
        std::fs::write(
            &path,
            format!(
                "velostream:\n{}  timeouts:\n    connection_timeout: 5s\n  monitoring:\n    bind_address: 127.0.0.1\n    health_check_port: {health}\n    metrics_port: {metrics}\n  state_dir: {}\n{applications}logging:\n  outputs:\n    - type: console\n",
                broker.kafka_yaml(),
                dir.path().join(format!("{name}.state")).display(),
            ),
        )
        .unwrap();
        vec![guide("production.yaml"), path]
    };
    let (health, metrics) = (free_port(), free_port());
    let service_dir = dir.path().join("service");
    std::fs::create_dir(&service_dir).unwrap();
    let _service = start_with(
        &service_config("service.yaml", health, metrics, &app),
        &service_dir,
        &credentials,
    );
    wait_for(health, "/health", 200, Duration::from_secs(30));
    let ready = wait_for(health, "/ready", 200, Duration::from_secs(60));
    assert!(ready.contains(r#""ready":true"#), "{ready}");
    wait_for_metric(
        metrics,
        "kafka_broker_availability 1",
        Duration::from_secs(30),
    );

    // the application read the topic and wrote its totals over SASL_SSL
    let mut consumed = String::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while consumed.lines().count() < totals.len() {
        assert!(
            Instant::now() < deadline,
            "the totals never arrived: {consumed}\nservice log:\n{}",
            std::fs::read_to_string(service_dir.join("service.log")).unwrap_or_default()
        );
        let out = tool(
            &["consume", "--topic", &output, "--idle-secs", "2"],
            &credentials,
        );
        consumed = String::from_utf8_lossy(&out.stdout).into_owned();
    }
    let mut got: Vec<(String, i64, i64)> = consumed
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            (
                v["symbol"].as_str().unwrap().to_string(),
                v["trades"].as_i64().unwrap(),
                v["volume"].as_i64().unwrap(),
            )
        })
        .collect();
    got.sort();
    if got != totals {
        // which side duplicated: the input topic as the broker holds it
        let input_now = tool(
            &["consume", "--topic", &input, "--idle-secs", "2"],
            &credentials,
        );
        panic!(
            "totals {got:?}, expected {totals:?}\ninput topic holds {} messages\nservice log:\n{}",
            String::from_utf8_lossy(&input_now.stdout).lines().count(),
            std::fs::read_to_string(service_dir.join("service.log")).unwrap_or_default()
        );
    }
    // its group's offsets, read back through the same settings
    let exported = tool(&["offsets", "export", "--group", &group], &credentials);
    assert!(exported.status.success(), "{}", text(&exported));
    let export: serde_json::Value = serde_json::from_slice(&exported.stdout).unwrap();
    let committed: i64 = export["offsets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["offset"].as_i64().unwrap())
        .sum();
    assert_eq!(committed, 30, "{export}");
    // the service is still ready after its application finished
    assert_eq!(request(health, "GET", "/ready", "").0, 200);

    // the pre-production check: PASS with the credentials, FAIL without
    let checked = tool(&["check"], &credentials);
    assert!(text(&checked).contains("PASS kafka"), "{}", text(&checked));
    let failed = tool(&["check"], &wrong);
    assert!(
        text(&failed).contains("FAIL kafka: ")
            && text(&failed).contains("SASL authentication error"),
        "{}",
        text(&failed)
    );
    assert!(!text(&failed).contains("not-the-password"));
    // TLS is verified: trusting only the system's CAs, the broker's
    // certificate (from the test CA) is refused
    let system_ca = dir.path().join("system-ca.yaml");
    std::fs::write(
        &system_ca,
        "velostream:\n  kafka:\n    ssl.ca.location: /etc/ssl/certs/ca-certificates.crt\n",
    )
    .unwrap();
    let untrusted = velostream()
        .arg("check")
        .arg("--config")
        .arg(guide("production.yaml"))
        .arg("--config")
        .arg(&client)
        .arg("--config")
        .arg(&system_ca)
        .envs(credentials)
        .output()
        .unwrap();
    assert!(
        text(&untrusted).contains("FAIL kafka: ")
            && text(&untrusted).contains("certificate verify failed"),
        "{}",
        text(&untrusted)
    );

    // a service with a wrong password is not ready, and says why
    let (health2, metrics2) = (free_port(), free_port());
    let refused_dir = dir.path().join("refused");
    std::fs::create_dir(&refused_dir).unwrap();
    let _refused = start_with(
        &service_config("refused.yaml", health2, metrics2, &idle),
        &refused_dir,
        &wrong,
    );
    let mut reason = wait_for(health2, "/ready", 503, Duration::from_secs(30));
    let deadline = Instant::now() + Duration::from_secs(60);
    while !reason.contains("SASL authentication error") {
        assert!(Instant::now() < deadline, "{reason}");
        std::thread::sleep(Duration::from_millis(200));
        reason = request(health2, "GET", "/ready", "").1;
    }
    assert!(!reason.contains("not-the-password"), "{reason}");
    let (_, text) = request(metrics2, "GET", "/metrics", "");
    assert!(
        text.lines().any(|l| l == "kafka_broker_availability 0"),
        "{text}"
    );
}
