//! `postgres_sink`: results written into a table, one statement per batch.
//!
//! With key columns (`SELECT ... PRIMARY KEY`, or an aggregate's GROUP BY
//! columns) a row replaces the table's row of its key
//! (`INSERT ... ON CONFLICT (key) DO UPDATE`), so the table holds each
//! key's latest result; several results of one key in a batch keep the last.
//! Without keys rows are appended; `'mode' = 'append'` appends even
//! results that have keys (a table of every change). `'auto.create' =
//! 'true'` creates a missing table from the result's columns (its key as
//! primary key when upserting).
//!
//! Rows are written inside a transaction:
//! - at-least-once: committed whenever the job flushes its sinks (and at
//!   every checkpoint); after a crash, results since the last checkpoint
//!   are written again — with keys that rewrites the same rows.
//! - exactly-once: the transaction of a checkpoint's rows is prepared
//!   (`PREPARE TRANSACTION`, durable but invisible) when the checkpoint is
//!   taken and committed (`COMMIT PREPARED`) once the checkpoint is
//!   durable. Recovery commits the transaction of the checkpoint it
//!   restores if that commit was cut short, and rolls back any prepared
//!   later. Needs `max_prepared_transactions` > 0 on the server.

use std::collections::BTreeMap;

use datafusion::arrow::datatypes::{DataType, Schema};
use datafusion::arrow::record_batch::RecordBatch;
use postgres::{Client, Statement};
use velostream_engine::connector::Position;
use velostream_engine::{EngineError, Result, Sink, Source};

use super::connection::{quote, relation, DatabaseDefaults, Target};
use super::error::{engine_error, PostgresError};
use super::rows::json_array;
use crate::error::{ConnectorError, ConnectorResult};
use crate::keys::Key;

pub const SINK_KEYS: &[Key] = &[
    Key::new("type", "the connector"),
    Key::new("url", "as for `postgres_source`"),
    Key::new("table", "the table to write (`schema.table` allowed)"),
    Key::with_default(
        "auto.create",
        "false",
        "`true` creates the table from the result's columns (its key as the primary key)",
    ),
    Key::new(
        "mode",
        "`upsert` (by the result's key; the default for keyed results) or `append`",
    ),
];

pub struct PostgresSink {
    label: String,
    /// Names this sink's prepared transactions: `velostream:<sink>:<table>:`.
    gid_prefix: String,
    client: Client,
    table: String,
    key: Vec<String>,
    auto_create: bool,
    /// Exactly-once: prepare at checkpoints instead of committing.
    prepared_commits: bool,
    /// The upsert/insert statement, prepared for the first batch's columns.
    statement: Option<Statement>,
    in_transaction: bool,
    /// The prepared transaction waiting for its checkpoint to be durable.
    prepared: Option<String>,
}

impl PostgresSink {
    pub fn open(
        name: &str,
        props: &BTreeMap<String, String>,
        key: &[String],
        defaults: &DatabaseDefaults,
        exactly_once: bool,
    ) -> ConnectorResult<Self> {
        let invalid = ConnectorError::InvalidValue;
        crate::keys::check_key_list(props, SINK_KEYS, "postgres_sink")?;
        let table = relation(props, "postgres_sink")?;
        let auto_create = match props.get("auto.create").map(String::as_str) {
            None | Some("false") => false,
            Some("true") => true,
            Some(other) => {
                return Err(invalid(format!(
                    "'auto.create' must be true or false, got '{other}'"
                )))
            }
        };
        let key = match props.get("mode").map(String::as_str) {
            None => key,
            Some("append") => &[],
            Some("upsert") if key.is_empty() => {
                return Err(invalid("'mode' = 'upsert' needs key columns: mark them with SELECT col PRIMARY KEY, or aggregate with GROUP BY".into()))
            }
            Some("upsert") => key,
            Some(other) => {
                return Err(invalid(format!(
                    "'mode' must be upsert or append, got '{other}'"
                )))
            }
        };
        let target = Target::resolve(props, defaults)?;
        let mut client = target.connect()?;
        if exactly_once {
            let row = client
                .query_one("SHOW max_prepared_transactions", &[])
                .map_err(|e| PostgresError::server(&target.label, &e))?;
            let max: String = row.get(0);
            if max.trim() == "0" {
                return Err(invalid(format!(
                    "{}: exactly-once output into PostgreSQL prepares a transaction per checkpoint, and the server has max_prepared_transactions = 0; set it (for example to 16) and restart the server, or use at_least_once",
                    target.label
                )));
            }
        }
        Ok(Self {
            label: format!("{name} ({} table {table})", target.label),
            gid_prefix: format!("velostream:{name}:{table}:"),
            client,
            table,
            key: key.to_vec(),
            auto_create,
            prepared_commits: exactly_once,
            statement: None,
            in_transaction: false,
            prepared: None,
        })
    }

