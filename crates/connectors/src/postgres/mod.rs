//! PostgreSQL: `postgres_source` (a table or query read as a stream, or
//! looked up by key as the table side of a join) and `postgres_sink`
//! (results inserted, or upserted by key), on the `postgres` client.
//!
//! - [`connection`]: where to connect (`url`, `velostream.database`, `DB_*`).
//! - [`rows`]: rows as JSON between the server and the shared decoder;
//!   schemas from the server's column types.
//! - [`source`]: snapshot and incremental reading.
//! - [`lookup`]: keys of a batch fetched in one query, for joins.
//! - [`sink`]: insert/upsert, transactions, exactly-once by prepared transactions.
//! - [`tls`]: TLS with rustls for `sslmode=require`.

pub mod connection;
pub mod connector;
pub mod error;
pub mod lookup;
pub mod rows;
pub mod sink;
pub mod source;
pub mod tls;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use datafusion::arrow::datatypes::SchemaRef;
use velostream_engine::connector::KeyLookup;
use velostream_engine::{EngineError, JobMetrics, Result, Sink, Source};

use self::connection::{relation, DatabaseDefaults, Target};
use self::error::PostgresError;
use self::source::{PostgresSource, ReadPlan};
use crate::error::{ConnectorError, ConnectorResult};
use crate::keys::{check_key_list, Key};

/// The keys of a `postgres_source`.
pub const SOURCE_KEYS: &[Key] = &[
    Key::new("type", "the connector"),
    Key::new(
        "url",
        "`postgres://user@host:port/db?sslmode=...`; without it the configuration's `database` settings (or `DB_*`)",
    ),
    Key::new("table", "the table to read (`schema.table` allowed)"),
    Key::new("query", "a read-only SELECT to read instead of a table"),
    Key::new(
        "incremental.column",
        "read as a stream: rows whose column grew past the last value seen, polled",
    ),
    Key::with_default("poll.interval", "1s", "how often an incremental source polls"),
];

/// The `SELECT` a source reads: its table, or its query.
fn base_query(props: &BTreeMap<String, String>) -> ConnectorResult<String> {
    let invalid = ConnectorError::InvalidValue;
    check_key_list(props, SOURCE_KEYS, "postgres_source")?;
    match (props.contains_key("table"), props.get("query")) {
        (true, Some(_)) => Err(invalid("set either 'table' or 'query', not both".into())),
        (true, None) => Ok(format!(
            "SELECT * FROM {}",
            relation(props, "postgres_source")?
        )),
        (false, Some(q)) => {
            let q = q.trim().trim_end_matches(';');
            if q.is_empty() {
                return Err(invalid("'query' is empty".into()));
            }
            one_select(q)?;
            Ok(q.to_string())
        }
        (false, None) => Err(invalid(
            "postgres_source needs a 'table' or a 'query' property".into(),
        )),
    }
}

/// Checks that a source's `'query'` is one `SELECT` (or `VALUES`, or a
/// `WITH` query): it is embedded in the statements that read it, and a
/// second statement (`...; COMMIT; DROP TABLE t`) must never run. The
/// server enforces the same (queries go through the extended protocol,
/// which takes one statement, in a read-only session); this check names
/// the problem before connecting.
fn one_select(query: &str) -> ConnectorResult<()> {
    use datafusion::sql::sqlparser::ast::Statement;
    use datafusion::sql::sqlparser::dialect::PostgreSqlDialect;
    use datafusion::sql::sqlparser::parser::Parser;
    let invalid = ConnectorError::InvalidValue;
    let statements = Parser::parse_sql(&PostgreSqlDialect {}, query).map_err(|e| {
        invalid(format!(
            "'query' is not one SELECT statement that can be read ({e})"
        ))
    })?;
    match statements.as_slice() {
        [Statement::Query(_)] => Ok(()),
        [_] => Err(invalid("'query' must be a SELECT (or VALUES or WITH) query; other statements are not run by a source".into())),
        many => Err(invalid(format!(
            "'query' holds {} statements; a source runs exactly one SELECT",
            many.len()
        ))),
    }
}

