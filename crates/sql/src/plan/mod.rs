//! The streaming plan: what one statement runs, as a chain of streaming
//! operators over named sources into one sink. Expressions stay DataFusion
//! logical expressions together with the schema they are evaluated
//! against; the engine turns them into physical expressions.

pub mod columns;

use std::collections::BTreeMap;
use std::fmt;

use datafusion::arrow::datatypes::{Field, SchemaRef};
use datafusion::common::DFSchemaRef;
use datafusion::logical_expr::{Expr, SortExpr};

use crate::event_time::EventTime;
use crate::interval_join::IntervalBounds;
use crate::time_format::TimeFormats;
use crate::window_clause::{EmitMode, WindowSpec};

/// One streaming operator and its input.
#[derive(Debug, Clone)]
pub enum StreamNode {
    /// Reads a source, decoding only `schema` (the columns the query uses).
    Scan {
        source: String,
        /// The decoded columns, in output order.
        schema: SchemaRef,
    },
    /// Computes each record's event time and assigns it to its windows:
    /// one output row per (record, window), with `_window_start` and
    /// `_window_end`; drops records whose windows have all closed, and
    /// advances the watermark.
    WindowAssign {
        input: Box<StreamNode>,
        /// `None`: only event time (`_event_time`) and the watermark.
        window: Option<WindowSpec>,
        /// Column holding event time; `None` means arrival time.
        time_column: Option<String>,
        event_time: EventTime,
        /// The scan schema the rest of the plan expects (window columns included).
        schema: SchemaRef,
    },
    /// Keeps rows for which `predicate` is true.
    Filter {
        input: Box<StreamNode>,
        predicate: Expr,
        input_schema: DFSchemaRef,
    },
    /// Computes `exprs` for every row.
    Project {
        input: Box<StreamNode>,
        exprs: Vec<Expr>,
        input_schema: DFSchemaRef,
        schema: DFSchemaRef,
    },
    /// Grouped aggregation, optionally per window.
    Aggregate {
        input: Box<StreamNode>,
        group_exprs: Vec<Expr>,
        aggr_exprs: Vec<Expr>,
        input_schema: DFSchemaRef,
        schema: DFSchemaRef,
        emit: EmitMode,
        window: Option<WindowSpec>,
    },
    /// Row functions over partitions (`ROW_NUMBER() OVER (...)`, ...):
    /// the input columns plus one column per window expression.
    RowWindow {
        input: Box<StreamNode>,
        exprs: Vec<Expr>,
        input_schema: DFSchemaRef,
        schema: DFSchemaRef,
    },
    /// Stream–table join: each record of `input` (the stream) looks up the
    /// rows of `table` (a bounded relation loaded before the stream starts)
    /// with equal keys.
    LookupJoin {
        input: Box<StreamNode>,
        /// The table side, from its scan upwards.
        table: Box<StreamNode>,
        /// Equality keys: (stream expression, table expression).
        on: Vec<(Expr, Expr)>,
        /// Extra join condition over the joined row.
        filter: Option<Expr>,
        /// `FOR SYSTEM_TIME AS OF`: (stream time, table time). Each record
        /// meets, per key, only the table row with the latest time at or
        /// before its own.
        versioned: Option<(Expr, Expr)>,
        /// `false` for INNER, `true` for LEFT (stream rows without a match are kept).
        keep_unmatched: bool,
        input_schema: DFSchemaRef,
        table_schema: DFSchemaRef,
        schema: DFSchemaRef,
    },
    /// Stream–stream interval join: a record of `input` meets the records
    /// of `other` with equal keys whose time lies within `bounds` of its own.
    /// `other` is read ahead of `input` as far as the upper bound needs;
    /// buffered `other` records expire once no later `input` record can
    /// reach them.
    IntervalJoin {
        input: Box<StreamNode>,
        other: Box<StreamNode>,
        on: Vec<(Expr, Expr)>,
        bounds: Box<IntervalBounds>,
        filter: Option<Expr>,
        keep_unmatched: bool,
        /// RIGHT/FULL: records of `other` that met nothing are emitted (with
        /// NULL `input` columns) when they expire.
        keep_other_unmatched: bool,
        /// Allowed out-of-orderness (ms) of `input` and of `other`.
        input_lag_ms: i64,
        other_lag_ms: i64,
        input_schema: DFSchemaRef,
        other_schema: DFSchemaRef,
        schema: DFSchemaRef,
    },
    /// `LIMIT fetch OFFSET skip`.
    Limit {
        input: Box<StreamNode>,
        skip: usize,
        fetch: Option<usize>,
    },
    /// `ORDER BY`: only meaningful over bounded input.
    Sort {
        input: Box<StreamNode>,
        exprs: Vec<SortExpr>,
        input_schema: DFSchemaRef,
        fetch: Option<usize>,
    },
}

