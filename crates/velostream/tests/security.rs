//! The service as a shared network sees it: every route answers each
//! kind of caller by its role, the guide's documents keep their loopback
//! procedures, deployments outside the sandbox are refused and leave
//! nothing behind, names cannot climb out of the state directory, and no
//! configured secret shows in any output.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

mod service_support;
use service_support::{call, free_port, start, start_with, wait_for, Answer, TestCa};
use velostream::tools::api_client::{ApiAuth, ApiClient};

const VIEWER: &str = "viewer-7d1c0e5b2a";
const OPERATOR: &str = "operator-94b7f2c3d1";
const ADMIN: &str = "admin-3e8a6f0b9c";

/// A tokens file with one token per role (named grafana, oncall, ci).
fn tokens_file(dir: &Path) -> PathBuf {
    let file = dir.join("tokens.yaml");
    let entry = |name: &str, role: &str, token: &str| {
        format!(
            "- name: {name}\n  role: {role}\n  sha256: {}\n",
            velostream_server::auth::tokens::digest_hex(token)
        )
    };
    std::fs::write(
        &file,
        [
            entry("grafana", "viewer", VIEWER),
            entry("oncall", "operator", OPERATOR),
            entry("ci", "admin", ADMIN),
        ]
        .concat(),
    )
    .unwrap();
    file
}

/// A bounded application `totals` in `dir` reading `dir/trades.jsonl`.
fn application(dir: &Path) -> PathBuf {
    let lines: String = (0..100)
        .map(|i| format!("{{\"symbol\": \"S{}\", \"qty\": {i}}}\n", i % 3))
        .collect();
    std::fs::write(dir.join("trades.jsonl"), lines).unwrap();
    let app = dir.join("totals.sql");
    std::fs::write(
        &app,
        "CREATE STREAM totals AS SELECT symbol, SUM(qty) AS q FROM trades GROUP BY symbol
         WITH ('trades.type' = 'file_source', 'trades.path' = 'trades.jsonl', 'totals.type' = 'null');",
    )
    .unwrap();
    app
}

/// A configuration with the ports, a state directory, `totals` and `more` YAML.
fn config(dir: &Path, health: u16, metrics: u16, more: &str) -> PathBuf {
    let file = dir.join("service.yaml");
    std::fs::write(
        &file,
        format!(
            "velostream:\n  monitoring:\n    bind_address: 127.0.0.1\n    health_check_port: {health}\n    metrics_port: {metrics}\n  state_dir: {}\n  applications:\n    - name: totals\n      path: {}\nlogging:\n  outputs:\n    - type: console\n{more}",
            dir.join("state").display(),
            application(dir).display(),
        ),
    )
    .unwrap();
    file
}

/// [`config`] with the tokens of [`tokens_file`] (`security.auth.mode:
/// token`) and `more` YAML inside `security`.
fn token_config(dir: &Path, health: u16, metrics: u16, more: &str) -> PathBuf {
    let tokens = tokens_file(dir);
    config(
        dir,
        health,
        metrics,
        &format!(
            "security:\n  auth:\n    mode: token\n    tokens_file: {}\n{more}",
            tokens.display()
        ),
    )
}

/// `POST /jobs` of application `name` with `sql`, as JSON.
fn deployment(name: &str, sql: &str) -> String {
    serde_json::json!({"name": name, "sql": sql}).to_string()
}