/// What a source reads and where: its `SELECT` and its server, from its
/// properties (checked without connecting).
struct SourceQuery {
    base: String,
    target: Target,
}

impl SourceQuery {
    fn resolve(
        props: &BTreeMap<String, String>,
        defaults: &DatabaseDefaults,
    ) -> ConnectorResult<Self> {
        Ok(Self {
            base: base_query(props)?,
            target: Target::resolve(props, defaults)?,
        })
    }

    /// A read-only session on the source's server.
    fn connect(&self) -> Result<postgres::Client, PostgresError> {
        let mut client = self.target.connect()?;
        // a source only reads: whatever its query calls cannot write
        client
            .batch_execute("SET SESSION CHARACTERISTICS AS TRANSACTION READ ONLY")
            .map_err(|e| PostgresError::server(&self.target.label, &e))?;
        Ok(client)
    }
}

/// Checks a source's properties without connecting: its keys, its
/// query, where it connects.
pub fn check_source(
    props: &BTreeMap<String, String>,
    defaults: &DatabaseDefaults,
) -> ConnectorResult<()> {
    SourceQuery::resolve(props, defaults).map(|_| ())
}

/// The columns of an undeclared source, from the server's description.
pub fn infer_source_schema(
    props: &BTreeMap<String, String>,
    defaults: &DatabaseDefaults,
) -> ConnectorResult<SchemaRef> {
    let source = SourceQuery::resolve(props, defaults)?;
    let mut client = source.connect()?;
    Ok(rows::schema_of(&rows::describe_columns(
        &mut client,
        &source.base,
    )?))
}

/// Opens source `name` as a stream decoding the columns of `projected`.
pub fn open_source(
    name: &str,
    props: &BTreeMap<String, String>,
    full: &SchemaRef,
    projected: SchemaRef,
    batch_size: usize,
    defaults: &DatabaseDefaults,
    metrics: Arc<JobMetrics>,
) -> Result<Box<dyn Source>> {
    let invalid = |message: String| ConnectorError::InvalidValue(message).at(name);
    // what is wrong with the settings is found before connecting
    let source = SourceQuery::resolve(props, defaults).map_err(|e| e.at(name))?;
    let base = &source.base;
    if props.contains_key("poll.interval") && !props.contains_key("incremental.column") {
        return Err(invalid(
            "'poll.interval' applies with 'incremental.column' only".into(),
        ));
    }
    let mut client = source.connect().map_err(|e| e.at(name))?;
    let plan = match props.get("incremental.column") {
        None => ReadPlan::Snapshot,
        Some(column) => {
            let columns = rows::describe_columns(&mut client, base).map_err(|e| e.at(name))?;
            let type_name = columns
                .iter()
                .find(|c| &c.name == column)
                .map(|c| c.type_name.clone())
                .ok_or_else(|| {
                    invalid(format!(
                        "'incremental.column' = '{column}' is not a column of the source; its columns are {}",
                        columns.iter().map(|c| c.name.as_str()).collect::<Vec<_>>().join(", ")
                    ))
                })?;
            let poll_interval = match props.get("poll.interval") {
                None => Duration::from_secs(1),
                Some(text) => velostream_sql::duration::parse_shorthand(text).ok_or_else(|| {
                    invalid(format!(
                        "'poll.interval' = '{text}' is not a duration such as 500ms, 1s or 1m"
                    ))
                })?,
            };
            ReadPlan::Incremental {
                column: column.clone(),
                type_name,
                poll_interval,
            }
        }
    };
    let rows = rows::JsonRows::new(name, full.clone(), projected, batch_size)?;
    Ok(Box::new(PostgresSource::new(
        name, client, base, rows, plan, batch_size, metrics,
    )?))
}

