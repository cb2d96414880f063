//! The `'type'` values of the built-in connectors, for code that
//! configures one (tools, benchmarks, the conformance harness) and for the
//! connectors' own messages.

pub const FILE_SOURCE: &str = "file_source";
pub const STDIN: &str = "stdin";
pub const KAFKA_SOURCE: &str = "kafka_source";
pub const POSTGRES_SOURCE: &str = "postgres_source";
pub const NEXMARK: &str = "nexmark";
pub const FILE_SINK: &str = "file_sink";
pub const STDOUT: &str = "stdout";
pub const NULL: &str = "null";
pub const KAFKA_SINK: &str = "kafka_sink";
pub const POSTGRES_SINK: &str = "postgres_sink";