#[test]
fn every_route_answers_each_caller_by_its_role() {
    let dir = tempfile::tempdir().unwrap();
    let (health, metrics) = (free_port(), free_port());
    let config = token_config(
        dir.path(),
        health,
        metrics,
        "  limits:\n    max_sql_bytes: 4096\n    max_applications: 2\n",
    );
    let _service = start(&[config], dir.path());
    wait_for(health, "/ready", 200, Duration::from_secs(60));

    let copy = deployment(
        "copy",
        &format!(
            "CREATE STREAM copy AS SELECT symbol FROM trades WITH ('trades.type' = 'file_source', 'trades.path' = '{}', 'copy.type' = 'null');",
            dir.path().join("trades.jsonl").display()
        ),
    );
    let callers: [(&str, Option<String>); 5] = [
        ("no credential", None),
        ("unknown token", Some("Bearer not-a-token".to_string())),
        ("viewer", Some(format!("Bearer {VIEWER}"))),
        ("operator", Some(format!("Bearer {OPERATOR}"))),
        ("admin", Some(format!("Bearer {ADMIN}"))),
    ];
    // (port, method, path, body, status per caller in the order above)
    let table: [(u16, &str, &str, &str, [u16; 5]); 9] = [
        (health, "GET", "/health", "", [200, 200, 200, 200, 200]),
        (health, "GET", "/ready", "", [200, 200, 200, 200, 200]),
        (metrics, "GET", "/metrics", "", [200, 200, 200, 200, 200]),
        (health, "GET", "/jobs", "", [401, 401, 200, 200, 200]),
        (health, "GET", "/jobs/totals", "", [401, 401, 200, 200, 200]),
        (health, "POST", "/checkpoint", "", [401, 401, 403, 200, 200]),
        (health, "POST", "/resume", "", [401, 401, 403, 200, 200]),
        (health, "POST", "/jobs", &copy, [401, 401, 403, 403, 201]),
        (
            health,
            "DELETE",
            "/jobs/copy",
            "",
            [401, 401, 403, 200, 200],
        ),
    ];
    let mut wrong = Vec::new();
    for (port, method, path, body, expected) in table {
        for ((who, header), want) in callers.iter().zip(expected) {
            let headers: Vec<(&str, &str)> = header
                .iter()
                .map(|h| ("Authorization", h.as_str()))
                .collect();
            let Answer {
                status,
                headers: head,
                body: text,
            } = call(port, method, path, &headers, body);
            if status != want {
                wrong.push(format!(
                    "{method} {path} as {who}: {status}, expected {want}: {text}"
                ));
                continue;
            }
            match status {
                401 => {
                    assert!(
                        head.to_ascii_lowercase()
                            .contains("www-authenticate: bearer"),
                        "{method} {path} as {who}: {head}"
                    );
                    assert!(text.contains(r#""error":"#), "{text}");
                }
                403 => {
                    let role = if path == "/jobs" && method == "POST" {
                        "needs admin"
                    } else {
                        "needs operator"
                    };
                    assert!(text.contains(role), "{method} {path} as {who}: {text}");
                }
                _ => {}
            }
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));

    // the limits: SQL text size and number of applications (totals and copy)
    let admin = [("Authorization", format!("Bearer {ADMIN}"))];
    let admin: Vec<(&str, &str)> = admin.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let big = call(
        health,
        "POST",
        "/jobs",
        &admin,
        &deployment("big", &"-".repeat(5000)),
    );
    assert_eq!(big.status, 413, "{}", big.body);
    assert!(
        big.body.contains("security.limits.max_sql_bytes"),
        "{}",
        big.body
    );
    let third = call(
        health,
        "POST",
        "/jobs",
        &admin,
        &deployment("third", "SELECT 1"),
    );
    assert_eq!(third.status, 409, "{}", third.body);
    assert!(
        third.body.contains("security.limits.max_applications"),
        "{}",
        third.body
    );

    // the CLI holds the service with a token from VELOSTREAM_TOKEN
    let backup = |token: Option<&str>, to: &str| {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_velostream"));
        cmd.args(["state", "backup", "--state-dir"])
            .arg(dir.path().join("state"))
            .arg("--to")
            .arg(dir.path().join(to))
            .arg("--service")
            .arg(format!("http://127.0.0.1:{health}"))
            .env_remove("VELOSTREAM_TOKEN");
        if let Some(t) = token {
            cmd.env("VELOSTREAM_TOKEN", t);
        }
        cmd.output().unwrap()
    };
    let refused = backup(None, "b1");
    let said = String::from_utf8_lossy(&refused.stderr);
    assert!(!refused.status.success() && said.contains("401"), "{said}");
    let held = backup(Some(OPERATOR), "b2");
    let said = String::from_utf8_lossy(&held.stderr);
    assert!(held.status.success(), "{said}");

    // every mutating request is one audit record, allowed or refused;
    // callers are named by their token's name, never by the token
    let log = std::fs::read_to_string(dir.path().join("service.log")).unwrap();
    let audit: Vec<&str> = log.lines().filter(|l| l.contains("audit: ")).collect();
    assert_eq!(
        audit.len(),
        4 * 5 + 2 + 1 + 2,
        "one audit record per mutating request:\n{log}"
    );
    assert!(
        audit
            .iter()
            .any(|l| l.contains("ci (admin)") && l.contains("POST /jobs application copy: 201")),
        "{}",
        audit.join("\n")
    );
    assert!(
        audit.iter().any(|l| l.contains("grafana (viewer)")
            && l.contains("POST /checkpoint")
            && l.contains(": 403")),
        "{}",
        audit.join("\n")
    );
    assert!(
        audit
            .iter()
            .any(|l| l.contains("audit: - (-)")
                && l.contains("DELETE /jobs/copy application copy: 401")),
        "{}",
        audit.join("\n")
    );
    for token in [VIEWER, OPERATOR, ADMIN] {
        assert!(!log.contains(token), "a token reached the log");
    }
}

#[test]
fn without_security_auth_local_callers_operate_and_nobody_deploys() {
    let dir = tempfile::tempdir().unwrap();
    let (health, metrics) = (free_port(), free_port());
    let config = config(dir.path(), health, metrics, "");
    let _service = start(&[config], dir.path());
    wait_for(health, "/ready", 200, Duration::from_secs(60));
    // the guide's procedures: curl -X POST http://localhost:8080/checkpoint
    for (method, path, want) in [
        ("GET", "/jobs", 200),
        ("POST", "/checkpoint", 200),
        ("POST", "/resume", 200),
        ("DELETE", "/jobs/nothing", 404),
    ] {
        let a = call(health, method, path, &[], "");
        assert_eq!(a.status, want, "{method} {path}: {}", a.body);
    }
    let refused = call(health, "POST", "/jobs", &[], &deployment("x", "SELECT 1"));
    assert_eq!(refused.status, 403, "{}", refused.body);
    assert!(
        refused
            .body
            .contains("local has role operator; POST /jobs needs admin"),
        "{}",
        refused.body
    );
    let log = std::fs::read_to_string(dir.path().join("service.log")).unwrap();
    assert!(
        log.contains("callers on loopback act as operator, others as viewer"),
        "{log}"
    );
}

/// The guide's `tls-config.yaml` (mutual TLS on both ports, TLS 1.2 and
/// up, its cipher list) with `security.auth.mode: mtls`: certificates get
/// the roles of their identities, and `velostream health` and
/// `velostream state backup --service` work with a client certificate.
#[test]
fn mutual_tls_gives_certificates_their_roles_and_the_tools_speak_it() {
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new(dir.path());
    let ops = ca.client("ops-bot", "");
    let deployer = ca.client("", "deploy.ci.internal");
    let stranger = ca.client("stranger", "");
    let (health, metrics) = (free_port(), free_port());
    let local = config(
        dir.path(),
        health,
        metrics,
        &format!(
            "security:\n  tls:\n    cert_file: {}\n    key_file: {}\n    ca_file: {}\n  auth:\n    mode: mtls\n    identities:\n      ops-bot: operator\n      deploy.ci.internal: admin\n",
            ca.server_cert.display(),
            ca.server_key.display(),
            ca.ca_file.display()
        ),
    );
    // checkpoints, so that the backup below has something to copy
    let text = std::fs::read_to_string(&local).unwrap().replacen(
        "velostream:\n",
        "velostream:\n  processing:\n    checkpoint_interval: 1s\n",
        1,
    );
    std::fs::write(&local, text).unwrap();
    let guide =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../config/guide/tls-config.yaml");
    let _service = start(&[guide, local], dir.path());

    let client = |(cert, key): &(PathBuf, PathBuf)| {
        ApiClient::new(ApiAuth {
            token: None,
            cacert: Some(ca.ca_file.clone()),
            cert: Some(cert.clone()),
            key: Some(key.clone()),
        })
        .unwrap()
    };
    let (ops_client, deployer_client, stranger_client) =
        (client(&ops), client(&deployer), client(&stranger));
    let url = |path: &str| format!("https://127.0.0.1:{health}{path}");
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while ops_client.get(&url("/ready")).map(|r| r.status).ok() != Some(200) {
        assert!(
            std::time::Instant::now() < deadline,
            "never ready over mTLS"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let copy = deployment(
        "copy",
        &format!(
            "CREATE STREAM copy AS SELECT symbol FROM trades WITH ('trades.type' = 'file_source', 'trades.path' = '{}', 'copy.type' = 'null');",
            dir.path().join("trades.jsonl").display()
        ),
    );
    // (method, path, body, status for ops-bot, deploy.ci.internal, stranger)
    let table: [(&str, &str, Option<&str>, [u16; 3]); 5] = [
        ("GET", "/health", None, [200, 200, 200]),
        ("GET", "/jobs", None, [200, 200, 403]),
        ("POST", "/checkpoint", None, [200, 200, 403]),
        ("POST", "/resume", None, [200, 200, 403]),
        ("POST", "/jobs", Some(copy.as_str()), [403, 201, 403]),
    ];
    for (method, path, body, expected) in table {
        for ((who, c), want) in [
            ("ops-bot", &ops_client),
            ("deploy.ci.internal", &deployer_client),
            ("stranger", &stranger_client),
        ]
        .into_iter()
        .zip(expected)
        {
            let answer = c.request(method, &url(path), body).unwrap();
            assert_eq!(
                answer.status, want,
                "{method} {path} as {who}: {}",
                answer.body
            );
            if who == "stranger" && want == 403 {
                assert!(
                    answer.body.contains("'stranger' has no role"),
                    "{}",
                    answer.body
                );
            }
        }
    }
    // without a client certificate the handshake itself is refused
    let anonymous = ApiClient::new(ApiAuth {
        cacert: Some(ca.ca_file.clone()),
        ..ApiAuth::default()
    })
    .unwrap();
    assert!(anonymous.get(&url("/health")).is_err());

    let velostream = |args: &[&str], (cert, key): &(PathBuf, PathBuf)| {
        Command::new(env!("CARGO_BIN_EXE_velostream"))
            .args(args)
            .arg("--cacert")
            .arg(&ca.ca_file)
            .arg("--cert")
            .arg(cert)
            .arg("--key")
            .arg(key)
            .output()
            .unwrap()
    };
    let probe = velostream(
        &[
            "health",
            "--url",
            &url("/health"),
            "--metrics-url",
            &format!("https://127.0.0.1:{metrics}/metrics"),
        ],
        &ops,
    );
    let said = String::from_utf8_lossy(&probe.stdout);
    assert!(probe.status.success(), "{said}");
    assert!(
        said.contains("PASS Velostream is healthy") && said.contains("PASS Metrics is healthy"),
        "{said}"
    );
    let state = dir.path().join("state");
    let backup = dir.path().join("backup");
    let service = format!("https://127.0.0.1:{health}");
    let base = [
        "state",
        "backup",
        "--state-dir",
        state.to_str().unwrap(),
        "--service",
        service.as_str(),
        "--to",
    ];
    let refused = velostream(
        &[&base[..], &[backup.to_str().unwrap()]].concat(),
        &stranger,
    );
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(
        !refused.status.success() && stderr.contains("403"),
        "{stderr}"
    );
    assert!(
        !backup.exists(),
        "nothing is copied when the hold is refused"
    );
    let done = velostream(&[&base[..], &[backup.to_str().unwrap()]].concat(), &ops);
    let stderr = String::from_utf8_lossy(&done.stderr);
    assert!(done.status.success(), "{stderr}");
    assert!(
        backup.join("jobs/totals/totals/checkpoints").is_dir(),
        "the service's job state is under jobs/<application>/<statement>"
    );
}

#[test]
fn deployments_outside_the_sandbox_are_refused_and_leave_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let outside = tempfile::tempdir().unwrap();
    let (health, metrics) = (free_port(), free_port());
    let config = token_config(dir.path(), health, metrics, "");
    // a configured cluster the applications may use (nothing listens there)
    let with_kafka = std::fs::read_to_string(&config).unwrap().replacen(
        "velostream:\n",
        "velostream:\n  kafka:\n    bootstrap_servers: 127.0.0.1:9\n",
        1,
    );
    std::fs::write(&config, with_kafka).unwrap();
    let _service = start(&[config], dir.path());
    wait_for(health, "/health", 200, Duration::from_secs(60));
    let data = dir.path().join("trades.jsonl");
    let leaked = outside.path().join("leak.jsonl");
    let read_data = format!(
        "CREATE STREAM t (symbol VARCHAR) WITH ('type' = 'file_source', 'path' = '{}');",
        data.display()
    );
    let cases: [(&str, String, &[&str]); 6] = [
        (
            "passwd",
            "CREATE STREAM pw (u VARCHAR, x VARCHAR) WITH ('type' = 'file_source', 'path' = '/etc/passwd', 'format' = 'csv_no_header', 'delimiter' = ':');
             CREATE STREAM leak AS SELECT u FROM pw WITH ('leak.type' = 'null');".to_string(),
            &["'path' = '/etc/passwd' is refused", "security.sandbox.allowed_paths"],
        ),
        (
            "through",
            format!("{read_data} CREATE STREAM leak AS SELECT symbol FROM t WITH ('leak.type' = 'file_sink', 'leak.path' = '{}');", leaked.display()),
            &["is refused", "may only open files inside"],
        ),
        (
            "climb",
            format!("{read_data} CREATE STREAM leak AS SELECT symbol FROM t WITH ('leak.type' = 'file_sink', 'leak.path' = '{}/../{}/leak.jsonl');", dir.path().display(), outside.path().display()),
            &["is refused", "may only open files inside"],
        ),
        (
            "cluster",
            format!("{read_data} CREATE STREAM leak AS SELECT symbol FROM t WITH ('leak.type' = 'kafka_sink', 'leak.topic' = 'x', 'leak.bootstrap.servers' = '127.0.0.1:19092');"),
            &["'bootstrap.servers' = '127.0.0.1:19092' is refused", "127.0.0.1:9"],
        ),
        (
            "plugin",
            format!("{read_data} CREATE STREAM leak AS SELECT symbol FROM t WITH ('leak.type' = 'kafka_sink', 'leak.topic' = 'x', 'leak.plugin.library.paths' = '{}/evil.so');", outside.path().display()),
            &["'plugin.library.paths' is refused", "load code"],
        ),
        (
            "climber",
            format!("{read_data} CREATE STREAM \"../x\" AS SELECT symbol FROM t WITH ('../x.type' = 'null');"),
            &["job name '../x'", "rename the statement"],
        ),
    ];
    for (name, sql, said) in cases {
        let a = call(
            health,
            "POST",
            "/jobs",
            &[("Authorization", &format!("Bearer {ADMIN}"))],
            &deployment(name, &sql),
        );
        assert_eq!(a.status, 422, "{name}: {}", a.body);
        for words in said {
            assert!(a.body.contains(words), "{name}: {words} not in {}", a.body);
        }
    }
    // nothing was written or kept for the refused applications
    assert!(!leaked.exists());
    assert_eq!(std::fs::read_dir(outside.path()).unwrap().count(), 0);
    let deployed = dir.path().join("state/applications");
    let kept: Vec<_> = std::fs::read_dir(&deployed)
        .map(|d| d.flatten().map(|e| e.file_name()).collect())
        .unwrap_or_default();
    assert!(kept.is_empty(), "{kept:?}");
    let jobs = call(
        health,
        "GET",
        "/jobs",
        &[("Authorization", &format!("Bearer {VIEWER}"))],
        "",
    );
    assert!(
        jobs.body.contains(r#""name":"totals""#) && !jobs.body.contains("leak"),
        "{}",
        jobs.body
    );
    // an application name that climbs is refused before anything
    let a = call(
        health,
        "POST",
        "/jobs",
        &[("Authorization", &format!("Bearer {ADMIN}"))],
        &deployment("../x", "SELECT 1"),
    );
    assert_eq!(a.status, 400, "{}", a.body);
}

#[test]
fn a_statement_name_that_climbs_is_an_sql_error_in_run_too() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("in.jsonl"), "{\"a\": 1}\n").unwrap();
    let app = dir.path().join("app.sql");
    std::fs::write(
        &app,
        "CREATE STREAM s (a BIGINT) WITH ('type' = 'file_source', 'path' = 'in.jsonl');\n-- @name: ../../etc/x\nCREATE STREAM o AS SELECT a FROM s;\n",
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_velostream"))
        .arg("run")
        .arg(&app)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("job name '../../etc/x' contains '/'") && stderr.contains(":3:"),
        "{stderr}"
    );
}

/// The secrets of a configuration — a Kafka SASL password, a database
/// password, an API token — and one in the SQL of an application that
/// fails: none of them in the service's output, logs, audit records or
/// API answers, nor in `explain`.
#[test]
fn configured_secrets_never_show() {
    const KAFKA_SECRET: &str = "kafka-pw-5be1d9";
    const DB_SECRET: &str = "db-pw-0c77a2";
    let dir = tempfile::tempdir().unwrap();
    let (health, metrics) = (free_port(), free_port());
    let tokens = tokens_file(dir.path());
    // an application that fails at planning, on the line with its secret
    let failing = dir.path().join("failing.sql");
    std::fs::write(
        &failing,
        format!(
            "CREATE STREAM t (symbol VARCHAR) WITH ('type' = 'file_source', 'path' = 'trades.jsonl');\nCREATE STREAM out AS SELECT nope FROM t WITH ('out.type' = 'kafka_sink', 'out.topic' = 'x', 'out.sasl.password' = '{KAFKA_SECRET}', 'out.security.protocol' = 'SASL_PLAINTEXT');\n"
        ),
    )
    .unwrap();
    let log_file = dir.path().join("velostream.log");
    let config = config(
        dir.path(),
        health,
        metrics,
        &format!(
            "    - type: file\n      path: {}\nsecurity:\n  auth:\n    mode: token\n    tokens_file: {}\n",
            log_file.display(),
            tokens.display()
        ),
    );
    let text = std::fs::read_to_string(&config).unwrap().replacen(
        "  applications:\n",
        &format!(
            "  kafka:\n    bootstrap_servers: 127.0.0.1:9\n    security_protocol: SASL_PLAINTEXT\n    sasl_username: svc\n    sasl_password: {KAFKA_SECRET}\n  database:\n    host: 127.0.0.1\n    port: 1\n    user: app\n    name: app\n  applications:\n    - name: failing\n      path: {}\n",
            failing.display()
        ),
        1,
    );
    std::fs::write(&config, text).unwrap();
    let stdout = dir.path().join("service.out");
    let mut service = start_with(&[config], dir.path(), &[("DB_PASSWORD", DB_SECRET)]);
    wait_for(health, "/health", 200, Duration::from_secs(60));
    // the failing application has failed at least once and the probes ran
    let mut answers = String::new();
    let auth = format!("Bearer {ADMIN}");
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let a = call(
            health,
            "GET",
            "/jobs/failing",
            &[("Authorization", &auth)],
            "",
        );
        if a.body.contains("\"failed\"") || a.body.contains("breaker_open") {
            answers.push_str(&a.body);
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "never failed: {}",
            a.body
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(answers.contains("'out.sasl.password' = '***'"), "{answers}");
    let again = deployment("again", &std::fs::read_to_string(&failing).unwrap());
    for (port, method, path, body) in [
        (health, "GET", "/jobs", ""),
        (health, "GET", "/ready", ""),
        (health, "GET", "/health", ""),
        (metrics, "GET", "/metrics", ""),
        (health, "POST", "/jobs", again.as_str()),
    ] {
        answers.push_str(&call(port, method, path, &[("Authorization", &auth)], body).body);
    }
    let explain = Command::new(env!("CARGO_BIN_EXE_velostream"))
        .arg("explain")
        .arg(&failing)
        .output()
        .unwrap();
    let _ = service.0.kill();
    let _ = service.0.wait();
    let outputs = [
        ("API answers", answers),
        (
            "service stderr",
            std::fs::read_to_string(dir.path().join("service.log")).unwrap(),
        ),
        (
            "log file",
            std::fs::read_to_string(&log_file).unwrap_or_default(),
        ),
        (
            "stdout",
            std::fs::read_to_string(&stdout).unwrap_or_default(),
        ),
        (
            "explain",
            String::from_utf8_lossy(&explain.stdout).into_owned()
                + &String::from_utf8_lossy(&explain.stderr),
        ),
    ];
    assert!(
        outputs[2].1.contains("audit"),
        "the log file has the audit records"
    );
    for (what, text) in &outputs {
        for secret in [KAFKA_SECRET, DB_SECRET, ADMIN] {
            assert!(
                !text.contains(secret),
                "{secret} shows in the {what}:\n{text}"
            );
        }
    }
}