    fn fail(&self, e: &postgres::Error) -> EngineError {
        engine_error(&self.label, e)
    }

    /// The statement writing batches of `schema`; creates the table first
    /// when asked to and it is missing, and checks the columns exist.
    fn statement(&mut self, schema: &Schema) -> Result<Statement> {
        if let Some(s) = &self.statement {
            return Ok(s.clone());
        }
        let exists: bool = self
            .client
            .query_one("SELECT to_regclass($1) IS NOT NULL", &[&self.table])
            .map_err(|e| self.fail(&e))?
            .get(0);
        if !exists {
            if !self.auto_create {
                return Err(EngineError::misconfigured(&self.label, format!(
                    "table {} does not exist; create it, or set 'auto.create' = 'true' to create it from the result's columns",
                    self.table
                )));
            }
            let ddl = create_table(&self.table, schema, &self.key);
            self.client.batch_execute(&ddl).map_err(|e| self.fail(&e))?;
        }
        let columns: Vec<String> = self
            .client
            .query(
                "SELECT attname::text FROM pg_attribute WHERE attrelid = to_regclass($1) AND attnum > 0 AND NOT attisdropped",
                &[&self.table],
            )
            .map_err(|e| self.fail(&e))?
            .iter()
            .map(|r| r.get(0))
            .collect();
        let missing: Vec<&str> = schema
            .fields()
            .iter()
            .map(|f| f.name().as_str())
            .filter(|n| !columns.iter().any(|c| c == n))
            .collect();
        if !missing.is_empty() {
            return Err(EngineError::misconfigured(
                &self.label,
                format!(
                    "table {} has no column {}; its columns are {}",
                    self.table,
                    missing.join(", "),
                    columns.join(", ")
                ),
            ));
        }
        let names: Vec<String> = schema.fields().iter().map(|f| quote(f.name())).collect();
        let list = names.join(", ");
        let source = format!(
            "json_populate_recordset(NULL::{}, $1::text::json) WITH ORDINALITY AS j",
            self.table
        );
        let select_list = names
            .iter()
            .map(|n| format!("j.{n}"))
            .collect::<Vec<_>>()
            .join(", ");
        let sql = if self.key.is_empty() {
            format!(
                "INSERT INTO {} ({list}) SELECT {select_list} FROM {source} ORDER BY j.ordinality",
                self.table
            )
        } else {
            let keys: Vec<String> = self.key.iter().map(|k| quote(k)).collect();
            let key_list = keys.join(", ");
            let on_key = keys
                .iter()
                .map(|k| format!("j.{k}"))
                .collect::<Vec<_>>()
                .join(", ");
            let updates: Vec<String> = names
                .iter()
                .filter(|n| !keys.contains(n))
                .map(|n| format!("{n} = EXCLUDED.{n}"))
                .collect();
            let action = match updates.is_empty() {
                true => "DO NOTHING".to_string(),
                false => format!("DO UPDATE SET {}", updates.join(", ")),
            };
            // the latest result of a key in this batch wins
            format!(
                "INSERT INTO {table} ({list}) SELECT DISTINCT ON ({on_key}) {select_list} FROM {source} \
                 ORDER BY {on_key}, j.ordinality DESC ON CONFLICT ({key_list}) {action}",
                table = self.table
            )
        };
        let statement = self.client.prepare(&sql).map_err(|e| self.fail(&e))?;
        self.statement = Some(statement.clone());
        Ok(statement)
    }

    fn begin(&mut self) -> Result<()> {
        if !self.in_transaction {
            self.client
                .batch_execute("BEGIN")
                .map_err(|e| self.fail(&e))?;
            self.in_transaction = true;
        }
        Ok(())
    }

    fn commit(&mut self) -> Result<()> {
        if self.in_transaction {
            self.client
                .batch_execute("COMMIT")
                .map_err(|e| self.fail(&e))?;
            self.in_transaction = false;
        }
        Ok(())
    }

