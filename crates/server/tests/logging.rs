//! Logging per logging-config.yaml: JSON records with the structured
//! fields, rotation by size and count, level filters, syslog over UDP, and
//! secrets masked.

use std::net::UdpSocket;
use std::time::Duration;

use velostream_server::config::schema::Logging;
use velostream_server::logging::subscriber;

fn logging(yaml: &str) -> Logging {
    serde_yaml_ng::from_str(yaml).unwrap()
}

#[test]
fn json_records_rotate_by_size_and_keep_the_configured_backups() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("logs/app.log");
    let config = logging(&format!(
        "level: INFO\nformat: json\noutputs:\n  - type: file\n    path: {}\n    rotation:\n      max_size: 2KB\n      max_age: 7d\n      max_backups: 2\nstructured_fields: [timestamp, level, message, trace_id, span_id, component, error_type]\n",
        path.display()
    ));
    let sub = subscriber(Some(&config), None).unwrap();
    tracing::subscriber::with_default(sub, || {
        let job = tracing::info_span!("job", name = "orders");
        let _in_job = job.enter();
        let batch = tracing::info_span!("batch");
        let _in_batch = batch.enter();
        for i in 0..100 {
            tracing::warn!(
                component = "engine",
                error_type = "malformed_record",
                password = "hunter2",
                "record {i} skipped"
            );
        }
        tracing::debug!("not written at INFO");
    });
    let current = std::fs::read_to_string(&path).unwrap();
    let first: serde_json::Value = serde_json::from_str(current.lines().next().unwrap()).unwrap();
    for key in [
        "timestamp",
        "level",
        "message",
        "trace_id",
        "span_id",
        "component",
        "error_type",
    ] {
        assert!(
            first.get(key).is_some_and(|v| !v.is_null()),
            "{key} missing in {first}"
        );
    }
    assert_eq!(first["level"], "WARN");
    assert_eq!(first["component"], "engine");
    assert_eq!(first["error_type"], "malformed_record");
    assert_eq!(first["password"], "***");
    assert!(!current.contains("hunter2") && !current.contains("not written"));
    // rotation: the current file, .1 and .2; nothing older kept
    let backup = |n: u32| dir.path().join(format!("logs/app.log.{n}"));
    assert!(backup(1).exists() && backup(2).exists() && !backup(3).exists());
    for file in [path.clone(), backup(1), backup(2)] {
        let len = std::fs::metadata(&file).unwrap().len();
        assert!(len <= 2_000, "{} is {len} bytes", file.display());
    }
    // records of one trace share its id; the span ids are the innermost span's
    let ids: Vec<(String, String)> = current
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            (
                v["trace_id"].as_str().unwrap().to_string(),
                v["span_id"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert!(ids.windows(2).all(|w| w[0] == w[1]));
    assert_eq!(ids[0].0.len(), 32);
}

#[test]
fn syslog_gets_rfc_5424_messages_over_udp() {
    let receiver = UdpSocket::bind("127.0.0.1:0").unwrap();
    receiver
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let port = receiver.local_addr().unwrap().port();
    let config = logging(&format!(
        "format: text\noutputs:\n  - type: syslog\n    host: 127.0.0.1\n    port: {port}\n    level: WARN\n"
    ));
    let sub = subscriber(Some(&config), None).unwrap();
    tracing::subscriber::with_default(sub, || {
        tracing::info!("below the syslog level");
        tracing::warn!(component = "kafka", "broker unreachable");
    });
    let mut buf = [0u8; 2048];
    let n = receiver.recv(&mut buf).unwrap();
    let datagram = String::from_utf8_lossy(&buf[..n]);
    // facility user (1) * 8 + severity warning (4) = 12, version 1
    assert!(datagram.starts_with("<12>1 "), "{datagram}");
    assert!(
        datagram.contains(" velostream ") && datagram.contains("kafka: broker unreachable"),
        "{datagram}"
    );
    receiver
        .set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    assert!(
        receiver.recv(&mut buf).is_err(),
        "the INFO record must not be sent"
    );
}

#[test]
fn an_unreachable_syslog_host_or_unwritable_file_fails_naming_the_output() {
    let config = logging("outputs:\n  - type: console\n  - type: syslog\n    host: no-such-host.invalid\n    port: 514\n");
    let err = subscriber(Some(&config), None).err().unwrap();
    assert!(
        err.contains("logging.outputs[1]") && err.contains("no-such-host.invalid"),
        "{err}"
    );
    let config = logging("outputs:\n  - type: file\n    path: /proc/velostream/app.log\n");
    let err = subscriber(Some(&config), None).err().unwrap();
    assert!(
        err.contains("logging.outputs[0]") && err.contains("/proc/velostream/app.log"),
        "{err}"
    );
}
