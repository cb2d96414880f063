//! Velostream connectors: where records enter and leave a job.
//!
//! - [`format`]: decoding bytes into Arrow batches (JSON, CSV), encoding
//!   results, inferring schemas from samples.
//! - [`file`]: line framing for files and standard input, and byte sinks.
//! - [`kafka`]: Kafka sources and sinks (librdkafka).
//! - [`postgres`]: PostgreSQL sources, key lookups for joins, and sinks.
//! - [`nexmark`]: the Nexmark benchmark's event generator as a source.
//! - [`in_process`]: streams between statements of one application.
//! - [`error`]: typed connector errors and the kind that decides retries.
//! - [`factory`]: builds all of the above from statement properties.
//! - [`sandbox`]: the files, clusters and database an application the
//!   service runs may use.
//! - [`trade_records`]: the benchmarks' trade records.

pub mod connector;
pub mod context;
pub mod error;
pub mod factory;
pub mod fanout;
pub mod file;
pub mod format;
pub mod in_process;
pub mod kafka;
pub mod keys;
pub mod nexmark;
pub mod null_sink;
pub mod postgres;
pub mod registry;
pub mod sandbox;
pub mod trade_records;
pub mod types;

pub use error::{ConnectorError, ConnectorResult};
pub use factory::{Connectors, Guarantee};
pub use format::RecordFormat;
pub use sandbox::Sandbox;
