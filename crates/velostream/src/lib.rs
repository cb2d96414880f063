//! The `velostream` command: loading and running applications, the
//! conformance harness behind `velostream test`, and benchmarks.

pub mod app;
pub mod bench;
pub mod conformance;
pub mod progress;
pub mod run_config;