/// Where a source's records come from.
#[derive(Debug, Clone, PartialEq)]
pub enum SourceOrigin {
    /// A connector configured by properties (`type`, `path`, `format`, ...).
    External,
    /// The output of an earlier statement of the same application.
    Statement(usize),
}

/// A source the plan reads, with the properties addressed to it.
#[derive(Debug, Clone)]
pub struct SourceBinding {
    pub name: String,
    pub origin: SourceOrigin,
    pub properties: BTreeMap<String, String>,
    /// Every column of the source (before projection).
    pub schema: SchemaRef,
    /// True when the schema was declared rather than inferred.
    pub declared: bool,
    /// Event time and watermark settings (the event-time keys are not in `properties`).
    pub event_time: EventTime,
    /// How the time columns' values are encoded (the time-format keys are
    /// not in `properties` either).
    pub time_formats: TimeFormats,
    /// What its connector says about it.
    pub traits: SourceTraits,
    /// The primary key of a source declared as a table (`CREATE TABLE name
    /// (..., PRIMARY KEY (k)) WITH (...)`): it is read as its latest row
    /// per key. Empty for a stream.
    pub table_key: Vec<String>,
}

impl SourceBinding {
    /// Whether the source ends by itself: its connector's inputs do, or it
    /// is read to its current end (`'bounded' = 'true'`, a Kafka backfill).
    pub fn ends(&self) -> bool {
        !self.traits.unbounded || self.properties.get("bounded").is_some_and(|b| b == "true")
    }
}

/// What planning and wiring need to know about a source's connector. The
/// connectors say it (through [`SourceResolver`](crate::SourceResolver));
/// the front end names no connector.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SourceTraits {
    /// Columns the connector adds to every record.
    pub system_columns: Vec<Field>,
    /// The column holding its records' event time when the source names none.
    pub event_time_field: Option<String>,
    /// The properties to check when its columns cannot be read, e.g.
    /// `'trades.path' and 'trades.format'`.
    pub essential_settings: String,
    /// A join looks its rows up by key rather than reading it whole.
    pub looked_up: bool,
    /// Its input does not end by itself.
    pub unbounded: bool,
    /// Only one job may read it (standard input is consumed once).
    pub single_reader: bool,
}

/// What a statement does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StatementKind {
    /// `CREATE STREAM name AS SELECT ...`: a continuous query into a stream.
    CreateStream,
    /// `CREATE TABLE name AS SELECT ...`: a continuous query into a keyed table.
    CreateTable,
    /// `SELECT ...`: an ad-hoc query printing its results.
    Select,
    /// `CREATE STREAM name (col TYPE, ...) WITH (...)`: declares a source.
    SourceDeclaration,
}

/// Where results go.
#[derive(Debug, Clone)]
pub struct SinkBinding {
    pub name: String,
    /// Empty when the statement has no sink configuration: results go to
    /// later statements that read this stream, or to stdout.
    pub properties: BTreeMap<String, String>,
}

/// Everything needed to run one statement.
#[derive(Debug, Clone)]
pub struct StreamingPlan {
    pub statement: usize,
    /// Job name: the `@name`/`@job_name` annotation, the CREATE target, or `select_<n>`.
    pub name: String,
    pub kind: StatementKind,
    pub root: StreamNode,
    pub sources: Vec<SourceBinding>,
    pub sink: SinkBinding,
    /// The output columns that key each result (for keyed sinks): the
    /// `PRIMARY KEY` columns, else the GROUP BY columns present in the output.
    pub key: Vec<String>,
    /// Where rejected records go (`'dead_letter.*'` properties), if anywhere.
    pub dead_letter: Option<SinkBinding>,
    /// The statement's `'error.policy'`, if it sets one.
    pub error_policy: Option<crate::ErrorPolicy>,
    /// Where the statement starts in the SQL (for rows whose expression fails).
    pub location: crate::Location,
    pub output_schema: SchemaRef,
    pub annotations: Vec<(String, String)>,
    /// The emit mode of the plan's aggregate, if it has one.
    pub emit: Option<EmitMode>,
    /// True when the statement has no EMIT clause and `emit` is the default.
    pub emit_defaulted: bool,
    /// Set when the planner lifted this statement out of another one's FROM.
    pub derived: Option<crate::DerivedFrom>,
}

