//! Runs the conformance specs under `tests/conformance/` (one test per
//! spec file) through the same harness as `velostream test`.

use std::path::{Path, PathBuf};

use velostream::conformance::{
    determinism, find_specs, run_spec_file, run_spec_file_with, spec, Variant,
};

fn spec_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/conformance")
}

fn run(file: &str) {
    let outcomes = run_spec_file(&spec_dir().join(file));
    let failures: Vec<String> = outcomes
        .iter()
        .filter_map(|o| o.failure.as_ref().map(|f| format!("FAIL {}\n{f}", o.name)))
        .collect();
    assert!(!outcomes.is_empty(), "{file} has no cases");
    assert!(
        failures.is_empty(),
        "{} of {} cases failed:\n\n{}",
        failures.len(),
        outcomes.len(),
        failures.join("\n\n")
    );
}

/// Every spec gives the same rows (in any order) with two pipelines per
/// job (`processing.parallelism: 2`) as with one.
#[test]
fn every_spec_passes_with_two_pipelines_per_job() {
    let mut failures = Vec::new();
    let mut cases = 0;
    for path in find_specs(&[spec_dir()]) {
        let two_pipelines = Variant {
            parallelism: 2,
            ..Variant::default()
        };
        for o in run_spec_file_with(&path, two_pipelines) {
            cases += 1;
            if let Some(f) = &o.failure {
                failures.push(format!("FAIL {}::{}\n{f}", path.display(), o.name));
            }
        }
    }
    assert!(cases > 200, "{cases} cases");
    assert!(
        failures.is_empty(),
        "{} of {cases} cases failed with parallelism 2:\n\n{}",
        failures.len(),
        failures.join("\n\n")
    );
}

/// Every spec writes the same rows in the same order, and counts the same
/// malformed and late records, with its inputs decoded on three threads as
/// on the job's own: batches reach the job in file order. Inputs are read
/// in chunks of a line or two, so even small inputs are spread over every
/// thread (both runs read the same chunks: a batch never spans two).
#[test]
fn every_spec_runs_the_same_with_parallel_decoding() {
    let parallel = Variant::parallel_decoding();
    let one_thread = Variant {
        decode_threads: 1,
        ..parallel
    };
    check_every_case(
        "",
        200,
        |_| true,
        |case| determinism::same_runs(case, one_thread, parallel),
        "differ with parallel decoding",
    );
}

/// Every event-time case (windows, sessions, late data, interval joins)
/// gives the same rows and late counts at batch sizes 1, 7 and the
/// default and with two pipelines: lateness is decided per record.
#[test]
fn event_time_answers_do_not_depend_on_batching() {
    check_every_case(
        "event-time ",
        80,
        determinism::is_event_time_case,
        determinism::check,
        "depend on batching",
    );
}

/// Runs `check` on each case of every spec that `wanted` picks; fails
/// unless more than `at_least` (`kind`) cases were checked and every one
/// passed, naming those that did not (they `failed`, e.g. "depend on
/// batching").
fn check_every_case(
    kind: &str,
    at_least: usize,
    wanted: impl Fn(&spec::Case) -> bool,
    check: impl Fn(&spec::Case) -> Result<(), String>,
    failed: &str,
) {
    let mut failures = Vec::new();
    let mut cases = 0;
    for path in find_specs(&[spec_dir()]) {
        let file = spec::load(&path).unwrap();
        for case in file.cases.iter().filter(|c| wanted(c)) {
            cases += 1;
            if let Err(e) = check(case) {
                failures.push(format!("FAIL {}::{}\n{e}", path.display(), case.name));
            }
        }
    }
    assert!(cases > at_least, "only {cases} {kind}cases");
    assert!(
        failures.is_empty(),
        "{} of {cases} {kind}cases {failed}:\n\n{}",
        failures.len(),
        failures.join("\n\n")
    );
}

macro_rules! spec_tests {
    ($($name:ident => $file:literal),* $(,)?) => {
        $(#[test] fn $name() { run($file); })*

        /// Every spec file has a test above, so none is silently skipped.
        #[test]
        fn every_spec_file_is_run() {
            let listed = [$($file),*];
            for path in find_specs(&[spec_dir()]) {
                let name = path.file_name().unwrap().to_string_lossy().to_string();
                assert!(listed.contains(&name.as_str()), "spec file {name} has no test in tests/conformance.rs");
            }
        }
    };
}

spec_tests! {
    projection => "projection.yaml",
    filter => "filter.yaml",
    expressions => "expressions.yaml",
    types => "types.yaml",
    formats => "formats.yaml",
    aggregate => "aggregate.yaml",
    emit_changes => "emit_changes.yaml",
    dialect => "dialect.yaml",
    errors => "errors.yaml",
    windows => "windows.yaml",
    row_functions => "row_functions.yaml",
    windows_more => "windows_more.yaml",
    joins => "joins.yaml",
    nexmark => "nexmark.yaml",
    time_encodings => "time_encodings.yaml",
    epoch_intervals => "epoch_intervals.yaml",
    event_time_order => "event_time_order.yaml",
    differential => "differential.yaml",
    derived_tables => "derived_tables.yaml",
    functions => "functions.yaml",
    tables => "tables.yaml",
}

#[test]
fn at_least_eighty_cases() {
    let cases: usize = find_specs(&[spec_dir()])
        .iter()
        .map(|f| spec::load(f).map(|s| s.cases.len()).unwrap_or(0))
        .sum();
    assert!(cases >= 80, "only {cases} conformance cases");
}
