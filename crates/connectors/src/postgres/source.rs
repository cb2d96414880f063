//! `postgres_source` as a stream: a table (`'table'`) or a query
//! (`'query'`) read in batches.
//!
//! - Without `'incremental.column'` the source reads a snapshot through a
//!   server-side cursor, a batch per fetch, and ends (bounded). A snapshot
//!   has no position to resume from, so it cannot be checkpointed.
//! - With `'incremental.column' = 'id'` the source never ends: it reads the
//!   rows whose column is greater than the last one read, in its order, and
//!   asks again every `'poll.interval'` (1 s) when it has caught up. The
//!   last value read is the source's position, so a job resumes after it.
//!   The column must grow with every new row (a sequence, or a time stamp
//!   no two rows share); a row added later with a smaller or equal value is
//!   not seen — with concurrent writers, also a row whose transaction took
//!   its value before another's but committed after it.

use std::sync::Arc;
use std::time::{Duration, Instant};

use datafusion::arrow::datatypes::SchemaRef;
use postgres::Client;
use velostream_engine::connector::Position;
use velostream_engine::{EngineError, JobMetrics, Result, Source, SourceEvent};

use super::connection::quote;
use super::error::engine_error;
use super::rows::{json_select_list, JsonRows};

/// How the source reads.
pub enum ReadPlan {
    /// Once, through a cursor.
    Snapshot,
    /// Rows after the last value of `column` (of SQL type `type_name`).
    Incremental {
        column: String,
        type_name: String,
        poll_interval: Duration,
    },
}

pub struct PostgresSource {
    name: String,
    client: Client,
    schema: SchemaRef,
    rows: JsonRows,
    metrics: Arc<JobMetrics>,
    batch_size: usize,
    plan: ReadPlan,
    /// The query of each fetch (snapshot: the cursor's query).
    query: String,
    /// Snapshot: the cursor is open; incremental: the last value read.
    opened: bool,
    after: Option<String>,
    /// Incremental: when an empty poll last happened.
    caught_up_at: Option<Instant>,
    rows_read: u64,
    done: bool,
}

impl PostgresSource {
    /// `base`: the `SELECT` that yields the source's rows.
    pub fn new(
        name: &str,
        client: Client,
        base: &str,
        rows: JsonRows,
        plan: ReadPlan,
        batch_size: usize,
        metrics: Arc<JobMetrics>,
    ) -> Result<Self> {
        let schema = rows.schema();
        let select = json_select_list(&schema);
        let query = match &plan {
            ReadPlan::Snapshot => format!(
                "SELECT row_to_json(x)::text FROM ({base}) q CROSS JOIN LATERAL (SELECT {select}) x"
            ),
            ReadPlan::Incremental {
                column, type_name, ..
            } => {
                let c = format!("q.{}", quote(column));
                format!(
                    "SELECT row_to_json(x)::text, {c}::text FROM ({base}) q CROSS JOIN LATERAL (SELECT {select}) x \
                     WHERE $1::text IS NULL OR {c} > CAST($1::text AS {type_name}) ORDER BY {c} LIMIT {batch_size}"
                )
            }
        };
        Ok(Self {
            name: name.to_string(),
            client,
            schema,
            rows,
            metrics,
            batch_size: batch_size.max(1),
            plan,
            query,
            opened: false,
            after: None,
            caught_up_at: None,
            rows_read: 0,
            done: false,
        })
    }

    fn error(&self, e: postgres::Error) -> EngineError {
        engine_error(&self.name, &e)
    }

    fn poll_snapshot(&mut self) -> Result<SourceEvent> {
        if !self.opened {
            self.client
                .batch_execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
                .map_err(|e| self.error(e))?;
            // the extended protocol runs exactly one statement: the query
            // cannot end the transaction and run another
            self.client
                .execute(
                    &format!(
                        "DECLARE velostream_snapshot NO SCROLL CURSOR FOR {}",
                        self.query
                    ),
                    &[],
                )
                .map_err(|e| self.error(e))?;
            self.opened = true;
        }
        let fetched = self
            .client
            .query(
                &format!("FETCH {} FROM velostream_snapshot", self.batch_size),
                &[],
            )
            .map_err(|e| self.error(e))?;
        if fetched.is_empty() {
            self.client
                .batch_execute("CLOSE velostream_snapshot; COMMIT")
                .map_err(|e| self.error(e))?;
            self.done = true;
            return Ok(SourceEvent::End);
        }
        let texts: Vec<String> = fetched.iter().map(|r| r.get(0)).collect();
        self.emit(&texts)
    }

    fn poll_incremental(&mut self, poll_interval: Duration, wait: bool) -> Result<SourceEvent> {
        if let Some(at) = self.caught_up_at {
            let left = poll_interval.saturating_sub(at.elapsed());
            if !left.is_zero() {
                if wait {
                    std::thread::sleep(left.min(Duration::from_millis(100)));
                }
                return Ok(SourceEvent::Idle);
            }
        }
        let fetched = self
            .client
            .query(&self.query, &[&self.after])
            .map_err(|e| self.error(e))?;
        if fetched.is_empty() {
            self.caught_up_at = Some(Instant::now());
            return Ok(SourceEvent::Idle);
        }
        self.caught_up_at = match fetched.len() < self.batch_size {
            true => Some(Instant::now()),
            false => None,
        };
        let texts: Vec<String> = fetched.iter().map(|r| r.get(0)).collect();
        self.after = fetched.last().map(|r| r.get(1));
        self.emit(&texts)
    }

    fn emit(&mut self, texts: &[String]) -> Result<SourceEvent> {
        let batch = self.rows.decode(
            texts.iter().map(String::as_str),
            self.rows_read + 1,
            &self.metrics,
        )?;
        self.rows_read += texts.len() as u64;
        Ok(SourceEvent::Batch(batch))
    }

    fn poll(&mut self, wait: bool) -> Result<SourceEvent> {
        if self.done {
            return Ok(SourceEvent::End);
        }
        match self.plan {
            ReadPlan::Snapshot => self.poll_snapshot(),
            ReadPlan::Incremental { poll_interval, .. } => {
                self.poll_incremental(poll_interval, wait)
            }
        }
    }
}

impl Source for PostgresSource {
    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    fn poll_batch(&mut self) -> Result<SourceEvent> {
        self.poll(true)
    }

    fn poll_now(&mut self) -> Result<SourceEvent> {
        self.poll(false)
    }

    fn is_bounded(&self) -> bool {
        matches!(self.plan, ReadPlan::Snapshot)
    }

    fn position(&self) -> Option<Position> {
        match self.plan {
            ReadPlan::Snapshot => None,
            ReadPlan::Incremental { .. } => Some(serde_json::json!({ "after": self.after })),
        }
    }

    fn seek(&mut self, position: &Position) -> Result<()> {
        if matches!(self.plan, ReadPlan::Snapshot) {
            return Err(EngineError::NotSupported(format!(
                "{}: a postgres_source without 'incremental.column' reads a snapshot and cannot resume; set 'incremental.column' to a column that grows with every row",
                self.name
            )));
        }
        self.after = match position.get("after") {
            Some(serde_json::Value::String(s)) => Some(s.clone()),
            Some(serde_json::Value::Null) | None => None,
            Some(other) => {
                return Err(EngineError::connector(
                    &self.name,
                    format!("checkpoint position {other} is not a value of the incremental column"),
                ))
            }
        };
        Ok(())
    }
}