impl StreamNode {
    pub fn input(&self) -> Option<&StreamNode> {
        match self {
            StreamNode::Scan { .. } => None,
            StreamNode::WindowAssign { input, .. }
            | StreamNode::Filter { input, .. }
            | StreamNode::Project { input, .. }
            | StreamNode::Aggregate { input, .. }
            | StreamNode::RowWindow { input, .. }
            | StreamNode::LookupJoin { input, .. }
            | StreamNode::IntervalJoin { input, .. }
            | StreamNode::Limit { input, .. }
            | StreamNode::Sort { input, .. } => Some(input),
        }
    }

    /// Nodes from the source upwards: the order records flow through them.
    pub fn flow(&self) -> Vec<&StreamNode> {
        let mut chain = vec![self];
        while let Some(input) = chain.last().unwrap().input() {
            chain.push(input);
        }
        chain.reverse();
        chain
    }

    /// One line for `explain`; `looked_up`: this join's table is looked up
    /// by key (a PostgreSQL table) rather than read whole.
    fn describe(&self, looked_up: bool) -> String {
        let list = |exprs: &[Expr]| {
            exprs
                .iter()
                .map(|e| e.to_string())
                .collect::<Vec<_>>()
                .join(", ")
        };
        match self {
            StreamNode::Scan { source, schema } => {
                let cols: Vec<_> = schema
                    .fields()
                    .iter()
                    .map(|f| format!("{}: {}", f.name(), f.data_type()))
                    .collect();
                format!("Scan {source} [{}]", cols.join(", "))
            }
            StreamNode::WindowAssign {
                window,
                time_column,
                event_time,
                ..
            } => {
                let time = time_column.as_deref().unwrap_or("processing time");
                let what = window
                    .as_ref()
                    .map(|w| format!("WindowAssign {w}"))
                    .unwrap_or_else(|| "EventTime".into());
                format!(
                    "{what} time={time} watermark={:?} late={:?}",
                    event_time.watermark, event_time.late_data
                )
            }
            StreamNode::Filter { predicate, .. } => format!("Filter {predicate}"),
            StreamNode::Project { exprs, .. } => format!("Project {}", list(exprs)),
            StreamNode::Aggregate {
                group_exprs,
                aggr_exprs,
                emit,
                window,
                ..
            } => {
                let window = window
                    .as_ref()
                    .map(|w| format!(" window={w}"))
                    .unwrap_or_default();
                format!(
                    "Aggregate group=[{}] aggregates=[{}]{window} emit={emit}",
                    list(group_exprs),
                    list(aggr_exprs)
                )
            }
            StreamNode::RowWindow { exprs, .. } => format!("RowWindow {}", list(exprs)),
            StreamNode::IntervalJoin { other, on, bounds, filter, keep_unmatched, keep_other_unmatched, .. } => format!(
                "{} IntervalJoin on [{}] {} BETWEEN {} {:+}ms AND {:+}ms{} other=({}); state: other's records for {} ms",
                join_kind(*keep_unmatched, *keep_other_unmatched),
                join_keys(on),
                bounds.right_time,
                bounds.left_time,
                bounds.lower_ms,
                bounds.upper_ms,
                join_filter(filter),
                first_node(other),
                bounds.upper_ms - bounds.lower_ms
            ),
            StreamNode::LookupJoin {
                table,
                on,
                filter,
                versioned,
                keep_unmatched,
                ..
            } => format!(
                "{} LookupJoin on [{}]{}{} table=({}; {})",
                join_kind(*keep_unmatched, false),
                join_keys(on),
                join_filter(filter),
                versioned
                    .as_ref()
                    .map(|(s, t)| format!(" version: latest {t} <= {s}"))
                    .unwrap_or_default(),
                first_node(table),
                match (versioned, looked_up) {
                    (Some(_), _) => "state = every version of the table's rows",
                    (None, true) =>
                        "looked up by key per batch; state = rows cached per performance.cache",
                    (None, false) => "state = the table's rows",
                }
            ),
            StreamNode::Limit { skip, fetch, .. } => match fetch {
                Some(f) => format!("Limit skip={skip} fetch={f}"),
                None => format!("Limit skip={skip}"),
            },
            StreamNode::Sort { exprs, fetch, .. } => {
                let keys: Vec<_> = exprs.iter().map(|e| e.to_string()).collect();
                let fetch = fetch.map(|f| format!(" fetch={f}")).unwrap_or_default();
                format!(
                    "Sort (at end of bounded input) [{}]{fetch}",
                    keys.join(", ")
                )
            }
        }
    }
}

fn join_kind(keep_unmatched: bool, keep_other_unmatched: bool) -> &'static str {
    match (keep_unmatched, keep_other_unmatched) {
        (false, false) => "INNER",
        (true, false) => "LEFT",
        (false, true) => "RIGHT",
        (true, true) => "FULL",
    }
}

fn join_keys(on: &[(Expr, Expr)]) -> String {
    on.iter()
        .map(|(l, r)| format!("{l} = {r}"))
        .collect::<Vec<_>>()
        .join(", ")
}

