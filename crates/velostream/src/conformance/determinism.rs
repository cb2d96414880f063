//! The determinism check: an event-time answer is a function of the input
//! order alone. A case is run with one record per batch, with seven, with
//! the default batch size, with two pipelines per job and with its inputs
//! decoded on several threads; every run must write the same rows and
//! count the same late and malformed records.
//!
//! Rows are compared in any order: a batch that closes several windows at
//! once emits them together, and two pipelines interleave their keys. A
//! changelog (an aggregate that emits changes) is compared as the table
//! it builds — the last row of each key — because how many intermediate
//! updates it emits follows the batching by design (updates within a batch
//! are coalesced).

use std::collections::BTreeMap;

use serde_json::Value;

use super::compare::compare;
use super::spec::Case;
use super::{execute, Changelog, Run, Variant, DEFAULT_BATCH_SIZE};

/// The batch sizes every event-time case runs with.
pub const BATCH_SIZES: &[usize] = &[1, 7, DEFAULT_BATCH_SIZE];

/// Whether a case's answer rests on event time: windows, sessions,
/// watermarks and late data, interval joins. Cases that expect an error,
/// and processing-time windows (their answer follows the clock), are left out.
pub fn is_event_time_case(case: &Case) -> bool {
    let sql = case.sql.to_ascii_lowercase();
    let event_time = [
        "window",
        "session(",
        "event.time",
        "watermark",
        "within",
        "interval",
    ]
    .iter()
    .any(|word| sql.contains(word));
    event_time && case.expect_error.is_none() && !sql.contains("proctime")
}

/// Runs `case` every way; `Err` names the runs that differ and how.
pub fn check(case: &Case) -> Result<(), String> {
    let mut runs = Vec::new();
    for &batch_size in BATCH_SIZES {
        let variant = Variant {
            batch_size: Some(batch_size),
            ..Variant::default()
        };
        runs.push((format!("batch size {batch_size}"), execute(case, variant)?));
    }
    let two_pipelines = Variant {
        batch_size: Some(DEFAULT_BATCH_SIZE),
        parallelism: 2,
        ..Variant::default()
    };
    runs.push(("two pipelines".to_string(), execute(case, two_pipelines)?));
    let parallel_decoding = Variant {
        batch_size: Some(7),
        ..Variant::parallel_decoding()
    };
    runs.push((
        "parallel decoding".to_string(),
        execute(case, parallel_decoding)?,
    ));
    let (base_name, base) = &runs[0];
    let base_tables = tables(base);
    let mut failures = Vec::new();
    for (name, run) in &runs[1..] {
        if (run.late_records, run.bad_records) != (base.late_records, base.bad_records) {
            failures.push(format!(
                "{name}: {} late and {} malformed records, {base_name}: {} and {}",
                run.late_records, run.bad_records, base.late_records, base.bad_records
            ));
        }
        for (sink, rows) in tables(run) {
            if let Some(diff) = compare(&base_tables[&sink], &rows, false) {
                failures.push(format!("sink {sink}, {name} against {base_name}: {diff}"));
            }
        }
    }
    if failures.is_empty() {
        Ok(())
    } else {
        Err(failures.join("\n"))
    }
}

/// Runs `case` as `a` and as `b`: both fail alike, or both write the same
/// rows in the same order and count the same late and malformed records.
/// `Err` says how they differ.
pub fn same_runs(case: &Case, a: Variant, b: Variant) -> Result<(), String> {
    match (execute(case, a), execute(case, b)) {
        (Err(x), Err(y)) if x == y => Ok(()),
        (Err(x), Err(y)) => Err(format!("both failed, differently:\n{x}\n--\n{y}")),
        (Ok(_), Err(e)) | (Err(e), Ok(_)) => Err(format!("only one run failed: {e}")),
        (Ok(x), Ok(y)) => {
            let mut failures = Vec::new();
            if (x.late_records, x.bad_records) != (y.late_records, y.bad_records) {
                failures.push(format!(
                    "{} late and {} malformed records against {} and {}",
                    x.late_records, x.bad_records, y.late_records, y.bad_records
                ));
            }
            for (sink, output) in &x.sinks {
                if let Some(diff) = compare(&output.rows, &y.sinks[sink].rows, true) {
                    failures.push(format!("sink {sink}: {diff}"));
                }
            }
            if failures.is_empty() {
                Ok(())
            } else {
                Err(failures.join("\n"))
            }
        }
    }
}

/// Each sink's rows, changelogs reduced to the table they build.
fn tables(run: &Run) -> BTreeMap<String, Vec<Value>> {
    run.sinks
        .iter()
        .map(|(name, output)| {
            let rows = match &output.changelog {
                Some(log) if covers(log, &output.rows) => table_of(log, &output.rows),
                _ => output.rows.clone(),
            };
            (name.clone(), rows)
        })
        .collect()
}

/// Whether every row has every column the reduction reads (a key the
/// output does not carry cannot be reduced by).
fn covers(log: &Changelog, rows: &[Value]) -> bool {
    let columns: Vec<&String> = log
        .key
        .iter()
        .chain(log.window.iter().flat_map(|(s, e)| [s, e]))
        .collect();
    !columns.is_empty()
        && rows
            .iter()
            .all(|r| columns.iter().all(|c| r.get(c).is_some()))
}

/// The rows no later row replaces: a later row of the same key replaces
/// an earlier one whose window it covers (any earlier one, without windows).
fn table_of(log: &Changelog, rows: &[Value]) -> Vec<Value> {
    let key_of = |row: &Value| -> Vec<Value> { log.key.iter().map(|k| row[k].clone()).collect() };
    // timestamps are ISO text, which orders as the instants do
    let window_of = |row: &Value| {
        log.window.as_ref().map(|(s, e)| {
            let text = |c: &String| row[c].as_str().unwrap_or_default().to_string();
            (text(s), text(e))
        })
    };
    let mut table: Vec<&Value> = Vec::new();
    for row in rows {
        let (key, window) = (key_of(row), window_of(row));
        table.retain(|earlier| {
            let replaced = key_of(earlier) == key
                && match (&window, window_of(earlier)) {
                    (Some((start, end)), Some((s, e))) => *start <= s && *end >= e,
                    _ => true,
                };
            !replaced
        });
        table.push(row);
    }
    table.into_iter().cloned().collect()
}
