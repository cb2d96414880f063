//! The Velostream SQL front end: turns an application script into
//! streaming plans.
//!
//! Flow: [`script`] splits the text into statements (keeping positions and
//! `-- @key: value` annotations) → [`statement`] handles the Velostream
//! dialect (CREATE STREAM/TABLE, WINDOW, EMIT, WITH) and parses the standard
//! SELECT with sqlparser → [`planner`] plans it with DataFusion against the
//! [`catalog`] and maps the optimized plan onto a [`plan::StreamingPlan`].

pub mod catalog;
pub mod decimal_round;
mod derived_tables;
pub mod duration;
pub mod epoch_time;
pub mod error;
pub mod error_policy;
pub mod event_time;
pub mod function_list;
pub mod header_function;
pub mod interval_join;
pub mod join_time;
pub mod lowering;
pub mod names;
pub mod plan;
pub mod planner;
pub mod processing_time;
pub mod properties;
pub mod regexp_extract;
mod relations;
pub mod script;
pub mod secrets;
pub mod standard_functions;
pub mod statement;
pub mod system_columns;
pub mod time_format;
mod type_checks;
pub mod window_clause;
pub mod windowing;
pub mod within_marker;

pub use catalog::streaming_session_state;
pub use error::{Location, SqlError};
pub use error_policy::ErrorPolicy;
pub use event_time::{EventTime, LateDataStrategy, WatermarkStrategy};
pub use plan::{SinkBinding, SourceBinding, SourceOrigin, SourceTraits, StreamNode, StreamingPlan};
pub use planner::{
    parse_application, ApplicationPlanner, InferError, PropertyOverrides, SourceResolver,
};
pub use statement::{DerivedFrom, ParsedStatement, StatementKind};
pub use time_format::{TimeFormat, TimeFormats};
pub use window_clause::{EmitMode, WindowKind, WindowSpec};
