//! The conformance harness: runs spec cases (see [`spec`]) through the same
//! code path as `velostream run`, with each input written to a file read by
//! `file_source` and each expected sink captured by `file_sink`, then
//! compares the rows. Used by the test suite and by `velostream test`.

pub mod compare;
pub mod spec;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use velostream_sql::PropertyOverrides;

use crate::app::{run_jobs, Application, RunOptions};
use compare::{compare, parse_rows};
use spec::Case;

/// The result of one case.
#[derive(Debug)]
pub struct CaseOutcome {
    pub file: PathBuf,
    pub name: String,
    /// `None` when the case passed.
    pub failure: Option<String>,
}

/// Spec files under `paths` (directories are searched for `*.yaml`).
pub fn find_specs(paths: &[PathBuf]) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for p in paths {
        if p.is_dir() {
            let mut entries: Vec<_> = std::fs::read_dir(p)
                .into_iter()
                .flatten()
                .flatten()
                .map(|e| e.path())
                .collect();
            entries.sort();
            for e in entries {
                if e.is_dir() || e.extension().is_some_and(|x| x == "yaml" || x == "yml") {
                    out.extend(find_specs(&[e]));
                }
            }
        } else {
            out.push(p.clone());
        }
    }
    out
}

/// Runs every case of a spec file.
pub fn run_spec_file(path: &Path) -> Vec<CaseOutcome> {
    run_spec_file_with(path, 1)
}

/// Runs every case with `parallelism` pipelines per job. Rows are then
/// compared in any order: keyed pipelines emit each batch's groups worker
/// by worker.
pub fn run_spec_file_with(path: &Path, parallelism: usize) -> Vec<CaseOutcome> {
    match spec::load(path) {
        Ok(file) => file
            .cases
            .iter()
            .map(|case| CaseOutcome {
                file: path.to_path_buf(),
                name: case.name.clone(),
                failure: run_case_with(case, parallelism).err(),
            })
            .collect(),
        Err(e) => vec![CaseOutcome {
            file: path.to_path_buf(),
            name: "(spec file)".into(),
            failure: Some(e),
        }],
    }
}

/// Runs one case; `Err` describes how it failed.
pub fn run_case(case: &Case) -> Result<(), String> {
    run_case_with(case, 1)
}

/// Runs one case with `parallelism` pipelines per job.
pub fn run_case_with(case: &Case, parallelism: usize) -> Result<(), String> {
    let dir =
        tempfile::tempdir().map_err(|e| format!("cannot create a temporary directory: {e}"))?;
    let mut overrides = PropertyOverrides::new();
    for (name, input) in &case.inputs {
        let path = dir.path().join(format!("input_{name}.{}", input.format()));
        std::fs::write(&path, input.data()).map_err(|e| e.to_string())?;
        overrides.insert(
            name.clone(),
            props(&[
                ("type", "file_source"),
                ("path", &path.display().to_string()),
                ("format", input.format()),
            ]),
        );
    }
    let output = |name: &str| dir.path().join(format!("output_{name}.jsonl"));
    for name in case.expected.keys() {
        overrides.insert(
            name.clone(),
            props(&[
                ("type", "file_sink"),
                ("path", &output(name).display().to_string()),
                ("format", "jsonl"),
            ]),
        );
    }
    let options = RunOptions {
        batch_size: case.batch_size.unwrap_or(1000),
        overrides,
        parallelism,
        ..RunOptions::default()
    };

    let outcome = Application::from_text(
        &format!("{}.sql", case.name),
        &case.sql,
        dir.path(),
        &options,
    )
    .and_then(|app| {
        app.check()?;
        run_jobs(app.build_jobs()?)
    });
    let summaries = match (outcome, &case.expect_error) {
        (Err(e), Some(want)) => {
            let text = e.to_string();
            return if text.contains(want.as_str()) {
                Ok(())
            } else {
                Err(format!(
                    "expected an error containing {want:?}, got:\n{text}"
                ))
            };
        }
        (Err(e), None) => return Err(format!("the run failed:\n{e}")),
        (Ok(_), Some(want)) => {
            return Err(format!(
                "expected an error containing {want:?}, but the run succeeded"
            ))
        }
        (Ok(summaries), None) => summaries,
    };
    if let Some(want) = case.expect_bad_records {
        let got: u64 = summaries.iter().map(|s| s.bad_records).sum();
        if got != want {
            return Err(format!(
                "expected {want} malformed records to be reported, got {got}"
            ));
        }
    }
    if let Some(want) = case.expect_late_records {
        let got: u64 = summaries.iter().map(|s| s.late_records).sum();
        if got != want {
            return Err(format!(
                "expected {want} late records to be dropped, got {got}"
            ));
        }
    }
    let mut failures = Vec::new();
    for (name, expected) in &case.expected {
        let written = std::fs::read_to_string(output(name)).unwrap_or_default();
        let actual = parse_rows(&written, &format!("output of {name}"))?;
        let wanted = parse_rows(expected.rows(), &format!("expected rows of {name}"))?;
        if let Some(diff) = compare(&wanted, &actual, expected.ordered() && parallelism == 1) {
            failures.push(format!("sink {name}: {diff}"));
        }
    }
    if failures.is_empty() {
        Ok(())
    } else {
        Err(failures.join("\n"))
    }
}

fn props(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}
