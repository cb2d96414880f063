//! The Velostream streaming engine: operators over Arrow record batches,
//! the pipeline that chains them, operator state and the job loop.
//!
//! Flow: a [`connector::Source`] yields batches → [`job::Job`] pushes them
//! through the [`operators::Pipeline`] built by [`build::PipelineBuilder`]
//! from a streaming plan → results go to a [`connector::Sink`].

pub mod build;
pub mod checkpoint;
pub mod connector;
pub mod dead_letter;
pub mod error;
pub mod execution;
pub mod job;
pub mod key_hash;
pub mod latency;
pub mod metrics;
pub mod operators;
pub mod parallel;
pub mod partitioned;
pub mod row_watermark;
pub mod state;
pub mod watermark;

pub use build::PipelineBuilder;
pub use connector::{Sink, Source, SourceEvent};
pub use error::{EngineError, ErrorKind, Result};
pub use job::{Hold, Job, JobSummary};
pub use metrics::JobMetrics;