/// Opens source `name` for key lookups (the table side of a join).
pub fn open_lookup(
    name: &str,
    props: &BTreeMap<String, String>,
    full: &SchemaRef,
    projected: SchemaRef,
    defaults: &DatabaseDefaults,
    metrics: Arc<JobMetrics>,
) -> Result<Box<dyn KeyLookup>> {
    if props.contains_key("incremental.column") {
        return Err(EngineError::misconfigured(name, "a table joined by key is looked up as it is now; 'incremental.column' applies when the source is read as a stream"));
    }
    let source = SourceQuery::resolve(props, defaults).map_err(|e| e.at(name))?;
    let mut client = source.connect().map_err(|e| e.at(name))?;
    let columns = rows::describe_columns(&mut client, &source.base).map_err(|e| e.at(name))?;
    Ok(Box::new(lookup::PostgresLookup::new(
        name,
        client,
        source.base,
        columns,
        full.clone(),
        projected,
        metrics,
    )?))
}

/// Opens sink `name` (`key`: the result's key columns).
pub fn open_sink(
    name: &str,
    props: &BTreeMap<String, String>,
    key: &[String],
    defaults: &DatabaseDefaults,
    exactly_once: bool,
) -> Result<Box<dyn Sink>> {
    // its keys and table are checked before it connects
    sink::PostgresSink::open(name, props, key, defaults, exactly_once)
        .map(|s| Box::new(s) as Box<dyn Sink>)
        .map_err(|e| e.at(name))
}

/// What a database probe learnt.
pub struct Probe {
    /// `user@host:port/db answers (PostgreSQL 15.18)`.
    pub summary: String,
    /// The server's `max_prepared_transactions` (exactly-once sinks need > 0).
    pub max_prepared_transactions: u32,
}

/// Connects with `defaults` and asks the server for its version and its
/// `max_prepared_transactions` (for `velostream check` and `/ready`).
pub fn probe(defaults: &DatabaseDefaults) -> ConnectorResult<Probe> {
    let target = Target::resolve(&BTreeMap::new(), defaults)?;
    let mut client = target.connect()?;
    let row = client
        .query_one(
            "SELECT split_part(version(), ' ', 2), current_setting('max_prepared_transactions')",
            &[],
        )
        .map_err(|e| PostgresError::server(&target.label, &e))?;
    let version: String = row.get(0);
    let prepared: String = row.get(1);
    Ok(Probe {
        summary: format!("{} answers (PostgreSQL {version})", target.label),
        max_prepared_transactions: prepared.trim().parse().unwrap_or(0),
    })
}

/// Checks a sink's properties without connecting (for `validate`).
pub fn check_sink(props: &BTreeMap<String, String>) -> ConnectorResult<()> {
    check_key_list(props, sink::SINK_KEYS, "postgres_sink")?;
    relation(props, "postgres_sink").map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn query(q: &str) -> std::result::Result<String, String> {
        let props: BTreeMap<String, String> = [
            ("type".to_string(), "postgres_source".to_string()),
            ("query".to_string(), q.to_string()),
        ]
        .into();
        base_query(&props).map_err(|e| e.to_string())
    }

    #[test]
    fn a_source_query_is_exactly_one_select() {
        assert_eq!(query("SELECT id FROM t;").unwrap(), "SELECT id FROM t");
        query("WITH x AS (SELECT 1 AS a) SELECT a FROM x").unwrap();
        let e = query("SELECT 1; COMMIT; DROP TABLE t").unwrap_err();
        assert!(e.contains("3 statements"), "{e}");
        // closing the wrapping subquery early does not parse as one query
        let e = query("SELECT 1) q; DROP TABLE t; SELECT * FROM (SELECT 1").unwrap_err();
        assert!(e.contains("not one SELECT"), "{e}");
        let e = query("DELETE FROM t").unwrap_err();
        assert!(e.contains("must be a SELECT"), "{e}");
    }
}
