//! The `velostream` command: loading and running applications, the
//! conformance harness behind `velostream test`, benchmarks, and the
//! Kafka produce/consume tools.

pub mod api_client;
pub mod app;
pub mod bench;
pub mod bench_checkpoint;
pub mod bench_cli;
pub mod bench_kafka;
pub mod bench_postgres;
pub mod conformance;
pub mod kafka_tools;
pub mod launcher;
pub mod nexmark;
pub mod preflight;
pub mod progress;
pub mod state_args;
pub mod state_tools;