fn join_filter(filter: &Option<Expr>) -> String {
    filter
        .as_ref()
        .map(|f| format!(" filter={f}"))
        .unwrap_or_default()
}

/// The first node (the source) of a join's second input, described.
fn first_node(side: &StreamNode) -> String {
    side.flow()
        .first()
        .map(|n| n.describe(false))
        .unwrap_or_default()
}

impl StreamingPlan {
    /// Whether the plan's operators keep records' effects in state
    /// (aggregates and windows, row functions, interval joins, sorts): a
    /// record read is then not yet out when its batch has been processed.
    pub fn holds_records(&self) -> bool {
        self.root.flow().iter().any(|n| {
            matches!(
                n,
                StreamNode::Aggregate { .. }
                    | StreamNode::RowWindow { .. }
                    | StreamNode::IntervalJoin { .. }
                    | StreamNode::Sort { .. }
            )
        })
    }

    /// Whether the plan's results update rows written before: a `CREATE
    /// TABLE` whose aggregate is not one of final windows.
    pub fn updates_rows(&self) -> bool {
        self.kind == StatementKind::CreateTable && self.emit != Some(EmitMode::Final)
    }

    /// Whether the plan aggregates its input stream.
    pub fn aggregates(&self) -> bool {
        self.root
            .flow()
            .iter()
            .any(|n| matches!(n, StreamNode::Aggregate { .. }))
    }

    /// True for a join whose table is a PostgreSQL table: it is looked up
    /// by key rather than read whole.
    fn is_looked_up(&self, node: &StreamNode) -> bool {
        let StreamNode::LookupJoin { table, .. } = node else {
            return false;
        };
        let Some(StreamNode::Scan { source, .. }) = table.flow().first().copied() else {
            return false;
        };
        self.sources
            .iter()
            .any(|s| &s.name == source && s.origin == SourceOrigin::External && s.traits.looked_up)
    }
}

impl fmt::Display for StreamingPlan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "job {} (statement {}, {:?})",
            self.name,
            self.statement + 1,
            self.kind
        )?;
        if !self.annotations.is_empty() {
            let notes: Vec<_> = self
                .annotations
                .iter()
                .map(|(k, v)| format!("@{k}: {}", crate::secrets::shown_value(k, v)))
                .collect();
            writeln!(f, "  annotations: {}", notes.join(", "))?;
        }
        if let Some(d) = &self.derived {
            match &d.alias {
                Some(alias) => writeln!(f, "  derived table {alias} of {}", d.statement)?,
                None => writeln!(f, "  derived table of {}", d.statement)?,
            }
        }
        for s in &self.sources {
            let origin = match s.origin {
                SourceOrigin::External => s
                    .properties
                    .get("type")
                    .cloned()
                    .unwrap_or_else(|| "?".into()),
                SourceOrigin::Statement(i) => format!("output of statement {}", i + 1),
            };
            let schema_kind = if s.declared { "declared" } else { "inferred" };
            let table = if s.table_key.is_empty() {
                String::new()
            } else {
                format!("table, key ({}), ", s.table_key.join(", "))
            };
            writeln!(
                f,
                "  source {} <- {origin} ({table}{schema_kind} schema, {} columns)",
                s.name,
                s.schema.fields().len()
            )?;
        }
        for (depth, node) in self.root.flow().iter().enumerate() {
            let line = node.describe(self.is_looked_up(node));
            writeln!(f, "  {}{line}", "  ".repeat(depth))?;
        }
        let sink = match self.sink.properties.get("type") {
            Some(t) => format!("{} -> {t}", self.sink.name),
            None => format!("{} -> stdout or downstream statements", self.sink.name),
        };
        writeln!(f, "  sink {sink}")?;
        if let Some(dl) = &self.dead_letter {
            let kind = dl
                .properties
                .get("type")
                .map(String::as_str)
                .unwrap_or("standard output");
            writeln!(f, "  dead letters -> {kind}")?;
        }
        if !self.key.is_empty() {
            writeln!(f, "  key: [{}]", self.key.join(", "))?;
        }
        if let Some(emit) = self.emit {
            let why = match (self.emit_defaulted, emit) {
                (true, EmitMode::Final) => " (default for windows)",
                (true, EmitMode::Changes) => " (default without a window)",
                (false, _) => "",
            };
            writeln!(f, "  emit: {emit}{why}")?;
        }
        let cols: Vec<_> = self
            .output_schema
            .fields()
            .iter()
            .map(|f| format!("{}: {}", f.name(), f.data_type()))
            .collect();
        write!(f, "  output: [{}]", cols.join(", "))
    }
}
