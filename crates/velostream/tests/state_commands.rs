//! The state commands on a real state directory: a job resumes a growing
//! file from its checkpoint, `state list` shows the checkpoints, `state
//! backup` copies them, and `state restore --at` brings back an earlier
//! one, from which the next run recomputes exactly the later output.

use std::path::Path;
use std::process::Command;

fn velostream(args: &[&str], dir: &Path) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_velostream"))
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "velostream {args:?} failed:\n{text}");
    text
}

fn append(path: &Path, from: usize, to: usize) {
    use std::io::Write;
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .unwrap();
    for i in from..to {
        if i % 100 == 50 {
            writeln!(f, "not json {i}").unwrap(); // rejected, to the dead-letter file
        } else {
            writeln!(f, r#"{{"id": {i}, "qty": {}}}"#, i % 7).unwrap();
        }
    }
}

const RUN: &[&str] = &[
    "run",
    "app.sql",
    "--checkpoint-interval",
    "1s",
    "--state-dir",
    "state",
    "--guarantee",
    "exactly_once",
];

#[test]
fn backup_and_point_in_time_restore_of_checkpoints() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::write(
        d.join("app.sql"),
        "-- @name: big\nCREATE STREAM big AS SELECT id, qty * 2 AS q FROM input WHERE qty > 0
         WITH ('input.type' = 'file_source', 'input.path' = 'input.jsonl',
               'big.type' = 'file_sink', 'big.path' = 'out.jsonl',
               'dead_letter.type' = 'file_sink', 'dead_letter.path' = 'rejects.jsonl');",
    )
    .unwrap();
    let lines = |p: &str| std::fs::read_to_string(d.join(p)).unwrap().lines().count();

    append(&d.join("input.jsonl"), 0, 1000);
    assert!(velostream(RUN, d).contains("990 records in"));
    let first = lines("out.jsonl");
    std::thread::sleep(std::time::Duration::from_millis(50));
    let between = chrono::Utc::now().timestamp_millis();
    std::thread::sleep(std::time::Duration::from_millis(50));
    // the file grew: the next run reads only the new records
    append(&d.join("input.jsonl"), 1000, 1500);
    assert!(velostream(RUN, d).contains("495 records in"));
    let both = lines("out.jsonl");
    assert!(both > first);
    assert_eq!(
        lines("rejects.jsonl"),
        15,
        "the second run added to the first's rejects"
    );

    let listed = velostream(&["state", "list", "--state-dir", "state"], d);
    assert!(listed.contains("big\n"), "{listed}");
    assert_eq!(listed.matches("  checkpoint ").count(), 2, "{listed}");
    assert!(!listed.contains("DAMAGED"), "{listed}");

    velostream(
        &["state", "backup", "--state-dir", "state", "--to", "backup"],
        d,
    );
    let err = Command::new(env!("CARGO_BIN_EXE_velostream"))
        .args(["state", "backup", "--state-dir", "state", "--to", "backup"])
        .current_dir(d)
        .output()
        .unwrap();
    assert!(
        !err.status.success(),
        "backing up over an existing backup is refused"
    );

    // back to the first checkpoint: the next run redoes the last 500
    // records and the output is what it was, without duplicates
    let restored = velostream(
        &[
            "state",
            "restore",
            "--from",
            "backup",
            "--state-dir",
            "state",
            "--at",
            &between.to_string(),
        ],
        d,
    );
    assert!(
        restored.contains("big: restored up to checkpoint 1"),
        "{restored}"
    );
    assert!(velostream(RUN, d).contains("495 records in"));
    assert_eq!(lines("out.jsonl"), both);
    // rejected records were cut back with the results: each one once
    assert_eq!(lines("rejects.jsonl"), 15, "one per 100 records");
    let ids: std::collections::BTreeSet<i64> = std::fs::read_to_string(d.join("out.jsonl"))
        .unwrap()
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["id"]
                .as_i64()
                .unwrap()
        })
        .collect();
    assert_eq!(ids.len(), both, "no id twice");

    // reset: the next run starts over and reads everything
    velostream(
        &["state", "reset", "--state-dir", "state", "--job", "big"],
        d,
    );
    assert!(velostream(RUN, d).contains("1485 records in"));
    assert_eq!(
        lines("out.jsonl"),
        both,
        "a fresh start truncates the output"
    );
}

/// Two jobs of one name on one state directory would write over each
/// other's checkpoints: the second is refused while the first runs, and so
/// is `state reset`; once it has stopped, both go ahead.
#[test]
fn a_running_job_keeps_its_state_to_itself() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::write(
        d.join("app.sql"),
        "-- @name: bids\nCREATE STREAM bids AS SELECT auction, price FROM bid
         WITH ('bid.type' = 'nexmark', 'bid.throttle' = 'true', 'bid.rate' = '1000',
               'bids.type' = 'null');",
    )
    .unwrap();
    let run = [
        "run",
        "app.sql",
        "--checkpoint-interval",
        "200ms",
        "--state-dir",
        "state",
    ];
    let first = Command::new(env!("CARGO_BIN_EXE_velostream"))
        .args(run)
        .current_dir(d)
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while !d.join("state/bids/LOCK").exists()
        || std::fs::read_to_string(d.join("state/bids/LOCK"))
            .unwrap_or_default()
            .is_empty()
    {
        assert!(
            std::time::Instant::now() < deadline,
            "the job never started"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let second = Command::new(env!("CARGO_BIN_EXE_velostream"))
        .args(run)
        .current_dir(d)
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&second.stderr);
    assert!(!second.status.success(), "{said}");
    assert!(
        said.contains(&format!(
            "job bids: its state in state/bids is in use by a running job of the same name (process {})",
            first.id()
        )),
        "{said}"
    );
    let reset = Command::new(env!("CARGO_BIN_EXE_velostream"))
        .args(["state", "reset", "--state-dir", "state", "--job", "bids"])
        .current_dir(d)
        .output()
        .unwrap();
    assert!(!reset.status.success());
    assert!(
        String::from_utf8_lossy(&reset.stderr).contains("in use by a running job"),
        "{}",
        String::from_utf8_lossy(&reset.stderr)
    );
    assert!(Command::new("kill")
        .args(["-TERM", &first.id().to_string()])
        .status()
        .unwrap()
        .success());
    let mut first = first;
    assert!(first.wait().unwrap().success());
    velostream(
        &["state", "reset", "--state-dir", "state", "--job", "bids"],
        d,
    );
}