    /// The prepared transactions this sink left on the server, oldest first.
    fn prepared_on_server(&mut self) -> Result<Vec<String>> {
        let prefix = self.gid_prefix.clone();
        let rows = self
            .client
            .query(
                "SELECT gid FROM pg_prepared_xacts WHERE database = current_database() AND starts_with(gid, $1) ORDER BY prepared",
                &[&prefix],
            )
            .map_err(|e| self.fail(&e))?;
        Ok(rows.iter().map(|r| r.get(0)).collect())
    }
}

impl Sink for PostgresSink {
    fn write(&mut self, batch: &RecordBatch) -> Result<()> {
        if batch.num_rows() == 0 {
            return Ok(());
        }
        let sql = self.statement(&batch.schema())?;
        let text = json_array(batch).map_err(|e| e.at(&self.label))?;
        self.begin()?;
        self.client
            .execute(&sql, &[&text])
            .map_err(|e| self.fail(&e))?;
        Ok(())
    }

    fn flush(&mut self) -> Result<()> {
        // exactly-once rows stay in the transaction until their checkpoint
        if self.prepared_commits {
            return Ok(());
        }
        self.commit()
    }

    fn pre_commit(&mut self) -> Result<Option<Position>> {
        if !self.prepared_commits {
            self.commit()?;
            return Ok(None);
        }
        self.begin()?; // an empty checkpoint still prepares, so recovery finds it
        let gid = format!(
            "{}{}",
            self.gid_prefix,
            velostream_engine::watermark::wall_clock_ms()
        );
        self.client
            .batch_execute(&format!(
                "PREPARE TRANSACTION '{}'",
                gid.replace('\'', "''")
            ))
            .map_err(|e| self.fail(&e))?;
        self.in_transaction = false;
        self.prepared = Some(gid.clone());
        Ok(Some(serde_json::json!({ "prepared": gid })))
    }

    fn commit_checkpoint(&mut self, _source: &dyn Source) -> Result<()> {
        if let Some(gid) = self.prepared.take() {
            self.client
                .batch_execute(&format!("COMMIT PREPARED '{}'", gid.replace('\'', "''")))
                .map_err(|e| self.fail(&e))?;
        }
        Ok(())
    }

    fn recover(&mut self, state: Option<&Position>) -> Result<()> {
        let restored = state
            .and_then(|s| s.get("prepared"))
            .and_then(|g| g.as_str())
            .map(str::to_string);
        for gid in self.prepared_on_server()? {
            let verb = match Some(&gid) == restored.as_ref() {
                true => "COMMIT",    // the checkpoint is durable: finish its commit
                false => "ROLLBACK", // prepared after the checkpoint restored
            };
            self.client
                .batch_execute(&format!("{verb} PREPARED '{}'", gid.replace('\'', "''")))
                .map_err(|e| self.fail(&e))?;
        }
        Ok(())
    }
}

/// `CREATE TABLE` for results of `schema`, keyed by `key`.
fn create_table(table: &str, schema: &Schema, key: &[String]) -> String {
    let mut columns: Vec<String> = schema
        .fields()
        .iter()
        .map(|f| format!("{} {}", quote(f.name()), sql_type(f.data_type())))
        .collect();
    if !key.is_empty() {
        columns.push(format!(
            "PRIMARY KEY ({})",
            key.iter().map(|k| quote(k)).collect::<Vec<_>>().join(", ")
        ));
    }
    format!(
        "CREATE TABLE IF NOT EXISTS {table} ({})",
        columns.join(", ")
    )
}

fn sql_type(data_type: &DataType) -> String {
    match data_type {
        DataType::Boolean => "boolean".into(),
        DataType::Int8 | DataType::Int16 | DataType::UInt8 => "smallint".into(),
        DataType::Int32 | DataType::UInt16 => "integer".into(),
        DataType::Int64 | DataType::UInt32 => "bigint".into(),
        DataType::UInt64 => "numeric(20, 0)".into(),
        DataType::Float16 | DataType::Float32 => "real".into(),
        DataType::Float64 => "double precision".into(),
        DataType::Decimal128(p, s) | DataType::Decimal256(p, s) => format!("numeric({p}, {s})"),
        DataType::Date32 | DataType::Date64 => "date".into(),
        DataType::Timestamp(_, None) => "timestamp".into(),
        DataType::Timestamp(_, Some(_)) => "timestamptz".into(),
        _ => "text".into(),
    }
}
