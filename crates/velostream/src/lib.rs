//! The `velostream` command: loading and running applications ([`app`],
//! [`launcher`] for the service), the conformance harness behind
//! `velostream test` ([`conformance`]), where connector settings come
//! from ([`settings`]), the benchmarks ([`bench`]) and the operator's tools ([`tools`]: Kafka produce/consume/offsets, state
//! directories, pre-production checks, the API client).

pub mod app;
pub mod bench;
pub mod conformance;
pub mod launcher;
pub mod progress;
pub mod settings;
pub mod state_args;
pub mod tools;
